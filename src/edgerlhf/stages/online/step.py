"""One step of the engine, phase by phase: 1 rollout, 2 score, 3 forward, 4 advantages, 5 update, 6 stats
(the phases are the package docstring's)."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, NamedTuple

import torch

from edgerlhf.config import OnlineRLConfig
from edgerlhf.data.formatting import last_message
from edgerlhf.distributed import gather_objects, gather_rows, reduce_max, world
from edgerlhf.rewards.metrics import distinct_n, spearman
from edgerlhf.rl.algorithms import Algorithm, Rollout
from edgerlhf.rl.ppo_math import masked_mean
from edgerlhf.stages.online.rollout import rollout, rollout_forwards, widen
from edgerlhf.stages.online.update import Sizes, UpdateStats, oom_retry, update
from edgerlhf.tracking.memory import lean_heap, release_free_memory

RewardFn = Callable[[list, list[str]], list[float]]


class StepResult(NamedTuple):
    metrics: dict
    bad: bool       # NaN/inf somewhere: (part of) the update was skipped
    skipped: int    # optimizer steps skipped
    sample: str     # one decoded rollout with its rewards


def online_step(roles, tok, algo: Algorithm, reward: RewardFn, gold: RewardFn | None, prompts: list,
                cfg: OnlineRLConfig, optimizer, scheduler, sizes: Sizes, step: int = 0, offset: int = 0,
                prompt_len: int = 0, monitor: RewardFn | None = None) -> StepResult:
    """One step on ``prompts`` (one entry per episode); ``sizes`` holds the (OOM-adjusted) batch sizes. Without a
    gold (``gold=None``, the task's ``gold: none``) no metric claims one.

    Under data parallelism ``prompts`` are this process's share of the step's episodes, starting at episode
    ``offset``; the advantages and every metric are computed from the whole step's tensors, gathered to every
    process, so they are the numbers one process would compute."""
    rank, ws = world()
    t0 = time.perf_counter()
    # 1 rollout
    roles.train(False)
    b = oom_retry(lambda bs: rollout(roles, tok, prompts, cfg, bs, step=step, offset=offset, prompt_len=prompt_len),
                  sizes, "rollout_batch_size")
    if ws > 1:  # one response width for the whole step (the longest of any process)
        b = widen(b, int(reduce_max(torch.tensor([b.resp_mask.shape[1]]))[0]), tok.pad_token_id)
    release_free_memory()  # each phase hands back what it freed: the update's peak does not stack on it
    t_gen = time.perf_counter() - t0
    # 2 score
    t1 = time.perf_counter()
    scores = torch.tensor(reward(b.prompts, b.texts), dtype=torch.float32)
    # an ensemble's members' disagreement on these rollouts: the gold-free over-optimisation signal (the reward's
    # own members, or an ensemble that only watches)
    watched = torch.tensor(monitor(b.prompts, b.texts), dtype=torch.float32) if monitor is not None else None
    spread = getattr(monitor if monitor is not None else reward, "last_spread", None)
    spread = torch.tensor(spread, dtype=torch.float32) if spread is not None and len(spread) == len(b.texts) else None
    gold_scores = torch.tensor(gold(b.prompts, b.texts), dtype=torch.float32) if gold is not None else None
    if cfg.missing_eos_penalty:
        scores = scores - cfg.missing_eos_penalty * (~b.ended).float()
    release_free_memory()
    t_score = time.perf_counter() - t1
    # 3 forward: old log-probs (+ values, reference log-probs when the algorithm uses them)
    t2 = time.perf_counter()
    old = oom_retry(lambda bs: rollout_forwards(roles, b, cfg.temperature, bs, values=algo.needs_values,
                                                reference=algo.needs_reference),
                    sizes, "rollout_batch_size")
    release_free_memory()
    t_fwd = time.perf_counter() - t2
    # 4 advantages, over the whole step (every process's episodes: group baselines and whitening see them all)
    rm = b.resp_mask.float()
    full = Rollout(*(gather_rows(t) for t in (scores, old.logprobs, old.ref_logprobs, old.values, rm, b.ended)))
    adv_all = algo.advantages(full)
    mine = slice(rank * len(b.ids), (rank + 1) * len(b.ids))
    adv = adv_all._replace(**{k: getattr(adv_all, k)[mine] for k in ("advantages", "returns", "kl", "loss_mask")
                              if getattr(adv_all, k) is not None})
    # 5 update (skipped whole when rewards, advantages or values are not finite)
    t3 = time.perf_counter()
    if adv.finite:
        with lean_heap() if cfg.lean_update else contextlib.nullcontext():
            up = update(roles, algo, optimizer, scheduler, b, old, adv, cfg, sizes, step)
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
        "objective/entropy": masked_mean(gather_rows(old.entropy), rm_all).item(), **adv_all.metrics, **up.stats,
        "val/mean_length": rm_all.sum(1).mean().item(), "val/distinct_2": distinct_n(texts, 2),
        "val/eos_rate": full.ended.float().mean().item(), "train/lr": scheduler.get_last_lr()[0],
        "train/optimizer_steps": up.optimizer_steps, "train/early_stopped": int(up.early_stopped),
        "timing/generate": t_gen, "timing/score": t_score, "timing/forward": t_fwd, "timing/update": t_upd,
        "timing/step_s": step_s, "timing/tokens_per_s": n_tok / step_s,
        "timing/generate_tokens_per_s": n_tok / max(t_gen, 1e-9),
        "batch/rollout_batch_size": sizes.rollout_batch_size, "batch/mini_batch_size": sizes.mini_batch_size,
    }
    if gold_all is not None:
        # does the RM (at its precision) still rank the rollouts as the gold does? (falls when exploited)
        rho = spearman(full.scores.float().tolist(), gold_all.float().tolist())
        metrics.update({"objective/gold": gold_all.mean().item(), "objective/rm_gold_spearman": rho})
    if spread is not None:
        metrics["objective/ensemble_std"] = gather_rows(spread).mean().item()
    if watched is not None:
        metrics["objective/monitor_scores"] = gather_rows(watched).mean().item()
    if kl_seq is not None:
        metrics.update({"objective/kl": kl_seq.mean().item(),
                        "objective/kl_per_token": (adv_all.kl.sum() / rm_all.sum()).item()})
    kl_txt = f" | kl {kl_seq[0]:+.3f}" if kl_seq is not None else ""
    gold_txt = f" | gold {gold_all[0]:+.3f}" if gold_all is not None else ""
    sample = (f"[prompt] {last_message(b.prompts[0])}\n[response] {texts[0]}\n"
              f"[score {full.scores[0]:+.3f}{gold_txt}{kl_txt}]")
    bad = (not adv.finite) or up.optimizer_steps == 0 or up.skipped > 0
    return StepResult(metrics, bad, up.skipped, sample)
