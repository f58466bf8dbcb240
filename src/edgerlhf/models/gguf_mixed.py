"""``q4_mixed``: how much each tensor kind's 4-bit quantisation alone moves the policy, and which kinds to keep at
Q8_0 (:func:`~edgerlhf.models.gguf_export.tensor_type` writes them)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from edgerlhf.data.formatting import encode_prompt
from edgerlhf.models.gguf_export import GGUFExportError, gguf_shapes, quantised_in_torch, tensor_kind, tensor_type


def kind_sensitivity(model, tok, prompts: list, *, max_new_tokens: int = 24, chat_template: bool = True,
                     progress: bool = False) -> dict[str, float]:
    """How much each tensor kind's 4-bit quantisation alone moves the policy: for every kind that a ``q4_mixed``
    file writes at 4 bits, the mean KL(policy || policy with only that kind quantised to Q4_1), in nats per position,
    over the next-token distributions along the policy's greedy answers to ``prompts`` (teacher-forced)."""
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    model = model.eval()
    four_bit = gguf.GGMLQuantizationType.Q4_1
    kinds = sorted({tensor_kind(n) for n, s in gguf_shapes(model).items() if tensor_type(n, s, "q4_mixed") == four_bit})
    with torch.no_grad():
        seqs = []
        for p in prompts:
            ids = torch.tensor([encode_prompt(tok, p, chat_template)])
            full = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            seqs.append((full, ids.shape[1] - 1))
        ref = [torch.log_softmax(model(s).logits[0, n0:-1].float(), -1) for s, n0 in seqs]
        out = {}
        for kind in tqdm(kinds, desc="[export] sensitivity per tensor kind", disable=not progress, leave=False):
            q = quantised_in_torch(model, "q4_mixed", only=kind).eval()
            kl = [(r.exp() * (r - torch.log_softmax(q(s).logits[0, n0:-1].float(), -1))).sum(-1)
                  for r, (s, n0) in zip(ref, seqs)]
            out[kind] = torch.cat(kl).mean().item()
            del q
    return out


def choose_kept(sensitivity: dict[str, float], n: int, to: str = "q8_0") -> dict[str, str]:
    """The ``n`` tensor kinds with the largest sensitivity, each kept at ``to`` (ties broken by name)."""
    if n < 0:
        raise GGUFExportError(f"mixed_keep must be 0 or more, got {n}")
    ranked = sorted(sensitivity, key=lambda k: (-sensitivity[k], k))
    return {k: to for k in ranked[:n]}
