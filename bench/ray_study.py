"""The same study from the local executor and from Ray, side by side (prints measured numbers; not a test):

    python bench/ray_study.py OUT [--preset smoke] [--seeds 42,1] [--precisions fp32,int8] [--max-parallel 2]
                                  [--kill LABEL --kill-after 5] [--executors local,ray]
                                  [--stage-threads N]

Runs the study one stage after the other (OUT/local), then as Ray tasks on a local cluster (OUT/ray), and compares
them: the same stage labels and folders (the folder names hash each stage's settings), every number in every stage's
summary (timings and memory aside) and the report's comparisons. `--kill LABEL` kills the Ray worker running that
stage `--kill-after` seconds after it starts (once), to see it retried: the stage's attempts are printed.
`--executors local` (or `ray`) runs one of the two; its wall time is kept in OUT/walls.json, and the comparison is
printed once both folders hold a finished study (so the two can run in separate sittings, one at a time).
"""
import argparse
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from edgerlhf.study.pipeline import run_study


def _killer(label: str, after: float, done: threading.Event) -> None:
    """Kill -9 the Ray worker whose process title names the stage, once, `after` seconds after it shows up."""
    seen = None
    while not done.is_set():
        out = subprocess.run(["pgrep", "-f", f"edgerlhf:{label}"], capture_output=True, text=True).stdout.split()
        if out and seen is None:
            seen = time.time()
        if out and seen is not None and time.time() - seen >= after:
            for pid in out:
                os.kill(int(pid), signal.SIGKILL)
            print(f"[bench] killed the worker of {label} (pids {', '.join(out)}) {after:.0f} s into it")
            return
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--seeds", default="42,1")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--max-parallel", type=int, default=2)
    ap.add_argument("--kill", default="")
    ap.add_argument("--kill-after", type=float, default=5.0)
    ap.add_argument("--executors", default="local,ray", help="which to run now ('' : compare only)")
    ap.add_argument("--stage-threads", type=int, default=0, help="torch threads per stage (0: each executor's own)")
    a = ap.parse_args()
    out = Path(a.out)
    kw = dict(seeds=[int(s) for s in a.seeds.split(",")], precisions=a.precisions.split(","), bon=False,
              progress=False, report_to=["none"], stage_threads=a.stage_threads)
    out.mkdir(parents=True, exist_ok=True)
    wall_file = out / "walls.json"
    walls = json.loads(wall_file.read_text()) if wall_file.is_file() else {}
    which = a.executors.split(",")
    if "local" in which:
        t0 = time.perf_counter()
        run_study(a.preset, out=out / "local", **kw)
        walls["local"] = time.perf_counter() - t0
        wall_file.write_text(json.dumps(walls))
    if "ray" in which:
        done = threading.Event()
        if a.kill:
            threading.Thread(target=_killer, args=(a.kill, a.kill_after, done), daemon=True).start()
        t0 = time.perf_counter()
        run_study(a.preset, out=out / "ray", executor="ray", max_parallel=a.max_parallel, **kw)
        walls["ray"] = time.perf_counter() - t0
        done.set()
        wall_file.write_text(json.dumps(walls))
    if not all((out / k / "study.json").is_file() for k in ("local", "ray")):
        print(f"wall: {walls}; run the other executor to compare")
        return
    idx = {k: json.loads((out / k / "study.json").read_text()) for k in ("local", "ray")}
    same_stages = [(s["label"], s["path"]) for s in idx["local"]["stages"]] == [
        (s["label"], s["path"]) for s in idx["ray"]["stages"]]
    diffs, n = [], 0
    for s in idx["local"]["stages"]:
        mine, theirs = (json.loads((out / k / s["path"] / "summary.json").read_text()) for k in ("local", "ray"))
        for key, v in mine.items():
            if isinstance(v, (int, float)) and not key.startswith(("timing/", "memory/", "wall")) and \
                    not key.endswith("per_s"):
                n += 1
                if theirs.get(key) != v:
                    diffs.append(f"{s['label']}:{key} {v} != {theirs.get(key)}")
    rep = {k: json.loads((out / k / "report.json").read_text()) for k in ("local", "ray")}
    same_report = rep["local"]["comparisons"] == rep["ray"]["comparisons"] and \
        rep["local"]["headline"] == rep["ray"]["headline"]
    print(f"\nstages: {len(idx['local']['stages'])}; same labels and folders: {same_stages}")
    print(f"numbers compared in the stages' summaries: {n}; different: {len(diffs)}"
          + ("".join(f"\n  {d}" for d in diffs[:10])))
    print(f"report comparisons and headline identical: {same_report}")
    print("wall: " + ", ".join(f"{k} {walls[k]:.1f} s" for k in ("local", "ray") if k in walls)
          + f" (ray: {a.max_parallel} at a time); {os.cpu_count()} CPUs")
    print("attempts: " + (", ".join(f"{s['label']} {s['attempts']}" for s in idx["ray"]["stages"] if s.get("attempts"))
                          or "every stage once"))


if __name__ == "__main__":
    main()
