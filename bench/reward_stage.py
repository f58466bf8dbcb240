"""Benchmark: the whole reward-model stage on the default model and built-in task.

preference generation (k samples per prompt from the SFT policy, gold labels with noise) -> Bradley-Terry
training -> held-out evaluation. Prints measured numbers; it is not a test.

    .venv/bin/python bench/reward_stage.py --sft runs/sft-demo      # reuse an SFT run
    .venv/bin/python bench/reward_stage.py                          # runs the SFT demo first (not timed)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgerlhf.config import PrefsConfig, RewardConfig, SFTConfig, load_config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft", help="finished SFT run folder (default: run the SFT demo preset first)")
    ap.add_argument("--out", default="runs/bench-reward")
    ap.add_argument("--prefs", nargs="*", default=["num_prompts=260", "eval_fraction=0.15"],
                    help="prefs overrides")
    ap.add_argument("--reward", nargs="*", default=[], help="reward overrides (defaults: RewardConfig's)")
    args = ap.parse_args()
    out = Path(args.out)
    if args.sft:
        sft_dir = Path(args.sft)
    else:
        from edgerlhf.presets import STAGE_PRESETS as PRESETS
        from edgerlhf.stages import sft

        sft_dir = sft.run(load_config(SFTConfig, overrides={**PRESETS["sft"]["demo"], "output_dir": str(out)}))

    from edgerlhf.stages import prefs, reward

    t0 = time.perf_counter()
    p_dir = prefs.run(load_config(PrefsConfig, overrides=[f"policy={sft_dir}", f"output_dir={out}", "progress=false",
                                                          *args.prefs]))
    r_dir = reward.run(load_config(RewardConfig, overrides=[f"prefs={p_dir}", f"output_dir={out}", "progress=false",
                                                            *args.reward]))
    wall = time.perf_counter() - t0
    ps = json.loads((p_dir / "summary.json").read_text())
    rs = json.loads((r_dir / "summary.json").read_text())
    print("\n== reward-model stage (prefs + training + evaluation) ==")
    print(f"wall time                 {wall / 60:.1f} min  (prefs {ps['wall_time_s'] / 60:.1f}, reward "
          f"{rs['wall_time_s'] / 60:.1f})")
    print(f"peak memory               prefs {ps['memory/peak_mb']:.0f} MB, reward {rs['memory/peak_mb']:.0f} MB")
    print(f"pairs                     {rs['pairs_train']} train / {ps['pairs_eval_kept']} held out "
          f"(+{ps['pairs_eval_all'] - ps['pairs_eval_kept']} near-ties), "
          f"label noise {ps['label_noise_measured']:.3f}")
    for k in ("eval/accuracy", "eval/accuracy_gold", "eval/accuracy_gold_all", "eval/spearman_gold",
              "eval/reward_mean", "eval/reward_std"):
        print(f"{k:<25} {rs['before/' + k]:+.3f} -> {rs[k]:+.3f}")
    print(f"sampling                  {ps['prefs/tokens_per_s']:.0f} tokens/s; RM training "
          f"{rs['train/tokens_per_s']:.0f} tokens/s, "
          f"{rs['steps']} steps")


if __name__ == "__main__":
    main()
