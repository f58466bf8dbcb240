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

__all__ = ["GOLD_KINDS", "GoldScorer", "check_gold", "gold_eval", "make_gold", "mean_ci95"]

GOLD_KINDS = "vader, none, module:function, path/to/file.py:function, or a trained reward-model folder"


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


class _Checked:
    """A user's gold callable, held to its contract: one finite float per response."""

    def __init__(self, fn, name: str):
        self.fn, self.name = fn, name

    def __call__(self, prompts, responses) -> list[float]:
        out = self.fn(list(prompts), list(responses))
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


def _import_callable(spec: str):
    """``module:function`` or ``path/to/file.py:function`` -> the callable (ValueError naming what is wrong)."""
    import importlib
    import importlib.util
    from pathlib import Path

    mod_name, _, fn_name = spec.rpartition(":")
    if not mod_name or not fn_name:
        raise ValueError(f"gold={spec!r}: use module:function or path/to/file.py:function")
    if mod_name.endswith(".py"):
        path = Path(mod_name).expanduser()
        if not path.is_file():
            raise ValueError(f"gold={spec!r}: no such file {mod_name!r}")
        loader = importlib.util.spec_from_file_location(f"edgerlhf_user_gold_{path.stem}", path)
        module = importlib.util.module_from_spec(loader)
        try:
            loader.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's file: say which and why
            raise ValueError(f"gold={spec!r}: importing {mod_name} failed: {type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise ValueError(f"gold={spec!r}: cannot import {mod_name!r} ({e}); put its folder on PYTHONPATH or "
                             "name the file: path/to/file.py:function") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        have = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise ValueError(f"gold={spec!r}: {mod_name} has no function {fn_name!r} (it has: {', '.join(have) or 'none'})")
    return fn


def _is_reward_folder(spec: str) -> bool:
    from pathlib import Path

    p = Path(spec).expanduser()
    return p.is_dir()


def check_gold(spec: str) -> list[str]:
    """Problems with a ``gold`` setting, found without loading a model (for config validation)."""
    spec = (spec or "").strip()
    if spec in ("vader", "none"):
        return []
    if _is_reward_folder(spec):
        from edgerlhf.models.adapters import find_artifact, read_artifact_meta

        try:
            stage = read_artifact_meta(find_artifact(spec)).get("stage", "")
        except (FileNotFoundError, ValueError) as e:
            return [f"gold={spec!r}: a folder, but not a trained reward model ({e})"]
        if stage != "reward":  # (a quantized RM folder keeps its reward meta)
            return [f"gold={spec!r}: a {stage or 'non-EdgeRLHF'} artifact, not a reward model; name a reward run folder"]
        return []
    if ":" in spec:
        try:
            _import_callable(spec)
        except ValueError as e:
            return [str(e)]
        return []
    return [f"gold={spec!r}: not a known gold; use {GOLD_KINDS}"]


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
    if _is_reward_folder(spec):
        from edgerlhf.rewards.learned import load_reward_model

        rm = load_reward_model(spec, "fp32", device=device)
        return _Checked(rm, f"reward model {spec}")
    return _Checked(_import_callable(spec), spec)


_VADER = object()  # the default gold, built on first use


def gold_eval(model, tok, prompts: list, *, temperature: float = 0.7, max_new_tokens: int = 48, seed: int = 0,
              batch_size: int = 64, progress: bool = False, gold=_VADER) -> dict:
    """Sample one response per prompt and score it with the gold scorer (VADER unless ``gold`` names another
    ``(prompts, responses) -> list[float]``; ``gold=None``: no gold, only the responses).

    Returns ``eval/gold_mean`` with its 95% CI over prompts (with a gold), the mean response length in tokens,
    the sampling speed, and the responses themselves (for reports and paired comparisons)."""
    import torch

    from edgerlhf.models.generation import generate

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    texts, n_tokens = generate(model, tok, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                               batch_size=batch_size, progress=progress, desc="eval samples")
    dt = time.perf_counter() - t0
    out = {"eval/mean_tokens": n_tokens / max(len(texts), 1), "timing/sample_s": dt,
           "eval/gen_tokens_per_s": n_tokens / dt, "responses": texts, "gold": None}
    if gold is _VADER:
        gold = GoldScorer()
    if gold is not None:
        scores = gold(prompts, texts)
        mean, lo, hi = mean_ci95(scores)
        out.update({"eval/gold_mean": mean, "eval/gold_ci95_low": lo, "eval/gold_ci95_high": hi,
                    "eval/gold_n": len(scores), "gold": scores})
    return out
