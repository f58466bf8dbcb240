"""How well a reward model ranks: pure functions on lists of numbers (no models, no I/O)."""

from __future__ import annotations

import math
from typing import Sequence


def pairwise_accuracy(r_chosen: Sequence[float], r_rejected: Sequence[float]) -> float:
    """Fraction of pairs where the chosen side scores strictly higher (ties count as wrong)."""
    if not r_chosen:
        return math.nan
    return sum(c > r for c, r in zip(r_chosen, r_rejected)) / len(r_chosen)


def agreement_with_labels(r_chosen, r_rejected, label_chosen, label_rejected) -> float:
    """Fraction of pairs ordered as another scorer orders them (pairs it scores exactly equal are skipped)."""
    pairs = [(c > r) == (lc > lr) for c, r, lc, lr in zip(r_chosen, r_rejected, label_chosen, label_rejected)
             if lc != lr]
    return sum(pairs) / len(pairs) if pairs else math.nan


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (scipy; nan when either side is constant or has < 2 values)."""
    from scipy.stats import spearmanr

    if len(a) != len(b):
        raise ValueError(f"spearman: {len(a)} vs {len(b)} values")
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    return float(spearmanr(a, b).statistic)


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / max(len(xs) - 1, 1))
