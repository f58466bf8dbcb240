"""Benchmark: what serving a reward-model ensemble costs, side by side on the same held-out pairs, each configuration
in its own process (so each peak memory is its own): one fp32 RM (member 0), the K members at a precision in the
shared-base layout (one base, K LoRA adapters and heads) and in the merged layout (K merged models), and WARM (one
weight-averaged RM) at that precision and at fp32.

    .venv/bin/python bench/ensemble_serving.py --rm ENSEMBLE_RUN [--precision int4] [--pairs 64] [--batch-size 16]
        [--pairs-file held_out.jsonl]

Prints per configuration: stored weight MB (from the tensors), peak memory while scoring, seconds per scoring batch
of ``batch-size`` sequences, pairs/s, held-out accuracy. Prints measured numbers; it is not a test.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rm", required=True, help="an ensemble reward run (edgerlhf reward members=K)")
    ap.add_argument("--precision", default="int4")
    ap.add_argument("--pairs", type=int, default=64, help="held-out pairs (of the prefs run the RM was trained on)")
    ap.add_argument("--pairs-file", default="", help="held-out preference file (default: the prefs run's eval split)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", help="write the rows as JSON here")
    a = ap.parse_args()

    from edgerlhf.config import RMEvalConfig, load_config
    from edgerlhf.stages.rm_eval import held_out_pairs, measure

    pairs = held_out_pairs(load_config(RMEvalConfig, overrides={"rm": a.rm, "max_pairs": a.pairs,
                                                                      "pairs": a.pairs_file}))
    p = a.precision
    configs = [("1 RM fp32 (member 0)", "fp32", {"ensemble": "member-0"}),
               (f"1 RM {p} (member 0)", p, {"ensemble": "member-0"}),
               (f"K members {p}, shared base", p, {"ensemble": "mean", "layout": "shared"}),
               (f"K members {p}, merged", p, {"ensemble": "mean", "layout": "merged"}),
               (f"WARM {p}", p, {"ensemble": "warm"}),
               ("WARM fp32", "fp32", {"ensemble": "warm"})]
    rows = []
    print(f"{len(pairs)} held-out pairs, batch {a.batch_size} sequences, each configuration in its own process\n")
    print("| configuration | weights MB | peak MB (scoring) | load peak MB | s/batch | pairs/s | held-out acc |")
    print("|---|---|---|---|---|---|---|")
    for name, prec, kw in configs:
        r = measure(a.rm, prec, "cpu", a.batch_size, pairs, isolate=True, **kw)
        n = len(pairs)
        acc = sum(c > j for c, j in zip(r["scores"][:n], r["scores"][n:])) / n
        rows.append({"configuration": name, "precision": prec, **kw, "weight_mb": r["weight_mb"],
                     "peak_mb": r["memory/peak_mb"], "load_peak_mb": r["memory/load_peak_mb"],
                     "s_per_batch": r["latency_s_per_batch"], "pairs_per_s": r["pairs_per_s"], "accuracy": acc,
                     "backend": r["backend"]})
        print(f"| {name} | {r['weight_mb']:.1f} | {r['memory/peak_mb']:.0f} | {r['memory/load_peak_mb']:.0f} | "
              f"{r['latency_s_per_batch']:.2f} | {r['pairs_per_s']:.1f} | {acc:.3f} |", flush=True)
    rows.append(_trunk(a.rm, p, pairs, a.batch_size))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


def _trunk(rm_path: str, precision: str, pairs: list[dict], batch_size: int) -> dict:
    """Scoring whole sequences (online RL's way) with the shared base: the adapter-free bottom blocks once for all
    members against every member running every block, in one process on the same sequences."""
    import time

    from edgerlhf.rewards.learned import encode_for_rm
    from edgerlhf.rewards.serving import load_reward

    rm = load_reward(rm_path, precision, batch_size=batch_size, ensemble="mean", layout="shared")
    prompts = [p["prompt"] for p in pairs]
    seqs = encode_for_rm(rm.tokenizer, prompts + prompts, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs],
                         rm.max_length)
    out = {"configuration": f"whole-sequence scoring, K members {precision}, shared base", "sequences": len(seqs),
           "split": rm.split}
    got = {}
    for share in (False, True, False, True):  # alternate, the second of each is reported (warm)
        rm.share_trunk = share
        t0 = time.perf_counter()
        got[share] = rm.member_scores_ids(seqs)
        out[f"s_{'shared_trunk' if share else 'every_block'}"] = time.perf_counter() - t0
    out["max_abs_diff"] = float((got[True] - got[False]).abs().max())
    print(f"\nwhole-sequence scoring of {len(seqs)} sequences by the {len(rm)} members at {precision} (shared base; "
          f"LoRA above block {rm.split}): every member every block {out['s_every_block']:.1f} s, the adapter-free "
          f"blocks once {out['s_shared_trunk']:.1f} s ({out['s_every_block'] / out['s_shared_trunk']:.2f}x); "
          f"largest score difference {out['max_abs_diff']:.2e}")
    return out


if __name__ == "__main__":
    main()
