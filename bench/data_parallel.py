"""Data parallelism, measured: the same stage run by 1 process and by N processes (torchrun: gloo on a CPU, NCCL on
GPUs), side by side in one invocation. Prints each run's median step time, its throughput and its peak memory (the
main process's), and the largest difference between the two runs' trained weights.

    python bench/data_parallel.py                       # SFT and GRPO on the default model, 1 vs 2 processes
    python bench/data_parallel.py --procs 4 --stages grpo --model default --steps 6

On a CPU the processes share the cores: 1 process gets every core's threads, N processes get cores / N each (so the
comparison is of the same hardware, split N ways). Both runs train on the same rows / episodes: SFT's one process
takes N times the per-process micro-batch; GRPO's step (16 episodes, one optimizer step) is the same setting, with a
generate chunk of one process's share in both runs, so both draw the same samples.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def length_reward(prompts, responses):
    """A deterministic stand-in reward (no RM to train first): vowel-rich, longer responses score higher."""
    return [sum(c in "aeiou" for c in r) / 10 for r in responses]


def overrides(stage: str, model: str, steps: int, procs: int, out: str, most: int) -> dict:
    """``procs`` processes' settings; ``most``: the largest process count compared (the generate chunk is the same
    in both runs, one process's share at the largest count, so both draw the same samples)."""
    common = {"model": model, "output_dir": out, "run_name": f"{stage}-{procs}", "report_to": ["none"],
              "progress": False, "max_steps": steps, "seed": 0}
    if stage == "sft":  # the built-in task; a step of 16 rows
        return {**common, "per_device_train_batch_size": 16 // procs, "gradient_accumulation_steps": 1,
                "lora_dropout": 0.0, "sample_prompts": 0, "gold_eval_prompts": 0, "logging_steps": 1,
                "max_eval_samples": 16}
    return {**common, "num_rollouts_per_step": 16, "num_generations": 4, "rollout_batch_size": 16 // most,
            "mini_batch_size": 8, "gradient_accumulation_steps": 2, "response_length": 32, "gold_eval_prompts": 0}


def worker(stage: str, over: dict) -> None:
    from edgerlhf import registry
    from edgerlhf.config import load_config

    cfg = load_config(registry.get(stage).config, overrides=over)
    if stage == "sft":
        registry.get(stage).runner()(cfg)
    else:
        registry.get(stage).runner()(cfg, reward_fn=length_reward)


def launch(stage: str, over: dict, procs: int) -> float:
    import time

    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // procs))}
    args = [__file__, "--worker", stage, json.dumps(over)]
    cmd = [sys.executable, *args] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *args]
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in (run / "adapter").glob("*.safetensors"):
        out.update(load_file(str(f)))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--stages", default="sft,grpo")
    p.add_argument("--model", default="default")
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args()
    out = tempfile.mkdtemp(prefix="dp-bench-")
    print("| stage | processes | median step | tokens/s | peak memory (main process) | wall time (incl. start) | "
          "max weight difference |\n|---|---|---|---|---|---|---|")
    for stage in a.stages.split(","):
        runs = {}
        for procs in (1, a.procs):
            wall = launch(stage, overrides(stage, a.model, a.steps, procs, out, a.procs), procs)
            run = Path(out) / f"{stage}-{procs}"
            rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            key = "timing/step_s"
            steps = [r[key] for r in rows if key in r][1:]  # the first step warms up
            tps = [r.get("train/tokens_per_s", r.get("timing/tokens_per_s")) for r in rows if key in r][1:]
            summary = json.loads((run / "summary.json").read_text())
            runs[procs] = weights(run)
            diff = max((runs[procs][k] - runs[1][k]).abs().max().item() for k in runs[1])
            print(f"| {stage} | {procs} | {statistics.median(steps):.2f} s | {statistics.median(tps):,.0f} | "
                  f"{summary['memory/peak_mb']:,.0f} MB | {wall:.0f} s | {diff:.1e} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], json.loads(sys.argv[3]))
    else:
        main()
