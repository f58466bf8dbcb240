"""The over-optimisation early warning, pure: a gold-free signal (the reward-model ensemble's disagreement on each
step's rollouts, ``objective/ensemble_std``) rising well above where it started.

The policy drifting where the members were not trained is where they disagree (Coste et al. 2023; Eisenstein et al.
2023); a policy exploiting one member's errors raises that member's score alone. The rule is stateless over the
logged history, so a resumed run fires at the same step as an uninterrupted one."""

from __future__ import annotations

import math
from typing import NamedTuple


class Overopt(NamedTuple):
    step: int           # 1-based step at which it fired
    baseline: float     # mean signal over the first `window` steps
    smoothed: float     # mean signal over the `window` steps ending at `step`
    ratio: float        # smoothed / baseline


def overopt_warning(signal: list[float], rise: float, window: int = 4, patience: int = 2) -> Overopt | None:
    """The first step at which the mean of the last ``window`` values of ``signal`` has been at least
    ``(1 + rise)`` x the mean of its first ``window`` values for ``patience`` steps in a row (the two windows do not
    overlap), or None. Non-finite values are skipped in both means."""
    if rise <= 0 or window < 1 or patience < 1:
        raise ValueError(f"rise={rise} must be > 0, window={window} and patience={patience} >= 1")
    if len(signal) < 2 * window:
        return None
    base = _mean(signal[:window])
    if not math.isfinite(base) or base <= 0:
        return None
    run = 0
    for t in range(2 * window - 1, len(signal)):
        sm = _mean(signal[t - window + 1:t + 1])
        run = run + 1 if math.isfinite(sm) and sm >= (1 + rise) * base else 0
        if run >= patience:
            return Overopt(t + 1, base, sm, sm / base)
    return None


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else math.nan
