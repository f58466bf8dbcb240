"""The prompts of an online run and the step's episodes: a pure function of the step, so a resumed run (and
any number of processes) draws exactly the prompts the uninterrupted one-process run would."""

from __future__ import annotations

import random

from edgerlhf.config import OnlineRLConfig
from edgerlhf.data.loaders import load_prompt_rows
from edgerlhf.data.task import build_task


def load_prompts(cfg: OnlineRLConfig) -> list:
    if cfg.prompts == "builtin":
        prompts = [r["prompt"] for r in build_task()["train"]]
    else:  # any file the loaders read: prompt-only, SFT or preference rows (their prompt part)
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


def episodes_for_step(prompts: list, step: int, cfg: OnlineRLConfig, k: int) -> list:
    """The step's episodes: ``num_rollouts_per_step / k`` prompts, each repeated ``k`` times in a row (a group;
    ``k`` is the algorithm's ``samples_per_prompt``)."""
    return [p for p in prompts_for_step(prompts, step, cfg.num_rollouts_per_step // k, cfg.seed) for _ in range(k)]
