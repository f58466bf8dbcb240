"""Token log-probs (and entropy) from hidden states and the LM head, without keeping vocabulary-sized logits.

The logits of a small model are its largest activations: SmolLM2's head is 49,152 wide, so one 48-token
response is 9.4 MB of fp32 logits, and autograd keeps them (and makes more of the same size) for the backward.
:func:`token_logprobs` computes the logits a chunk of positions at a time, keeps only what the backward needs
(the hidden states it was given and one log-sum-exp per position), and recomputes each chunk's logits in the
backward: the logits never exist for more than ``chunk`` positions at once, forward or backward. This is the
"fused linear cross-entropy" idea (Liger-Kernel, torchtune's chunked output), written here in plain PyTorch
because those are cross-entropy losses with one fixed reduction, and RL needs the per-token log-probs
themselves (and the entropy, with its own gradient).

Gradients, for logits ``z = h W^T / T``, ``p = softmax(z)``, upstream ``g`` (log-prob) and ``e`` (entropy):

    d logp_y / dz = onehot(y) - p
    d H / dz      = -p * (z - E_p[z])                with H = lse(z) - E_p[z]
    dL/dh = (dL/dz) W / T,   dL/dW = (dL/dz)^T h / T   (the latter only when W is trained)
"""

from __future__ import annotations

import torch


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float) -> torch.Tensor:
    return torch.nn.functional.linear(h, weight, bias).float() / temperature


class _TokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, temperature: float, chunk: int, want_entropy: bool):
        n = h.shape[0]
        lps = torch.empty(n, dtype=torch.float32, device=h.device)
        ents = torch.empty(n, dtype=torch.float32, device=h.device) if want_entropy else None
        lses = torch.empty(n, dtype=torch.float32, device=h.device)
        for i in range(0, n, chunk):
            z = _chunk_logits(h[i:i + chunk], weight, bias, temperature)
            lse = torch.logsumexp(z, -1)
            lses[i:i + chunk] = lse
            lps[i:i + chunk] = z.gather(-1, targets[i:i + chunk, None]).squeeze(-1) - lse
            if want_entropy:
                ents[i:i + chunk] = lse - (torch.softmax(z, -1) * z).sum(-1)
        ctx.save_for_backward(h, weight, bias, targets, lses)
        ctx.temperature, ctx.chunk, ctx.want_entropy = temperature, chunk, want_entropy
        ctx.mark_non_differentiable(lses)
        return lps, (ents if want_entropy else lps.new_empty(0)), lses

    @staticmethod
    def backward(ctx, g_lp, g_ent, _g_lse):
        h, weight, bias, targets, lses = ctx.saved_tensors
        T, chunk = ctx.temperature, ctx.chunk
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        g_h = torch.empty_like(h) if need_h else None
        g_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        g_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        use_ent = ctx.want_entropy and g_ent is not None and g_ent.numel() > 0
        for i in range(0, h.shape[0], chunk):
            hc = h[i:i + chunk]
            z = _chunk_logits(hc, weight, bias, T)
            p = torch.exp(z - lses[i:i + chunk, None])
            gz = torch.zeros_like(z) if g_lp is None else -p * g_lp[i:i + chunk, None]
            if g_lp is not None:
                gz.scatter_add_(-1, targets[i:i + chunk, None], g_lp[i:i + chunk, None].float())
            if use_ent:
                mean_z = (p * z).sum(-1, keepdim=True)
                gz -= p * (z - mean_z) * g_ent[i:i + chunk, None]
            gz /= T
            if need_h:
                g_h[i:i + chunk] = (gz.to(weight.dtype) @ weight).to(h.dtype)
            if need_w:
                g_w += gz.t() @ hc.float()
            if need_b:
                g_b += gz.sum(0)
        return (g_h, None if g_w is None else g_w.to(weight.dtype), None if g_b is None else g_b.to(bias.dtype),
                None, None, None, None)


def token_logprobs(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, *,
                   bias: torch.Tensor | None = None, entropy: bool = False,
                   chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log softmax(h W^T / T)[target]`` for every position (and the entropy of that distribution), in fp32.

    ``h``: (..., H) hidden states; ``weight``: (V, H) LM head; ``targets``: (...) token ids. Returns tensors of
    ``targets``' shape. Differentiable in ``h`` (and in ``weight`` / ``bias`` when they require grad); the
    logits exist for ``chunk`` positions at a time only."""
    shape = targets.shape
    flat_h = h.reshape(-1, h.shape[-1])
    lp, ent, _ = _TokenLogProbs.apply(flat_h, weight, bias, targets.reshape(-1), float(temperature), int(chunk),
                                      bool(entropy))
    return lp.view(shape), (ent.view(shape) if entropy else None)
