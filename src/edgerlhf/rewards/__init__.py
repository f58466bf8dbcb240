"""Rewards: the gold scorer (VADER) and confidence intervals."""

from edgerlhf.rewards.gold import GoldScorer, mean_ci95  # noqa: F401
