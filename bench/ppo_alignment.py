"""Benchmarks 1 and 2 of the PPO issue: PPO with a preset, then `edgerlhf eval` against the SFT policy.

    python bench/ppo_alignment.py --sft runs/sft --rm runs/rm --preset quick   # <= 15 min of PPO
    python bench/ppo_alignment.py --sft runs/sft --rm runs/rm --preset full    # <= 60 min, ~2,000 episodes

Prints PPO wall time, learned-RM and gold reward first -> last, and the held-out evaluation: gold mean
of SFT and PPO policies on the same prompts, the paired 95% CI of the gain, win rate, KL, distinct-2 and
mean length (the gain counts only if those two stay within 20% of the SFT policy's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgerlhf.presets import STAGE_PRESETS as PRESETS
from edgerlhf.config import EvalConfig, PPOConfig, load_config
from edgerlhf.stages import evaluate, online


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft", required=True)
    ap.add_argument("--rm", required=True)
    ap.add_argument("--preset", default="quick", choices=["quick", "full", "user"])
    ap.add_argument("--out", default="runs/bench-ppo")
    ap.add_argument("--eval-prompts", type=int, default=128)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    cfg = load_config(PPOConfig, overrides=a.overrides, base={**PRESETS["ppo"][a.preset], "policy": a.sft,
                                                              "reward": a.rm, "output_dir": a.out,
                                                              "gold_eval_prompts": 0, "progress": False})
    run = online.run(cfg)
    s = json.loads((run / "summary.json").read_text())
    ev = evaluate.run(load_config(EvalConfig, overrides={"policy": str(run), "num_prompts": a.eval_prompts,
                                                         "output_dir": a.out, "progress": False}))
    e = json.loads((Path(ev) / "summary.json").read_text())
    print(f"\n== PPO preset {a.preset}: {s['episodes']} episodes, {s['steps']} steps")
    print(f"PPO wall {s['wall_time_s'] / 60:.1f} min (training {s['timing/train_s'] / 60:.1f} min), median step "
          f"{s['timing/step_s_median']:.1f} s, peak {s['memory/peak_mb']:.0f} MB")
    print(f"rollouts: RM score {s['objective/scores_first']:+.3f} -> {s['objective/scores_last']:+.3f}, gold "
          f"{s['objective/gold_first']:+.3f} -> {s['objective/gold_last']:+.3f}, KL {s['objective/kl_last']:.2f}")
    sft_g, ppo_g = e["baseline/gold_mean"], e["eval/gold_mean"]
    print(f"held-out ({e['prompts']} prompts): SFT gold {sft_g:+.3f} -> PPO {ppo_g:+.3f}; gain {e['eval/gold_gain']:+.3f} "
          f"(paired 95% CI {e['eval/gold_gain_ci95_low']:+.3f} .. {e['eval/gold_gain_ci95_high']:+.3f}); ratio "
          f"{ppo_g / sft_g if sft_g > 0 else float('nan'):.2f}x; win rate {e['eval/win_rate']:.3f}; KL {e['eval/kl']:.2f}")
    for k in ("distinct_2", "mean_tokens", "repetition_rate"):
        b, p = e[f"baseline/{k}"], e[f"eval/{k}"]
        print(f"  {k}: SFT {b:.3f} -> PPO {p:.3f} ({100 * (p - b) / b if b else float('nan'):+.0f}%)")
    print(f"learned RM (fp32) on held-out: SFT {e.get('baseline/rm_mean', float('nan')):+.3f} -> PPO {e.get('eval/rm_mean', float('nan')):+.3f}")


if __name__ == "__main__":
    main()
