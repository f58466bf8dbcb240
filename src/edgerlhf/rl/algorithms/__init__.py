"""Online-RL algorithms as plug-ins of one engine (``stages/online/``): each a small module."""

from edgerlhf import registry
from edgerlhf.rl.algorithms.base import Advantages, Algorithm, LossOut, MicroBatch, Rollout

__all__ = ["Advantages", "Algorithm", "LossOut", "MicroBatch", "Rollout", "make_algorithm"]


def make_algorithm(cfg) -> Algorithm:
    """The algorithm a config is for: its stage's row in the registry names the class."""
    return registry.get(cfg.stage).algorithm_class()(cfg)
