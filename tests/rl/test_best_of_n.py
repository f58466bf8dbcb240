"""Best-of-n from shared candidates: the subset estimator by hand and against brute-force enumeration, the KL
formula, the Gao et al. fit on synthetic curves, and the ranking agreements."""

import itertools
import math
import random

import numpy as np
import pytest
from scipy.stats import kendalltau

from edgerlhf.rl.best_of_n import (
    bon_curves,
    bon_expected,
    bon_kl,
    bon_ns,
    bon_weights,
    bootstrap_gao,
    fit_gao,
    kendall_tau,
    top1_agreement,
)


def brute_force(scores, rank_by, n):
    """Average over every n-subset of the score of its best member by ``rank_by``, tied maxima averaged."""
    vals = []
    for sub in itertools.combinations(range(len(scores)), n):
        top = max(rank_by[i] for i in sub)
        best = [scores[i] for i in sub if rank_by[i] == top]
        vals.append(sum(best) / len(best))
    return sum(vals) / len(vals)


def test_weights_by_hand():
    assert bon_weights(4, 1) == pytest.approx([0.25] * 4)
    assert bon_weights(4, 2) == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6])  # C(i-1, 1) / C(4, 2)
    assert bon_weights(4, 4) == pytest.approx([0, 0, 0, 1])
    for N in range(1, 9):
        for n in range(1, N + 1):
            assert bon_weights(N, n).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="between 1 and N"):
        bon_weights(4, 5)


def test_estimator_by_hand_with_ties():
    gold = [10.0, 20.0, 30.0, 40.0]
    rank = [1.0, 2.0, 2.0, 3.0]  # candidates 2 and 3 tie: they share ranks 2 and 3's weight (1/6 + 2/6) evenly
    assert bon_expected(gold, rank, 2) == pytest.approx(0.25 * 20 + 0.25 * 30 + 0.5 * 40)  # 32.5
    # the six pairs: {1,2}:20 {1,3}:30 {1,4}:40 {2,3}:(20+30)/2 {2,4}:40 {3,4}:40 -> 195 / 6
    assert bon_expected(gold, rank, 2) == pytest.approx(195 / 6)
    assert bon_expected(gold, rank, 1) == pytest.approx(25.0)  # best-of-1: the plain mean
    assert bon_expected(gold, rank, 4) == pytest.approx(40.0)
    assert bon_expected(gold, [0.0] * 4, 3) == pytest.approx(25.0)  # all tied: any pick, the mean
    # the order the candidates come in does not matter
    assert bon_expected(gold[::-1], rank[::-1], 2) == pytest.approx(32.5)


@pytest.mark.parametrize("seed", range(20))
def test_estimator_equals_brute_force_enumeration(seed):
    rng = random.Random(seed)
    N = rng.randint(2, 8)
    gold = [rng.uniform(-1, 1) for _ in range(N)]
    rank = [float(rng.randint(0, 3)) for _ in range(N)] if seed % 2 else [rng.gauss(0, 1) for _ in range(N)]
    for n in range(1, N + 1):
        assert bon_expected(gold, rank, n) == pytest.approx(brute_force(gold, rank, n)), (N, n)


def test_proxy_curve_rises_and_curves_stack_per_prompt():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 16)).tolist()
    ns = bon_ns(16)
    c = bon_curves(scores, scores, ns)  # ranking by the score itself: best-of-n of the proxy never falls
    assert c.shape == (5, len(ns)) and np.all(np.diff(c, axis=1) >= -1e-12)
    assert c[:, -1] == pytest.approx(np.max(scores, axis=1))
    with pytest.raises(ValueError, match="prompts"):
        bon_curves(scores, scores[:4], ns)


def test_ns_and_kl():
    assert bon_ns(32) == [1, 2, 4, 8, 16, 32] and bon_ns(6) == [1, 2, 4, 6] and bon_ns(1) == [1]
    assert bon_kl(1) == 0.0
    assert bon_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert bon_kl(32) == pytest.approx(math.log(32) - 31 / 32)
    assert all(bon_kl(n + 1) > bon_kl(n) for n in range(1, 64))


def test_gao_fit_recovers_known_coefficients():
    d = np.sqrt([bon_kl(n) for n in bon_ns(64)])
    alpha, beta = fit_gao(d, d * (0.8 - 0.3 * d))
    assert (alpha, beta) == pytest.approx((0.8, 0.3))
    rng = np.random.default_rng(1)
    per_prompt = np.stack([d * (0.5 - 0.2 * d) + rng.normal(0, 0.05, len(d)) + rng.normal() for _ in range(400)])
    fit = bootstrap_gao(per_prompt, d, n_boot=200, seed=0)  # a per-prompt offset is removed (gain over n = 1)
    assert fit["alpha_ci95"][0] < 0.5 < fit["alpha_ci95"][1] and fit["beta_ci95"][0] < 0.2 < fit["beta_ci95"][1]
    assert fit["alpha"] == pytest.approx(0.5, abs=0.05) and fit["beta"] == pytest.approx(0.2, abs=0.05)
    with pytest.raises(ValueError, match="at least two"):
        fit_gao([0.0, 0.5], [0.0, 0.1])


def test_kendall_tau_is_tau_b_and_top1_handles_ties():
    rng = np.random.default_rng(2)
    for _ in range(10):
        a, b = rng.integers(0, 4, 12).astype(float), rng.integers(0, 4, 12).astype(float)
        assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert top1_agreement([1, 5, 2], [0, 9, 1]) == 1.0 and top1_agreement([1, 5, 2], [9, 0, 1]) == 0.0
    assert top1_agreement([5, 5, 1], [0, 9, 1]) == 0.5  # a's tie broken uniformly: half the time b's best
