"""Pure math, no I/O: losses, estimators and statistics, unit-tested against hand-derived values."""

from edgerlhf.rl.losses import bradley_terry_loss  # noqa: F401
