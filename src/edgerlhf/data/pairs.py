"""Preference pairs for training (reward model, DPO): where they come from and how they are split."""

from __future__ import annotations

import json
import random
from pathlib import Path

from edgerlhf.data.loaders import load_preference_rows


def split_by_prompt(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Held-out rows are those of a random ``eval_fraction`` of the distinct prompts: no prompt is in both."""
    keys = sorted({json.dumps(r["prompt"], sort_keys=True) for r in rows})
    random.Random(seed).shuffle(keys)
    n_eval = max(1, round(len(keys) * eval_fraction)) if len(keys) > 1 else 0
    held = set(keys[:n_eval])
    train = [r for r in rows if json.dumps(r["prompt"], sort_keys=True) not in held]
    evals = [r for r in rows if json.dumps(r["prompt"], sort_keys=True) in held]
    return train, evals


def load_pairs(cfg, tok) -> tuple[list[dict], list[dict], int]:
    """(train pairs, held-out pairs, bad rows skipped) for a config with the ``PairsMixin`` fields: a prefs run
    folder (its train / eval splits) or a preference file (10% of its prompts held out), validated before any run
    folder exists."""
    kw = dict(tokenizer=tok, max_length=cfg.max_length, skip_bad_rows=cfg.skip_bad_rows)
    src = Path(cfg.prefs).expanduser()
    if src.is_dir():
        files = [src / "pairs" / "train.jsonl", src / "pairs" / "eval.jsonl"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"prefs={cfg.prefs!r} is not a finished prefs run: missing {', '.join(missing)}")
        train, s1 = load_preference_rows(str(files[0]), **kw)
        held, s2 = load_preference_rows(str(files[1]), **kw)
        skipped = s1 + s2
    else:
        rows, skipped = load_preference_rows(cfg.prefs, **kw)
        train, held = split_by_prompt(rows, 0.1, cfg.seed)
    if cfg.eval_prefs:
        held, s3 = load_preference_rows(cfg.eval_prefs, **kw)
        skipped += s3
    if cfg.max_train_pairs:
        train = train[: cfg.max_train_pairs]
    return train, held, skipped
