"""The online-RL engine: one loop for every algorithm (PPO, GRPO, RLOO; ``rl/algorithms/``), written for
small memory: one base model serves policy, reference and (PPO's) value (``models/roles.py``); the reward
model is separate, at the precision chosen, or any callable.

Why our own loop: TRL's PPOTrainer left the library in 2026; TRL 1.16's GRPO/RLOO trainers put the reward
model on the policy's device at its own dtype, keep no shared-base layout, and copy each other method by
method. Here an algorithm is only ``advantages()`` and ``loss()``; this file is everything else. One step:

    # 1 rollout    prompts (k samples each) -> sampled responses (stop at EOS; a finished row leaves the
    #              batch: models/generation.sample), padded to one rectangle
    # 2 score      learned RM (or callable) and gold scorer on the decoded responses
    # 3 forward    old log-probs, entropy; values and reference log-probs only if the algorithm needs them;
    #              the frozen bottom blocks' output, once, for every later forward of the step
    # 4 advantage  algorithm.advantages(...)
    # 5 update     epochs over shuffled micro-batches, algorithm.loss(...), grad accumulation, NaN guard
    # 6 stats      namespaced metrics and one decoded sample

and around the steps: checkpoints every ``save_steps`` and on Ctrl-C / SIGTERM, exact resume, a stop after
``max_bad_steps`` NaN/inf steps in a row, CUDA OOM halving, the artifact and the summary. Every phase hands the
memory it freed back to the system (``malloc_trim``), so the update's peak does not stack on the rollout's.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from edgerlhf.config import ConfigError, OnlineRLConfig
from edgerlhf.data.formatting import encode_prompt, last_message
from edgerlhf.models.generation import left_pad
from edgerlhf.models.loading import resolve_device, resolve_dtype
from edgerlhf.models.roles import Trunk
from edgerlhf.distributed import shard, world
from edgerlhf.rl.algorithms import Algorithm, MicroBatch, Rollout, make_algorithm
from edgerlhf.rewards.metrics import spearman
from edgerlhf.rl.ppo_math import masked_mean
from edgerlhf.stages.loop import seed_everything
from edgerlhf.tracking import PeakMemory, RunDir
from edgerlhf.tracking.memory import lean_heap, release_free_memory
from edgerlhf.tracking.run import main_write_dir, say

RewardFn = Callable[[list, list[str]], list[float]]


class Batch(NamedTuple):
    """One step's episodes as rectangles: prompt (left-padded to P) + response (right-padded to R)."""
    prompts: list
    ids: torch.Tensor         # (N, P + R)
    mask: torch.Tensor        # (N, P + R) attention mask
    n_prompt: int             # P
    resp_mask: torch.Tensor   # (N, R) 1 on response tokens up to and including EOS
    texts: list[str]
    ended: torch.Tensor       # (N,) bool: emitted EOS
    # what the engine's sampler computed while decoding (None with sampler=generate): the frozen trunk's output
    # (N, P + R, H), None when no trunk is cached; with rollout_logprobs also the policy's log-probs, entropy and
    # last hidden states of the response tokens (N, R[, H]), else None
    recorded: dict | None = None


class UpdateStats(NamedTuple):
    stats: dict            # metric name -> mean over the optimizer steps taken
    skipped: int           # optimizer steps skipped for NaN/inf
    optimizer_steps: int
    early_stopped: bool


# -- data -----------------------------------------------------------------------------------------------

def load_prompts(cfg: OnlineRLConfig) -> list:
    if cfg.prompts == "builtin":
        from edgerlhf.data.task import build_task

        prompts = [r["prompt"] for r in build_task()["train"]]
    else:  # any file the loaders read: prompt-only, SFT or preference rows (their prompt part)
        from edgerlhf.data.loaders import load_prompt_rows

        prompts, _ = load_prompt_rows(cfg.prompts)
    if cfg.max_prompts:
        prompts = prompts[: cfg.max_prompts]
    if not prompts:
        raise ValueError(f"prompts={cfg.prompts!r} holds no prompt")
    return prompts


def prompts_for_step(prompts: list, step: int, n: int, seed: int) -> list:
    """Prompts [step*n, (step+1)*n) of an endless stream of reshuffled epochs: the data position is a
    function of the step alone, so a resumed run draws exactly the prompts the uninterrupted one would."""
    out, start = [], step * n
    for pos in range(start, start + n):
        epoch, i = divmod(pos, len(prompts))
        order = list(range(len(prompts)))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        out.append(prompts[order[i]])
    return out


def episodes_for_step(prompts: list, step: int, cfg: OnlineRLConfig) -> list:
    """The step's episodes: ``num_rollouts_per_step / k`` prompts, each repeated ``k`` times in a row (a group)."""
    k = cfg.samples_per_prompt
    return [p for p in prompts_for_step(prompts, step, cfg.num_rollouts_per_step // k, cfg.seed) for _ in range(k)]


# -- 1 rollout ------------------------------------------------------------------------------------------

def _oom_retry(fn: Callable[[int], object], size: int, what: str, on_shrink: Callable[[int], None]):
    """Run ``fn(size)``; on a CUDA out-of-memory error halve ``size`` and retry, down to 1."""
    while True:
        try:
            return fn(size)
        except torch.cuda.OutOfMemoryError:
            if size <= 1:
                raise
            size = max(1, size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            say(f"[online] CUDA out of memory in {what}: retrying with {what} batch {size}")
            on_shrink(size)


def rollout(roles, tok, prompts: list, cfg: OnlineRLConfig, batch_size: int, *, step: int = 0, offset: int = 0,
            prompt_len: int = 0) -> Batch:
    """Sample a response for each of ``prompts``: episodes ``offset ..`` of step ``step`` (this process's share
    under data parallelism). Each generate chunk draws from a seed of (run seed, step, its first episode), so the
    same episodes get the same samples at any world size and after a resume; prompts are left-padded to at least
    ``prompt_len`` (the step's longest, so every process decodes the shapes one process would)."""
    from edgerlhf.distributed import item_seed

    R, eos, pad = cfg.response_length, tok.eos_token_id, tok.pad_token_id
    prompt_ids, prompt_mask = left_pad([encode_prompt(tok, p) for p in prompts], pad)  # one P for the whole step
    if prompt_ids.shape[1] < prompt_len:
        more = prompt_len - prompt_ids.shape[1]
        prompt_ids = torch.nn.functional.pad(prompt_ids, (more, 0), value=pad)
        prompt_mask = torch.nn.functional.pad(prompt_mask, (more, 0), value=0)
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
                v = getattr(s, k)
                rec[k].append(torch.nn.functional.pad(v, (0, 0) * (v.dim() - 2) + (0, more)).cpu())
            if s.trunk is not None:
                rec["trunk"].append(torch.nn.functional.pad(s.trunk, (0, 0, 0, more)))
        else:
            out = roles.generate(ids, mask, do_sample=True, **{**kw, "top_k": cfg.top_k or None})[:, P:].cpu()
        chunks.append(torch.nn.functional.pad(out, (0, R - out.shape[1]), value=pad))
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
        recorded = {k: None for k in ("logprobs", "entropy", "hidden")}
        if cfg.rollout_logprobs:
            recorded = {k: torch.cat(rec[k])[:, :n] for k in ("logprobs", "entropy", "hidden")}
            recorded["logprobs"] = recorded["logprobs"].masked_fill(~keep, 0.0)  # after EOS: padding, as the tokens
            recorded["entropy"] = recorded["entropy"].masked_fill(~keep, 0.0)
        recorded["trunk"] = torch.cat(rec["trunk"])[:, :P + n] if rec["trunk"] else None
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
    mask = torch.nn.functional.pad(b.mask, (0, more))
    resp_mask = torch.nn.functional.pad(b.resp_mask, (0, more))
    rec = b.recorded
    if rec is not None:
        rec = {k: None if v is None else torch.nn.functional.pad(v, (0, 0) * (v.dim() - 2) + (0, more))
               for k, v in rec.items()}
    return b._replace(ids=ids, mask=mask, resp_mask=resp_mask, recorded=rec)


# -- 3 forward ------------------------------------------------------------------------------------------

@torch.no_grad()
def rollout_forwards(roles, b: Batch, temperature: float, batch_size: int, *, values: bool,
                     reference: bool) -> dict:
    """Old log-probs and entropy for every episode, in chunks; values and reference log-probs only when the
    algorithm uses them (with ``beta=0`` the reference is never run). With a frozen trunk (LoRA in the top
    blocks only, ``cache_trunk=auto``) its output is computed here once per episode and kept under ``trunk``
    for every later forward of the step: the reference's, and each update epoch's."""
    if b.recorded is not None and b.recorded["logprobs"] is not None:
        return _recorded_forwards(roles, b, temperature, batch_size, values=values, reference=reference)
    kept = b.recorded["trunk"] if b.recorded is not None else None  # the trunk the decode computed
    out = {"logprobs": [], "values": [], "entropy": [], "ref_logprobs": [], "trunk": []}
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
            out["trunk"].append(trunk)
    res = {k: (torch.cat(v) if v else None) for k, v in out.items() if k != "trunk"}
    res["trunk"] = Trunk(torch.cat([t.hidden for t in out["trunk"]]), out["trunk"][0].split) if out["trunk"] else None
    return res


@torch.no_grad()
def _recorded_forwards(roles, b: Batch, temperature: float, batch_size: int, *, values: bool,
                       reference: bool) -> dict:
    """The forward phase when the sampler recorded its decode: the old log-probs and entropy are the ones the
    tokens were drawn with, values come from the recorded hidden states (a value head on the policy's trunk),
    the trunk is the one the decode computed. What is left to run: the reference (adapters off) over the
    blocks above the trunk, and values where they need a pass of their own (value adapter, separate layout)."""
    rec = b.recorded
    res = {"logprobs": rec["logprobs"], "entropy": rec["entropy"], "values": None, "ref_logprobs": None,
           "trunk": None if rec["trunk"] is None else Trunk(rec["trunk"], roles.split)}
    vals = roles.values_from_hidden(rec["hidden"].to(roles.device)) if values else None
    more = {"values": [], "ref_logprobs": []}
    for i in range(0, len(b.ids), batch_size):
        if vals is not None and not reference:
            break
        ids, mask = b.ids[i:i + batch_size].to(roles.device), b.mask[i:i + batch_size].to(roles.device)
        trunk = None if res["trunk"] is None else Trunk(res["trunk"].hidden[i:i + batch_size].to(roles.device),
                                                        roles.split)
        if values and vals is None:
            more["values"].append(roles.forward(ids, mask, b.n_prompt, temperature, values=True, trunk=trunk).values.cpu())
        if reference:
            more["ref_logprobs"].append(roles.ref_logprobs(ids, mask, b.n_prompt, temperature, trunk).cpu())
    if values:
        res["values"] = vals.cpu() if vals is not None else torch.cat(more["values"])
    if reference:
        res["ref_logprobs"] = torch.cat(more["ref_logprobs"])
    return res


# -- 5 update -------------------------------------------------------------------------------------------

def update(roles, algo: Algorithm, optimizer, scheduler, b: Batch, old: dict, adv, cfg: OnlineRLConfig,
           sizes: dict, on_shrink: Callable[[int], None], step: int = 0) -> UpdateStats:
    """``update_epochs`` passes over the step's episodes in shuffled optimizer steps of
    ``mini_batch_size x gradient_accumulation_steps`` episodes, ``algorithm.loss`` per micro-batch.

    Under data parallelism ``b``, ``old`` and ``adv`` are this process's share of the step: each optimizer step
    takes ``1 / processes`` of its episodes from every process (micro-batches of at most ``sizes["mini_batch_size"]``),
    the losses are weighted by the whole optimizer step's episodes and tokens, and the gradients are summed over the
    processes before clipping: the update of one process with micro-batches of ``2b`` and of two with ``b`` is the
    same. The shuffles are seeded by (run seed, step, epoch, process), never by a running random state."""
    from edgerlhf.distributed import gather_rows, item_seed, reduce_sum, sync_gradients, world

    rank, ws = world()
    n = len(b.ids)
    per_rank = cfg.mini_batch_size * cfg.gradient_accumulation_steps // ws  # episodes per optimizer step, per process
    acc: dict[str, list[float]] = {}
    skipped = steps = 0
    early = False
    loss_mask = adv.loss_mask.float()
    all_masks = gather_rows(loss_mask)  # every process's, to count the tokens of an optimizer step
    roles.train()

    def opt_step(idx: torch.Tensor, micro: int, n_step: int, step_tokens: float) -> list[tuple[float, dict, int]]:
        optimizer.zero_grad(set_to_none=True)
        rows = []
        for j in range(0, len(idx), micro):
            sel = idx[j:j + micro]
            dev = lambda t: None if t is None else t[sel].to(roles.device)  # noqa: E731
            ids, mask = b.ids[sel].to(roles.device), b.mask[sel].to(roles.device)
            trunk = None if old["trunk"] is None else Trunk(old["trunk"].hidden[sel.to(old["trunk"].hidden.device)],
                                                            old["trunk"].split)
            fw = roles.forward(ids, mask, b.n_prompt, cfg.temperature, values=algo.needs_values,
                               entropy=algo.entropy_in_update, trunk=trunk)
            out = algo.loss(MicroBatch(fw.logprobs, fw.values, fw.entropy, dev(old["logprobs"]), dev(old["ref_logprobs"]),
                                       dev(old["values"]), dev(adv.advantages), dev(adv.returns), dev(loss_mask),
                                       len(sel), n_step, step_tokens))
            out.loss.backward()
            rows.append((out.loss.item(), {k: float(v.detach()) for k, v in out.stats.items()}, len(sel)))
        return rows

    for epoch in range(algo.update_epochs):
        perms = [torch.randperm(n, generator=torch.Generator().manual_seed(item_seed(cfg.seed, step, r, 1 + epoch)))
                 for r in range(ws)]  # every process's shuffle, so each can count the optimizer step's tokens
        for s in range(0, n, per_rank):
            idx = perms[rank][s:s + per_rank]
            n_step = sum(len(p[s:s + per_rank]) for p in perms)
            step_tokens = sum(float(all_masks[r * n + p[s:s + per_rank]].sum()) for r, p in enumerate(perms))
            rows = _oom_retry(lambda m: opt_step(idx, m, n_step, step_tokens), sizes["mini_batch_size"], "update",
                              on_shrink)
            sync_gradients(roles.trainable)
            w = sum(r[2] for r in rows)
            keys = sorted(rows[0][1])
            # what every process must agree on (skip, early stop) and report: one all-reduce per optimizer step
            row = reduce_sum(torch.tensor([float(not all(math.isfinite(r[0]) for r in rows))] +
                                          [sum(r[1][k] * r[2] for r in rows) / w for k in keys], dtype=torch.float64))
            mean = {k: float(row[1 + i]) / ws for i, k in enumerate(keys)}
            gn = float(torch.nn.utils.clip_grad_norm_(roles.trainable, cfg.max_grad_norm or float("inf")))
            if row[0] > 0 or not math.isfinite(gn):
                optimizer.zero_grad(set_to_none=True)  # NaN/inf never reaches the weights
                skipped += 1
                continue
            optimizer.step()
            scheduler.step()
            steps += 1
            for k, v in {**mean, "train/grad_norm": gn}.items():
                acc.setdefault(k, []).append(v)
            if algo.early_stop(mean):
                early = True
                break
        if early:
            break
    optimizer.zero_grad(set_to_none=True)
    return UpdateStats({k: sum(v) / len(v) for k, v in acc.items()}, skipped, steps, early)


class StepResult(NamedTuple):
    metrics: dict
    bad: bool       # NaN/inf somewhere: (part of) the update was skipped
    skipped: int    # optimizer steps skipped
    sample: str     # one decoded rollout with its rewards


def online_step(roles, tok, algo: Algorithm, reward: RewardFn, gold: RewardFn | None, prompts: list, cfg: OnlineRLConfig,
                optimizer, scheduler, sizes: dict, step: int = 0, offset: int = 0, prompt_len: int = 0) -> StepResult:
    """One step on ``prompts`` (one entry per episode); ``sizes`` holds the (OOM-adjusted) batch sizes. Without a
    gold (``gold=None``, the task's ``gold: none``) no metric claims one.

    Under data parallelism ``prompts`` are this process's share of the step's episodes, starting at episode
    ``offset``; the advantages and every metric are computed from the whole step's tensors, gathered to every
    process, so they are the numbers one process would compute."""
    from edgerlhf.rewards.metrics import distinct_n
    from edgerlhf.distributed import gather_objects, gather_rows, reduce_max, world

    rank, ws = world()
    t0 = time.perf_counter()
    # 1 rollout
    roles.train(False)
    b = _oom_retry(lambda bs: rollout(roles, tok, prompts, cfg, bs, step=step, offset=offset, prompt_len=prompt_len),
                   sizes["rollout_batch_size"], "rollout", lambda n: sizes.__setitem__("rollout_batch_size", n))
    if ws > 1:  # one response width for the whole step (the longest of any process)
        b = widen(b, int(reduce_max(torch.tensor([b.resp_mask.shape[1]]))[0]), tok.pad_token_id)
    release_free_memory()  # each phase hands back what it freed: the update's peak does not stack on it
    t_gen = time.perf_counter() - t0
    # 2 score
    t1 = time.perf_counter()
    scores = torch.tensor(reward(b.prompts, b.texts), dtype=torch.float32)
    gold_scores = torch.tensor(gold(b.prompts, b.texts), dtype=torch.float32) if gold is not None else None
    if cfg.missing_eos_penalty:
        scores = scores - cfg.missing_eos_penalty * (~b.ended).float()
    release_free_memory()
    t_score = time.perf_counter() - t1
    # 3 forward: old log-probs (+ values, reference log-probs when the algorithm uses them)
    t2 = time.perf_counter()
    old = _oom_retry(lambda bs: rollout_forwards(roles, b, cfg.temperature, bs, values=algo.needs_values,
                                                 reference=algo.needs_reference),
                     sizes["rollout_batch_size"], "rollout", lambda n: sizes.__setitem__("rollout_batch_size", n))
    release_free_memory()
    t_fwd = time.perf_counter() - t2
    # 4 advantages, over the whole step (every process's episodes: group baselines and whitening see them all)
    rm = b.resp_mask.float()
    full = Rollout(*(gather_rows(t) for t in (scores, old["logprobs"], old["ref_logprobs"], old["values"], rm, b.ended)))
    adv_all = algo.advantages(full)
    mine = slice(rank * len(b.ids), (rank + 1) * len(b.ids))
    adv = adv_all._replace(**{k: getattr(adv_all, k)[mine] for k in ("advantages", "returns", "kl", "loss_mask")
                              if getattr(adv_all, k) is not None})
    # 5 update (skipped whole when rewards, advantages or values are not finite)
    t3 = time.perf_counter()
    if adv.finite:
        with lean_heap() if cfg.lean_update else contextlib.nullcontext():
            up = update(roles, algo, optimizer, scheduler, b, old, adv, cfg, sizes,
                        lambda n: sizes.__setitem__("mini_batch_size", n), step)
    else:
        up = UpdateStats({}, skipped=1, optimizer_steps=0, early_stopped=False)
    release_free_memory()  # the update's activations: give them back before the next rollout stacks on them
    t_upd = time.perf_counter() - t3
    kl_seq = adv_all.kl.sum(1) if adv_all.kl is not None else None
    if kl_seq is not None:
        algo.after_step(kl_seq.mean().item(), len(full.scores))
    # 6 stats, of the whole step
    rm_all, texts = full.mask, gather_objects(b.texts)
    gold_all = gather_rows(gold_scores)
    step_s, n_tok = time.perf_counter() - t0, int(rm_all.sum())
    metrics = {
        "objective/scores": full.scores.mean().item(),
        "objective/entropy": masked_mean(gather_rows(old["entropy"]), rm_all).item(), **adv_all.metrics, **up.stats,
        "val/mean_length": rm_all.sum(1).mean().item(), "val/distinct_2": distinct_n(texts, 2),
        "val/eos_rate": full.ended.float().mean().item(), "train/lr": scheduler.get_last_lr()[0],
        "train/optimizer_steps": up.optimizer_steps, "train/early_stopped": int(up.early_stopped),
        "timing/generate": t_gen, "timing/score": t_score, "timing/forward": t_fwd, "timing/update": t_upd,
        "timing/step_s": step_s, "timing/tokens_per_s": n_tok / step_s, "timing/generate_tokens_per_s": n_tok / max(t_gen, 1e-9),
        "batch/rollout_batch_size": sizes["rollout_batch_size"], "batch/mini_batch_size": sizes["mini_batch_size"],
    }
    if gold_all is not None:
        metrics.update({"objective/gold": gold_all.mean().item(),
                        # does the RM (at its precision) still rank the rollouts as the gold does? (falls when exploited)
                        "objective/rm_gold_spearman": spearman(full.scores.float().tolist(), gold_all.float().tolist())})
    if kl_seq is not None:
        metrics.update({"objective/kl": kl_seq.mean().item(),
                        "objective/kl_per_token": (adv_all.kl.sum() / rm_all.sum()).item()})
    kl_txt = f" | kl {kl_seq[0]:+.3f}" if kl_seq is not None else ""
    gold_txt = f" | gold {gold_all[0]:+.3f}" if gold_all is not None else ""
    sample = (f"[prompt] {last_message(b.prompts[0])}\n[response] {texts[0]}\n"
              f"[score {full.scores[0]:+.3f}{gold_txt}{kl_txt}]")
    bad = (not adv.finite) or up.optimizer_steps == 0 or up.skipped > 0
    return StepResult(metrics, bad, up.skipped, sample)


# -- the run --------------------------------------------------------------------------------------------

class _Interrupt:
    """First Ctrl-C or SIGTERM (what ``timeout``, job schedulers and container stops send): finish the
    current step, write a checkpoint, stop as interrupted. A second one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, name: str):
        self.name = name
        self.requested = False
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                if self.requested:
                    raise KeyboardInterrupt
                self.requested = True
                what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
                say(f"\n[{self.name}] {what}: finishing this step, then writing a checkpoint (again to stop now)")

            for s in self.SIGNALS:
                self._old[s] = signal.getsignal(s)
                signal.signal(s, handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def _resume_config(cfg: OnlineRLConfig) -> tuple[OnlineRLConfig, Path, Path]:
    """(config to run, run folder to continue, checkpoint) for ``resume=``; the stored config must agree."""
    import yaml

    from edgerlhf.tracking.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(cfg.resume)
    run_path = ckpt.parent.parent
    stored = yaml.safe_load((run_path / "config.yaml").read_text())
    if stored.get("stage") != cfg.stage:
        raise ConfigError([f"resume={cfg.resume!r} is a {stored.get('stage')!r} run; resume it with "
                           f"`edgerlhf {stored.get('stage')} resume=...`"], str(run_path / "config.yaml"))
    ours = dict(vars(cfg))
    diff = [k for k in stored if k != "stage" and k not in cfg.RESUMABLE and stored[k] != ours.get(k)]
    if diff:
        raise ConfigError([f"{k}={ours.get(k)!r} differs from the resumed run's {stored[k]!r} (only "
                           f"{', '.join(sorted(cfg.RESUMABLE - {'resume'}))} may change on resume)" for k in diff],
                          str(run_path / "config.yaml"))
    return cfg, run_path, ckpt


def resume_base(resume: str) -> dict:
    """The stored config of the run ``resume`` points at (the CLI's base for ``edgerlhf ppo resume=...``)."""
    import yaml

    from edgerlhf.tracking.checkpoint import latest_checkpoint

    stored = yaml.safe_load((latest_checkpoint(resume).parent.parent / "config.yaml").read_text())
    stored.pop("stage", None)
    return stored


def _logged_steps(path: Path) -> list[dict]:
    """The per-step metrics already in a run folder (last value per step, e.g. after an earlier resume)."""
    import json

    rows = {}
    for line in (path / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "objective/scores" in r:
            rows[r["step"]] = r
    return [rows[k] for k in sorted(rows)]


def _make_reward(cfg: OnlineRLConfig, reward_fn: RewardFn | None, device) -> tuple[RewardFn, dict]:
    if reward_fn is not None:
        return reward_fn, {"reward": getattr(reward_fn, "__name__", type(reward_fn).__name__), "reward_precision": "callable"}
    if not cfg.reward:
        raise ConfigError(["reward is required: a reward run folder (edgerlhf reward ...), a quantized RM folder, "
                           "or (Python API) reward_fn=callable"])
    from edgerlhf.models.adapters import find_artifact, read_artifact_meta
    from edgerlhf.rewards.learned import load_reward_model

    meta = read_artifact_meta(find_artifact(cfg.reward))
    precision = None if meta.get("kind") == "quantized" or meta.get("base_precision", "fp32") != "fp32" else cfg.reward_precision
    rm = load_reward_model(cfg.reward, precision, device=str(device), batch_size=cfg.rollout_batch_size)
    return rm, {"reward": str(cfg.reward), "reward_precision": rm.meta.get("precision", cfg.reward_precision),
                "reward_backend": rm.meta.get("backend", "")}


def run(cfg: OnlineRLConfig, reward_fn: RewardFn | None = None, algorithm: Algorithm | None = None) -> Path:
    """Align the policy with the config's online algorithm; returns the run folder (``adapter/`` is the
    aligned policy). ``reward_fn(prompts, responses) -> rewards`` replaces the learned RM (Python API)."""
    from edgerlhf.models.roles import Roles
    from edgerlhf.rewards.gold import make_gold
    from edgerlhf.stages.loop import make_optimizer
    from edgerlhf.tracking.checkpoint import load_checkpoint, save_checkpoint, set_rng_state

    name = cfg.stage
    # 0 set-up: bad input fails before any folder is written
    from edgerlhf.distributed import any_process, barrier, broadcast_params, divisible, is_main
    from edgerlhf.stages.loop import join_launch

    cfg = join_launch(cfg)
    rank, ws = world()
    per_opt = cfg.mini_batch_size * cfg.gradient_accumulation_steps
    errs = divisible({"num_rollouts_per_step": cfg.num_rollouts_per_step,
                      "mini_batch_size x gradient_accumulation_steps": per_opt}, ws)
    if errs:
        raise ConfigError(errs, f"the launch of {ws} processes (these counts are over all processes; each takes its share)")
    ckpt = run_path = None
    if cfg.resume:
        cfg, run_path, ckpt = _resume_config(cfg)
    algo = algorithm or make_algorithm(cfg)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    prompts = load_prompts(cfg)
    total_steps = cfg.steps
    reward, reward_info = _make_reward(cfg, reward_fn, device)
    gold = make_gold(cfg.gold, device=str(device))  # None for gold=none

    run_dir = RunDir(cfg, reopen=run_path)
    mem = PeakMemory().start()
    try:
        t_load = time.perf_counter()
        roles = Roles(cfg, dtype=dtype, device=device, values=algo.needs_values, reference=algo.needs_reference)
        tok = roles.tokenizer
        shared_mb = 0.0
        if hasattr(reward, "model"):  # a learned RM: its untouched base weights (the embedding) are the policy's
            from edgerlhf.models.loading import share_identical_weights

            shared_mb = share_identical_weights(reward.model, roles.policy) / 2**20
        release_free_memory()
        t_load = time.perf_counter() - t_load
        n_trainable = sum(p.numel() for p in roles.trainable)
        opt_steps_total = total_steps * algo.update_epochs * (cfg.num_rollouts_per_step // per_opt)
        broadcast_params(roles.trainable)  # every process starts from rank 0's values
        holder = torch.nn.Module()
        holder.params = torch.nn.ParameterList(roles.trainable)
        optimizer, scheduler = make_optimizer(holder, cfg, opt_steps_total)
        # per process: the generate / forward chunk, and the update's micro-batch (at most its share of a step)
        sizes = {"rollout_batch_size": cfg.rollout_batch_size, "mini_batch_size": min(cfg.mini_batch_size, per_opt // ws)}
        state = {"bad_in_row": 0, "bad_steps": 0, "skipped_updates": 0, "episodes": 0}
        start = 0
        seed_everything(cfg.seed)  # rollouts start from the seed whatever loading drew (layouts compare 1:1)
        if ckpt is not None:
            c = load_checkpoint(ckpt)
            roles.load_trainable_state(c["tensors"])
            optimizer.load_state_dict(c["optimizer"])
            scheduler.load_state_dict(c["scheduler"])
            set_rng_state(c["rng"])
            start = c["state"]["step"]
            algo.load_state(c["state"].get("algorithm", c["state"]))
            if c["state"].get("world_size", 1) == ws:  # sizes OOM halving chose: per process, so for this world
                sizes.update(c["state"]["sizes"])
            state.update(c["state"]["counters"])
            say(f"[{name}] resumed from {ckpt} at step {start}")
        value_txt = f"value={cfg.value_model}, " if algo.needs_values else ""
        group_txt = f" ({algo.samples_per_prompt} per prompt)" if algo.samples_per_prompt > 1 else ""
        say(f"[{name}] {cfg.policy or cfg.model} on {device} ({str(dtype).removeprefix('torch.')}), layout={cfg.layout}, "
            f"{value_txt}base={cfg.base_precision}, reference={'on' if algo.needs_reference else 'off'}; "
            f"{n_trainable:,} trainable parameters; reward: {reward_info['reward']} ({reward_info['reward_precision']}); "
            f"{total_steps} steps x {cfg.num_rollouts_per_step} episodes{group_txt}")

        def checkpoint(step):  # the main process writes it; every process waits until it is complete
            from edgerlhf.tracking.checkpoint import checkpoint_path

            if is_main():
                save_checkpoint(run_dir.path, step, roles.trainable_state(), optimizer, scheduler,
                                {"algorithm": algo.state(), "sizes": dict(sizes), "counters": dict(state),
                                 "world_size": ws}, cfg.save_total_limit)
            barrier()
            return checkpoint_path(run_dir.path, step)

        from tqdm.auto import tqdm

        bar = tqdm(range(start, total_steps), desc=name, disable=not cfg.progress, unit="step", dynamic_ncols=True,
                   initial=start, total=total_steps)
        # a resumed run's summary covers the whole run: the steps logged before the checkpoint come back too
        history = [r for r in _logged_steps(run_dir.path) if r["step"] <= start] if ckpt is not None else []
        with _Interrupt(name) as interrupt:
            for step in bar:
                episodes = episodes_for_step(prompts, step, cfg)  # the whole step's; this process takes its share
                share = len(episodes) // ws
                st = online_step(roles, tok, algo, reward, gold, shard(episodes, rank, ws), cfg, optimizer, scheduler,
                                 sizes, step=step, offset=rank * share,
                                 prompt_len=max(len(encode_prompt(tok, p)) for p in episodes) if ws > 1 else 0)
                state["bad_in_row"] = state["bad_in_row"] + 1 if st.bad else 0
                state["bad_steps"] += int(st.bad)
                state["skipped_updates"] += st.skipped
                state["episodes"] += cfg.num_rollouts_per_step
                metrics = {**st.metrics, "train/skipped_updates": state["skipped_updates"],
                           "train/episodes": state["episodes"], **mem.as_metrics()}
                run_dir.log(metrics, step=step + 1)
                history.append(metrics)
                if (step % cfg.sample_every) == 0:
                    run_dir.log_text("sample/rollout", st.sample, step + 1)
                post = {"score": f"{metrics['objective/scores']:+.3f}"}
                if "objective/gold" in metrics:
                    post["gold"] = f"{metrics['objective/gold']:+.3f}"
                if "objective/kl" in metrics:
                    post["kl"] = f"{metrics['objective/kl']:.2f}"
                bar.set_postfix(**post)
                if state["bad_in_row"] >= cfg.max_bad_steps:
                    raise FloatingPointError(
                        f"NaN/inf in rewards, loss or gradients for {state['bad_in_row']} steps in a row (step {step + 1}); "
                        "each update was skipped, so no weight was ever updated with them and the last checkpoint is "
                        "intact. Lower learning_rate, or check the reward model / reward_fn outputs.")
                if cfg.save_steps and (step + 1) % cfg.save_steps == 0 and not st.bad:
                    checkpoint(step + 1)
                if any_process(interrupt.requested):  # all stop at the same step
                    path = checkpoint(step + 1)
                    say(f"[{name}] checkpoint written: {path}; continue with: edgerlhf {name} resume={run_dir.path}")
                    raise KeyboardInterrupt
        bar.close()
        return _finish(cfg, algo, run_dir, roles, tok, history, state, reward_info, mem, t_load, n_trainable,
                       device, dtype, shared_mb, gold)
    except BaseException as e:
        mem.stop()
        run_dir.fail(e)
        raise


def _finish(cfg, algo, run_dir, roles, tok, history, state, reward_info, mem, t_load, n_trainable, device, dtype,
            shared_mb: float = 0.0, gold=None):
    gold_eval = {}
    source = cfg.gold_eval_source(trains_on_builtin=cfg.prompts == "builtin")
    if source:
        from edgerlhf.data.taskfile import held_out_prompts
        from edgerlhf.rewards.gold import gold_eval as run_gold_eval

        roles.train(False)
        gold_eval = run_gold_eval(roles.policy, tok, held_out_prompts(source, cfg.gold_eval_prompts), seed=cfg.seed,
                                  max_new_tokens=cfg.response_length, progress=cfg.progress, gold=gold)
        for text, g in list(zip(gold_eval.pop("responses"), gold_eval.pop("gold")))[:8]:
            run_dir.log_text("sample/gold_eval", f"[gold {g:+.2f}] {text}", len(history))
        run_dir.log(gold_eval, step=cfg.steps)

    def fill(tmp: Path):
        from safetensors.torch import save_file

        from edgerlhf.models.adapters import fill_policy_artifact

        # the SFT adapter travels with the policy adapter: the artifact is self-contained
        fill_policy_artifact(tmp, roles.policy, tok, stage=cfg.stage, seed=cfg.seed, model_name=cfg.model,
                             sft_policy=cfg.policy, base_precision=cfg.base_precision, algorithm=algo.name,
                             use_chat_template=cfg.chat_template, **reward_info)
        if roles.value_head is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in roles.value_head.state_dict().items()},
                      str(tmp / "value_head.safetensors"))

    artifact = main_write_dir(run_dir.path / "adapter", fill)
    last = history[-1] if history else {}
    k = max(1, len(history) // 5)  # first / last fifth of the run, for a less noisy before/after
    head, tail = history[:k], history[-k:]

    def avg(rows, key):
        vals = [r[key] for r in rows if key in r]
        return sum(vals) / len(vals) if vals else math.nan

    step_times = sorted(r["timing/step_s"] for r in history)
    stats = {
        "artifact": str(artifact), "device": str(device), "compute_dtype": str(dtype).removeprefix("torch."),
        "algorithm": algo.name, "layout": cfg.layout, "base_precision": cfg.base_precision, **reward_info,
        "reference": algo.needs_reference, "samples_per_prompt": algo.samples_per_prompt,
        "trainable_params": n_trainable, "steps": cfg.steps, "episodes": state["episodes"],
        "bad_steps": state["bad_steps"], "skipped_updates": state["skipped_updates"],
        "objective/scores_first": avg(head, "objective/scores"), "objective/scores_last": avg(tail, "objective/scores"),
        "objective/kl_last": avg(tail, "objective/kl"), "val/mean_length_last": avg(tail, "val/mean_length"),
        "val/distinct_2_last": avg(tail, "val/distinct_2"),
        "timing/step_s_median": step_times[len(step_times) // 2] if step_times else math.nan,
        "timing/train_s": sum(r["timing/step_s"] for r in history), "timing/load_s": t_load,
        "timing/generate_s": sum(r["timing/generate"] for r in history),
        "timing/update_s": sum(r["timing/update"] for r in history),
        "batch/final_rollout_batch_size": last.get("batch/rollout_batch_size"),
        "batch/final_mini_batch_size": last.get("batch/mini_batch_size"),
        **gold_eval, **mem.stop().as_metrics(), "memory/rm_shared_mb": round(shared_mb, 1),
    }
    if gold is not None:
        stats.update({"gold": cfg.gold, "objective/gold_first": avg(head, "objective/gold"),
                      "objective/gold_last": avg(tail, "objective/gold")})
    if algo.needs_values:
        stats["value_model"] = cfg.value_model
    kl_txt = f", KL {stats['objective/kl_last']:.2f} nats" if math.isfinite(stats["objective/kl_last"]) else ""
    gold_txt = (f", gold {stats['objective/gold_first']:+.3f} -> {stats['objective/gold_last']:+.3f}"
                if gold is not None else ", no gold (the learned RM is a proxy)")
    say(f"\n[{cfg.stage}] {len(history)} steps: learned-RM score {stats['objective/scores_first']:+.3f} -> "
        f"{stats['objective/scores_last']:+.3f}{gold_txt}{kl_txt}; median step {stats['timing/step_s_median']:.1f}s; "
        f"peak memory {stats['memory/peak_mb']:.0f} MB; adapter: {artifact}")
    if gold_eval:
        say(f"[{cfg.stage}] gold ({cfg.gold}) on {gold_eval['eval/gold_n']} held-out prompts: {gold_eval['eval/gold_mean']:+.3f} "
            f"(95% CI {gold_eval['eval/gold_ci95_low']:+.3f} .. {gold_eval['eval/gold_ci95_high']:+.3f})")
    return run_dir.finish(stats)
