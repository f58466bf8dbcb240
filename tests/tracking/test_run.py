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

    with PeakMemory(interval_s=0.005) as pm:
        base = pm.rss_mb
        x = np.ones(200 * 2**20 // 8)  # 200 MiB
        x[::4096] += 1
        del x
    assert pm.rss_mb - base > 150
    assert pm.as_metrics()["memory/peak_mb"] == pm.as_metrics()["memory/peak_rss_mb"]


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
