"""Policy evaluation on held-out prompts: gold (and later learned-RM) scores with confidence intervals."""

from __future__ import annotations

import time

import torch

from edgerlhf.models.generation import generate
from edgerlhf.rewards import GoldScorer, mean_ci95


def gold_eval(model, tok, prompts: list, *, temperature: float = 0.7, max_new_tokens: int = 48, seed: int = 0,
              batch_size: int = 64, progress: bool = False) -> dict:
    """Sample one response per prompt and score it with the gold scorer (VADER).

    Returns ``eval/gold_mean`` with its 95% CI over prompts, the mean response length in tokens, the
    sampling speed, and the responses themselves (for reports and paired comparisons)."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    texts, n_tokens = generate(model, tok, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                               batch_size=batch_size, progress=progress, desc="gold eval")
    dt = time.perf_counter() - t0
    gold = GoldScorer()(prompts, texts)
    mean, lo, hi = mean_ci95(gold)
    return {"eval/gold_mean": mean, "eval/gold_ci95_low": lo, "eval/gold_ci95_high": hi, "eval/gold_n": len(gold),
            "eval/mean_tokens": n_tokens / max(len(texts), 1), "timing/gold_eval_s": dt,
            "eval/gen_tokens_per_s": n_tokens / dt, "responses": texts, "gold": gold}
