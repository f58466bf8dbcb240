"""Padding, and batched sampling with left padding (decoder-only models must be padded on the left to
generate; training and scoring pad on the right)."""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from edgerlhf.data.formatting import Prompt, encode_prompt
from edgerlhf.models.parts import decoder_parts, has_decoder_stack, position_ids


def _pad(seqs: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        at = slice(n - len(s), n) if left else slice(0, len(s))
        ids[i, at] = torch.tensor(s, dtype=torch.long)
        mask[i, at] = 1
    return ids, mask


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), padded on the left."""
    return _pad(seqs, pad_id, left=True)


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), padded on the right."""
    return _pad(seqs, pad_id, left=False)


def length_batches(lengths: list[int], batch_size: int, tokens_per_batch: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches of similar length (sorted, stable): at most ``batch_size``
    sequences and, once a batch has one, at most ``tokens_per_batch`` padded tokens each (a longer sequence
    gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    for i in order:
        b = out[-1] if out else None
        if b and len(b) < batch_size and (len(b) + 1) * lengths[i] <= tokens_per_batch:
            b.append(i)
        else:
            out.append([i])
    return out


@torch.no_grad()
def generate(model, tok, prompts: list[Prompt], *, max_new_tokens: int = 48, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, batch_size: int = 32, use_chat_template: bool = True,
             progress: bool = False, desc: str = "generate") -> tuple[list[str], int]:
    """Decode ``prompts``; ``temperature=0`` is greedy. Returns (texts, number of new tokens made)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts, n_tokens = [], 0
    eos = tok.eos_token_id
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False, unit="prompt")
    for i in range(0, len(prompts), batch_size):
        chunk = [encode_prompt(tok, p, use_chat_template) for p in prompts[i:i + batch_size]]
        ids, mask = left_pad(chunk, tok.pad_token_id)
        if has_decoder_stack(model):  # the engine's sampler: the same distribution, less work per token
            new = sample(model, ids.to(device), mask.to(device), max_new_tokens=max_new_tokens, eos_token_id=eos,
                         pad_token_id=tok.pad_token_id, temperature=temperature, top_k=top_k, top_p=top_p)
        else:
            kw = dict(do_sample=temperature > 0, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                      eos_token_id=eos, use_cache=True)  # also when training turned the cache off
            if temperature > 0:
                kw.update(temperature=temperature, top_k=top_k or None, top_p=top_p)
            new = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)[:, ids.shape[1]:]
        for row in new:
            row = row.tolist()
            if eos in row:
                row = row[: row.index(eos)]
            n_tokens += len(row) + 1
            texts.append(tok.decode(row, skip_special_tokens=True).strip())
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    return texts, n_tokens


# -- the rollout sampler ---------------------------------------------------------------------------------

def warp_logits(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Logits of the distribution sampled from: divided by the temperature, then top-k, then nucleus (top-p)
    filtering, in transformers' order and with its rules (the most likely token always stays)."""
    z = logits.float() / temperature
    if top_k and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, idx = torch.sort(z, descending=False)
        remove = sorted_z.softmax(-1).cumsum(-1) <= (1 - top_p)
        remove[..., -1:] = False
        z = z.masked_fill(remove.scatter(-1, idx, remove), float("-inf"))
    return z


def _head_logits(head, h: torch.Tensor) -> torch.Tensor:
    """The LM head for a few rows. ``W @ h^T`` rather than ``h @ W^T``: for 8 rows and SmolLM2's 49,152 x 576
    head that is 16 ms instead of 32 ms on the 2-core AVX2 machine (bench/rollout_speed.py), a fifth of a
    decode step."""
    w = head.weight
    out = (w @ h.to(w.dtype).t()).t()
    return out if head.bias is None else out + head.bias


def cache_kwarg(body) -> str:
    """The name a decoder stack's forward takes its KV cache under: transformers >= 5.2x says ``cache`` (and
    warns about ``past_key_values``); earlier 5.x only know ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def draw(probs: torch.Tensor) -> torch.Tensor:
    """One token per row from ``probs`` (rows sum to 1, up to rounding) by inverting the cumulative
    distribution with one uniform number per row: the same distribution as ``torch.multinomial(probs, 1)``,
    which on a CPU takes 45 ms for 32 rows of SmolLM2's 49,152-token vocabulary where this takes 3 ms. A token
    of probability 0 is never drawn: the uniform is scaled by the row's total and clamped to the last token
    with mass."""
    cdf = probs.float().cumsum(-1)
    total = cdf[:, -1:].contiguous()
    u = torch.rand(total.shape, device=probs.device) * total
    last = torch.searchsorted(cdf, total, right=False)  # the last token with mass (cdf reaches the total there)
    return torch.minimum(torch.searchsorted(cdf, u, right=True), last).squeeze(1)


class Sampled(NamedTuple):
    """What :func:`sample_rollout` made, and what it saw on the way (``record=True``)."""
    tokens: torch.Tensor                  # (B, R) new tokens, pad after each row's EOS
    logprobs: torch.Tensor | None = None  # (B, R) log-prob of each token under softmax(logits / temperature)
    entropy: torch.Tensor | None = None   # (B, R) entropy of that distribution
    hidden: torch.Tensor | None = None    # (B, R, H) last hidden state at the position predicting each token
    trunk: torch.Tensor | None = None     # (B, P + R, H) output of block ``split - 1`` at every position
    #                                       (0 where unused)


@torch.no_grad()
def sample(model, ids: torch.Tensor, mask: torch.Tensor, **kw) -> torch.Tensor:
    """New tokens only: ``sample_rollout(...).tokens``."""
    return sample_rollout(model, ids, mask, **kw).tokens


@torch.no_grad()
def sample_rollout(model, ids: torch.Tensor, mask: torch.Tensor, *, max_new_tokens: int, eos_token_id: int,
                   pad_token_id: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                   record: bool = False, split: int = 0) -> Sampled:
    """Sample up to ``max_new_tokens`` after left-padded prompts; the tokens come back ``(B, R)``, padded after
    each row's EOS, with ``R`` the longest response made.

    The same distribution as ``model.generate(do_sample=True, temperature, top_k, top_p)`` (``temperature=0``:
    greedy), with less work per token. Why not ``generate`` itself: on a CPU its per-token bookkeeping is a
    large share of a small model's decode step, it computes the LM head in the slower orientation, draws with
    ``torch.multinomial`` (slow for a 49k vocabulary), prefills a prompt once per copy and keeps decoding every
    row until the longest ends. Here identical prompts (a GRPO group, a prefs prompt's k samples) are prefilled
    once and their cache copied, a row that emitted EOS leaves the batch (its KV cache rows dropped), and
    tokens are drawn by :func:`draw`. Measured in ``bench/rollout_speed.py``.

    It can also keep what the decode computed anyway, so that the online engine need not run the model over
    the sequences again: with ``split > 0`` the output of the bottom ``split`` blocks at every position (the
    frozen trunk the engine caches; 0 at padding and at each row's last token, whose output predicts nothing
    and which no earlier position attends to), and with ``record=True`` each token's log-prob and entropy at
    ``temperature`` (before top-k/top-p, as the engine's log-probs are) and the last hidden state that
    predicted it."""
    from transformers import DynamicCache  # noqa: PLC0415 - transformers: loaded on first sampling, not at import

    body, head = decoder_parts(model)
    B, P = ids.shape
    dev = ids.device
    out = torch.full((B, max_new_tokens), pad_token_id, dtype=torch.long, device=dev)
    H = model.config.hidden_size
    lps = torch.zeros((B, max_new_tokens), device=dev) if record else None
    ents = torch.zeros((B, max_new_tokens), device=dev) if record else None
    hid = torch.zeros((B, max_new_tokens, H), device=dev) if record else None
    # the trunk is what the blocks above read as their input: kept in the blocks' own dtype (bf16 on a GPU)
    tdt = body.get_input_embeddings().weight.dtype
    trunk = torch.zeros((B, P + max_new_tokens, H), device=dev, dtype=tdt) if split else None
    rows = torch.arange(B, device=dev)  # which output rows are still decoding
    col = [None]  # the column the trunk hook writes next (None: the prefill, every row of its batch from 0)

    def keep_trunk(_module, _inp, output):
        h = (output[0] if isinstance(output, tuple) else output).to(trunk.dtype)
        if col[0] is None:
            trunk[:, :h.shape[1]] = h
        else:
            trunk[rows, col[0]:col[0] + 1] = h

    hook = body.layers[split - 1].register_forward_hook(keep_trunk) if trunk is not None else None
    cache = DynamicCache(config=model.config)
    cache_kw = cache_kwarg(body)
    try:
        # 1 prefill, each distinct prompt once
        uniq, inv = torch.unique(torch.cat([ids, mask], 1), dim=0, return_inverse=True)
        shared = len(uniq) < B
        p_ids, p_mask = (uniq[:, :P], uniq[:, P:]) if shared else (ids, mask)
        if trunk is not None and shared:
            trunk_u = torch.zeros((len(p_ids), P, H), device=dev, dtype=tdt)
            trunk, trunk_full = trunk_u, trunk
        h = body(input_ids=p_ids, attention_mask=p_mask, position_ids=position_ids(p_mask), use_cache=True,
                 **{cache_kw: cache}).last_hidden_state[:, -1]
        if shared:
            if trunk is not None:
                trunk_full[:, :P] = trunk_u[inv]
                trunk = trunk_full
            cache.batch_select_indices(inv)
            h = h[inv]
        attn, next_pos = mask, position_ids(mask)[:, -1] + 1
        made = 0
        # 2 decode: one token per live row per step
        for t in range(max_new_tokens):
            logits = _head_logits(head, h)
            if temperature > 0:
                z = logits.float() / temperature
                warped = warp_logits(logits, temperature, top_k, top_p) if (top_k or top_p < 1.0) else z
                tok = draw(torch.softmax(warped, -1))
            else:
                z = logits.float()
                tok = logits.argmax(-1)
            out[rows, t] = tok
            if record:
                logp = torch.log_softmax(z, -1)
                lps[rows, t] = logp.gather(1, tok[:, None]).squeeze(1)
                ents[rows, t] = -(logp.exp() * logp).sum(-1)
                hid[rows, t] = h.to(hid.dtype)
            made = t + 1
            live = tok != eos_token_id
            if not bool(live.all()):
                if not bool(live.any()):
                    break
                keep = live.nonzero().squeeze(1)
                rows, tok, attn, next_pos = rows[keep], tok[keep], attn[keep], next_pos[keep]
                cache.batch_select_indices(keep)
            if t + 1 == max_new_tokens:
                break
            attn = torch.cat([attn, attn.new_ones(len(rows), 1)], 1)
            col[0] = P + t
            h = body(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos[:, None], use_cache=True,
                     **{cache_kw: cache}).last_hidden_state[:, -1]
            next_pos = next_pos + 1
    finally:
        if hook is not None:
            hook.remove()
    if trunk is not None:  # padding (the prompt's left padding) is zero, never whatever the model made there
        trunk[:, :P] *= mask[:, :, None].to(trunk.dtype)
        trunk = trunk[:, :P + made]
    if not record:
        return Sampled(out[:, :made], trunk=trunk)
    return Sampled(out[:, :made], lps[:, :made], ents[:, :made], hid[:, :made], trunk)
