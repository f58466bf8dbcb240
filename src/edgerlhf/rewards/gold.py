"""The gold reward: VADER sentiment of the response by default, or a scorer the user names.

``make_gold(spec)`` turns a task's ``gold`` setting into a scorer ``(prompts, responses) -> list[float]``:
``vader`` (below), ``none`` (no gold: reports use the learned RM and say it is a proxy), ``module:function`` or
``path/to/file.py:function`` (any Python callable with that signature), or a trained reward-model folder used
as the gold (Gao et al. 2022: an independent RM as gold, the policy's RM as the proxy).

Gold is the yardstick every stage is judged by, and it is independent of anything we train: it is
VADER (Hutto & Gilbert, 2014), a fixed rule-based sentiment analyser whose lexicon ships inside the
``vaderSentiment`` package (offline, no weights, no randomness). The learned reward model only ever
approximates it; PPO gains are reported in gold.
"""

from __future__ import annotations

import math
import time
from typing import Iterable, Sequence

import torch

from edgerlhf.config.core import UserCodeError
from edgerlhf.config.refs import GOLD_KINDS, check_gold, import_callable, is_reward_folder
from edgerlhf.models.generation import generate
from edgerlhf.rewards.serving import load_reward_as_stored

__all__ = ["GOLD_KINDS", "GoldScorer", "check_gold", "gold_eval", "make_gold", "mean_ci95"]



class GoldScorer:
    """VADER compound score of each response, in [-1, 1] (empty or blank response -> 0.0).

    Callable with the common reward signature ``scorer(prompts, responses) -> list[float]``; the
    prompts are accepted and ignored: only the response text is scored.
    """

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # noqa: PLC0415 - only for the VADER gold

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


class _Checked:
    """A user's gold callable, held to its contract: one finite float per response."""

    def __init__(self, fn, name: str, user: bool = True):
        self.fn, self.name, self.user = fn, name, user  # user: the user's own code (its errors are shown as theirs)

    def __call__(self, prompts, responses) -> list[float]:
        try:
            out = self.fn(list(prompts), list(responses))
        except Exception as e:  # noqa: BLE001 - the user's code: name it and show its frames, not ours
            if not self.user:
                raise
            raise UserCodeError.from_exception(f"gold {self.name}", e) from e
        try:
            vals = [float(v) for v in out]
        except (TypeError, ValueError):
            raise ValueError(f"gold {self.name} must return a list of numbers, one per response; it returned "
                             f"{type(out).__name__}") from None
        if len(vals) != len(responses):
            raise ValueError(f"gold {self.name} returned {len(vals)} scores for {len(responses)} responses")
        bad = [i for i, v in enumerate(vals) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"gold {self.name} returned a non-finite score for response {bad[0]} "
                             f"({responses[bad[0]]!r:.80}); a gold must score every response")
        return vals


def make_gold(spec: str, *, device: str = "cpu"):
    """The scorer ``(prompts, responses) -> list[float]`` a ``gold`` setting names, or None for ``none``."""
    spec = (spec or "").strip()
    errs = check_gold(spec)
    if errs:
        raise ValueError("; ".join(errs))
    if spec == "vader":
        return GoldScorer()
    if spec == "none":
        return None
    if is_reward_folder(spec):
        rm = load_reward_as_stored(spec, "fp32", device=device)  # fp32, or as stored (a quantised RM folder)
        return _Checked(rm, f"reward model {spec}", user=False)
    return _Checked(import_callable(spec), spec)


_VADER = object()  # the default gold, built on first use


def gold_eval(model, tok, prompts: list, *, temperature: float = 0.7, max_new_tokens: int = 48, seed: int = 0,
              batch_size: int = 64, progress: bool = False, gold=_VADER) -> dict:
    """Sample one response per prompt and score it with the gold scorer (VADER unless ``gold`` names another
    ``(prompts, responses) -> list[float]``; ``gold=None``: no gold, only the responses).

    Returns ``eval/gold_mean`` with its 95% CI over prompts (with a gold), the mean response length in tokens,
    the sampling speed, and the responses themselves (for reports and paired comparisons)."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    texts, n_tokens = generate(model, tok, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                               batch_size=batch_size, progress=progress, desc="eval samples")
    dt = time.perf_counter() - t0
    out = {"eval/mean_tokens": n_tokens / max(len(texts), 1), "timing/sample_s": dt,
           "eval/gen_tokens_per_s": n_tokens / dt, "responses": texts, "gold": None}
    if gold is _VADER:
        gold = GoldScorer()
    out.update(gold_scores(gold, prompts, texts))
    return out


def gold_scores(gold, prompts: list, texts: list[str]) -> dict:
    """``texts`` scored by ``gold``: each one's score (``gold``) and their mean with its 95% CI over prompts
    (``eval/gold_*``); ``{}`` without a gold. Shared by :func:`gold_eval` and responses sampled elsewhere."""
    if gold is None:
        return {}
    scores = gold(prompts, texts)
    mean, lo, hi = mean_ci95(scores)
    return {"eval/gold_mean": mean, "eval/gold_ci95_low": lo, "eval/gold_ci95_high": hi, "eval/gold_n": len(scores),
            "gold": scores}
