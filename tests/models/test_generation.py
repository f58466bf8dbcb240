"""The rollout sampler: transformers' distribution (temperature, top-k, top-p), rows that end leave the batch."""

import math

import pytest
import torch

from edgerlhf.models.generation import left_pad, sample, warp_logits
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
