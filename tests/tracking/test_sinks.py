"""The optional metric sinks, exercised offline through a real (tiny) stage run: what reaches mlflow's store and
wandb's offline run matches the run folder's metrics.jsonl, config.yaml and summary.json. The dev extras install
both; where one is absent its test skips and says which extra to install."""

import json
import math

import pytest
import yaml

from edgerlhf.config import SFTConfig, load_config
from edgerlhf.stages import sft


def _run(tmp_path, sft_file, sink, **kw):
    over = {"model": "tiny", "dataset": str(sft_file), "output_dir": str(tmp_path / "runs"), "max_steps": 4,
            "per_device_train_batch_size": 8, "learning_rate": 1e-2, "logging_steps": 2, "report_to": [sink],
            "sample_prompts": 1, "sample_max_new_tokens": 4, "progress": False, "warmup_ratio": 0.0, **kw}
    return sft.run(load_config(SFTConfig, overrides=over))


def _jsonl_series(run) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as {key: [(step, value), ...]} for the finite numbers (what a sink can hold)."""
    series: dict[str, list] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for k, v in row.items():
            if (k in ("step", "time_s") or isinstance(v, bool) or not isinstance(v, (int, float))
                    or not math.isfinite(v)):
                continue
            series.setdefault(k, []).append((row["step"], float(v)))
    return series


def _same(got, want) -> bool:
    """Two [(step, value)] series agree: the same steps, values to float32 rounding."""
    got, want = sorted(got), sorted(want)
    return [s for s, _ in got] == [s for s, _ in want] and [v for _, v in got] == pytest.approx([v for _, v in want])


def test_mlflow_store_holds_the_params_every_step_and_the_summary(tmp_path, sft_file, monkeypatch):
    pytest.importorskip("mlflow",
                        reason="mlflow is an optional extra: pip install 'edgerlhf[mlflow]' (dev installs it)")
    from mlflow.tracking import MlflowClient

    from edgerlhf.tracking.run import MLFLOW_EXPERIMENT, mlflow_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    run = _run(tmp_path, sft_file, "mlflow")
    assert (run / "status").read_text().strip() == "finished"
    assert (tmp_path / "runs" / "mlflow.db").is_file()  # the default: a SQLite store beside the run folders
    assert not (tmp_path / "mlruns").exists()

    client = MlflowClient(tracking_uri=mlflow_uri(run))
    exp = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    (mrun,) = client.search_runs([exp.experiment_id])
    assert mrun.info.run_name == run.name and mrun.info.status == "FINISHED"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert mrun.data.params["max_steps"] == "4" and mrun.data.params["model"] == "tiny"
    assert set(mrun.data.params) == set(cfg)  # every resolved config field
    series = _jsonl_series(run)
    assert "train/loss" in series and len(series["train/loss"]) == 2
    for key, points in series.items():  # every per-step number, at its step, under metrics.jsonl's name
        got = [(m.step, m.value) for m in client.get_metric_history(mrun.info.run_id, key)]
        assert _same(got, points), (key, got, points)
    summary = json.loads((run / "summary.json").read_text())
    assert mrun.data.metrics["summary/eval/loss_after"] == pytest.approx(summary["eval/loss_after"])
    assert mrun.data.metrics["summary/wall_time_s"] == pytest.approx(summary["wall_time_s"])
    art = tmp_path / "runs" / "mlartifacts"
    logged = json.loads(next(art.rglob("summary.json")).read_text())
    assert logged["eval/loss_after"] == summary["eval/loss_after"]
    assert list(art.rglob("samples/sample_after_*.txt"))

    # a second stage run in the same folder joins the same store and experiment
    run2 = _run(tmp_path, sft_file, "mlflow", max_steps=2)
    names = {r.info.run_name for r in client.search_runs([exp.experiment_id])}
    assert names == {run.name, run2.name}


def test_mlflow_run_of_a_failed_stage_is_marked_failed(tmp_path, monkeypatch):
    pytest.importorskip("mlflow",
                        reason="mlflow is an optional extra: pip install 'edgerlhf[mlflow]' (dev installs it)")
    from mlflow.tracking import MlflowClient

    from edgerlhf.tracking import RunDir
    from edgerlhf.tracking.run import MLFLOW_EXPERIMENT, mlflow_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    rd = RunDir(SFTConfig(output_dir=str(tmp_path), run_name="r", report_to=["mlflow"]))
    rd.log({"train/loss": 2.0, "objective/kl": math.nan}, step=1)
    rd.fail(ValueError("bad batch"))
    client = MlflowClient(tracking_uri=mlflow_uri(rd.path))
    (mrun,) = client.search_runs([client.get_experiment_by_name(MLFLOW_EXPERIMENT).experiment_id])
    assert mrun.info.status == "FAILED" and mrun.data.metrics["train/loss"] == 2.0
    assert "objective/kl" not in mrun.data.metrics  # NaN stays visible in metrics.jsonl, not as a fake number


def _wandb_records(run_dir):
    """The records of the one offline wandb run under ``run_dir``: its .wandb transaction log, which `wandb sync`
    uploads later. The file is LevelDB's log format (32 KiB blocks of records with a 7-byte header: crc, length,
    type full/first/middle/last) behind a 7-byte ':W&B' header, each record a wandb_internal_pb2.Record; this
    wandb keeps its reader in the Go core, so the test reads it here."""
    import struct

    from wandb.proto import wandb_internal_pb2

    (log,) = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    data = log.read_bytes()
    assert struct.unpack("<4sHB", data[:7])[0] == b":W&B"
    pos, block, buf, out = 7, 32768, b"", []
    while pos < len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if n == 0 and kind == 0:  # zero fill to the block's end
            pos += left - 7
            continue
        buf += data[pos:pos + n]
        pos += n
        if kind in (1, 4):  # a full record, or the last piece of one
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def test_wandb_offline_run_holds_the_config_every_step_and_the_summary(tmp_path, sft_file, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is an optional extra: pip install 'edgerlhf[wandb]' (dev installs it)")
    for k in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no key: offline by default
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = _run(tmp_path, sft_file, "wandb")
    assert (run / "status").read_text().strip() == "finished"
    records = _wandb_records(run)

    config = {}
    for r in records:
        kind = r.WhichOneof("record_type")
        for item in (r.run.config.update if kind == "run" else r.config.update if kind == "config" else []):
            config[item.key] = json.loads(item.value_json)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert config["max_steps"] == 4 and config["model"] == "tiny"
    assert set(cfg) <= set(config)

    history: dict[str, list] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            step = items.get("_step")
            for k, v in items.items():
                if not k.startswith("_") and isinstance(v, (int, float)):
                    history.setdefault(k, []).append((step, float(v)))
    series = _jsonl_series(run)
    assert "train/loss" in series
    for key, points in series.items():  # wandb keeps one history row per step: a key logged twice at a step
        last = sorted(dict(points).items())  # (train row and eval row) holds its last value, as here
        assert _same(history.get(key, []), last), (key, history.get(key), points)

    summary = json.loads((run / "summary.json").read_text())
    final = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                final[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    assert final["summary/eval/loss_after"] == pytest.approx(summary["eval/loss_after"])
    assert any(r.WhichOneof("record_type") == "exit" and r.exit.exit_code == 0 for r in records)
