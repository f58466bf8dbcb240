"""Alignment at equal episodes: PPO, GRPO and RLOO from the same SFT policy and RM, side by side.

    python bench/online_alignment.py --sft SFT_RUN --rm RM_RUN                      # quick presets: 256 episodes each
    python bench/online_alignment.py --sft SFT_RUN --rm RM_RUN --preset full --algorithms grpo

Each algorithm runs `edgerlhf <algo> --preset <preset>` in its own process (its peak memory its own), then
`edgerlhf eval` on the same held-out prompts with the same sampling seed, reusing one evaluation of the SFT
policy as the baseline, so every comparison is paired by prompt. Prints, per algorithm: wall time, median
step, peak memory, held-out gold of SFT and policy, the paired gold gain with its 95% CI (over prompts),
win rate, KL to SFT, distinct-2 and length against SFT's; then the paired differences between algorithms.
One run per algorithm: the CIs are over prompts, not over seeds (RL's run-to-run variance is not in them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from edgerlhf.rewards.gold import mean_ci95


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "edgerlhf.cli", *args], check=True)


def _summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def _gold(path: Path) -> list[float]:
    return [json.loads(x)["gold"] for x in (path / "responses.jsonl").read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft", required=True)
    ap.add_argument("--rm", required=True)
    ap.add_argument("--preset", default="quick", choices=["quick", "full"])
    ap.add_argument("--algorithms", default="ppo,grpo,rloo")
    ap.add_argument("--out", default="runs/bench-online")
    ap.add_argument("--eval-prompts", type=int, default=128)
    ap.add_argument("--sft-eval", help="an existing eval run folder of the SFT policy (baseline=none, same prompts and "
                                       "sampling), e.g. a study's eval-sft-*, instead of sampling it again")
    a = ap.parse_args()
    out = Path(a.out)
    common = ["progress=false", "report_to=none", f"output_dir={out}"]
    sft_eval = Path(a.sft_eval) if a.sft_eval else out / "eval-sft"
    if not (sft_eval / "summary.json").is_file():
        _cli("eval", a.sft, "baseline=none", f"reward={a.rm}", "reward_precision=fp32", f"num_prompts={a.eval_prompts}",
             "run_name=eval-sft", *common)
    rows = {}
    for algo in a.algorithms.split(","):
        name = f"{algo}-{a.preset}"
        if not (out / name / "summary.json").is_file():
            _cli(algo, "--preset", a.preset, f"policy={a.sft}", f"reward={a.rm}", "gold_eval_prompts=0",
                 f"run_name={name}", *common)
        if not (out / f"eval-{name}" / "summary.json").is_file():
            _cli("eval", str(out / name), f"reward={a.rm}", "reward_precision=fp32", f"num_prompts={a.eval_prompts}",
                 f"baseline_eval={sft_eval}", f"run_name=eval-{name}", *common)
        rows[algo] = (_summary(out / name), _summary(out / f"eval-{name}"), _gold(out / f"eval-{name}"))
    print(f"\n== {a.preset} presets, the same SFT policy and RM (fp32), {a.eval_prompts} held-out prompts")
    print("| algorithm | episodes | wall min | median step s | peak MB | gold SFT -> policy | gain [95% CI] | win rate "
          "| KL | distinct-2 | length |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for algo, (s, e, _) in rows.items():
        d2 = 100 * (e["eval/distinct_2"] / e["baseline/distinct_2"] - 1)
        ln = 100 * (e["eval/mean_tokens"] / e["baseline/mean_tokens"] - 1)
        print(f"| {algo} | {s['episodes']} | {s['wall_time_s'] / 60:.1f} | {s['timing/step_s_median']:.1f} | "
              f"{s['memory/peak_mb']:.0f} | {e['baseline/gold_mean']:+.3f} -> {e['eval/gold_mean']:+.3f} | "
              f"{e['eval/gold_gain']:+.3f} [{e['eval/gold_gain_ci95_low']:+.3f}, {e['eval/gold_gain_ci95_high']:+.3f}] "
              "| "
              f"{e['eval/win_rate']:.3f} | {e['eval/kl']:.2f} | {d2:+.0f}% | {ln:+.0f}% |")
    names = list(rows)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            diff = [p - q for p, q in zip(rows[x][2], rows[y][2])]
            m, lo, hi = mean_ci95(diff)
            print(f"gold {x} - {y}: {m:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired over prompts, one run each)")


if __name__ == "__main__":
    main()
