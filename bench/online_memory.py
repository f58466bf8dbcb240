"""Memory and speed of the online algorithms (and PPO's layouts) at one batch shape.

    python bench/online_memory.py --sft SFT_RUN --rm RM_RUN [--steps 12]
    python bench/online_memory.py --sft SFT_RUN --rm RM_RUN --runs ppo:shared:head,ppo:separate:head

8 episodes x 48 new tokens per step (PPO: 8 prompts; GRPO / RLOO: 2 prompts x 4 samples), micro-batch 2,
4 micro-batches per optimizer step, LoRA r=16 on every block, the fp32 RM. Each run is its own process (so
each peak is its own: the kernel's high-water mark, see tracking/memory.py). Prints peak memory, the median
step time and the trainable parameters.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RUNS = "ppo:shared:head,grpo:beta=0,grpo:beta=0.05,rloo:beta=0.05"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft", required=True)
    ap.add_argument("--rm", required=True)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", default="runs/bench-online-memory")
    ap.add_argument("--runs", default=RUNS, help="algo:extra,...: ppo:LAYOUT:VALUE_MODEL or grpo|rloo:key=value")
    a = ap.parse_args()
    rows = []
    for item in a.runs.split(","):
        algo, *extra = item.split(":")
        name = "-".join([algo, *extra]).replace("=", "")
        over = [f"policy={a.sft}", f"reward={a.rm}", "num_rollouts_per_step=8", "rollout_batch_size=8",
                "mini_batch_size=2", "gradient_accumulation_steps=4", "response_length=48", "lora_r=16",
                "lora_alpha=32", f"max_steps={a.steps}", "gold_eval_prompts=0", "progress=false", "report_to=none",
                f"output_dir={a.out}", f"run_name={name}", "learning_rate=1e-4"]
        if algo == "ppo":
            layout, value = extra or ("shared", "head")
            over += [f"layout={layout}", f"value_model={value}"]
        else:
            over += ["num_generations=4", *extra]
        if not (Path(a.out) / name / "summary.json").is_file():
            subprocess.run([sys.executable, "-m", "edgerlhf.cli", algo, *over], check=True)
        s = json.loads((Path(a.out) / name / "summary.json").read_text())
        rows.append((name, s["memory/peak_mb"], s.get("memory/peak_method", "?"), s["timing/step_s_median"],
                     s["trainable_params"]))
    print("\n| run | peak MB | method | median step s | trainable |\n|---|---|---|---|---|")
    for name, mb, how, st, tr in rows:
        print(f"| {name} | {mb:.0f} | {how} | {st:.2f} | {tr:,} |")
    by = {r[0]: r for r in rows}
    if "ppo-shared-head" in by:
        for name, mb, _, st, _ in rows:
            if name != "ppo-shared-head":
                print(f"{name}: memory {mb / by['ppo-shared-head'][1]:.2f}x PPO's, step time "
                      f"{st / by['ppo-shared-head'][3]:.2f}x")


if __name__ == "__main__":
    main()
