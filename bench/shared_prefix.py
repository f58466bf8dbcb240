"""Benchmark: a preference pair's shared prompt computed once (``shared_prefix``), against both sequences
whole, side by side in one process on the same batches (alternating, medians).

    .venv/bin/python bench/shared_prefix.py --prefs STUDY/prefs-<key> [--steps 6] [--batch 8]

Measures RM training steps (forward + backward + AdamW on LoRA in the top ``lora_layers`` blocks and the
head, the stage's defaults) and held-out scoring (``RewardModel.score_pairs``) on the default model, and
prints tokens per pair both ways. Prints measured numbers; it is not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefs", required=True, help="a finished prefs run folder")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8, help="pairs per training step (the stage's default)")
    ap.add_argument("--score-pairs", type=int, default=96)
    a = ap.parse_args()

    from edgerlhf.config import RewardConfig, load_config
    from edgerlhf.data.pairs import load_pairs
    from edgerlhf.models.adapters import apply_lora
    from edgerlhf.models.generation import right_pad
    from edgerlhf.models.loading import load_tokenizer
    from edgerlhf.rewards.learned import RewardModel, encode_for_rm, load_seq_cls, pair_rewards, rewards_of
    from edgerlhf.rl.losses import bradley_terry_loss

    cfg = load_config(RewardConfig, overrides={"prefs": a.prefs, "progress": False, "report_to": ["none"]})
    tok = load_tokenizer(cfg.model)
    train, held, _ = load_pairs(cfg, tok)
    enc = lambda rows, side: encode_for_rm(tok, [p["prompt"] for p in rows], [p[side] for p in rows], cfg.max_length)  # noqa: E731
    chosen, rejected = enc(train, "chosen"), enc(train, "rejected")
    torch.manual_seed(0)
    model, _ = load_seq_cls(cfg.model, seed=cfg.seed)
    model.config.use_cache = False
    model = apply_lora(model, cfg, "SEQ_CLS")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    pad = tok.pad_token_id

    def step(i: int, shared: bool) -> float:
        sl = slice(i * a.batch, (i + 1) * a.batch)
        c, r = chosen[sl], rejected[sl]
        t = time.perf_counter()
        model.train()
        if shared:
            rc, rr = pair_rewards(model, c, r, pad)
        else:
            ids, mask = right_pad(c + r, pad)
            rc, rr = rewards_of(model, ids, mask).chunk(2)
        bradley_terry_loss(rc, rr, 0.0, 0.0).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    times = {True: [], False: []}
    for i in range(a.steps):
        for shared in ((True, False) if i % 2 else (False, True)):
            times[shared].append(step(i, shared))
    whole = sum(len(x) + len(y) for x, y in zip(chosen, rejected)) / len(chosen)
    from edgerlhf.models.logprobs import common_prefix
    from edgerlhf.rewards.learned import _last_scored

    once = sum(len(x) + len(y) - min(common_prefix(x, y), _last_scored(x, pad), _last_scored(y, pad))
               for x, y in zip(chosen, rejected)) / len(chosen)
    print(f"tokens per pair: {whole:.1f} whole, {once:.1f} with the shared prefix once ({once / whole:.2f}x)")
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"RM training step ({a.batch} pairs, median of {a.steps}): whole {off:.2f} s, shared prefix {on:.2f} s "
          f"({on / off:.2f}x)")
    rm = RewardModel(model, tok, {"max_length": cfg.max_length})
    hc, hr = enc(held, "chosen")[:a.score_pairs], enc(held, "rejected")[:a.score_pairs]
    rm.score_pairs(hc[:8], hr[:8])
    res = {}
    for shared in (False, True, False, True):
        rm.shared_prefix = shared
        t = time.perf_counter()
        rm.score_pairs(hc, hr)
        res.setdefault(shared, []).append(time.perf_counter() - t)
    on, off = min(res[True]), min(res[False])
    print(f"held-out scoring ({len(hc)} pairs, best of 2): whole {off:.2f} s, shared prefix {on:.2f} s "
          f"({on / off:.2f}x)")


if __name__ == "__main__":
    main()
