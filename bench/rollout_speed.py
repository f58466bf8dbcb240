"""Rollout sampling speed: transformers' ``generate`` against EdgeRLHF's decode loop (``sampler=edgerlhf``), on
the default model with the quick preset's LoRA, at one or more batch sizes, next to the machine's decode
roofline (weight bytes per decode step / measured memory bandwidth).

    python bench/rollout_speed.py [--batch 8 32] [--reps 2] [--length 48] [--groups 1]

Each (batch, sampler) samples the same built-in prompts from the same seed (``--groups 4``: each prompt 4
times in a row, as in a GRPO step, which EdgeRLHF's sampler prefills once). tokens/s counts response tokens up
to and including EOS (the tokens a rollout keeps). Also times the two orientations of the LM head for
``batch`` rows. Run it alone: two torch jobs on 2 cores slow each other 10-20x.
"""

from __future__ import annotations

import argparse
import time

import torch


def bandwidth_gbs() -> float:
    """Read bandwidth: sum over a 512 MiB tensor (best of 5)."""
    a = torch.ones(128 * 2**20)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t)
    return a.numel() * 4 / best / 1e9


def matmul_gflops() -> float:
    """fp32 matmul throughput on a square 1024 x 1024 product (best of 5): the compute side of the roofline."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 1024**3 / best / 1e9


def linears_ms(model, rows: int, reps: int = 3) -> float:
    """One pass of ``rows`` rows through every Linear of the decoder stack in order, each weight read from memory
    as in a decode step (the stack's weights do not fit in cache): the matmuls' own share of a step (best of
    ``reps``)."""
    lins = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.shape[0] > 64]
    xs = {m.in_features: torch.randn(rows, m.in_features) for m in lins}
    best = float("inf")
    with torch.no_grad():
        for _ in range(reps):
            t = time.perf_counter()
            for m in lins:
                torch.nn.functional.linear(xs[m.in_features], m.weight)
            best = min(best, time.perf_counter() - t)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--groups", type=int, default=1, help="samples per prompt (GRPO's num_generations)")
    a = ap.parse_args()

    from edgerlhf.config import PPOConfig, load_config
    from edgerlhf.data.formatting import encode_prompt
    from edgerlhf.data.task import build_task
    from edgerlhf.models.generation import _head_logits, left_pad
    from edgerlhf.models.parts import decoder_parts as _parts
    from edgerlhf.models.roles import Roles

    cfg = load_config(PPOConfig, overrides={"model": "default", "report_to": ["none"]}, preset="quick")
    roles = Roles(cfg, dtype=torch.float32, device="cpu", values=False, reference=False)
    roles.train(False)
    tok = roles.tokenizer
    prompts = [r["prompt"] for r in build_task()["train"]]
    weight_bytes = sum(p.numel() * p.element_size() for p in roles.policy.parameters())
    bw, peak = bandwidth_gbs(), matmul_gflops()
    step_floor = weight_bytes / (bw * 1e9)
    n_params = sum(p.numel() for p in roles.policy.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; weights {weight_bytes / 2**20:.0f} MiB, "
          f"read bandwidth {bw:.1f} GB/s -> decode step >= {step_floor * 1000:.1f} ms; fp32 matmul {peak:.0f} GFLOP/s")
    body, head = _parts(roles.policy)
    rows = []
    for B in a.batch:
        h = torch.randn(B, head.weight.shape[1])
        for name, fn in (("h @ W^T", lambda h=h: torch.nn.functional.linear(h, head.weight)),
                         ("W @ h^T", lambda h=h: _head_logits(head, h))):
            fn()
            t = time.perf_counter()
            for _ in range(10):
                fn()
            print(f"LM head, {B} rows, {name}: {(time.perf_counter() - t) / 10 * 1000:.1f} ms")
        compute_floor = 2 * n_params * B / (peak * 1e9)
        lin = linears_ms(body, B)
        print(f"batch {B}: the stack's Linears alone take {lin:.1f} ms a step "
              f"({weight_bytes / 2**20 / 1024 / (lin / 1000):.1f} "
              f"GB/s of weights); compute floor {compute_floor * 1000:.1f} ms")
        step_floor_b = max(step_floor, compute_floor)
        batch = [encode_prompt(tok, p) for p in prompts[:B // a.groups] for _ in range(a.groups)]
        ids, mask = left_pad(batch, tok.pad_token_id)
        kw = dict(max_new_tokens=a.length, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                  temperature=a.temperature)
        for sampler in ("generate", "edgerlhf"):
            torch.manual_seed(0)
            n_tok, secs = 0, 0.0
            for _ in range(a.reps):
                t = time.perf_counter()
                if sampler == "generate":
                    out = roles.generate(ids, mask, do_sample=True, top_k=None, **kw)[:, ids.shape[1]:]
                else:
                    out = roles.sample(ids, mask, **kw)
                secs += time.perf_counter() - t
                is_eos = out == tok.eos_token_id
                ended = is_eos.any(1)
                lengths = torch.where(ended, is_eos.float().argmax(1) + 1,
                                      torch.full_like(ended, out.shape[1], dtype=torch.long))
                n_tok += int(lengths.sum())
            tps = n_tok / secs
            ceiling = B / step_floor_b
            rows.append((B, sampler, tps, n_tok / a.reps / B, tps / ceiling))
            print(f"batch {B} {sampler}: {tps:.0f} tokens/s (mean length {n_tok / a.reps / B:.1f}), "
                  f"{tps / ceiling:.1%} of the roofline's {ceiling:.0f} tokens/s (max of memory and compute floors)")
    print("\n| batch | sampler | tokens/s | mean length | share of decode roofline |\n|---|---|---|---|---|")
    for B, s, tps, ln, share in rows:
        print(f"| {B} | {s} | {tps:.0f} | {ln:.1f} | {share:.1%} |")


if __name__ == "__main__":
    main()
