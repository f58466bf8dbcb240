"""Benchmark 3 of the PPO issue: memory and speed of the shared layout against `layout=separate`.

    python bench/ppo_memory.py --sft runs/sft --rm runs/rm [--steps 12]

Batch 8 x 48 new tokens, LoRA r=16, the fp32 RM; each layout runs in its own process (so each peak RSS is
its own) with the same trainable parameters, optimizer, dtypes and batch. Prints peak memory and the
median step time over the steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

LAYOUTS = [("shared", "head"), ("shared", "adapter"), ("separate", "head"), ("separate", "adapter")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft", required=True)
    ap.add_argument("--rm", required=True)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", default="runs/bench-ppo-memory")
    ap.add_argument("--layouts", default=",".join(f"{a}:{b}" for a, b in LAYOUTS))
    a = ap.parse_args()
    rows = []
    for item in a.layouts.split(","):
        layout, value = item.split(":")
        name = f"{layout}-{value}"
        over = [f"policy={a.sft}", f"reward={a.rm}", f"layout={layout}", f"value_model={value}",
                "num_rollouts_per_step=8", "rollout_batch_size=8", "mini_batch_size=2", "gradient_accumulation_steps=4",
                "response_length=48", "lora_r=16", "lora_alpha=32", f"max_steps={a.steps}", "gold_eval_prompts=0",
                "progress=false", "report_to=none", f"output_dir={a.out}", f"run_name={name}", "learning_rate=1e-4"]
        if (Path(a.out) / name).exists():
            print(f"{name}: exists, reading it")
        else:
            subprocess.run([sys.executable, "-m", "edgerlhf.cli", "ppo", *over], check=True)
        s = json.loads((Path(a.out) / name / "summary.json").read_text())
        rows.append((name, s["memory/peak_mb"], s["timing/step_s_median"], s["trainable_params"]))
    print(f"\n{'layout':<20}{'peak MB':>10}{'median step s':>15}{'trainable':>12}")
    for name, mb, st, tr in rows:
        print(f"{name:<20}{mb:>10.0f}{st:>15.2f}{tr:>12,}")
    by = {r[0]: r for r in rows}
    for v in ("head", "adapter"):
        if f"shared-{v}" in by and f"separate-{v}" in by:
            sh, se = by[f"shared-{v}"], by[f"separate-{v}"]
            print(f"value={v}: shared/separate memory {sh[1] / se[1]:.2f}x, step time {sh[2] / se[2]:.2f}x")


if __name__ == "__main__":
    main()
