"""Statistics for a replicated study: small pure functions over plain nested lists, no I/O.

A study's numbers have two sources of noise: the RL run itself (a different seed draws other rollouts and ends
in another policy) and the evaluation's finite prompt set. Henderson et al. (2018) and Agarwal et al. (2021,
rliable) show that one run per setting, or intervals over prompts alone, can make noise look like a ranking.
Scores here come as ``scores[seed][prompt]`` (the held-out gold score of each evaluation prompt, per seed);
every configuration is evaluated on the same prompts with the same sampling seed, so comparisons pair by seed
and by prompt.

* :func:`t_interval` - across seeds: the mean of the seeds' means with a Student-t interval (RL variance).
* :func:`hierarchical_bootstrap` - resample seeds, then prompts within each drawn seed: both sources at once.
* :func:`compare` - one configuration against another on the same seeds and prompts: the paired difference
  with both intervals, the probability of improvement and a two-sided bootstrap p-value.
* :func:`detectable_difference` - the smallest paired difference the seeds could have detected (power).
* :func:`holm` - Holm's step-down correction of the p-values of the comparisons a report makes.
* :func:`equivalence` - two one-sided tests (TOST): a difference whose 90% interval lies inside a margin fixed
  beforehand is *equivalent within ±margin*; with :func:`parse_margin` and :func:`paired_t_p`.

Written here rather than taken from rliable (a JAX/arch dependency for three formulas) or scipy.stats.bootstrap
(no hierarchical resampling); scipy gives the t quantile.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

Scores = Sequence[Sequence[float]]  # scores[seed][prompt]


class Interval(NamedTuple):
    mean: float
    low: float      # nan where the interval cannot be formed (e.g. a t interval from one seed)
    high: float
    n: int          # how many units the interval is over (seeds, or prompts)
    over: str       # what it is over, in words, for the report: "seeds", "seeds and prompts", "prompts"


def _matrix(scores: Scores, what: str = "scores") -> np.ndarray:
    rows = [list(map(float, r)) for r in scores]
    if not rows or not all(rows):
        raise ValueError(f"{what}: need at least one seed with at least one prompt score")
    n = {len(r) for r in rows}
    if len(n) != 1:
        raise ValueError(f"{what}: every seed must be evaluated on the same prompts (got {sorted(n)} prompts per seed)")
    return np.asarray(rows, dtype=np.float64)


def seed_means(scores: Scores) -> list[float]:
    """Each seed's mean over prompts."""
    return _matrix(scores).mean(1).tolist()


def t_interval(values: Sequence[float], level: float = 0.95, over: str = "seeds") -> Interval:
    """Mean of ``values`` (one per seed, or per prompt with ``over="prompts"``) with a two-sided Student-t
    interval: mean ± t(level, n-1) · s / √n. With one value the bounds are nan: one run says nothing about
    run-to-run variance."""
    from scipy.stats import t  # noqa: PLC0415 - scipy is heavy; only for a t quantile

    x = np.asarray(list(map(float, values)), dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("t_interval: no values")
    m = float(x.mean())
    if n < 2:
        return Interval(m, math.nan, math.nan, 1, over)
    half = float(t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(m, m - half, m + half, n, over)


def _hier_draws(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap means of a (seeds, prompts) matrix: seeds resampled with replacement, then the
    prompts of each drawn seed resampled with replacement (one seed: prompts only)."""
    s, p = x.shape
    seeds = rng.integers(0, s, size=(n_boot, s)) if s > 1 else np.zeros((n_boot, 1), dtype=np.int64)
    prompts = rng.integers(0, p, size=(n_boot, s, p))
    return x[seeds[:, :, None], prompts].mean(axis=(1, 2))


def hierarchical_bootstrap(scores: Scores, level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> Interval:
    """Percentile interval of the grand mean under two-level resampling (seeds, then prompts within each
    seed), so it carries the run-to-run and the prompt-sampling noise. With one seed it is a bootstrap over
    prompts only, and says so in ``over``."""
    x = _matrix(scores)
    d = _hier_draws(x, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(d, [0.5 - level / 2, 0.5 + level / 2])
    over = "seeds and prompts" if x.shape[0] > 1 else "prompts"
    return Interval(float(x.mean()), float(lo), float(hi), x.shape[0] if x.shape[0] > 1 else x.shape[1], over)


def probability_of_improvement(a: Scores, b: Scores) -> float:
    """P(a > b) on paired prompts (a tie counts one half), averaged over seeds: how often configuration ``a``
    gives the better response to the same prompt under the same seed."""
    x, y = _paired(a, b)
    return float(((x > y) + 0.5 * (x == y)).mean())


def _paired(a: Scores, b: Scores) -> tuple[np.ndarray, np.ndarray]:
    x, y = _matrix(a, "a"), _matrix(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired comparison needs the same seeds and prompts: {x.shape[0]} seeds x {x.shape[1]} "
                         f"prompts against {y.shape[0]} x {y.shape[1]}")
    return x, y


class Comparison(NamedTuple):
    diff: float              # mean of a - b over seeds and prompts
    seeds: Interval          # t interval of the per-seed mean differences (nan bounds with one seed)
    both: Interval           # hierarchical bootstrap interval of the difference (seeds and prompts)
    p_improvement: float     # P(a > b) on paired prompts
    p_value: float           # two-sided bootstrap p-value of "no difference", from the hierarchical draws


def compare(a: Scores, b: Scores, level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> Comparison:
    """Configuration ``a`` against ``b`` on the same seeds and prompts (``a[s][p]`` and ``b[s][p]`` come from
    the same seed and prompt). The p-value is 2 · min(share of bootstrap differences <= 0, share >= 0),
    floored at 1 / n_boot."""
    x, y = _paired(a, b)
    d = x - y
    draws = _hier_draws(d, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2])
    p = min(1.0, 2 * min(float((draws <= 0).mean()), float((draws >= 0).mean())))
    p = max(p, 1.0 / n_boot)
    over = "seeds and prompts" if d.shape[0] > 1 else "prompts"
    both = Interval(float(d.mean()), float(lo), float(hi), d.shape[0] if d.shape[0] > 1 else d.shape[1], over)
    return Comparison(float(d.mean()), t_interval(d.mean(1).tolist(), level), both,
                      probability_of_improvement(a, b), p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error across the comparisons made), in the input's
    order: sort ascending, multiply the k-th smallest by (m - k + 1), keep them non-decreasing, cap at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * float(p_values[i])))
        out[i] = running
    return out


def detectable_difference(seed_diffs: Sequence[float], level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true difference a paired t-test over these seeds would detect with probability ``power``
    at two-sided level ``1 - level``: (t(1 - alpha/2, n-1) + t(power, n-1)) * s / sqrt(n), where s is the
    standard deviation of the per-seed mean differences (the usual normal-approximation power formula with t
    quantiles). nan with fewer than two seeds: one run cannot say what it could have missed."""
    from scipy.stats import t  # noqa: PLC0415 - scipy is heavy; only for a t quantile

    x = np.asarray(list(map(float, seed_diffs)), dtype=np.float64)
    n = len(x)
    if n < 2:
        return math.nan
    return float((t.ppf(0.5 + level / 2, n - 1) + t.ppf(power, n - 1)) * x.std(ddof=1) / math.sqrt(n))


def paired_t_p(diffs: Sequence[float]) -> float:
    """Two-sided p-value of a paired t-test that the mean of ``diffs`` is 0 (1.0 when every difference is 0,
    nan with fewer than two)."""
    from scipy.stats import t  # noqa: PLC0415 - scipy is heavy; only for a t distribution

    x = np.asarray(list(map(float, diffs)), dtype=np.float64)
    if len(x) < 2:
        return math.nan
    sd = x.std(ddof=1)
    if sd == 0:
        return 1.0 if x.mean() == 0 else 0.0
    return float(2 * t.sf(abs(x.mean()) / (sd / math.sqrt(len(x))), len(x) - 1))


# the report's equivalence margin unless the study names one: 10% of the reference configuration's gain, a rule
# fixed before any study runs (the value it gives is stated in the report beside every verdict)
DEFAULT_MARGIN = "10%"


def parse_margin(spec) -> tuple[float, bool]:
    """An equivalence margin as given: ``0.05`` (in the yardstick's units) -> (0.05, False); ``"10%"`` (of the
    reference configuration's gain) -> (0.10, True). A margin must be positive."""
    text = str(spec).strip()
    relative = text.endswith("%")
    try:
        value = float(text[:-1] if relative else text)
    except ValueError:
        raise ValueError(f"equivalence margin {spec!r}: use a positive number in gold units (0.05) or a share of the "
                         "fp32 reference's gain (10%)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"equivalence margin {spec!r} must be positive: a margin of 0 or less can never be met "
                         "(use e.g. 0.05, or 10%)")
    return (value / 100, True) if relative else (value, False)


def resolve_margin(spec, reference_gain: float) -> float:
    """The margin in the yardstick's units: an absolute margin as given; a relative one times the reference's gain
    (nan when that gain is not positive: a share of no gain certifies nothing)."""
    value, relative = parse_margin(spec)
    if not relative:
        return value
    return value * reference_gain if math.isfinite(reference_gain) and reference_gain > 0 else math.nan


class Equivalence(NamedTuple):
    verdict: str        # "different" | "equivalent" | "undecided"
    margin: float       # the margin fixed beforehand (nan: none could be formed)
    low90: float        # the 90% interval TOST reads (two one-sided 5% tests)
    high90: float
    certifiable: float  # the smallest margin these data would have certified: max(|low90|, |high90|)
    inside: bool = False  # the 90% interval lies inside the margin (with "different": a real difference smaller
    #                       than the margin, practically equivalent)


def equivalence(low90: float, high90: float, margin: float, different: bool) -> Equivalence:
    """The three-way verdict of a comparison: **different** when the usual test says so (``different``, decided by
    the caller's rule), **equivalent** within ±``margin`` when the 90% interval lies inside [-margin, margin] (TOST
    at level 0.05: Schuirmann 1987), otherwise **undecided**. ``certifiable`` is the margin the data would have
    certified, so an undecided verdict still says how close the two were shown to be; ``inside`` marks a difference
    that is real and yet smaller than the margin (both tests pass: different, and practically equivalent)."""
    ok = math.isfinite(low90) and math.isfinite(high90)
    cert = max(abs(low90), abs(high90)) if ok else math.nan
    inside = ok and math.isfinite(margin) and -margin < low90 and high90 < margin
    if different:
        return Equivalence("different", margin, low90, high90, cert, inside)
    return Equivalence("equivalent" if inside else "undecided", margin, low90, high90, cert, inside)
