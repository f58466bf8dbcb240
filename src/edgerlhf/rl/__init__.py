"""Pure math, no I/O: losses, estimators and statistics, unit-tested against hand-derived values."""

from edgerlhf.rl.losses import bradley_terry_loss  # noqa: F401
from edgerlhf.rl.ppo_math import (  # noqa: F401
    AdaptiveKLController,
    entropy_from_logits,
    gae,
    kl_k1,
    kl_k3,
    masked_mean,
    masked_var,
    per_token_rewards,
    policy_loss,
    value_loss,
    whiten,
)
