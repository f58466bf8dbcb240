"""Log-probs of given responses under a causal LM (evaluation's KL, DPO): the LM head runs on response tokens
only (``rl.logprobs.token_logprobs``), and a preference pair's shared prompt runs once.

An encoded row is ``(ids, labels)`` as ``data.formatting.encode_pair`` makes it: ``labels`` is -100 on the
prompt and the token id on every response token (end-of-turn included).
"""

from __future__ import annotations

import torch

from edgerlhf.models.generation import cache_kwarg, left_pad, right_pad
from edgerlhf.models.parts import decoder_parts, has_decoder_stack, position_ids
from edgerlhf.rl.logprobs import token_logprobs

Row = tuple[list[int], list[int]]  # (ids, labels)


def _decoder(model):
    """(decoder stack, LM head) of a causal LM under any PEFT wrapping, or None when it has no such layout."""
    return decoder_parts(model) if has_decoder_stack(model) else None


def _sums(h: torch.Tensor, tgt: torch.Tensor, head, temperature: float, average: bool) -> torch.Tensor:
    """Per-row sum (or mean) of the target tokens' log-probs; ``tgt`` is -100 where nothing is predicted."""
    real = tgt != -100
    lp = token_logprobs(h[real], head.weight, tgt[real], temperature, bias=head.bias)[0].float()
    rows = real.nonzero()[:, 0]
    out = torch.zeros(len(tgt), device=h.device, dtype=lp.dtype).index_add(0, rows, lp)
    if average:
        out = out / real.sum(1).clamp(min=1)
    return out


def batch_logprobs(model, rows: list[Row], pad_id: int, *, temperature: float = 1.0,
                   average: bool = False) -> torch.Tensor:
    """Sum (``average``: mean) of each row's response-token log-probs, rows right-padded in one batch.
    Differentiable in the model's trainable parameters."""
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in right_pad([r[0] for r in rows], pad_id))
    tgt = right_pad([r[1] for r in rows], -100)[0][:, 1:].to(device)
    parts = _decoder(model)
    if parts is None:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float() / temperature
        lp = torch.log_softmax(logits, -1).gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (tgt != -100)
        out = lp.sum(1)
        return out / (tgt != -100).sum(1).clamp(min=1) if average else out
    body, head = parts
    h = body(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    return _sums(h, tgt, head, temperature, average)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _first_response(labels: list[int]) -> int:
    return next((i for i, x in enumerate(labels) if x != -100), len(labels))


def pair_logprobs(model, chosen: list[Row], rejected: list[Row], pad_id: int, *, temperature: float = 1.0,
                  average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`batch_logprobs` of both sides of each pair, the tokens both sides share before their responses
    (the prompt) run once: one pass over the prefixes keeps its KV cache, copied for both sides, then one pass
    over the continuations. Exact for a causal model, up to rounding; differentiable. Falls back to one
    batch of whole sequences where a pair shares no token or the model has no decoder-stack layout."""
    n = len(chosen)
    parts = _decoder(model)
    # the prefix ends before the position that predicts either side's first response token
    cut = [min(common_prefix(c[0], r[0]), _first_response(c[1]) - 1, _first_response(r[1]) - 1)
           for c, r in zip(chosen, rejected)]
    if parts is None or min(cut) < 1:
        both = batch_logprobs(model, list(chosen) + list(rejected), pad_id, temperature=temperature, average=average)
        return both[:n], both[n:]
    body, head = parts
    device = next(model.parameters()).device
    h = shared_prefix_hidden(body, model.config, [c[0] for c in chosen], [r[0] for r in rejected], cut, pad_id, device)
    if h is None:  # gradient checkpointing in training turns the cache off
        both = batch_logprobs(model, list(chosen) + list(rejected), pad_id, temperature=temperature, average=average)
        return both[:n], both[n:]
    sides = list(chosen) + list(rejected)
    # continuation position i (absolute k + i) predicts the token at k + i + 1
    tgt = right_pad([s[1][k + 1:] for s, k in zip(sides, cut + cut)], -100)[0].to(device)
    tgt = torch.nn.functional.pad(tgt, (0, h.shape[1] - tgt.shape[1]), value=-100)
    out = _sums(h, tgt, head, temperature, average)
    return out[:n], out[n:]


def shared_prefix_hidden(body, config, chosen: list[list[int]], rejected: list[list[int]], cut: list[int],
                         pad_id: int, device) -> torch.Tensor | None:
    """Last hidden states of each pair's two continuations, ``(2n, Lc, H)`` (chosen rows, then rejected rows),
    where pair i's first ``cut[i]`` tokens (shared by both sides) ran once (:func:`shared_prefix_group_hidden`
    with groups of two). Exact for a causal model, up to rounding; differentiable. None when the model turned the
    KV cache off (gradient checkpointing in training). The RM's pair scoring and DPO's pair log-probs both run on
    it."""
    n = len(chosen)
    h = shared_prefix_group_hidden(body, config, [[a, b] for a, b in zip(chosen, rejected)], cut, pad_id, device)
    if h is None:
        return None
    return h[torch.cat([torch.arange(0, 2 * n, 2), torch.arange(1, 2 * n, 2)]).to(h.device)]


def shared_prefix_group_hidden(body, config, groups: list[list[list[int]]], cut: list[int], pad_id: int,
                               device) -> torch.Tensor | None:
    """Last hidden states of every member's continuation, ``(sum of group sizes, Lc, H)`` in the groups' order,
    where group g's first ``cut[g]`` tokens (shared by all its members: a prompt and its candidates) ran once: one
    pass over the prefixes keeps its KV cache, copied for each member, then one pass over the continuations. Exact
    for a causal model, up to rounding; differentiable. None when the model turned the KV cache off."""
    from transformers import DynamicCache  # noqa: PLC0415 - transformers: loaded on first use, not at import

    p_ids, p_mask = (t.to(device) for t in left_pad([g[0][:k] for g, k in zip(groups, cut)], pad_id))
    cache = DynamicCache(config=config)
    kw = {cache_kwarg(body): cache}
    body(input_ids=p_ids, attention_mask=p_mask, position_ids=position_ids(p_mask), use_cache=True, **kw)
    if cache.get_seq_length() == 0:
        return None
    owner = torch.tensor([i for i, g in enumerate(groups) for _ in g], device=device)
    cache.batch_select_indices(owner)
    c_ids, c_mask = (t.to(device) for t in right_pad([s[k:] for g, k in zip(groups, cut) for s in g], pad_id))
    mask = torch.cat([p_mask[owner], c_mask], 1)
    pos = position_ids(mask)[:, p_ids.shape[1]:]
    return body(input_ids=c_ids, attention_mask=mask, position_ids=pos, use_cache=True, **kw).last_hidden_state
