"""The online engine's speed features against the old path, side by side, on the quick presets.

    python bench/online_speed.py --sft SFT_RUN --rm RM_RUN [--steps 3] [--algorithms ppo,grpo]

For each algorithm, runs of its quick preset (default model, the SFT policy and fp32 RM given), each in
its own process, one after the other:

* ``old``: ``cache_trunk=off sampler=generate`` (every forward runs all 30 blocks; rollouts through
  transformers' ``generate``), i.e. the engine before issue 12;
* ``new``: the defaults (EdgeRLHF's decode loop, which keeps the frozen trunk's output for every later pass
  of the step; the LM head on real response tokens only; the RM in length-sorted batches);
* ``fast``: ``rollout_logprobs=true`` on top (the old log-probs taken from the decode: no policy pass in the
  forward phase; the first ratio is 1 only to fp32 rounding).

Prints the median step time and its parts (generate / score / forward / update), tokens/s of the rollouts,
peak memory, and new / old. The two runs draw different rollouts (the samplers consume the random stream
differently), so their response lengths are printed too: a step's cost depends on them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

MODES = {"old": ["cache_trunk=off", "sampler=generate"], "new": [], "fast": ["rollout_logprobs=true"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft", required=True)
    ap.add_argument("--rm", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--algorithms", default="ppo,grpo")
    ap.add_argument("--modes", default="old,new,fast")
    ap.add_argument("--pre-src", default="", help="a checkout of an earlier commit: adds the mode `pre`, its code "
                    "(PYTHONPATH=<dir>/src) with its defaults, e.g. the engine before issue 12 (git worktree add DIR "
                    "eb6a94e)")
    ap.add_argument("--out", default="runs/bench-online-speed")
    a = ap.parse_args()
    rows = []
    for algo in a.algorithms.split(","):
        modes = a.modes.split(",") + (["pre"] if a.pre_src else [])
        for mode, extra in ((m, MODES.get(m, [])) for m in modes):
            name = f"{algo}-{mode}"
            over = ["--preset", "quick", f"policy={a.sft}", f"reward={a.rm}", f"max_steps={a.steps}",
                    "gold_eval_prompts=0", "progress=false", "report_to=none", f"output_dir={a.out}",
                    f"run_name={name}", *extra]
            if not (Path(a.out) / name / "summary.json").is_file():
                env = {**os.environ, "PYTHONPATH": str(Path(a.pre_src).resolve() / "src")} if mode == "pre" else None
                subprocess.run([sys.executable, "-m", "edgerlhf.cli", algo, *over], check=True, env=env)
            s = json.loads((Path(a.out) / name / "summary.json").read_text())
            steps = [json.loads(x) for x in (Path(a.out) / name / "metrics.jsonl").read_text().splitlines()]
            steps = [r for r in steps if "timing/step_s" in r]
            med = {k: statistics.median(r[f"timing/{k}"] for r in steps)
                   for k in ("step_s", "generate", "score", "forward", "update", "generate_tokens_per_s")}
            length = statistics.mean(r["val/mean_length"] for r in steps)
            rows.append((algo, mode, med, length, s.get("memory/process_peak_mb", s["memory/peak_mb"])))
    print("\n| run | median step s | generate | score | forward | update | rollout tokens/s | mean length | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for algo, mode, m, ln, mb in rows:
        print(f"| {algo} {mode} | {m['step_s']:.1f} | {m['generate']:.1f} | {m['score']:.1f} | {m['forward']:.1f} | "
              f"{m['update']:.1f} | {m['generate_tokens_per_s']:.0f} | {ln:.1f} | {mb:.0f} |")
    by = {(r[0], r[1]): r for r in rows}
    for algo, mode, base in ((x, m, b) for x in a.algorithms.split(",") for b in ("old", "pre")
                             for m in ("new", "fast") if (x, m) in by and (x, b) in by):
        old, new = by[(algo, base)], by[(algo, mode)]
        print(f"{algo}: {mode} / {base} median step {new[2]['step_s'] / old[2]['step_s']:.2f}x, forward "
              f"{new[2]['forward'] / old[2]['forward']:.2f}x, update {new[2]['update'] / old[2]['update']:.2f}x, "
              f"rollout tokens/s {new[2]['generate_tokens_per_s'] / old[2]['generate_tokens_per_s']:.2f}x, "
              f"peak memory {new[4] / old[4]:.2f}x")


if __name__ == "__main__":
    main()
