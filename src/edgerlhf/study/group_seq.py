"""Group-sequential boundaries for adding seeds until a verdict is decided: small pure functions, no I/O.

Looking at the data after every round of seeds and stopping when a test passes inflates the error rate (each look is
another chance of a false verdict). The fix used here is alpha spending (Lan & DeMets 1983): a spending function
alpha(t) gives how much of the level may be used up by information fraction t = n_k / n_max, and the boundary of
look k is the z such that the probability, under no effect, of first crossing at look k is alpha(t_k) -
alpha(t_{k-1}). The O'Brien-Fleming-type function alpha(t) = 2 - 2 Phi(z(1 - alpha/2) / sqrt(t)) spends almost
nothing early, so the last look keeps nearly the fixed-sample level. Crossing probabilities are computed by the
recursive numerical integration of Armitage, McPherson & Rowe (1969) over the score process S_k = Z_k sqrt(t_k),
whose increments are independent normal.

Each boundary is used as a nominal two-sided significance level for that look's paired t-test (Jennison &
Turnbull 2000, section 3.3), and for equivalence each of TOST's one-sided tests gets the nominal level of the
same design at twice the level (two one-sided 5% tests: the 90% interval of a fixed design).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

_GRID = 2401  # points of the score grid over ±_LIM
_LIM = 12.0


def obf_spending(t: float, alpha: float = 0.05) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending: alpha(t) = 2 - 2 Phi(z(1 - alpha/2) / sqrt(t)), two-sided."""
    from scipy.stats import norm  # noqa: PLC0415 - scipy is heavy; only for the normal distribution

    if t <= 0:
        return 0.0
    return float(2 - 2 * norm.cdf(norm.ppf(1 - alpha / 2) / math.sqrt(min(t, 1.0))))


class _Process:
    """The density of the score S_k = Z_k sqrt(t_k) on a grid, restricted to not having crossed yet."""

    def __init__(self):
        self.grid = np.linspace(-_LIM, _LIM, _GRID)
        self.step = self.grid[1] - self.grid[0]
        self.density, self.t = None, 0.0

    def advance(self, t: float) -> None:
        """To the next look at information ``t``: S gains an independent N(0, t - t_prev)."""
        from scipy.stats import norm  # noqa: PLC0415

        g, var = self.grid, t - self.t
        if self.density is None:
            self.density = norm.pdf(g / math.sqrt(var)) / math.sqrt(var)
        else:
            kernel = norm.pdf((g[:, None] - g[None, :]) / math.sqrt(var)) / math.sqrt(var)
            self.density = kernel @ self.density * self.step
        self.t = t

    def _beyond(self, bound: float) -> np.ndarray:
        """Each grid cell's share beyond ±bound (z scale): a cell the edge cuts counts by the part beyond it, so
        probabilities move smoothly with the bound (the bisection's target)."""
        edge = bound * math.sqrt(self.t)
        return np.clip((np.abs(self.grid) + self.step / 2 - edge) / self.step, 0.0, 1.0)

    def outside(self, bound: float) -> float:
        """Probability of being beyond ±bound (z scale) now, not having crossed before."""
        return float((self.density * self._beyond(bound)).sum() * self.step)

    def stop_outside(self, bound: float) -> None:
        self.density = self.density * (1.0 - self._beyond(bound))


def crossing_probabilities(bounds: Sequence[float], fractions: Sequence[float]) -> list[float]:
    """Under no effect, the probability of first crossing the two-sided bound ``bounds[k]`` (z scale) at look k,
    the looks at information ``fractions`` (increasing, the last 1)."""
    proc, out = _Process(), []
    for b, t in zip(bounds, fractions):
        proc.advance(t)
        out.append(proc.outside(b))
        proc.stop_outside(b)
    return out


def spending_bounds(fractions: Sequence[float], alpha: float = 0.05, spend=obf_spending) -> list[float]:
    """The two-sided z boundaries of looks at information ``fractions`` (increasing, the last 1) that spend
    ``spend(t, alpha)``: each found by bisection so that first crossing there has the spent probability."""
    ts = [float(t) for t in fractions]
    if not ts or any(b <= a for a, b in zip(ts, ts[1:])) or not 0 < ts[0] or abs(ts[-1] - 1) > 1e-9:
        raise ValueError(f"information fractions {fractions}: increasing, above 0, the last 1")
    proc, bounds = _Process(), []
    for k, t in enumerate(ts):
        want = spend(t, alpha) - (spend(ts[k - 1], alpha) if k else 0.0)
        proc.advance(t)
        if k == 0:  # no earlier look: in closed form
            from scipy.stats import norm  # noqa: PLC0415

            bounds.append(float(norm.isf(want / 2)))
        else:
            lo, hi = 0.0, _LIM / math.sqrt(t)
            for _ in range(60):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if proc.outside(mid) > want else (lo, mid)
            bounds.append((lo + hi) / 2)
        proc.stop_outside(bounds[-1])
    return bounds


def nominal_levels(bounds: Sequence[float]) -> list[float]:
    """Each look's nominal two-sided significance level: 2 (1 - Phi(bound))."""
    from scipy.stats import norm  # noqa: PLC0415

    return [0.0 if math.isinf(b) else float(2 * norm.sf(b)) for b in bounds]
