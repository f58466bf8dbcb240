"""How often a process of the data-parallel test's two-process run dies: the test's own harness
(tests/stages/test_data_parallel.py: two gloo processes on the loopback, a file store, each job's result written as it
ends, each process's phase as it enters one), run again and again, each time in a fresh spawn and folder, without
the test's repeat. Prints one line per run, then the runs, the deaths (which rank, how, in which job or phase) and
the death rate with 95% intervals (Wilson, and the exact Clopper-Pearson). Measured numbers only: not a test.

    python bench/dp_death_rate.py --runs 30                 # ppo_ckpt (the job CI lost rank 1 in) and the teardown
    python bench/dp_death_rate.py --minutes 15              # as many runs as start within 15 minutes
    python bench/dp_death_rate.py --runs 3 --jobs all       # the test's whole job list
    python bench/dp_death_rate.py --runs 30 --detail        # under TORCH_DISTRIBUTED_DEBUG=DETAIL, as the repeat runs

Every run includes the start-up (imports, joining the group) and the teardown (destroy_process_group, the
interpreter's exit), so a death there counts too. A job's Python error is counted apart (a bug, not a death). The
folders of runs that died are kept, and named.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS / "stages"), str(TESTS)]  # the test module, and conftest's data writers (spawn inherits)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    def cdf(x: int, p: float) -> float:  # P(X <= x), X ~ Binomial(n, p)
        return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(x + 1))

    def solve(x: int, target: float) -> float:  # the p where cdf(x, p), decreasing in p, equals target
        lo, hi = 0.0, 1.0
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if cdf(x, mid) > target else (lo, mid)
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(k - 1, 1 - alpha / 2)  # P(X >= k | p) = alpha / 2
    upper = 1.0 if k == n else solve(k, alpha / 2)  # P(X <= k | p) = alpha / 2
    return lower, upper


def main() -> None:
    import test_data_parallel as dp

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--minutes", type=float, default=None, help="start no run after this many minutes")
    ap.add_argument("--jobs", default="ppo_ckpt", help="comma-separated jobs of the test, or 'all'")
    ap.add_argument("--detail", action="store_true", help="TORCH_DISTRIBUTED_DEBUG=DETAIL")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run counts as a hang")
    args = ap.parse_args()
    names = dp.JOBS if args.jobs == "all" else args.jobs.split(",")
    unknown = set(names) - set(dp.JOBS)
    if unknown:
        ap.error(f"no such jobs: {sorted(unknown)}; the test's are {dp.JOBS}")
    env = {"TORCH_DISTRIBUTED_DEBUG": "DETAIL"} if args.detail else None
    base = Path(tempfile.mkdtemp(prefix="dp-death-"))
    files = dp._write_files(base)
    print(f"jobs {names} then the teardown, 2 gloo processes per run{', DETAIL' if args.detail else ''}; "
          f"folders under {base}", flush=True)
    start, seconds, deaths, errors = time.monotonic(), [], [], []
    for i in range(1, args.runs + 1):
        if args.minutes is not None and time.monotonic() - start > 60 * args.minutes:
            break
        t0 = time.monotonic()
        run = dp._launch(base / f"run{i}", names, dp._real_job, dp._real_setup, files, env=env, timeout=args.timeout)
        seconds.append(time.monotonic() - t0)
        death = run["death"]
        if death is None:
            print(f"run {i}: {seconds[-1]:.1f} s, both processes ran every job and exited cleanly", flush=True)
            shutil.rmtree(base / f"run{i}")
            continue
        kind = errors if death["how"] == "a Python error" else deaths
        kind.append(death)
        print(f"run {i}: {seconds[-1]:.1f} s, {death['summary']} (kept: {base / f'run{i}'})\n{death['text']}",
              flush=True)
    n, k = len(seconds), len(deaths)
    if n == 0:
        print("no run started")
        return
    print(f"\nruns: {n} ({sum(seconds) / 60:.1f} min; {min(seconds):.1f} .. {max(seconds):.1f} s each, median "
          f"{sorted(seconds)[n // 2]:.1f} s)")
    print(f"deaths (a signal, a bare exit code, or a hang): {k}")
    for (rank, how, phase), c in sorted(Counter((d["rank"], d["how"], d["phase"]) for d in deaths).items(), key=str):
        print(f"  {c} x rank {rank} by {how} at {phase!r}")
    print(f"runs stopped by a job's Python error (not deaths): {len(errors)}")
    for d in errors:
        print(f"  {d['summary']}")
    (wl, wh), (cl, ch) = wilson(k, n), clopper_pearson(k, n)
    print(f"death rate per run: {k}/{n} = {k / n:.3f}; 95% interval: Wilson [{wl:.3f}, {wh:.3f}], "
          f"Clopper-Pearson [{cl:.3f}, {ch:.3f}]")
    if not deaths and not errors:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
