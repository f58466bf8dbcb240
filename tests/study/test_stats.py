"""The study's statistics against values derived by hand."""

import math

import pytest

from edgerlhf.study.stats import (
    compare,
    hierarchical_bootstrap,
    holm,
    probability_of_improvement,
    seed_means,
    t_interval,
)


def test_t_interval_by_hand():
    # mean 2, s = 1, n = 3: half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.n == 3 and iv.over == "seeds"
    assert iv.low == pytest.approx(2 - 2.484138, abs=1e-6) and iv.high == pytest.approx(2 + 2.484138, abs=1e-6)
    one = t_interval([0.4])
    assert one.mean == 0.4 and math.isnan(one.low) and math.isnan(one.high)  # one run: no run-to-run variance


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3 = 0.03, x2 = 0.06, x1 = 0.04 -> kept non-decreasing: 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def test_probability_of_improvement_by_hand():
    # seed 1: 1 > 0 (1), 2 = 2 (1/2); seed 2: 0 < 1 (0), 3 > 1 (1) -> (1 + .5 + 0 + 1) / 4
    assert probability_of_improvement([[1, 2], [0, 3]], [[0, 2], [1, 1]]) == pytest.approx(0.625)


def test_hierarchical_bootstrap_degenerate_cases():
    # every prompt of a seed scores its seed's mean: only the seeds vary, so the interval lies within them
    iv = hierarchical_bootstrap([[0.1] * 20, [0.5] * 20, [0.3] * 20], n_boot=2000)
    assert iv.mean == pytest.approx(0.3) and 0.1 - 1e-9 <= iv.low < 0.3 < iv.high <= 0.5 + 1e-9
    assert iv.over == "seeds and prompts"
    # one seed: a bootstrap over prompts only, and it says so
    one = hierarchical_bootstrap([[0.0, 1.0] * 50], n_boot=2000)
    assert one.over == "prompts" and one.n == 100
    assert one.low == pytest.approx(0.5 - 1.96 * 0.05, abs=0.02)
    assert one.high == pytest.approx(0.5 + 1.96 * 0.05, abs=0.02)
    const = hierarchical_bootstrap([[0.7] * 5] * 3)
    assert const.low == const.high == pytest.approx(0.7)


def test_the_hierarchical_interval_is_wider_than_the_prompt_only_one_when_seeds_differ():
    import numpy as np

    rng = np.random.default_rng(0)
    scores = [(rng.normal(0, 1, 128) + shift).tolist() for shift in (-0.3, 0.0, 0.3)]
    both = hierarchical_bootstrap(scores)
    pooled = hierarchical_bootstrap([sum(scores, [])])  # all 384 scores as if from one run
    assert (both.high - both.low) > 1.5 * (pooled.high - pooled.low)


def test_compare_pairs_by_seed_and_prompt():
    a = [[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]]
    b = [[0.5, 2.0, 2.0], [1.0, 1.0, 2.0]]
    c = compare(a, b, n_boot=2000)
    # differences: seed 1 [.5, 0, 1] mean .5, seed 2 [1, 1, 0] mean 2/3 -> grand mean 7/12
    assert c.diff == pytest.approx(7 / 12)
    assert c.seeds.mean == pytest.approx(7 / 12) and c.seeds.n == 2
    assert c.both.low >= 0 and c.p_value < 0.05  # no bootstrap draw of these differences is negative
    assert c.p_improvement == pytest.approx((1 + 0.5 + 1 + 1 + 1 + 0.5) / 6)
    same = compare(a, a, n_boot=500)
    assert same.diff == 0 and same.p_value == 1.0 and same.p_improvement == 0.5
    with pytest.raises(ValueError, match="same seeds and prompts"):
        compare(a, [[1.0, 2.0]] * 2)
    with pytest.raises(ValueError, match="same prompts"):
        seed_means([[1.0, 2.0], [1.0]])


def test_detectable_difference_by_hand():
    from edgerlhf.study.stats import detectable_difference

    # s = 0.1, n = 3: (t(0.975, 2) = 4.302653 + t(0.8, 2) = 1.060660) * 0.1 / sqrt(3) = 0.309654
    assert detectable_difference([0.1, 0.3, 0.2]) == pytest.approx(0.309654, abs=1e-5)
    # more seeds with the same spread detect less: n = 5, s = 0.1581: (2.776445 + 0.940965) * s / sqrt(5)
    assert detectable_difference([0.0, 0.1, 0.2, 0.3, 0.4]) == pytest.approx(3.717410 * 0.158114 / 5 ** 0.5, abs=1e-5)
    assert math.isnan(detectable_difference([0.2]))


def test_tost_equivalent_different_undecided():
    from edgerlhf.study.stats import equivalence

    eq = equivalence(-0.02, 0.03, 0.05, different=False)
    assert eq.verdict == "equivalent" and eq.certifiable == pytest.approx(0.03)
    un = equivalence(-0.02, 0.06, 0.05, different=False)  # the interval pokes out of the margin on one side
    assert un.verdict == "undecided" and un.certifiable == pytest.approx(0.06)
    assert equivalence(0.01, 0.04, 0.05, different=True).verdict == "different"  # the usual test wins
    assert equivalence(-0.05, 0.01, 0.05, different=False).verdict == "undecided"  # the bound itself is not inside
    nan = equivalence(math.nan, math.nan, 0.05, different=False)
    assert nan.verdict == "undecided" and math.isnan(nan.certifiable)
    assert equivalence(-0.01, 0.01, math.nan, different=False).verdict == "undecided"  # no margin: never shown


def test_margins_absolute_relative_and_refused():
    from edgerlhf.study.stats import parse_margin, resolve_margin

    assert parse_margin("10%") == (pytest.approx(0.1), True) and parse_margin(0.05) == (0.05, False)
    assert resolve_margin("10%", 0.6) == pytest.approx(0.06) and resolve_margin("0.05", 0.6) == 0.05
    assert math.isnan(resolve_margin("10%", -0.1))  # a share of no gain certifies nothing
    for bad in (0, -0.1, "0%", "abc", "nan"):
        with pytest.raises(ValueError, match="margin"):
            parse_margin(bad)


def test_paired_t_p_is_the_t_test_and_t_interval_names_its_units():
    from scipy.stats import ttest_1samp

    from edgerlhf.study.stats import paired_t_p, t_interval

    x = [0.1, -0.2, 0.3, 0.05, 0.12, -0.01]
    assert paired_t_p(x) == pytest.approx(ttest_1samp(x, 0).pvalue)
    assert paired_t_p([0.0, 0.0, 0.0]) == 1.0 and math.isnan(paired_t_p([0.3]))
    i90, i95 = t_interval(x, 0.90, over="prompts"), t_interval(x, 0.95, over="prompts")
    assert i95.low < i90.low < i90.high < i95.high and i90.over == "prompts"


def test_a_real_difference_smaller_than_the_margin_is_marked_inside():
    from edgerlhf.study.stats import equivalence

    both = equivalence(-0.004, -0.001, 0.05, different=True)  # significant, and tiny next to the margin
    assert both.verdict == "different" and both.inside
    assert not equivalence(-0.2, -0.1, 0.05, different=True).inside
