"""How well a reward model ranks: pure functions on lists of numbers (no models, no I/O)."""

from __future__ import annotations

import math
import random
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
    from scipy.stats import spearmanr  # noqa: PLC0415 - scipy is heavy; only for a rank correlation

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


def agreement_with_reference(ref_chosen: Sequence[float], ref_rejected: Sequence[float],
                             chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, float]:
    """How far a (quantised) RM strays from a reference RM on the same pairs.

    Deviations are divided by the reference reward's standard deviation, so that they read in units of
    the reward's own spread; the flip rate is the fraction of pairs whose preferred side changes, and
    ``accuracy_vs_ref`` = 1 - flip rate."""
    ref = list(ref_chosen) + list(ref_rejected)
    new = list(chosen) + list(rejected)
    if len(ref) != len(new) or not ref:
        raise ValueError(f"agreement: {len(ref)} reference scores vs {len(new)} scores")
    _, std = mean_std(ref)
    dev = [abs(a - b) for a, b in zip(new, ref)]
    flips = [(c > r) != (rc > rr) for c, r, rc, rr in zip(chosen, rejected, ref_chosen, ref_rejected)]
    scale = std if std > 0 else math.nan
    return {"spearman_vs_ref": spearman(ref, new), "mean_abs_dev_over_std": (sum(dev) / len(dev)) / scale,
            "max_abs_dev_over_std": max(dev) / scale, "flip_rate": sum(flips) / len(flips),
            "accuracy_vs_ref": 1 - sum(flips) / len(flips)}


# -- text diversity (to see degenerate reward hacking: repeated words, collapsed vocabulary) ------------

def _ngrams(words: list[str], n: int) -> list[tuple]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct word n-grams over all n-grams in ``texts`` (Li et al. 2016); nan when there are none."""
    grams = [g for t in texts for g in _ngrams(t.lower().split(), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition_rate(texts: Sequence[str], n: int = 3) -> float:
    """Fraction of responses that repeat some word n-gram within themselves."""
    if not texts:
        return math.nan
    rep = 0
    for t in texts:
        g = _ngrams(t.lower().split(), n)
        rep += len(set(g)) < len(g)
    return rep / len(texts)


def words(text: str) -> int:
    """The length measure of the length control: whitespace-separated words (tokenizer-free, so every evaluation
    and every report measures it the same way)."""
    return len(text.split())


def length_slope(scores: Sequence[float], lengths: Sequence[float]) -> float:
    """Ordinary least-squares slope of score on length (score = a + b * length): b, fitted on the reference
    policy's responses. 0 when every length is the same (nothing to control for)."""
    x = [float(v) for v in lengths]
    y = [float(v) for v in scores]
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("length_slope: need a score and a length for at least two responses")
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((a - mx) ** 2 for a in x)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx if sxx > 0 else 0.0


def length_controlled_gains(scores: Sequence[float], lengths: Sequence[float], base_scores: Sequence[float],
                            base_lengths: Sequence[float], slope: float) -> list[float]:
    """Per prompt, the gain over the baseline with the part a length change explains removed:
    (score - base) - slope * (length - base length), where ``slope`` is :func:`length_slope` on the baseline's
    responses. A gain that is only length (longer answers that the gold happens to score higher) goes to 0; in
    spirit AlpacaEval's length-controlled win rate (Dubois et al. 2024), here a linear regression on length."""
    n = len(scores)
    if not n == len(lengths) == len(base_scores) == len(base_lengths):
        raise ValueError("length_controlled_gains: one score and length per prompt for both policies")
    return [(s - b) - slope * (x - bx) for s, x, b, bx in zip(scores, lengths, base_scores, base_lengths)]


def gain_kept(file_scores: Sequence[float], policy_scores: Sequence[float], base_scores: Sequence[float], *,
              n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The share of the policy's gain over the baseline that an exported file keeps: mean(file - base) /
    mean(policy - base), each prompt's three scores paired (same prompt, same sampling seed), with a 95% percentile
    bootstrap over prompts. NaN when the policy gained nothing (mean gain <= 0: no gain to keep); a bootstrap draw
    in which it gained nothing is dropped. (:func:`delta_kept` with the baseline as the file's own base.)"""
    if not len(file_scores) == len(policy_scores) == len(base_scores):
        raise ValueError(f"gain_kept needs one score per prompt from each: {len(file_scores)}, {len(policy_scores)}, "
                         f"{len(base_scores)}")
    return delta_kept(file_scores, base_scores, policy_scores, base_scores, n_boot=n_boot, seed=seed)


def delta_kept(file_scores: Sequence[float], qbase_scores: Sequence[float], policy_scores: Sequence[float],
               base_scores: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The share of the policy's gain that a file keeps *over its own quantised SFT policy*: mean(file - qbase) /
    mean(policy - base), where ``qbase`` is the SFT policy written at the file's type (for an adapter, the base file
    it sits on). Quantisation alone can move the gold either way (a 4-bit SFT file may score above the SFT policy);
    this is the part of the file's score the RL delta still adds. Paired by prompt, 95% percentile bootstrap over
    prompts (the four scores of a prompt drawn together); NaN when the policy gained nothing."""
    n = len(file_scores)
    if not n == len(qbase_scores) == len(policy_scores) == len(base_scores):
        raise ValueError(f"delta_kept needs one score per prompt from each: {n}, {len(qbase_scores)}, "
                         f"{len(policy_scores)}, {len(base_scores)}")

    def share(idx) -> float:
        den = sum(policy_scores[i] - base_scores[i] for i in idx)
        return sum(file_scores[i] - qbase_scores[i] for i in idx) / den if den > 0 else math.nan

    point = share(range(n)) if n else math.nan
    if math.isnan(point):
        return math.nan, math.nan, math.nan
    rng = random.Random(seed)
    draws = sorted(x for x in (share([rng.randrange(n) for _ in range(n)]) for _ in range(n_boot)) if not math.isnan(x))
    if not draws:
        return point, math.nan, math.nan
    return point, draws[int(0.025 * (len(draws) - 1))], draws[int(0.975 * (len(draws) - 1))]
