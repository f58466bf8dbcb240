"""A run folder: the only thing that passes between stages.

    runs/<stage>-<timestamp>/
      config.yaml     the resolved config (every field, defaults included)
      metrics.jsonl   one JSON object per log step, namespaced keys (train/loss, timing/step_s, ...)
      summary.json    final numbers of the stage, written atomically at the end
      status          running | finished | failed
      tb/             TensorBoard event files (report_to: tensorboard)
      <artifact>/     e.g. adapter/ (PEFT layout)
"""

from __future__ import annotations

import json
import math
import netrc
import os
import re
import shutil
import socket
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from edgerlhf.config import BaseConfig, to_dict
from edgerlhf.distributed import LaunchError, barrier, broadcast_object, gather_objects, is_main, world


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_dir(final: Path, fill) -> Path:
    """Create folder ``final`` by filling a temporary sibling and renaming it, so a reader never sees a
    half-written artifact. An existing ``final`` is replaced only after the new one is complete."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    old = None
    try:
        fill(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return final


def main_write_dir(final: Path, fill) -> Path:
    """:func:`atomic_write_dir` by the main process only; every process waits until the folder is complete (so
    none reads, or returns, a folder still being written) and gets its path."""
    if is_main():
        atomic_write_dir(final, fill)
    barrier()
    return Path(final)


def say(*args, **kw) -> None:
    """``print`` on the main process only (one line per run, not one per process)."""
    if is_main():
        print(*args, **kw)


def _visible(path: Path) -> bool:
    """Can this process see the run folder the main process created (its config.yaml)?"""
    return (Path(path) / "config.yaml").is_file()


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them visible instead of crashing or lying
    if hasattr(v, "item") and callable(v.item):
        return _jsonable(v.item())
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2, ensure_ascii=False) + "\n")


def _last_time_s(metrics: Path) -> float:
    """The ``time_s`` of the last complete row of a metrics file (0 when there is none)."""
    if not metrics.is_file():
        return 0.0
    for line in reversed(metrics.read_text().splitlines()):
        try:
            return float(json.loads(line).get("time_s", 0.0))
        except (ValueError, AttributeError):
            continue  # a line cut by the interruption
    return 0.0


class RunDir:
    """Create only after the config validated: nothing is written for a bad config.

    Under data parallelism (``torchrun`` / ``accelerate launch``) the main process alone creates and writes the
    folder; the others learn its path from it, check that they can see it (a folder only one node can see would
    leave the others' checkpoints and artifacts nowhere), and write nothing."""

    def __init__(self, cfg: BaseConfig, root: Path | None = None, reopen: Path | None = None):
        self.cfg = cfg
        if not cfg.progress:  # no weight-loading bars either, here or in the processes a stage spawns
            from transformers.utils import logging as hf_logging  # noqa: PLC0415 - transformers is heavy; only to quiet it

            hf_logging.disable_progress_bar()
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by transformers when a child imports it
        rank, ws = world()
        self.writes = rank == 0
        self._sinks = []
        if ws == 1:
            self._open(cfg, root, reopen)
            return
        failed = None
        if self.writes:
            try:
                self._open(cfg, root, reopen)
            except BaseException as e:
                failed = e
        # the main process tells the others its folder, or why it has none
        path, why = broadcast_object((str(self.path), None) if self.writes and failed is None
                                     else (None, f"{type(failed).__name__}: {failed}" if failed else None))
        if failed is not None:
            raise failed
        if why is not None:
            raise LaunchError(f"the main process could not open the run folder ({why})")
        if not self.writes:
            self.path, self.t0, self.before_s = Path(path), time.time(), 0.0
        self._check_shared()

    def _check_shared(self) -> None:
        """Every process must see the main process's folder; else all stop, naming the processes that cannot."""
        seen = gather_objects([(world()[0], socket.gethostname(), _visible(self.path))])
        blind = [f"rank {r} on {host}" for r, host, ok in seen if not ok]
        if blind:
            err = LaunchError(f"the run folder {self.path} is not visible from {', '.join(blind)}: every process must "
                               "see the same folder (checkpoints, artifacts and the resume read it). Put output_dir on "
                               "a filesystem every node mounts (NFS, Lustre, a shared volume) with the same path")
            if self.writes:
                self.fail(err)
            raise err

    def _open(self, cfg: BaseConfig, root: Path | None, reopen: Path | None) -> None:
        self.before_s = 0.0  # compute of earlier attempts (a resumed run), counted in wall_time_s
        if reopen is not None:  # resume: continue the same folder, appending to its metrics
            # the clock goes on from the last logged step, so time_s and wall_time_s count every attempt's
            # compute up to it (the work between that step and the interruption is redone, and counted, now)
            self.before_s = _last_time_s(Path(reopen) / "metrics.jsonl")
            self.path, self.t0 = Path(reopen), time.time() - self.before_s
            self.set_status("running")
            self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)
            self._start_sinks()
            return
        name = cfg.run_name or f"{cfg.stage}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        base = Path(root or cfg.output_dir)
        path = base / name
        n = 1
        while path.exists() and not cfg.run_name:  # two runs in the same second
            n += 1
            path = base / f"{name}-{n}"
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"run folder {path} already exists and is not empty; choose another run_name "
                                  "or remove it (nothing was overwritten)")
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.t0 = time.time()
        atomic_write_text(path / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self.set_status("running")
        self._metrics = open(path / "metrics.jsonl", "a", buffering=1)
        self._start_sinks()

    def _start_sinks(self) -> None:
        """Start the metric sinks; one that fails leaves the folder marked failed (never "running"), the sinks
        already started closed, and raises a SinkError naming the sink and the fix."""
        self._sinks = []
        for name in (n for n in self.cfg.report_to if n != "none"):
            try:
                self._sinks.append(_make_sink(name, self.path, self.cfg))
            except Exception as e:  # noqa: BLE001 - any failure of a third-party sink: name it, record it
                err = SinkError(f"metric sink {name!r} failed to start ({type(e).__name__}: {e}); "
                                f"{_SINK_FIX.get(name, '')}"
                                f"or drop it from report_to (e.g. report_to=tensorboard). The run folder {self.path} "
                                "is "
                                "marked failed.")
                self.fail(err)
                raise err from e

    def set_status(self, status: str) -> None:
        if not self.writes:
            return
        atomic_write_text(self.path / "status", status + "\n")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.writes:
            return
        row = {"step": step, "time_s": round(time.time() - self.t0, 3), **_jsonable(metrics)}
        self._metrics.write(json.dumps(row, ensure_ascii=False) + "\n")
        for sink in self._sinks:
            sink.log(metrics, step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        if not self.writes:
            return
        with open(self.path / "samples.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "tag": tag, "text": text}, ensure_ascii=False) + "\n")
        for sink in self._sinks:
            sink.text(tag, text, step)

    def finish(self, summary: dict[str, Any], status: str = "finished") -> Path:
        if not self.writes:
            return self.path
        now = time.time()
        summary = {"stage": self.cfg.stage, "status": status, "run_dir": str(self.path),
                   "wall_time_s": round(now - self.t0, 2), **summary}
        if self.before_s:
            summary["wall_time_s_this_attempt"] = round(now - self.t0 - self.before_s, 2)
        atomic_write_json(self.path / "summary.json", summary)
        for sink in self._sinks:
            sink.summary(summary)
        self.close(status)
        self.set_status(status)
        return self.path

    def fail(self, exc: BaseException) -> Path:
        """Record why the stage stopped (Ctrl-C reads as interrupted); what was written stays intact."""
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        return self.finish({"error": f"{type(exc).__name__}: {exc}"}, status=status)

    def close(self, status: str = "finished") -> None:
        if not self.writes:
            return
        if not self._metrics.closed:
            self._metrics.close()
        for sink in self._sinks:
            sink.close(status)
        self._sinks = []


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row (a sink has no place for text, and NaN/inf stay visible in
    metrics.jsonl as strings)."""
    out = {}
    for k, v in metrics.items():
        if hasattr(v, "item") and callable(v.item):
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


class _TensorBoard:
    def __init__(self, path: Path):
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - tensorboard loads only with report_to: tensorboard

        self.w = SummaryWriter(log_dir=str(path / "tb"))

    def log(self, metrics, step):
        for k, v in _numeric(metrics).items():
            self.w.add_scalar(k, v, step)
        self.w.flush()

    def text(self, tag, text, step):
        self.w.add_text(tag, text, step)

    def summary(self, summary):
        pass  # summary.json beside the event files; TensorBoard has no place for final numbers

    def close(self, status="finished"):
        self.w.close()


def mlflow_uri(path: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a SQLite store beside the run folders: current mlflow (3.x) refuses
    the old default, a ``file:`` store ("the filesystem tracking backend is in maintenance mode")."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(path).parent / 'mlflow.db').resolve()}"


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; else online with a key (``WANDB_API_KEY`` or a ``wandb login`` entry in ~/.netrc),
    offline without one (runs are kept under the run folder; ``wandb sync`` uploads them later)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (FileNotFoundError, OSError, netrc.NetrcParseError):
        return "offline"


MLFLOW_EXPERIMENT = "edgerlhf"
_MLFLOW_KEY = re.compile(r"[^\w\-. /]")  # mlflow's allowed name characters: alphanumerics, _ - . space /


class _MLflow:
    """One mlflow run per stage run, in experiment ``edgerlhf`` (``MLFLOW_EXPERIMENT_NAME`` overrides), through an
    explicit client: nothing global (the fluent API's active run, its tracking URI) changes in the caller's process.
    Metric names are metrics.jsonl's (``train/loss``); the run's artifacts (samples, summary.json) go beside the
    store, in ``mlartifacts/``, not into the working directory."""

    def __init__(self, path: Path, cfg):
        try:
            from mlflow.entities import Param  # noqa: PLC0415 - mlflow is optional (report_to: mlflow)
            from mlflow.tracking import MlflowClient  # noqa: PLC0415 - mlflow is optional (report_to: mlflow)
        except ImportError:
            raise RuntimeError("report_to includes 'mlflow' but mlflow is not installed: "
                               "pip install 'edgerlhf[mlflow]'") from None
        uri = mlflow_uri(path)
        self.c = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", MLFLOW_EXPERIMENT)
        exp = self.c.get_experiment_by_name(name)
        if exp is None:
            where = (Path(path).parent / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None
            try:
                exp_id = self.c.create_experiment(name, artifact_location=where)
            except Exception:  # noqa: BLE001 - created meanwhile by another process: use that one
                exp_id = self.c.get_experiment_by_name(name).experiment_id
        else:
            exp_id = exp.experiment_id
        self.run_id = self.c.create_run(exp_id, run_name=Path(path).name,
                                        tags={"edgerlhf.stage": cfg.stage,
                                              "edgerlhf.run_dir": str(Path(path).resolve())}
                                        ).info.run_id
        self.c.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in to_dict(cfg).items()])

    def log(self, metrics, step, prefix: str = ""):
        from mlflow.entities import Metric  # noqa: PLC0415 - mlflow is optional (report_to: mlflow)

        now = int(time.time() * 1000)
        self.c.log_batch(self.run_id, metrics=[Metric(_MLFLOW_KEY.sub("_", prefix + k), v, now, step)
                                               for k, v in _numeric(metrics).items()])

    def text(self, tag, text, step):
        self.c.log_text(self.run_id, text, f"samples/{tag.replace('/', '_')}_{step}.txt")

    def summary(self, summary):
        """The final numbers as metrics named ``summary/<key>`` (step 0), summary.json itself as an artifact."""
        self.log(summary, 0, prefix="summary/")
        self.c.log_dict(self.run_id, _jsonable(summary), "summary.json")

    def close(self, status="finished"):
        self.c.set_terminated(self.run_id, {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"))


class _Wandb:
    def __init__(self, path: Path, cfg):
        try:
            import wandb  # noqa: PLC0415 - wandb is optional (report_to: wandb)
        except ImportError:
            raise RuntimeError("report_to includes 'wandb' but wandb is not installed: "
                               "pip install 'edgerlhf[wandb]'") from None
        self.run = wandb.init(name=path.name, dir=str(path), config=to_dict(cfg), mode=wandb_mode(),
                              project=os.environ.get("WANDB_PROJECT", "edgerlhf"), reinit="finish_previous")

    def log(self, metrics, step):
        self.run.log(_numeric(metrics), step=step)

    def text(self, tag, text, step):
        self.run.log({tag: text}, step=step)

    def summary(self, summary):
        self.run.summary.update({f"summary/{k}": v for k, v in _numeric(summary).items()})

    def close(self, status="finished"):
        self.run.finish(exit_code=0 if status == "finished" else 1)


class SinkError(RuntimeError):
    """A metric sink (tensorboard, mlflow, wandb) could not start; the message names it and the fix."""


_SINK_FIX = {
    "tensorboard": "install it (pip install tensorboard) ",
    "mlflow": "set MLFLOW_TRACKING_URI to a store your mlflow accepts (e.g. sqlite:///runs/mlflow.db) ",
    "wandb": "log in (wandb login) or set WANDB_MODE=offline ",
}


def _make_sink(name: str, path: Path, cfg):
    return {"tensorboard": lambda: _TensorBoard(path), "mlflow": lambda: _MLflow(path, cfg),
            "wandb": lambda: _Wandb(path, cfg)}[name]()
