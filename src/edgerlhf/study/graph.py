"""The study as a graph of stages, and the executors that run it.

A :class:`Node` is one stage of the study: its label, its stage, the labels it needs finished first, and how its
settings follow from their run folders. The study builds the whole graph before anything runs
(:func:`edgerlhf.study.pipeline.study_graph`); an executor runs it:

- ``local`` (default): one stage after the other in the graph's order, exactly as a study always ran;
- ``ray[:ADDRESS]``: every stage as a Ray task as soon as the stages it needs have finished, with the CPUs / GPU
  and the memory (Ray's ``memory`` resource: the planner's predicted peak) it needs, at most ``max_parallel`` at
  once; a task whose worker dies is retried (``max_retries``), and an online stage resumes from its checkpoint.

Ray (``pip install 'edgerlhf[ray]'``) is a heavy optional package: it is imported only by the Ray executor.
Results do not depend on the executor: every stage is seeded by its own settings and reused by their hash.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

TOKEN_FILE = ".edgerlhf-study-token"  # written by the driver, read by every worker: the folder is shared
ATTEMPTS = ".attempts"  # one file per stage label: one line per attempt (a retried stage has several)


@dataclass(frozen=True)
class Node:
    """One stage of the study graph: ``settings(done)`` gives its overrides from the finished stages it needs
    (``done``: label -> the stage's record, with ``.path``)."""

    label: str
    stage: str
    needs: tuple[str, ...]
    settings: Callable[[dict], dict] = field(compare=False)


def check_graph(nodes: list[Node]) -> None:
    """Labels unique, every need a node listed before it (so the list order is a valid sequential order)."""
    seen: set[str] = set()
    for n in nodes:
        if n.label in seen:
            raise ValueError(f"study graph: stage label {n.label!r} twice")
        missing = [d for d in n.needs if d not in seen]
        if missing:
            raise ValueError(f"study graph: {n.label} needs {', '.join(missing)}, not listed before it")
        seen.add(n.label)


def parse_executor(spec: str) -> tuple[str, str]:
    """``local`` | ``ray`` (a local Ray cluster, or the one RAY_ADDRESS names) | ``ray:ADDRESS`` -> (kind, address).
    For Ray: the package must be installed and the address answer, checked here, before anything runs."""
    kind, _, address = (spec or "local").partition(":")
    if kind not in ("local", "ray") or (kind == "local" and address):
        raise ValueError(f"--executor {spec!r}: use local (the default) or ray[:ADDRESS] (e.g. ray, ray:auto, "
                         "ray:10.0.0.5:6379)")
    if kind == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ValueError("--executor ray needs Ray: pip install 'edgerlhf[ray]' (or use --executor local)")
        check_address(address)
    return kind, address


def check_address(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) must answer a TCP connection before Ray is asked to join it (Ray itself
    retries a dead address for minutes); ``auto`` and "" (start a local cluster) are Ray's to resolve."""
    if address in ("", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--executor ray:{address}: the address is host:port (e.g. ray:10.0.0.5:6379) or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"--executor ray:{address}: nothing answers at {host}:{port} ({e.strerror or e}); start "
                              "the cluster there (`ray start --head --port PORT`), or use --executor ray for a local "
                              "one; nothing was run") from None


def note_attempt(study: Path, label: str) -> int:
    """Record one attempt at ``label`` (a file per label under ``study/.attempts``); returns its number (1 first)."""
    folder = Path(study) / ATTEMPTS
    folder.mkdir(exist_ok=True)
    f = folder / label
    with open(f, "a") as fh:
        fh.write(f"{time.time():.0f} {os.uname().nodename} {os.getpid()}\n")
    return len(f.read_text().splitlines())


def attempts(study: Path, label: str) -> int:
    f = Path(study) / ATTEMPTS / label
    return len(f.read_text().splitlines()) if f.is_file() else 0


def run_local(nodes: list[Node], run: Callable[[str, str, dict], object]) -> dict:
    """Every node in order: ``run(stage, label, overrides)`` -> its record. Returns label -> record."""
    check_graph(nodes)
    done: dict = {}
    for n in nodes:
        done[n.label] = run(n.stage, n.label, n.settings(done))
    return done


def _ray_stage(study: str, token: str, fn, stage: str, label: str, overrides: dict):
    """One stage on a Ray worker: the study folder must be the driver's (its token file), the attempt is noted,
    then ``fn``."""
    f = Path(study) / TOKEN_FILE
    if not f.is_file() or f.read_text() != token:
        raise FileNotFoundError(f"the study folder {study} is not visible on Ray node {os.uname().nodename} (or is "
                                "another study's): put it on storage every worker mounts at the same path")
    note_attempt(Path(study), label)
    return fn(stage, label, overrides)


def run_ray(nodes: list[Node], fn, study: Path, *, address: str = "", max_parallel: int = 0, max_retries: int = 2,
            resources: Callable[[Node, dict], dict] | None = None, log=print) -> dict:
    """Run the graph as Ray tasks: a node is submitted once every node it needs has finished, with
    ``resources(node, overrides)`` (``num_cpus``, ``num_gpus``, ``memory`` in bytes), at most ``max_parallel`` in
    flight (0: as many as the cluster takes). ``fn(stage, label, overrides)`` runs on the worker (a module-level
    function: Ray ships it by reference). A worker that dies is retried ``max_retries`` times. Returns label ->
    record."""
    import ray  # noqa: PLC0415 - optional and heavy: `pip install 'edgerlhf[ray]'`

    check_graph(nodes)
    check_address(address)
    study = Path(study).resolve()
    token = secrets.token_hex(8)
    (study / TOKEN_FILE).write_text(token)
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=True,
                     runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                               if k in ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConnectionError(f"--executor ray:{address}: no Ray cluster answered there ({e}); start one with "
                                  "`ray start --head`, or use --executor ray for a local one") from None
    task = ray.remote(_ray_stage)
    nodes_now = [n["Resources"] for n in ray.nodes() if n.get("Alive")]

    def feasible(res: dict, lab: str) -> None:
        """Ray would wait forever for a task no node can hold: say so instead."""
        for key, name in (("memory", "memory"), ("num_gpus", "GPU"), ("num_cpus", "CPU")):
            want = res.get(key, 0) or 0
            if want and not any(n.get(name, 0) >= want for n in nodes_now):
                most = max((n.get(name, 0) for n in nodes_now), default=0)
                unit = (lambda v: f"{v / 2**30:.1f} GiB") if name == "memory" else (lambda v: f"{v:g}")
                raise ValueError(f"stage {lab} needs {unit(want)} of {name} (the planner's prediction) but the "
                                 f"largest Ray node offers {unit(most)}; add a bigger node, or run it with "
                                 "--executor local")
    by_label = {n.label: n for n in nodes}
    done: dict = {}
    flying: dict = {}  # ObjectRef -> label
    waiting = [n.label for n in nodes]
    try:
        while waiting or flying:
            ready = [lab for lab in waiting if all(d in done for d in by_label[lab].needs)]
            for lab in ready:
                if max_parallel and len(flying) >= max_parallel:
                    break
                n = by_label[lab]
                over = n.settings(done)
                res = resources(n, over) if resources else {"num_cpus": 1}
                feasible(res, lab)
                ref = task.options(max_retries=max_retries, retry_exceptions=False, name=f"edgerlhf:{lab}",
                                   **res).remote(str(study), token, fn, n.stage, lab, over)
                flying[ref] = lab
                waiting.remove(lab)
                log(f"[run] {lab}: submitted to Ray ({', '.join(f'{k}={v:.3g}' for k, v in res.items())})")
            if not flying:
                raise RuntimeError(f"study graph: nothing can start ({', '.join(waiting)} wait on stages that "
                                   "never finished)")
            finished, _ = ray.wait(list(flying), num_returns=1)
            for ref in finished:
                lab = flying.pop(ref)
                try:
                    done[lab] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the stage's own error, as the local executor raises it
                    raise e.as_instanceof_cause() from None
                except ray.exceptions.WorkerCrashedError:
                    raise RuntimeError(f"stage {lab}: its worker died {max_retries + 1} times; the study stops "
                                       "(rerun it: finished stages are reused, an online stage resumes from its "
                                       "checkpoint)") from None
    finally:
        for ref in flying:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
    return done
