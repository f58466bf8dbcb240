"""Seeds needed for a verdict: the power formulas against a published value and against simulation."""

import math

import numpy as np
import pytest
from scipy.stats import t

from edgerlhf.study.power import power_difference, power_equivalence, sd_upper_bound, seeds_needed


def test_paired_t_power_matches_the_published_value():
    # one-sample / paired t, two-sided 0.05, effect size 1, n = 10: 0.8031 (G*Power; Cohen 1988's tables: 0.80)
    assert power_difference(10, 1.0, 1.0) == pytest.approx(0.8031, abs=5e-4)
    assert power_difference(10, -1.0, 1.0) == pytest.approx(0.8031, abs=5e-4)  # two-sided: symmetric
    assert power_difference(50, 0.0, 1.0) == pytest.approx(0.05, abs=1e-9)  # no effect: the level itself
    assert seeds_needed(lambda n: power_difference(n, 1.0, 1.0)) == 10  # 9 seeds give 0.748
    assert seeds_needed(lambda n: power_difference(n, 1e-3, 1.0), n_max=64) is None
    assert math.isnan(power_difference(1, 1.0, 1.0))


def _simulate(n, delta, sd, reps=20000, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.normal(delta, sd, size=(reps, n))
    m, s = d.mean(1), d.std(1, ddof=1)
    se = s / math.sqrt(n)
    differs = np.abs(m / se) > t.ppf(0.975, n - 1)
    return differs, se, m


@pytest.mark.parametrize("n,delta,sd", [(4, 0.5, 0.4), (7, 0.2, 0.3), (12, 0.1, 0.25)])
def test_power_by_simulation_agrees_with_the_formulas(n, delta, sd):
    reps = 20000
    differs, se, m = _simulate(n, delta, sd, reps)
    tol = lambda p: 4 * math.sqrt(p * (1 - p) / reps) + 1e-3  # noqa: E731 - 4 Monte Carlo standard errors
    p = power_difference(n, delta, sd)
    assert differs.mean() == pytest.approx(p, abs=tol(p))
    margin = 0.3
    for true in (0.0, 0.1):
        _, se, m = _simulate(n, true, sd, reps, seed=1)
        c = t.ppf(0.95, n - 1)
        tost = (m - c * se > -margin) & (m + c * se < margin)  # the 90% interval inside ±margin
        p = power_equivalence(n, margin, sd, true)
        assert tost.mean() == pytest.approx(p, abs=tol(p)), (true, tost.mean(), p)


def test_equivalence_needs_more_seeds_for_a_tighter_margin():
    loose = seeds_needed(lambda n: power_equivalence(n, 0.3, 0.2))
    tight = seeds_needed(lambda n: power_equivalence(n, 0.1, 0.2))
    assert 2 <= loose < tight
    assert power_equivalence(tight, 0.1, 0.2) >= 0.8 > power_equivalence(tight - 1, 0.1, 0.2)


def test_the_pilots_sd_upper_bound_by_hand():
    # chi^2 with 2 df is exponential with mean 2: its 0.2 quantile is -2 ln 0.8, so from 3 seeds the 80% upper
    # bound is sd * sqrt(2 / (-2 ln 0.8)) = sd * 2.116936
    assert sd_upper_bound(0.1, 3) == pytest.approx(0.1 * math.sqrt(1 / -math.log(0.8)), rel=1e-9)
    assert sd_upper_bound(0.1, 3) == pytest.approx(0.2116936, abs=1e-6)
    # 1 df: chi^2 = Z^2, its 0.2 quantile is z(0.6)^2 = 0.253347^2
    assert sd_upper_bound(1.0, 2) == pytest.approx(1 / 0.2533471, rel=1e-6)
    assert sd_upper_bound(1.0, 100) < 1.1 and math.isnan(sd_upper_bound(1.0, 1))


def test_a_comparisons_seed_plan_from_its_per_seed_differences():
    from edgerlhf.study.power import plan_seeds

    pl = plan_seeds([0.1, -0.1, 0.3], delta=1.0, margin=0.5)
    assert pl.seeds == 3 and pl.mean == pytest.approx(0.1) and pl.sd == pytest.approx(0.2)  # by hand
    assert pl.sd_upper == pytest.approx(sd_upper_bound(0.2, 3))
    assert pl.power_difference == pytest.approx(power_difference(3, 1.0, 0.2))
    assert pl.seeds_difference == seeds_needed(lambda n: power_difference(n, 1.0, 0.2))
    assert pl.seeds_difference_upper >= pl.seeds_difference and pl.seeds_equivalence_upper >= pl.seeds_equivalence
    none = plan_seeds([0.1, 0.2], delta=float("nan"), margin=float("inf"))
    assert none.seeds_difference is None and none.seeds_equivalence is None and math.isnan(none.power_difference)
