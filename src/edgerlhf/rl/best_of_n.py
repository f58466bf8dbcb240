"""Best-of-n from N shared candidates: small pure functions, no I/O, no torch.

Best-of-n samples n responses and keeps the one a reward model ranks highest. Measured the way Gao et al. (2022)
measured over-optimisation, it needs no resampling: from N >= n candidates per prompt, the expected score of
best-of-n over *all* n-subsets of the N has a closed form (Nakano et al. 2021, WebGPT appendix; Gao et al. 2022):
sort the candidates by the ranking reward, and the i-th lowest (1-based) is the best of a random n-subset with
probability C(i-1, n-1) / C(N, n). Every RM precision can rank the same candidates, so two precisions compare
response by response, with no sampling noise between them.

* :func:`bon_weights` - those probabilities.
* :func:`bon_expected` - the expected score (gold, or the ranking reward itself) of best-of-n for one prompt;
  ties in the ranking reward are broken uniformly at random (the tied candidates share their ranks' weight).
* :func:`bon_kl` - the analytic KL(best-of-n || policy), log n - (n-1)/n: the standard value, and an upper bound
  on the true KL (Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment policy").
* :func:`fit_gao` - least squares of Gao et al.'s best-of-n form gold(d) = d (alpha - beta d), d = sqrt(KL).
* :func:`kendall_tau`, :func:`top1_agreement` - how two rankings of the same candidates agree.

Written here rather than taken from a library: none implements the subset estimator, and each formula is a few
lines that the tests check against hand-derived values and brute-force enumeration.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["bon_curves", "bon_expected", "bon_kl", "bon_ns", "bon_weights", "bootstrap_gao", "fit_gao", "kendall_tau",
           "top1_agreement"]


def bon_ns(N: int) -> list[int]:
    """The n of a best-of-n curve from N candidates: 1, 2, 4, ... up to N (N itself included)."""
    if N < 1:
        raise ValueError(f"N={N}: need at least one candidate")
    out, n = [], 1
    while n < N:
        out.append(n)
        n *= 2
    return out + [N]


def bon_weights(N: int, n: int) -> np.ndarray:
    """w[i-1] = C(i-1, n-1) / C(N, n) for i = 1..N: the probability that the i-th lowest of N ranked candidates is
    the best of a uniformly random n-subset. Sums to 1; n = 1 gives 1/N each, n = N puts all on the highest."""
    if not 1 <= n <= N:
        raise ValueError(f"best-of-{n} from {N} candidates: n must be between 1 and N")
    total = math.comb(N, n)
    return np.array([math.comb(i - 1, n - 1) / total for i in range(1, N + 1)], dtype=np.float64)


def bon_expected(scores: Sequence[float], rank_by: Sequence[float], n: int) -> float:
    """E[score of the candidate that ``rank_by`` ranks highest among a random n-subset of the N] for one prompt,
    without resampling. Ties in ``rank_by`` are broken uniformly at random: each block of tied candidates spreads
    its ranks' total weight evenly over its members (the same value as enumerating every subset and averaging the
    tied maxima's scores)."""
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(rank_by, dtype=np.float64)
    if s.shape != r.shape or s.ndim != 1:
        raise ValueError(f"scores ({s.shape}) and rank_by ({r.shape}) must be one score per candidate")
    order = np.argsort(r, kind="stable")
    s, r = s[order], r[order]
    w = bon_weights(len(s), n)
    total, i = 0.0, 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and r[j + 1] == r[i]:
            j += 1
        total += w[i:j + 1].sum() * s[i:j + 1].mean()
        i = j + 1
    return float(total)


def bon_kl(n: int) -> float:
    """KL(best-of-n || base policy) = log n - (n - 1) / n nats: the analytic value used throughout the literature,
    exact when the ranking has no ties and the base policy's responses are all distinct, and an upper bound on the
    true KL otherwise (Beirami et al. 2024)."""
    if n < 1:
        raise ValueError(f"n={n}: must be at least 1")
    return math.log(n) - (n - 1) / n


def fit_gao(d: Sequence[float], gain: Sequence[float]) -> tuple[float, float]:
    """Least-squares (alpha, beta) of gain(d) = d (alpha - beta d) = alpha d - beta d^2 (no intercept: best-of-1
    is the policy itself, d = 0, gain 0). Gao et al. (2022) fit this form of the gold score against
    d = sqrt(KL) for best-of-n; alpha is the initial slope, beta how fast over-optimisation bends it down (the
    peak is at d = alpha / (2 beta) when beta > 0)."""
    x = np.asarray(d, dtype=np.float64)
    y = np.asarray(gain, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or np.count_nonzero(x) < 2:
        raise ValueError("fit_gao: need the same number of d and gain values, at least two with d > 0")
    a = np.stack([x, -x * x], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(alpha), float(beta)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two scorings of the same items (ties in either count as in tau-b); nan when either
    scoring is constant."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("kendall_tau: two scorings of the same items")
    iu = np.triu_indices(len(x), k=1)
    dx = np.sign(x[:, None] - x[None, :])[iu]
    dy = np.sign(y[:, None] - y[None, :])[iu]
    n1, n2 = np.count_nonzero(dx), np.count_nonzero(dy)
    if n1 == 0 or n2 == 0:
        return math.nan
    return float((dx * dy).sum() / math.sqrt(n1 * n2))


def top1_agreement(a: Sequence[float], b: Sequence[float]) -> float:
    """Whether both scorings pick the same best item: the probability that ``a``'s argmax (ties broken uniformly)
    is among ``b``'s argmaxes. 1.0 or 0.0 without ties."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    best_a = np.flatnonzero(x == x.max())
    best_b = set(np.flatnonzero(y == y.max()).tolist())
    return float(np.mean([i in best_b for i in best_a.tolist()]))


def bon_curves(scores: Sequence[Sequence[float]], rank_by: Sequence[Sequence[float]], ns: Sequence[int]) -> np.ndarray:
    """(prompts, len(ns)) matrix: :func:`bon_expected` of each prompt's candidates at each n."""
    if len(scores) != len(rank_by):
        raise ValueError(f"{len(scores)} prompts of scores but {len(rank_by)} of rankings")
    return np.array([[bon_expected(s, r, n) for n in ns] for s, r in zip(scores, rank_by)], dtype=np.float64)


def bootstrap_gao(per_prompt: np.ndarray, d: Sequence[float], n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict:
    """:func:`fit_gao` on the prompts' mean curve (gain over n = 1, the first column) and percentile intervals of
    alpha and beta from ``n_boot`` resamples of the prompts (the rows of ``per_prompt``)."""
    x = np.asarray(per_prompt, dtype=np.float64)
    gain = x - x[:, :1]
    alpha, beta = fit_gao(d, gain.mean(0))
    rng = np.random.default_rng(seed)
    draws = np.array([fit_gao(d, gain[rng.integers(0, len(x), len(x))].mean(0)) for _ in range(n_boot)])
    q = [0.5 - level / 2, 0.5 + level / 2]
    a_lo, a_hi = np.quantile(draws[:, 0], q)
    b_lo, b_hi = np.quantile(draws[:, 1], q)
    return {"alpha": alpha, "alpha_ci95": [float(a_lo), float(a_hi)], "beta": beta,
            "beta_ci95": [float(b_lo), float(b_hi)]}
