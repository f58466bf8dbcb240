"""The rollout sampler: transformers' distribution (temperature, top-k, top-p), rows that end leave the batch."""

import math

import torch

from edgerlhf.models.generation import draw, left_pad, length_batches, sample, sample_rollout, warp_logits
from edgerlhf.models.loading import load_causal_lm, load_tokenizer


def test_warp_logits_by_hand():
    z = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(warp_logits(z, 2.0), z / 2)
    k2 = warp_logits(z, 1.0, top_k=2)
    assert torch.isinf(k2[0, :2]).all() and k2[0, 2:].tolist() == [3.0, 4.0]
    # probabilities of [1,2,3,4]: .032 .087 .237 .644 -> top_p .5 keeps only 4, top_p .8 keeps 3 and 4
    assert torch.isfinite(warp_logits(z, 1.0, top_p=0.5)).tolist() == [[False, False, False, True]]
    assert torch.isfinite(warp_logits(z, 1.0, top_p=0.8)).tolist() == [[False, False, True, True]]
    assert torch.isfinite(warp_logits(z, 1.0, top_p=1.0)).all()


def _model_and_prompts():
    tok = load_tokenizer("tiny")
    model = load_causal_lm("tiny", seed=3).eval()
    ids, mask = left_pad([tok.encode("Short."), tok.encode("A rather longer prompt, padded less."),
                          tok.encode("Three")], tok.pad_token_id)
    return model, tok, ids, mask


def test_greedy_matches_generate_and_a_row_that_ends_leaves_the_batch():
    model, tok, ids, mask = _model_and_prompts()
    ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12, min_new_tokens=12,
                         pad_token_id=tok.pad_token_id, eos_token_id=None)[:, ids.shape[1]:]
    rows = ref.tolist()
    # a token that one row makes first at position j >= 1 and no other row makes: call it EOS, so that row
    # must stop there while the others go on
    r, j = next((r, i) for r, row in enumerate(rows) for i in range(1, 12)
                if row[i] not in row[:i] and all(row[i] not in o for k, o in enumerate(rows) if k != r))
    eos = rows[r][j]
    got = sample(model, ids, mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=tok.pad_token_id, temperature=0)
    want = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12,
                          pad_token_id=tok.pad_token_id, eos_token_id=eos)[:, ids.shape[1]:]
    n = max(got.shape[1], want.shape[1])
    pad = lambda t: torch.nn.functional.pad(t, (0, n - t.shape[1]), value=tok.pad_token_id)  # noqa: E731
    assert torch.equal(pad(got), pad(want))
    assert got[r, j] == eos and (got[r, j + 1:] == tok.pad_token_id).all() and got.shape[1] > j + 1


def test_sampled_tokens_follow_the_warped_distribution():
    model, tok, ids, mask = _model_and_prompts()
    ids, mask = ids[:1].repeat(3000, 1), mask[:1].repeat(3000, 1)
    torch.manual_seed(0)
    first = sample(model, ids, mask, max_new_tokens=1, eos_token_id=-1, pad_token_id=tok.pad_token_id,
                   temperature=0.7, top_k=4)[:, 0]
    with torch.no_grad():
        logits = model(input_ids=ids[:1], attention_mask=mask[:1]).logits[0, -1]
    p = torch.softmax(warp_logits(logits[None], 0.7, top_k=4), -1)[0]
    assert set(first.tolist()) <= set(torch.topk(p, 4).indices.tolist())
    for t in torch.topk(p, 4).indices.tolist():
        freq = (first == t).float().mean().item()
        assert abs(freq - p[t].item()) < 4 * math.sqrt(p[t].item() * (1 - p[t].item()) / 3000) + 1e-3, (t, freq, p[t])


def test_draw_inverts_the_cdf_and_never_draws_a_token_without_mass():
    torch.manual_seed(0)
    p = torch.tensor([[0.0, 0.25, 0.0, 0.75], [0.5, 0.5, 0.0, 0.0]])
    got = torch.stack([draw(p) for _ in range(4000)])  # (4000, 2)
    assert set(got[:, 0].tolist()) == {1, 3} and set(got[:, 1].tolist()) == {0, 1}
    assert abs((got[:, 0] == 3).float().mean().item() - 0.75) < 4 * math.sqrt(0.75 * 0.25 / 4000)
    assert abs((got[:, 1] == 0).float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / 4000)
    # rows that sum to a little less than 1 (rounding) still land on a token with mass, even at u -> 1
    short = torch.tensor([[0.3, 0.6999, 0.0]])
    torch.manual_seed(1)
    assert all(draw(short).item() in (0, 1) for _ in range(200))
    real_rand = torch.rand
    try:
        # the largest float < 1
        torch.rand = lambda *a, **k: torch.full(a[0] if isinstance(a[0], tuple) else a, 0.99999994)
        assert draw(short).item() == 1
    finally:
        torch.rand = real_rand


def test_identical_prompts_are_prefilled_once_and_decode_as_if_apart():
    model, tok, ids, mask = _model_and_prompts()
    order = torch.tensor([0, 0, 1, 2, 1, 0])
    rows = []
    first_block = model.model.layers[0]
    h = first_block.register_forward_hook(
        lambda m, a, out: rows.append((out[0] if isinstance(out, tuple) else out).shape))
    got = sample(model, ids[order], mask[order], max_new_tokens=6, eos_token_id=-1, pad_token_id=tok.pad_token_id,
                 temperature=0)
    h.remove()
    assert rows[0][0] == 3  # the prefill ran over the 3 distinct prompts, not 6
    apart = sample(model, ids, mask, max_new_tokens=6, eos_token_id=-1, pad_token_id=tok.pad_token_id, temperature=0)
    assert torch.equal(got, apart[order])


def test_recorded_decode_equals_a_full_forward():
    """record=True and split: the log-probs, entropy and hidden states the decode saw, and the bottom block's
    output at every position a later pass reads, equal those of one forward over the finished sequences."""
    from edgerlhf.models.roles import position_ids

    model, tok, ids, mask = _model_and_prompts()
    torch.manual_seed(0)
    s = sample_rollout(model, ids, mask, max_new_tokens=8, eos_token_id=-1, pad_token_id=tok.pad_token_id,
                       temperature=0.8, record=True, split=1)
    P, R = ids.shape[1], s.tokens.shape[1]
    full_ids = torch.cat([ids, s.tokens], 1)
    full_mask = torch.cat([mask, torch.ones_like(s.tokens)], 1)
    with torch.no_grad():
        out = model(input_ids=full_ids, attention_mask=full_mask, position_ids=position_ids(full_mask),
                    output_hidden_states=True)
    logp = torch.log_softmax(out.logits[:, P - 1:-1].float() / 0.8, -1)
    assert torch.allclose(s.logprobs, logp.gather(2, s.tokens[..., None]).squeeze(2), atol=1e-5)
    assert torch.allclose(s.entropy, -(logp.exp() * logp).sum(-1), atol=1e-4)
    assert torch.allclose(s.hidden, out.hidden_states[-1][:, P - 1:-1], atol=1e-5)
    used = full_mask.bool()
    used[:, -1] = False  # the last token is never fed back: its output predicts nothing
    assert s.trunk.shape == (len(ids), P + R, model.config.hidden_size)
    assert torch.allclose(s.trunk[used], out.hidden_states[1][used], atol=1e-5)
    assert (s.trunk[~used] == 0).all()


def test_length_batches_group_similar_lengths_within_both_limits():
    lengths = [50, 10, 12, 300, 11, 49, 48]
    batches = length_batches(lengths, batch_size=3, tokens_per_batch=160)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every sequence once
    assert batches == [[1, 4, 2], [6, 5, 0], [3]]  # sorted by length; 3 x 50 <= 160; 300 alone
    assert all(len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 160) for b in batches)
