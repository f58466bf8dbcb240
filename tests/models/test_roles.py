"""PPO's roles over one base: log-probs match sampling, and the reference is the SFT policy, not the base."""

import pytest
import torch

from edgerlhf.config import PPOConfig, load_config
from edgerlhf.models.generation import left_pad
from edgerlhf.models.loading import load_causal_lm
from edgerlhf.models.roles import Roles, _hidden, _token_logprobs


def _seq_logprobs(model, ids, mask, P):
    with torch.no_grad():
        return _token_logprobs(model, _hidden(model, ids, mask, P), ids[:, P:], 1.0, False)[0]


def _batch(tok):
    ids, mask = left_pad([tok.encode("Rate the blender."), tok.encode("A much longer prompt about a film we saw.")],
                         tok.pad_token_id)
    return (torch.cat([ids, torch.tensor([[5, 6, 7], [8, 9, 10]])], 1),
            torch.cat([mask, torch.ones(2, 3, dtype=torch.long)], 1), ids.shape[1])


def test_reference_includes_the_sft_change(tiny_sft):
    sft = tiny_sft
    cfg = load_config(PPOConfig, overrides={"model": "tiny", "policy": str(sft)})
    roles = Roles(cfg, dtype=torch.float32, device="cpu")
    tok = roles.tokenizer
    ids, mask, P = _batch(tok)
    # make the PPO adapter non-zero too, so "adapter disabled" is a real switch
    with torch.no_grad():
        for n, p in roles.policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    ref = roles.ref_logprobs(ids, mask, P, 1.0)
    from edgerlhf.models.adapters import load_policy

    sft_model, _, _ = load_policy(sft)
    base = load_causal_lm("tiny", seed=42)
    torch.testing.assert_close(ref, _seq_logprobs(sft_model, ids, mask, P), atol=1e-5, rtol=1e-5)
    assert (ref - _seq_logprobs(base, ids, mask, P)).abs().max() > 1e-3
    pol = roles.forward(ids, mask, P, 1.0, values=False).logprobs.detach()
    assert (pol - ref).abs().max() > 1e-3  # the policy is not the reference once its adapter moved


def test_forward_logprobs_match_sampling_distribution_with_left_padding():
    cfg = load_config(PPOConfig, overrides={"model": "tiny"})
    roles = Roles(cfg, dtype=torch.float32, device="cpu")
    tok = roles.tokenizer
    ids, mask = left_pad([tok.encode("Short."), tok.encode("A rather longer prompt, padded less.")], tok.pad_token_id)
    torch.manual_seed(0)
    out = roles.policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.7, top_k=None,
                                max_new_tokens=5, min_new_tokens=5, output_scores=True, return_dict_in_generate=True,
                                pad_token_id=tok.pad_token_id, use_cache=True)
    seq, P = out.sequences, ids.shape[1]
    want = torch.stack([torch.log_softmax(s.float(), -1).gather(-1, seq[:, P + t, None]).squeeze(-1)
                        for t, s in enumerate(out.scores)], 1)
    full_mask = torch.cat([mask, torch.ones(2, 5, dtype=torch.long)], 1)
    got = roles.forward(seq, full_mask, P, 0.7, values=False).logprobs.detach()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_value_adapter_and_separate_layout_have_the_same_trainable_set():
    counts = {}
    for layout, value in (("shared", "head"), ("shared", "adapter"), ("separate", "head"), ("separate", "adapter")):
        cfg = load_config(PPOConfig, overrides={"model": "tiny", "layout": layout, "value_model": value})
        roles = Roles(cfg, dtype=torch.float32, device="cpu")
        counts[layout, value] = sum(p.numel() for p in roles.trainable)
        ids, mask, P = _batch(roles.tokenizer)
        fw = roles.forward(ids, mask, P, 1.0)
        assert fw.values.shape == fw.logprobs.shape == (2, 3)
        assert torch.all(fw.values == 0)  # the value head starts at exactly zero
    assert counts["shared", "head"] == counts["separate", "head"]
    assert counts["shared", "adapter"] == counts["separate", "adapter"] > counts["shared", "head"]


@pytest.mark.parametrize("avx512bf16", [True, False], ids=["avx512bf16-detected", "avx512bf16-absent"])
def test_int4_base_stays_differentiable_whatever_the_cpu_detection(monkeypatch, avx512bf16):
    """bitsandbytes' 4-bit layers take a backward-less CPU kernel after a no-grad forward where it detects
    AVX512-BF16; the detection is forced either way, so both branches run on every machine."""
    import bitsandbytes as bnb
    import bitsandbytes.nn.modules as bnb_modules

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: avx512bf16)
    cfg = load_config(PPOConfig, overrides={"model": "tiny", "base_precision": "int4"})
    roles = Roles(cfg, dtype=torch.float32, device="cpu")
    layers = [m for m in roles.policy.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    ids, mask, P = _batch(roles.tokenizer)
    roles.train(False)
    with torch.no_grad():  # a rollout-like pass: where the repacking would happen
        roles.forward(ids, mask, P, 1.0)
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    roles.train(True)
    fw = roles.forward(ids, mask, P, 1.0)
    fw.logprobs.sum().backward()
    lora_b = [p for n, p in roles.policy.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)


@pytest.mark.parametrize("value_model", ["head", "adapter"])
def test_cached_trunk_gives_the_same_logprobs_values_and_reference(value_model):
    """LoRA in the top block of the 2-block tiny model: the bottom block is cached; every forward agrees with
    the uncached one to fp32 rounding, gradients included."""
    out = {}
    for cache in ("auto", "off"):
        cfg = load_config(PPOConfig, overrides={"model": "tiny", "lora_layers": 1, "cache_trunk": cache,
                                                "value_model": value_model})
        roles = Roles(cfg, dtype=torch.float32, device="cpu")
        assert roles.split == (1 if cache == "auto" else 0)
        with torch.no_grad():  # a trained-looking adapter and value head, the same for both
            g = torch.Generator().manual_seed(0)
            for n, p in sorted(roles.policy.named_parameters()):
                if "lora_" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            roles.value_head.summary.weight.copy_(torch.randn(roles.value_head.summary.weight.shape, generator=g))
        ids, mask, P = _batch(roles.tokenizer)
        trunk = roles.trunk(ids, mask)
        assert (trunk is None) == (cache == "off")
        fw = roles.forward(ids, mask, P, 0.7, values=True, entropy=True, trunk=trunk)
        (fw.logprobs.sum() + fw.values.sum()).backward()
        grads = {n: p.grad.clone() for n, p in roles.policy.named_parameters() if p.grad is not None}
        assert grads and all(".layers.1." in n for n in grads)  # only the top block has adapters
        out[cache] = (fw.logprobs.detach(), fw.values.detach(), fw.entropy.detach(),
                      roles.ref_logprobs(ids, mask, P, 0.7, trunk), grads)
    for a, b in zip(out["auto"][:4], out["off"][:4]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert out["auto"][4].keys() == out["off"][4].keys()
    for n in out["auto"][4]:
        torch.testing.assert_close(out["auto"][4][n], out["off"][4][n], rtol=1e-4, atol=1e-6)


def test_nothing_is_cached_when_lora_covers_every_block_or_the_layout_is_separate():
    for over in ({"lora_layers": 0}, {"lora_layers": 2}, {"lora_layers": 1, "layout": "separate"}):
        cfg = load_config(PPOConfig, overrides={"model": "tiny", **over})
        roles = Roles(cfg, dtype=torch.float32, device="cpu")
        ids, mask, _ = _batch(roles.tokenizer)
        assert roles.split == 0 and roles.trunk(ids, mask) is None, over


def test_padding_columns_change_nothing_and_padding_gets_no_logprob():
    """A batch padded far past its longest response (as a micro-batch of a step with longer responses is):
    the trailing all-padding columns are dropped, log-probs / values / entropy / reference and the gradients
    are those of the tight batch, and padded positions get log-prob 0."""
    cfg = load_config(PPOConfig, overrides={"model": "tiny", "lora_layers": 1})
    roles = Roles(cfg, dtype=torch.float32, device="cpu")
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for n, p in sorted(roles.policy.named_parameters()):
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    ids, mask, P = _batch(roles.tokenizer)
    wide_ids = torch.nn.functional.pad(ids, (0, 7), value=roles.tokenizer.pad_token_id)
    wide_mask = torch.nn.functional.pad(mask, (0, 7))
    res = []
    for i, m in ((ids, mask), (wide_ids, wide_mask)):
        roles.policy.zero_grad()
        fw = roles.forward(i, m, P, 0.7, values=True, entropy=True, trunk=roles.trunk(i, m))
        (fw.logprobs.sum() + fw.values.sum()).backward()
        res.append((fw, roles.ref_logprobs(i, m, P, 0.7, roles.trunk(i, m)),
                    {n: p.grad.clone() for n, p in roles.policy.named_parameters() if p.grad is not None}))
    (tight, ref_t, g_t), (wide, ref_w, g_w) = res
    R = ids.shape[1] - P
    assert wide.logprobs.shape == (len(ids), R + 7) and (wide.logprobs[:, R:] == 0).all()
    real = mask[:, P:].bool()
    assert (tight.logprobs[~real] == 0).all()  # padding inside the tight batch too
    for a, b in ((tight.logprobs, wide.logprobs), (tight.values, wide.values), (tight.entropy, wide.entropy),
                 (ref_t, ref_w)):
        torch.testing.assert_close(a[real], b[:, :R][real], rtol=0, atol=1e-6)
    for n in g_t:
        torch.testing.assert_close(g_t[n], g_w[n], rtol=1e-4, atol=1e-5 * float(g_t[n].abs().max()))
