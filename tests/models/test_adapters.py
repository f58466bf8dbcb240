"""LoRA helpers: gradient checkpointing is the non-reentrant kind (the reentrant one gives frozen-input LoRA
blocks no gradient, and breaks data-parallel training)."""

from edgerlhf.config import SFTConfig, load_config
from edgerlhf.models.adapters import apply_lora, enable_gradient_checkpointing
from edgerlhf.models.loading import load_causal_lm


def test_gradient_checkpointing_is_non_reentrant_and_trains_lora():
    import torch

    cfg = load_config(SFTConfig, overrides={"model": "tiny"})
    model = apply_lora(load_causal_lm("tiny", seed=0), cfg)
    enable_gradient_checkpointing(model)
    funcs = [mod._gradient_checkpointing_func for mod in model.modules()
             if getattr(mod, "gradient_checkpointing", False)]
    assert funcs and all(f.keywords == {"use_reentrant": False} for f in funcs)
    model.train()
    ids = torch.randint(0, 100, (2, 6))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())  # every adapter weight got a gradient
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n or "lora_B" in n)
