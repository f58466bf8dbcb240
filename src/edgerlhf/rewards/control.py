"""A control reward: a score that carries no information about the response's quality.

``reward=random`` trains any online algorithm against :class:`RandomReward`, a fixed-seed random score per
response. What such a run gains on the gold is what the training dynamics give alone (entropy collapse, length
drift, the clipping's own bias): Shao et al. (2025, "Spurious rewards") found +21 points from random rewards on
one model family. The study's ``--algorithms ppo,ppo@null`` runs it beside the real arms.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

__all__ = ["RANDOM_REWARD", "RandomReward"]

RANDOM_REWARD = "random"  # the `reward` setting that names it


class RandomReward:
    """``reward(prompts, responses) -> list[float]``: a standard-normal score drawn from a hash of (seed, prompt,
    response), so the same response to the same prompt always gets the same score (a fixed function, as an RM
    is), different responses independent ones, and a run's scores are reproducible from its seed."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.meta = {"precision": "null", "backend": "random (a fixed-seed score per response)"}

    def score(self, prompt, response: str) -> float:
        h = hashlib.sha256(f"{self.seed}\x00{prompt!r}\x00{response}".encode()).digest()
        u1 = (int.from_bytes(h[:8], "big") + 1) / (2 ** 64 + 1)   # in (0, 1): never 0 or 1
        u2 = int.from_bytes(h[8:16], "big") / 2 ** 64
        return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)  # Box-Muller

    def __call__(self, prompts: Sequence, responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [self.score(p, r) for p, r in zip(prompts, responses)]
