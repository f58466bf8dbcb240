"""EdgeRLHF's GRPO beside the maintained peer, TRL 1.16's GRPOTrainer, on the same work, one after the other
on this machine (never at once: two torch jobs on 2 cores slow each other 10-20x).

    ../shared/peers/setup.sh 1.16.0                 # once: /tmp/peer-1.16.0 (venv + SmolLM2 HF folder)
    python bench/trl_grpo_peer.py --rm RM_RUN [--steps 6] [--peer /tmp/peer-1.16.0]

The same shape on both sides (the peer script's): SmolLM2-135M-Instruct, 8 completions per step in groups
of 4, 48 new tokens, temperature 0.7, LoRA r16 / alpha 32 on every linear layer of every block, beta 0.05,
one pass per step, lr 1e-5, a SmolLM2-sized sequence-classification RM in fp32 (TRL: an untrained head on
the base model; ours: a trained RM of the same architecture). Then EdgeRLHF again with its own small-machine
options: "edge, fast" = int4 RM, LoRA in the top 10 blocks (the frozen trunk cached), beta 0 (no reference
forward); "edge, lean" adds gradient checkpointing, micro-batches of 2 (4 accumulated: the same optimizer step)
and ``lean_update``. Peak memory: ``ru_maxrss`` of the peer's process, and of ours the kernel's high-water mark
over the whole process (``memory/process_peak_mb``: model loading included, like ``ru_maxrss``). Each run is its
own process. Median step time over the steps.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers"  # ../shared/peers beside the checkout


def ours(rm: str, steps: int, out: Path, name: str, extra: list[str]) -> tuple[float, float]:
    over = ["model=default", f"reward={rm}", "num_rollouts_per_step=8", "num_generations=4", "rollout_batch_size=8",
            "mini_batch_size=8", "gradient_accumulation_steps=1", "response_length=48", "temperature=0.7",
            "lora_r=16", "lora_alpha=32", "lora_dropout=0.05", "num_iterations=1", "learning_rate=1e-5", "beta=0.05",
            f"max_steps={steps}", "gold_eval_prompts=0", "progress=false", "report_to=none", f"output_dir={out}",
            f"run_name={name}", *extra]
    if not (out / name / "summary.json").is_file():
        subprocess.run([sys.executable, "-m", "edgerlhf.cli", "grpo", *over], check=True)
    s = json.loads((out / name / "summary.json").read_text())
    return s.get("memory/process_peak_mb", s["memory/peak_mb"]), s["timing/step_s_median"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rm", required=True)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--peer", default="/tmp/peer-1.16.0")
    ap.add_argument("--out", default="runs/bench-trl-grpo")
    ap.add_argument("--peers", default=str(PEERS), help="the folder holding trl_grpo.py (default: ../shared/peers)")
    a = ap.parse_args()
    out = Path(a.out)
    peer = subprocess.run([f"{a.peer}/venv/bin/python", str(Path(a.peers) / "trl_grpo.py"), f"{a.peer}/smollm2", "8",
                           "48", str(a.steps)], capture_output=True, text=True)
    last = (peer.stdout.strip().splitlines() or [""])[-1]
    m = re.search(r"median step ([\d.]+)s, peak RSS (\d+) MB", last)
    if not m:
        raise SystemExit(f"the peer did not report: {peer.stdout[-1500:]}\n{peer.stderr[-3000:]}")
    trl_step, trl_mb = float(m.group(1)), float(m.group(2))
    rows = [("TRL 1.16 GRPOTrainer", trl_mb, trl_step)]
    rows.append(("EdgeRLHF grpo, same settings", *ours(a.rm, a.steps, out, "same", [])))
    edge = ["reward_precision=int4", "lora_layers=10", "beta=0"]
    rows.append(("EdgeRLHF grpo, edge fast: int4 RM, LoRA top 10, beta 0", *ours(a.rm, a.steps, out, "edge", edge)))
    rows.append(("EdgeRLHF grpo, edge lean: + checkpointing, micro-batch 2 x 4, lean_update",
                 *ours(a.rm, a.steps, out, "edge-lean", edge + ["gradient_checkpointing=true", "mini_batch_size=2",
                                                                "gradient_accumulation_steps=2", "lean_update=true"])))
    print(f"\npeer: {last}")
    print("| run | peak MB | median step s | memory vs TRL | step vs TRL |\n|---|---|---|---|---|")
    for name, mb, st in rows:
        print(f"| {name} | {mb:.0f} | {st:.2f} | {mb / trl_mb:.2f}x | {st / trl_step:.2f}x |")


if __name__ == "__main__":
    main()
