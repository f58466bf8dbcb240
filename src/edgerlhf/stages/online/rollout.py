"""Phases 1 and 3 of a step: sampling the responses (``rollout``) and the no-grad forwards over them
(``rollout_forwards``: old log-probs, entropy, values, reference log-probs, the frozen trunk's output)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from edgerlhf.config import OnlineRLConfig
from edgerlhf.data.formatting import encode_prompt
from edgerlhf.distributed import item_seed
from edgerlhf.models.generation import left_pad
from edgerlhf.models.roles import Trunk


class Recorded(NamedTuple):
    """What the engine's sampler computed while decoding (``sampler=edgerlhf``). With ``rollout_logprobs`` the
    policy's log-probs, entropy and last hidden states of the response tokens (N, R[, H]), else None; the frozen
    trunk's output (N, P + R, H), None when no trunk is cached."""
    logprobs: torch.Tensor | None
    entropy: torch.Tensor | None
    hidden: torch.Tensor | None
    trunk: torch.Tensor | None


class Batch(NamedTuple):
    """One step's episodes as rectangles: prompt (left-padded to P) + response (right-padded to R)."""
    prompts: list
    ids: torch.Tensor         # (N, P + R)
    mask: torch.Tensor        # (N, P + R) attention mask
    n_prompt: int             # P
    resp_mask: torch.Tensor   # (N, R) 1 on response tokens up to and including EOS
    texts: list[str]
    ended: torch.Tensor       # (N,) bool: emitted EOS
    recorded: Recorded | None = None  # None with sampler=generate


class Forwards(NamedTuple):
    """The step's no-grad forwards over its episodes (CPU tensors, (N, R)); values and reference log-probs are
    None when the algorithm does not use them, the trunk None when no trunk is cached."""
    logprobs: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor | None
    ref_logprobs: torch.Tensor | None
    trunk: Trunk | None


def _pad_right(v: torch.Tensor, more: int) -> torch.Tensor:
    """``v`` (N, L[, H]) with ``more`` zero columns appended along L."""
    return F.pad(v, (0, 0) * (v.dim() - 2) + (0, more))


def rollout(roles, tok, prompts: list, cfg: OnlineRLConfig, batch_size: int, *, step: int = 0, offset: int = 0,
            prompt_len: int = 0) -> Batch:
    """Sample a response for each of ``prompts``: episodes ``offset ..`` of step ``step`` (this process's share
    under data parallelism). Each generate chunk draws from a seed of (run seed, step, its first episode), so the
    same episodes get the same samples at any world size and after a resume; prompts are left-padded to at least
    ``prompt_len`` (the step's longest, so every process decodes the shapes one process would)."""
    R, eos, pad = cfg.response_length, tok.eos_token_id, tok.pad_token_id
    prompt_ids, prompt_mask = left_pad([encode_prompt(tok, p) for p in prompts], pad)  # one P for the whole step
    if prompt_ids.shape[1] < prompt_len:
        more = prompt_len - prompt_ids.shape[1]
        prompt_ids = F.pad(prompt_ids, (more, 0), value=pad)
        prompt_mask = F.pad(prompt_mask, (more, 0), value=0)
    P = prompt_ids.shape[1]
    kw = dict(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, max_new_tokens=R, pad_token_id=pad,
              eos_token_id=eos)
    chunks, rec = [], {"logprobs": [], "entropy": [], "hidden": [], "trunk": []}
    for i in range(0, len(prompts), batch_size):
        ids, mask = prompt_ids[i:i + batch_size].to(roles.device), prompt_mask[i:i + batch_size].to(roles.device)
        torch.manual_seed(item_seed(cfg.seed, step, offset + i))
        if cfg.sampler == "edgerlhf":  # its decode already computed the trunk (and the old log-probs, hidden states)
            s = roles.sample_rollout(ids, mask, logprobs=cfg.rollout_logprobs, **kw)
            out, more = s.tokens.cpu(), R - s.tokens.shape[1]
            for k in ("logprobs", "entropy", "hidden") if cfg.rollout_logprobs else ():
                rec[k].append(_pad_right(getattr(s, k), more).cpu())
            if s.trunk is not None:
                rec["trunk"].append(F.pad(s.trunk, (0, 0, 0, more)))
        else:
            out = roles.generate(ids, mask, do_sample=True, **{**kw, "top_k": cfg.top_k or None})[:, P:].cpu()
        chunks.append(F.pad(out, (0, R - out.shape[1]), value=pad))
    resp = torch.cat(chunks)
    is_eos = resp == eos
    ended = is_eos.any(1)
    first = torch.where(ended, is_eos.float().argmax(1), torch.full_like(ended, R - 1, dtype=torch.long))
    resp_mask = (torch.arange(R)[None, :] <= first[:, None]).long()
    resp = torch.where(resp_mask.bool(), resp, torch.full_like(resp, pad))
    n = int(resp_mask.sum(1).max())  # drop columns that are padding in every episode (less forward work)
    resp, resp_mask = resp[:, :n], resp_mask[:, :n]
    texts = [tok.decode(r[: int(m.sum()) - int(e)].tolist(), skip_special_tokens=True).strip()
             for r, m, e in zip(resp, resp_mask, ended)]
    recorded = None
    if cfg.sampler == "edgerlhf":
        keep = resp_mask.bool()
        logprobs = entropy = hidden = None
        if cfg.rollout_logprobs:
            logprobs, entropy, hidden = (torch.cat(rec[k])[:, :n] for k in ("logprobs", "entropy", "hidden"))
            logprobs = logprobs.masked_fill(~keep, 0.0)  # after EOS: padding, as the tokens
            entropy = entropy.masked_fill(~keep, 0.0)
        recorded = Recorded(logprobs, entropy, hidden, torch.cat(rec["trunk"])[:, :P + n] if rec["trunk"] else None)
    return Batch(prompts, torch.cat([prompt_ids, resp], 1), torch.cat([prompt_mask, resp_mask], 1), P, resp_mask,
                 texts, ended, recorded)


def widen(b: Batch, n: int, pad: int) -> Batch:
    """``b`` with its response columns padded to ``n`` (padding: pad tokens, mask 0, zeros recorded), so that every
    process's tensors of the step have one shape and can be gathered."""
    more = n - b.resp_mask.shape[1]
    if more <= 0:
        return b
    N = len(b.ids)
    ids = torch.cat([b.ids, torch.full((N, more), pad, dtype=b.ids.dtype)], 1)
    mask = F.pad(b.mask, (0, more))
    resp_mask = F.pad(b.resp_mask, (0, more))
    rec = b.recorded
    if rec is not None:
        rec = Recorded(*(None if v is None else _pad_right(v, more) for v in rec))
    return b._replace(ids=ids, mask=mask, resp_mask=resp_mask, recorded=rec)


@torch.no_grad()
def rollout_forwards(roles, b: Batch, temperature: float, batch_size: int, *, values: bool,
                     reference: bool) -> Forwards:
    """Old log-probs and entropy for every episode, in chunks; values and reference log-probs only when the
    algorithm uses them (with ``beta=0`` the reference is never run). With a frozen trunk (LoRA in the top
    blocks only, ``cache_trunk=auto``) its output is computed here once per episode and kept under ``trunk``
    for every later forward of the step: the reference's, and each update epoch's."""
    if b.recorded is not None and b.recorded.logprobs is not None:
        return _recorded_forwards(roles, b, temperature, batch_size, values=values, reference=reference)
    kept = b.recorded.trunk if b.recorded is not None else None  # the trunk the decode computed
    out = {"logprobs": [], "entropy": [], "values": [], "ref_logprobs": []}
    trunks = []
    for i in range(0, len(b.ids), batch_size):
        ids, mask = b.ids[i:i + batch_size].to(roles.device), b.mask[i:i + batch_size].to(roles.device)
        trunk = roles.trunk(ids, mask) if kept is None else Trunk(kept[i:i + batch_size], roles.split)
        fw = roles.forward(ids, mask, b.n_prompt, temperature, values=values, entropy=True, trunk=trunk)
        out["logprobs"].append(fw.logprobs.cpu())
        if values:
            out["values"].append(fw.values.cpu())
        out["entropy"].append(fw.entropy.cpu())
        if reference:
            out["ref_logprobs"].append(roles.ref_logprobs(ids, mask, b.n_prompt, temperature, trunk).cpu())
        if trunk is not None:
            trunks.append(trunk)
    cat = {k: (torch.cat(v) if v else None) for k, v in out.items()}
    return Forwards(**cat, trunk=Trunk(torch.cat([t.hidden for t in trunks]), trunks[0].split) if trunks else None)


@torch.no_grad()
def _recorded_forwards(roles, b: Batch, temperature: float, batch_size: int, *, values: bool,
                       reference: bool) -> Forwards:
    """The forward phase when the sampler recorded its decode: the old log-probs and entropy are the ones the
    tokens were drawn with, values come from the recorded hidden states (a value head on the policy's trunk),
    the trunk is the one the decode computed. What is left to run: the reference (adapters off) over the
    blocks above the trunk, and values where they need a pass of their own (value adapter, separate layout)."""
    rec = b.recorded
    kept = None if rec.trunk is None else Trunk(rec.trunk, roles.split)
    vals = roles.values_from_hidden(rec.hidden.to(roles.device)) if values else None
    more = {"values": [], "ref_logprobs": []}
    for i in range(0, len(b.ids), batch_size):
        if vals is not None and not reference:
            break
        ids, mask = b.ids[i:i + batch_size].to(roles.device), b.mask[i:i + batch_size].to(roles.device)
        trunk = None if kept is None else Trunk(kept.hidden[i:i + batch_size].to(roles.device), roles.split)
        if values and vals is None:
            fw = roles.forward(ids, mask, b.n_prompt, temperature, values=True, trunk=trunk)
            more["values"].append(fw.values.cpu())
        if reference:
            more["ref_logprobs"].append(roles.ref_logprobs(ids, mask, b.n_prompt, temperature, trunk).cpu())
    res_values = None
    if values:
        res_values = vals.cpu() if vals is not None else torch.cat(more["values"])
    return Forwards(rec.logprobs, rec.entropy, res_values, torch.cat(more["ref_logprobs"]) if reference else None, kept)
