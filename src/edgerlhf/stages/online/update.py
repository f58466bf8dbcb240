"""Phase 5 of a step: the update (epochs of shuffled optimizer steps, ``algorithm.loss`` per micro-batch,
gradient accumulation and sync, the NaN guard), and the batch sizes CUDA OOM halving adjusts."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from edgerlhf.config import OnlineRLConfig
from edgerlhf.distributed import gather_rows, item_seed, reduce_sum, sync_gradients, world
from edgerlhf.models.roles import Trunk
from edgerlhf.rl.algorithms import Advantages, Algorithm, MicroBatch
from edgerlhf.stages.online.rollout import Batch, Forwards
from edgerlhf.tracking.run import say


@dataclass
class Sizes:
    """Per process: the generate / forward chunk and the update's micro-batch. CUDA OOM halving lowers them for
    the rest of the run; a checkpoint stores them (as a dict, ``dataclasses.asdict``)."""
    rollout_batch_size: int
    mini_batch_size: int


_WHAT = {"rollout_batch_size": "rollout", "mini_batch_size": "update"}  # the size's name -> the phase, as printed


def oom_retry(fn: Callable[[int], object], sizes: Sizes, field: str):
    """Run ``fn(size)`` at ``sizes.<field>``; on a CUDA out-of-memory error halve it (in ``sizes``, so later
    steps start there) and retry, down to 1."""
    size, what = getattr(sizes, field), _WHAT[field]
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
            setattr(sizes, field, size)


class UpdateStats(NamedTuple):
    stats: dict            # metric name -> mean over the optimizer steps taken
    skipped: int           # optimizer steps skipped for NaN/inf
    optimizer_steps: int
    early_stopped: bool


def _rows_on(t: torch.Tensor | None, sel: torch.Tensor, device) -> torch.Tensor | None:
    """Rows ``sel`` of ``t`` on ``device`` (None stays None)."""
    return None if t is None else t[sel].to(device)


def update(roles, algo: Algorithm, optimizer, scheduler, b: Batch, old: Forwards, adv: Advantages,
           cfg: OnlineRLConfig, sizes: Sizes, step: int = 0) -> UpdateStats:
    """``algo.update_epochs`` passes over the step's episodes in shuffled optimizer steps of
    ``mini_batch_size x gradient_accumulation_steps`` episodes, ``algorithm.loss`` per micro-batch.

    Under data parallelism ``b``, ``old`` and ``adv`` are this process's share of the step: each optimizer step
    takes ``1 / processes`` of its episodes from every process (micro-batches of at most ``sizes.mini_batch_size``),
    the losses are weighted by the whole optimizer step's episodes and tokens, and the gradients are summed over the
    processes before clipping: the update of one process with micro-batches of ``2b`` and of two with ``b`` is the
    same. The shuffles are seeded by (run seed, step, epoch, process), never by a running random state."""
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
            dev = functools.partial(_rows_on, sel=sel, device=roles.device)
            ids, mask = b.ids[sel].to(roles.device), b.mask[sel].to(roles.device)
            trunk = None if old.trunk is None else Trunk(old.trunk.hidden[sel.to(old.trunk.hidden.device)],
                                                         old.trunk.split)
            fw = roles.forward(ids, mask, b.n_prompt, cfg.temperature, values=algo.needs_values,
                               entropy=algo.entropy_in_update, trunk=trunk)
            out = algo.loss(MicroBatch(fw.logprobs, fw.values, fw.entropy, dev(old.logprobs), dev(old.ref_logprobs),
                                       dev(old.values), dev(adv.advantages), dev(adv.returns), dev(loss_mask),
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
            rows = oom_retry(functools.partial(opt_step, idx, n_step=n_step, step_tokens=step_tokens), sizes,
                             "mini_batch_size")
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
