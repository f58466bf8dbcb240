"""The parts of a decoder-only causal LM that the sampler, the roles and the pair log-probs drive directly, under
any PEFT wrapping: its decoder stack and LM head, and positions that ignore left padding. A leaf of ``models/``."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["decoder_parts", "has_decoder_stack", "only_blocks", "position_ids"]


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding, exactly as ``generate`` counts them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def decoder_parts(model):
    """(decoder stack, LM head) under any PEFT wrapping."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.lm_head


def has_decoder_stack(model) -> bool:
    """A causal LM with the ``model.layers`` / ``lm_head`` layout the engine's sampler drives (Llama, Qwen,
    Mistral...)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return hasattr(base, "lm_head") and hasattr(getattr(base, "model", None), "layers")


@contextlib.contextmanager
def only_blocks(body, lo: int, hi: int | None, final_norm: bool):
    """Run the decoder stack over blocks ``[lo, hi)`` only (and without its final norm unless asked): the
    stack's own forward still builds the causal mask and the rotary embeddings, so the blocks see exactly what
    they see in a full pass."""
    layers, norm = body.layers, body.norm
    body.layers = nn.ModuleList(list(layers)[lo:hi])
    if not final_norm:
        body.norm = nn.Identity()
    try:
        yield
    finally:
        body.layers, body.norm = layers, norm
