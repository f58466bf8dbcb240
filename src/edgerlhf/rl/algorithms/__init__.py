"""Online-RL algorithms as plug-ins of one engine (``stages/online.py``): each a small module."""

from edgerlhf.rl.algorithms.base import Advantages, Algorithm, LossOut, MicroBatch, Rollout  # noqa: F401
from edgerlhf.rl.algorithms.grpo import GRPO
from edgerlhf.rl.algorithms.ppo import PPO
from edgerlhf.rl.algorithms.rloo import RLOO

ALGORITHMS: dict[str, type[Algorithm]] = {"ppo": PPO, "grpo": GRPO, "rloo": RLOO}


def make_algorithm(cfg) -> Algorithm:
    """The algorithm a config is for (by its stage name)."""
    return ALGORITHMS[cfg.stage](cfg)
