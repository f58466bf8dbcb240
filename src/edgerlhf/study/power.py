"""How many seeds a verdict needs, before running them: small pure functions, no I/O.

The study compares configurations by their per-seed paired differences d_1 .. d_n (each seed's mean gain of one
configuration minus the other's, on the same prompts and sampling seed), modelled as independent N(delta, sd^2):

* a **difference** is declared by the two-sided paired t-test at level alpha: its power at a true difference
  ``delta`` is P(|T| > t(1 - alpha/2, n-1)) with T noncentral t (df n-1, noncentrality delta sqrt(n) / sd), exact;
* **equivalence within ±margin** is declared by TOST (both one-sided t-tests at alpha, i.e. the 1 - 2 alpha
  interval inside ±margin; Schuirmann 1987): its power is exact by integrating over the sample standard
  deviation s (sd^2 chi^2(n-1) / (n-1)): given s, the mean must lie in ±(margin - t(1-alpha, n-1) s / sqrt(n)),
  a normal probability.

:func:`seeds_needed` is the smallest n with power >= the target. scipy gives the distributions.

A pilot's sd is itself a guess: from n seeds, (n-1) s^2 / sd^2 ~ chi^2(n-1), so a two-seed pilot's sd may be a
quarter of the truth as easily as right. :func:`sd_upper_bound` is its one-sided upper confidence bound (the
"conservative" pilot sd of Browne 1995): plans at it are the ones a pilot cannot flatter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def power_difference(n: int, delta: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` over ``n`` seeds to detect a true mean difference
    ``delta`` when the per-seed differences have standard deviation ``sd``."""
    from scipy.stats import nct, t  # noqa: PLC0415 - scipy is heavy; only for these distributions

    if n < 2:
        return math.nan
    if sd <= 0:
        return 1.0 if delta != 0 else alpha
    df, nc = n - 1, delta * math.sqrt(n) / sd
    c = t.ppf(1 - alpha / 2, df)
    return float(nct.sf(c, df, nc) + nct.cdf(-c, df, nc))


def power_equivalence(n: int, margin: float, sd: float, delta: float = 0.0, alpha: float = 0.05) -> float:
    """Power of TOST at level ``alpha`` (the 1 - 2 alpha interval inside ±``margin``) over ``n`` seeds when the
    true difference is ``delta`` and the per-seed differences have standard deviation ``sd``."""
    from scipy.stats import chi2, norm, t  # noqa: PLC0415 - scipy is heavy; only for these distributions

    if n < 2:
        return math.nan
    if sd <= 0:
        return 1.0 if abs(delta) < margin else 0.0
    df = n - 1
    se = sd / math.sqrt(n)
    c = t.ppf(1 - alpha, df)
    # integrate over q = (n-1) s^2 / sd^2 ~ chi2(df): a fine grid over its quantiles (midpoint rule in probability)
    u = (np.arange(4000) + 0.5) / 4000
    s = sd * np.sqrt(chi2.ppf(u, df) / df)
    half = margin - c * s / math.sqrt(n)  # the mean must lie in (-half, half)
    p = np.where(half > 0, norm.cdf((half - delta) / se) - norm.cdf((-half - delta) / se), 0.0)
    return float(p.mean())


def seeds_needed(power_of, target: float = 0.8, n_max: int = 1000) -> int | None:
    """The smallest number of seeds n >= 2 with ``power_of(n) >= target`` (None when even ``n_max`` is not
    enough: the effect is too small for this noise)."""
    lo = 2
    if power_of(lo) >= target:
        return lo
    hi = lo
    while power_of(hi) < target:  # powers grow with n: double, then bisect
        if hi >= n_max:
            return None
        lo, hi = hi, min(2 * hi, n_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if power_of(mid) < target else (lo, mid)
    return hi


def sd_upper_bound(sd: float, n: int, confidence: float = 0.8) -> float:
    """The one-sided ``confidence`` upper bound of a standard deviation estimated as ``sd`` from ``n`` values:
    sd * sqrt((n-1) / chi2.ppf(1 - confidence, n-1))."""
    from scipy.stats import chi2  # noqa: PLC0415 - scipy is heavy; only for this distribution

    if n < 2:
        return math.nan
    return sd * math.sqrt((n - 1) / chi2.ppf(1 - confidence, n - 1))


@dataclass(frozen=True)
class SeedPlan:
    """What a comparison's per-seed differences say about the seeds a verdict needs (see :func:`plan_seeds`)."""

    seeds: int
    mean: float
    sd: float
    sd_upper: float  # the sd's one-sided 80% upper bound
    power_difference: float  # at ``seeds``, to detect ``delta``
    seeds_difference: int | None  # to detect ``delta`` at the target power (None: more than n_max)
    seeds_difference_upper: int | None  # the same at ``sd_upper``
    power_equivalence: float  # at ``seeds``, to certify ±margin (true difference 0)
    seeds_equivalence: int | None
    seeds_equivalence_upper: int | None


def plan_seeds(diffs: list[float], delta: float, margin: float, alpha: float = 0.05,
               target: float = 0.8) -> SeedPlan:
    """From a comparison's per-seed differences (2 or more): their mean and sd, the power they had to detect
    ``delta`` and to certify equivalence within ``margin``, and the seeds each needs at ``target`` power, at the sd
    and at its 80% upper bound (a non-finite ``delta`` or ``margin``: nan power, None seeds)."""
    n0 = len(diffs)
    mean = sum(diffs) / n0
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n0 - 1))
    sd_hi = sd_upper_bound(sd, n0, 0.8)  # a pilot's sd is a guess: the plan at its upper bound too
    both = (sd, sd_hi)
    nd = ([seeds_needed(lambda n, s=s: power_difference(n, delta, s, alpha), target) for s in both]
          if math.isfinite(delta) else [None, None])
    ne = ([seeds_needed(lambda n, s=s: power_equivalence(n, margin, s, 0.0, alpha), target) for s in both]
          if math.isfinite(margin) else [None, None])
    pd = power_difference(n0, delta, sd, alpha) if math.isfinite(delta) else math.nan
    pe = power_equivalence(n0, margin, sd, 0.0, alpha) if math.isfinite(margin) else math.nan
    return SeedPlan(n0, mean, sd, sd_hi, pd, nd[0], nd[1], pe, ne[0], ne[1])
