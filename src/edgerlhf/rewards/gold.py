"""The gold reward: VADER sentiment of the response.

Gold is the yardstick every stage is judged by, and it is independent of anything we train: it is
VADER (Hutto & Gilbert, 2014), a fixed rule-based sentiment analyser whose lexicon ships inside the
``vaderSentiment`` package (offline, no weights, no randomness). The learned reward model only ever
approximates it; PPO gains are reported in gold.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

__all__ = ["GoldScorer", "mean_ci95"]


class GoldScorer:
    """VADER compound score of each response, in [-1, 1] (empty or blank response -> 0.0).

    Callable with the common reward signature ``scorer(prompts, responses) -> list[float]``; the
    prompts are accepted and ignored: only the response text is scored.
    """

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, text: str) -> float:
        if not text or not text.strip():
            return 0.0
        return float(self._analyzer.polarity_scores(text)["compound"])

    def score_texts(self, texts: Iterable[str]) -> list[float]:
        return [self.score(t) for t in texts]

    def __call__(self, prompts: Sequence | None, responses: Sequence[str]) -> list[float]:
        if prompts is not None and len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_texts(responses)


def mean_ci95(values: Iterable[float]) -> tuple[float, float, float]:
    """(mean, low, high): normal-approximation 95% CI, mean ± 1.96 * sample std / sqrt(n).

    For n < 2 the interval is (mean, mean); for n == 0 everything is nan.
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = sum(xs) / n
    if n < 2:
        return (mean, mean, mean)
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    half = 1.96 * math.sqrt(var) / math.sqrt(n)
    return (mean, mean - half, mean + half)
