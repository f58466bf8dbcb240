"""The training loop that SFT and the reward model share.

Why not transformers' Trainer / TRL's trainers: one small loop gives every stage the same namespaced
metrics, NaN/inf guard, progress bar and stage-local memory probe, and leaves dtype choice to us (TRL
configs default to bf16, 7-20x slower on CPUs without bf16 units). Optimizer and schedule come from
torch/transformers.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import Callable, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from edgerlhf.distributed import broadcast_params, init_from_env, item_seed, reduce_sum, shard, sync_gradients, world


class StepStats(NamedTuple):
    loss: float
    grad_norm: float
    tokens: int
    step_s: float
    skipped: bool
    extra: dict


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)


def join_launch(cfg):
    """Join the process group of ``torchrun`` / ``accelerate launch`` when launched by one (nothing otherwise), and
    return the config this process runs: progress bars on the main process only."""
    rank, _ = init_from_env(cfg.device)
    return dataclasses.replace(cfg, progress=False) if rank > 0 and cfg.progress else cfg


def total_steps_for(cfg, n_rows: int) -> int:
    """Optimizer steps of a supervised stage: ``max_steps``, or the epochs over ``n_rows`` rows with a step of
    ``per_device_train_batch_size x gradient_accumulation_steps x processes`` rows."""
    per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world()[1]
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, int(max(1, n_rows // per_step) * cfg.num_train_epochs))


def make_optimizer(model, cfg, total_steps: int):
    from transformers import get_scheduler  # noqa: PLC0415 - transformers is heavy; only where an optimizer is built

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    return optimizer, scheduler


def train_step(model, optimizer, scheduler, micro_batches: list, loss_fn: Callable, max_grad_norm: float,
               count: Callable | None = None) -> StepStats:
    """One optimizer step over the micro-batches; NaN/inf never reaches the weights.

    Two weightings, the same at any world size (every process holds its share of the step's rows):
    ``count=None``: every micro-batch (of equal size) weighs the same, ``loss_fn(model, batch)`` returns its mean
    loss, and the gradient is the mean over the micro-batches of every process. ``count(batch) -> targets``: every
    target token of the whole step weighs the same (transformers' ``num_items_in_batch``): ``loss_fn(model, batch,
    n)`` returns its summed loss divided by ``n``, the step's targets over every process."""
    t0 = time.perf_counter()
    ws = world()[1]
    optimizer.zero_grad(set_to_none=True)
    denom = None
    if count is not None:
        denom = float(reduce_sum(torch.tensor([float(sum(count(b) for b in micro_batches))], dtype=torch.float64))[0])
    losses, tokens, extras = [], 0, []
    for b in micro_batches:
        loss, n_tok, extra = loss_fn(model, b) if denom is None else loss_fn(model, b, max(denom, 1.0))
        losses.append(loss.detach().float())
        tokens += n_tok
        extras.append(extra)
        (loss if denom is not None else loss / len(micro_batches)).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    sync_gradients(params, scale=1.0 if denom is not None else 1.0 / ws)
    keys = sorted(extras[0]) if extras else []
    local = torch.stack(losses).sum() if denom is not None else torch.stack(losses).mean()
    # one all-reduce for what the processes must agree on, or report for the whole step: the loss (summed, or a
    # mean of equal shares), the tokens, the extra metrics (means of equal shares)
    row = torch.tensor([float(local), float(tokens)] + [sum(e[k] for e in extras) / len(extras) for k in keys],
                       dtype=torch.float64)
    row = reduce_sum(row)
    loss = float(row[0]) if denom is not None else float(row[0]) / ws
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf")))
    skipped = not (math.isfinite(loss) and math.isfinite(grad_norm))  # the same on every process
    if skipped:
        optimizer.zero_grad(set_to_none=True)
    else:
        optimizer.step()
        scheduler.step()
    extra = {k: float(row[2 + i]) / ws for i, k in enumerate(keys)}
    return StepStats(loss, grad_norm, int(row[1]), time.perf_counter() - t0, skipped, extra)


def fit(model, optimizer, scheduler, rows: list, collate: Callable, loss_fn: Callable, cfg, total_steps: int,
        run_dir, mem, desc: str, on_eval: Callable[[int], None] | None = None, max_bad_in_row: int = 3,
        count: Callable | None = None) -> dict:
    """Run ``total_steps`` optimizer steps over shuffled ``rows``; log every ``cfg.logging_steps``. Under data
    parallelism every process draws the same shuffled order and takes its contiguous share of each micro-step's
    ``per_device_train_batch_size x processes`` rows, so one process with a micro-batch of ``2b`` and two with
    ``b`` train on the same rows. ``count``: see :func:`train_step`."""
    rank, ws = world()
    broadcast_params([p for p in model.parameters() if p.requires_grad])  # every process starts from rank 0's values
    if rank > 0:  # dropout: each process's rows get masks of their own (rank 0 keeps the run's stream)
        torch.manual_seed(item_seed(cfg.seed, 0, rank))
    rng = random.Random(cfg.seed)
    order: list[int] = []
    bs, accum = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    window: list[StepStats] = []
    losses, skipped_steps, bad_in_row, tokens, train_s = [], 0, 0, 0, 0.0
    model.train()
    bar = tqdm(range(1, total_steps + 1), desc=desc, disable=not cfg.progress, unit="step", dynamic_ncols=True)
    for step in bar:
        micro = []
        for _ in range(accum):  # 1 draw micro-batches (reshuffle at each epoch boundary)
            while len(order) < bs * ws:
                fresh = list(range(len(rows)))
                rng.shuffle(fresh)
                order += fresh
            idx, order = order[:bs * ws], order[bs * ws:]
            micro.append(collate([rows[i] for i in shard(idx, rank, ws)]))
        # 2 forward/backward/update
        st = train_step(model, optimizer, scheduler, micro, loss_fn, cfg.max_grad_norm, count)
        window.append(st)
        tokens += st.tokens
        train_s += st.step_s
        if st.skipped:  # 3 guard
            skipped_steps += 1
            bad_in_row += 1
            if bad_in_row >= max_bad_in_row:
                raise FloatingPointError(
                    f"loss or gradients were NaN/inf for {bad_in_row} steps in a row (step {step}); lower "
                    "learning_rate or check the data. No weight was ever updated with them.")
        else:
            bad_in_row = 0
            losses.append(st.loss)
        if step % cfg.logging_steps == 0 or step == total_steps:  # 4 log
            good = [s for s in window if not s.skipped] or window
            metrics = {"train/loss": sum(s.loss for s in good) / len(good), "train/lr": scheduler.get_last_lr()[0],
                       "train/grad_norm": sum(s.grad_norm for s in good) / len(good),
                       "train/tokens_per_s": sum(s.tokens for s in window) / sum(s.step_s for s in window),
                       "train/epoch": step * bs * accum * ws / len(rows),
                       "timing/step_s": sum(s.step_s for s in window) / len(window),
                       "train/skipped_steps": skipped_steps, **mem.as_metrics()}
            for k in good[0].extra:
                metrics[k] = sum(s.extra[k] for s in good) / len(good)
            run_dir.log(metrics, step=step)
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", lr=f"{metrics['train/lr']:.1e}")
            window = []
        if on_eval and cfg.eval_steps and step % cfg.eval_steps == 0 and step != total_steps:  # 5 evaluate
            on_eval(step)
            model.train()
    bar.close()
    return {"losses": losses, "skipped_steps": skipped_steps, "tokens": tokens, "train_s": train_s}


def fit_stats(history: dict, total_steps: int) -> dict:
    """The summary numbers every supervised stage reports about its :func:`fit` (steps, first/last loss,
    throughput, training time)."""
    losses = history["losses"]
    return {"steps": total_steps, "skipped_steps": history["skipped_steps"],
            "train/loss_first": losses[0] if losses else None, "train/loss_last": losses[-1] if losses else None,
            "train/tokens_per_s": history["tokens"] / max(history["train_s"], 1e-9),
            "timing/train_s": history["train_s"]}


def held_out_line(stage: str, before: dict, after: dict, keys: tuple, history: dict, total_steps: int,
                  peak_mb: float, artifact) -> str:
    """The closing line of a supervised stage: the held-out numbers before -> after, steps, time, peak, artifact."""
    line = ", ".join(f"{k.split('/')[-1]} {before.get(k, float('nan')):.3f} -> {v:.3f}" for k, v in after.items()
                     if k in keys)
    return (f"[{stage}] held out: {line}; {total_steps} steps in {history['train_s']:.0f}s; "
            f"peak memory {peak_mb:.0f} MB; adapter: {artifact}")
