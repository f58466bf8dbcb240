"""What the shape check before each gather / all-reduce costs (distributed.py ``_same_layout``): N gloo processes
on this machine (a file store, no ports) time the collectives one online step makes, with the check and with it
switched off (the honest baseline), side by side in one invocation. Prints microseconds per call.

    python bench/collective_checks.py                  # 2 processes, 300 calls of each
    python bench/collective_checks.py --procs 4 --calls 1000

A PPO step gathers ~9 small tensors and all-reduces one row per optimizer step (plus one for the response width),
so the check adds about 10 of these calls to a step that takes seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def worker(rank: int, world_size: int, store: str, out: str, calls: int) -> None:
    import torch.distributed as dist

    from edgerlhf import distributed as D

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    check = D._same_layout
    rows, row = torch.randn(16, 64), torch.randn(12, dtype=torch.float64)  # a share of log-probs; a metrics row
    res = {}
    try:
        for mode in ("off", "on", "off", "on"):  # interleaved: drift hits both alike
            D._same_layout = check if mode == "on" else (lambda t: None)
            for name, fn in (("gather_rows (16 x 64 float32)", lambda: D.gather_rows(rows)),
                             ("reduce_sum (12 float64)", lambda: D.reduce_sum(row))):
                D.barrier()
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                res.setdefault(f"{name}|{mode}", []).append((time.perf_counter() - t0) / calls * 1e6)
    finally:
        D._same_layout = check
        dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps(res))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--calls", type=int, default=300)
    a = p.parse_args()
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "res.json"
        mp.spawn(worker, args=(a.procs, str(Path(tmp) / "store"), str(out), a.calls), nprocs=a.procs, join=True)
        res = json.loads(out.read_text())
    print(f"{a.procs} gloo processes, {a.calls} calls per run, median of 2 runs (microseconds per call):")
    print("| collective | check off | check on | added |")
    print("|---|---|---|---|")
    for name in dict.fromkeys(k.split("|")[0] for k in res):
        off, on = statistics.median(res[f"{name}|off"]), statistics.median(res[f"{name}|on"])
        print(f"| {name} | {off:.0f} | {on:.0f} | {on - off:+.0f} |")


if __name__ == "__main__":
    main()
