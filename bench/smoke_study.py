"""Wall times the tests no longer assert (a busier or slower machine changes them): building the built-in
task, the smoke study on the tiny model, and the same study again (every stage reused).

    python bench/smoke_study.py            # prints the three times and the CPU flags they came from
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path


def main() -> None:
    from edgerlhf.data import task as task_mod
    from edgerlhf.study.pipeline import run_study

    flags = sorted(set(re.findall(r"\b(avx512\w*|amx\w*|avx2)\b", Path("/proc/cpuinfo").read_text())))
    t0 = time.perf_counter()
    task_mod._build_cached.__wrapped__(0)
    build = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="edgerlhf-smoke-")) / "s"
    t0 = time.perf_counter()
    run_study("smoke", out=out, progress=False, report_to=["none"])
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_study("smoke", out=out, progress=False, report_to=["none"])
    again = time.perf_counter() - t0
    print(f"\nCPU flags: {' '.join(flags) or '(none of avx2/avx512/amx)'}")
    print(f"built-in task build: {build:.2f} s; smoke study: {first:.1f} s; rerun (all stages reused): {again:.1f} s")


if __name__ == "__main__":
    main()
