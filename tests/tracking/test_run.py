import json
import math

import pytest

from edgerlhf.config import SFTConfig
from edgerlhf.tracking import PeakMemory, RunDir, atomic_write_dir


def test_run_dir_layout_and_nan_is_kept_visible(tmp_path):
    cfg = SFTConfig(output_dir=str(tmp_path), report_to=["none"])
    rd = RunDir(cfg)
    assert rd.path.name.startswith("sft-") and (rd.path / "status").read_text().strip() == "running"
    rd.log({"train/loss": 1.5, "objective/kl": math.nan}, step=1)
    out = rd.finish({"x": 1})
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["step"] == 1 and row["train/loss"] == 1.5 and row["objective/kl"] == "nan"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["x"] == 1 and summary["stage"] == "sft"
    # two runs in the same second get distinct folders
    assert RunDir(cfg).path != RunDir(cfg).path


def test_atomic_dir_never_leaves_a_half_written_artifact(tmp_path):
    target = tmp_path / "adapter"
    atomic_write_dir(target, lambda d: (d / "a.txt").write_text("v1"))

    def broken(d):
        (d / "a.txt").write_text("v2-partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_dir(target, broken)
    assert (target / "a.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_peak_memory_sees_a_short_spike():
    import numpy as np

    with PeakMemory() as pm:  # the default probe: the kernel's high-water mark where Linux has one
        base = pm.rss_mb
        # 200 MiB allocated, filled, summed and freed inside one expression: no sampler could be sure to see it
        assert np.ones(200 * 2**20 // 8).sum() > 0
    m = pm.as_metrics()
    assert m["memory/rss_method"] == "vmhwm"  # Linux >= 4.0 (every machine this runs on) has the exact probe
    assert pm.rss_mb - base > 150
    assert m["memory/peak_mb"] == m["memory/peak_rss_mb"] and m["memory/peak_method"] == "vmhwm"


def _spike(mb: int) -> None:
    """``mb`` MiB resident for a moment, in a mapping of its own: whatever malloc's heaps hold from earlier
    tests, these pages are fresh and leave with the mapping."""
    import mmap

    import numpy as np

    m = mmap.mmap(-1, mb * 2**20)
    a = np.frombuffer(m, dtype=np.uint8)
    a[:] = 1
    del a
    m.close()


def test_peak_is_this_probes_own_and_nested_probes_keep_theirs():
    _spike(300)  # a bigger peak before the probe starts must not count
    with PeakMemory() as outer:
        base = outer.rss_mb
        _spike(150)  # the outer probe's spike, before the inner one starts
        with PeakMemory() as inner:  # starting it resets the kernel's mark: the outer must keep its spike
            _spike(50)
    assert outer.method == inner.method == "vmhwm"
    assert 130 < outer.rss_mb - base < 250
    assert 40 < inner.rss_mb - base < 130


def test_the_process_peak_survives_the_resets_of_later_probes():
    import numpy as np

    from edgerlhf.tracking import memory

    assert np.ones(400 * 2**20 // 8).sum() > 0  # a peak before any probe: loading a model, say
    with PeakMemory() as pm:  # resets the kernel's mark: ru_maxrss alone would now forget the 400 MiB
        pass
    with PeakMemory() as pm2:
        pass
    m = pm2.as_metrics()
    assert m["memory/process_peak_mb"] - pm.rss_mb > 300  # the earlier spike is still the process's peak
    assert m["memory/process_peak_mb"] >= m["memory/peak_rss_mb"]
    assert memory.process_peak_bytes() / 2**20 >= m["memory/process_peak_mb"] - 1


def test_release_free_memory_gives_freed_heap_back():
    import torch

    from edgerlhf.tracking import memory

    if not memory.release_free_memory():
        pytest.skip("no glibc malloc_trim here")
    x = torch.ones(2**22)  # freeing 16 MiB raises glibc's mmap threshold: 1 MiB blocks now come from the heap
    del x
    xs, pins = [], []
    for _ in range(300):  # 1 MiB blocks with small live ones between them: free() alone cannot trim those
        xs.append(torch.ones(2**18))
        pins.append(torch.ones(2**12))
    held = memory.peak_mb()
    del xs
    memory.release_free_memory()
    assert held - memory.peak_mb() > 200


_CHURN = """
import torch
from edgerlhf.tracking import memory
def churn():
    x = torch.ones(2**22)  # freeing 16 MiB raises glibc's dynamic threshold: 1 MiB blocks would come from the heap
    del x
    xs, pins = [], []
    for _ in range(300):  # 1 MiB blocks with small live ones between them
        xs.append(torch.ones(2**18))
        pins.append(torch.ones(2**12))
    held = memory.peak_mb()
    del xs
    return held - memory.peak_mb()
if {lean}:
    with memory.lean_heap() as active:
        print(churn() if active else "no-glibc")
else:
    print(churn())
"""


def test_lean_heap_returns_freed_blocks_at_once():
    """In a fresh process (a heap other tests have used hands out its free blocks first): without lean_heap
    the freed 300 MiB stay resident, inside it they go back at once, with no malloc_trim."""
    import subprocess
    import sys

    out = {lean: subprocess.run([sys.executable, "-c", _CHURN.format(lean=lean)], capture_output=True, text=True,
                                check=True).stdout.split()[-1] for lean in (False, True)}
    if out[True] == "no-glibc":
        pytest.skip("no glibc here")
    assert float(out[False]) < 50 and float(out[True]) > 200, out


def test_sampled_fallback_where_the_kernel_mark_cannot_be_reset(monkeypatch, tmp_path):
    import numpy as np

    from edgerlhf.tracking import memory

    monkeypatch.setattr(memory, "_CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    with PeakMemory(interval_s=0.005) as pm:
        base = pm.rss_mb
        x = np.ones(200 * 2**20 // 8)  # held while the probe reads: the sampler's own final reading sees it
        held = pm.rss_mb
        del x
    assert pm.method == "sampled" and pm.as_metrics()["memory/peak_method"] == "sampled"
    assert held - base > 150 and pm.rss_mb >= held
    with pytest.raises(OSError, match="clear_refs"):
        PeakMemory(method="vmhwm").start()


def test_fail_records_the_error_and_ctrl_c_reads_as_interrupted(tmp_path):
    cfg = SFTConfig(output_dir=str(tmp_path), report_to=["none"])
    rd = RunDir(cfg)
    rd.log({"train/loss": 1.0}, step=1)
    out = rd.fail(KeyboardInterrupt())
    assert (out / "status").read_text().strip() == "interrupted"
    assert json.loads((out / "summary.json").read_text())["error"].startswith("KeyboardInterrupt")
    assert json.loads((out / "metrics.jsonl").read_text())["train/loss"] == 1.0  # nothing lost
    rd2 = RunDir(cfg)
    assert (rd2.fail(ValueError("bad")) / "status").read_text().strip() == "failed"


def test_a_sink_that_fails_to_start_marks_the_folder_failed_and_names_the_fix(tmp_path, monkeypatch):
    """A third-party sink that cannot start (mlflow's refused file store, a missing wandb login) never leaves a
    folder 'running': the sinks already started are closed, the folder is failed with the reason, and the
    error names the sink and what to do."""
    from edgerlhf.tracking import run as run_mod

    closed = []

    class Fine:
        def __init__(self, path):
            pass

        def summary(self, summary):
            pass

        def close(self, status="finished"):
            closed.append(status)

    def refused(path, cfg):
        raise RuntimeError("The filesystem tracking backend (e.g., './mlruns') is in maintenance mode")

    monkeypatch.setattr(run_mod, "_TensorBoard", Fine)
    monkeypatch.setattr(run_mod, "_MLflow", refused)
    cfg = SFTConfig(output_dir=str(tmp_path), run_name="r", report_to=["tensorboard", "mlflow"])
    with pytest.raises(run_mod.SinkError) as e:
        RunDir(cfg)
    msg = str(e.value)
    assert "metric sink 'mlflow' failed to start" in msg and "maintenance mode" in msg
    assert "MLFLOW_TRACKING_URI" in msg and "marked failed" in msg
    assert (tmp_path / "r" / "status").read_text().strip() == "failed"
    assert "mlflow" in json.loads((tmp_path / "r" / "summary.json").read_text())["error"]
    assert closed == ["failed"]  # the sink that did start was closed, and told the run failed
    from edgerlhf.tracking.listing import runs_table

    assert "running" not in runs_table(tmp_path) and "failed" in runs_table(tmp_path)


def test_tracking_defaults_work_with_todays_mlflow_and_without_a_wandb_key(tmp_path, monkeypatch):
    from edgerlhf.tracking.run import mlflow_uri, wandb_mode

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_uri(tmp_path / "runs" / "r") == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:5000")
    assert mlflow_uri(tmp_path / "r") == "http://localhost:5000"  # an explicit store is respected
    for k in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert wandb_mode() == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.delenv("NETRC")
    assert wandb_mode() == "online"  # `wandb login` wrote the key
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
