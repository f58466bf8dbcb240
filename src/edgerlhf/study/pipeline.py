"""``edgerlhf run``: the precision study end to end.

    SFT -> preference pairs -> reward model (trained once) -> the RM measured at each precision
        -> each arm (algorithm x RM precision; DPO without an RM) once per seed -> evaluation against SFT
        (same held-out prompts, same sampling seed) -> report with intervals over seeds and prompts

Every stage is an ordinary run folder inside the study folder, named ``<stage>-<key>`` where ``key`` is a
hash of the stage's resolved config (its inputs are run folders, whose names carry their own keys). A
folder whose status is ``finished`` is reused, so a rerun, or a rerun after a crash, does only the work
left; a PPO stage that stopped with a checkpoint resumes from it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import torch

from edgerlhf import registry
from edgerlhf.config import from_dict, to_dict
from edgerlhf.config.refs import SERVING_WAYS
from edgerlhf.data.taskfile import load_task
from edgerlhf.distributed import require_one_process
from edgerlhf.models.loading import resolve_device
from edgerlhf.models.precision import default_precisions, parse_precisions
from edgerlhf.presets import STAGE_PRESETS, STUDY_PRESETS
from edgerlhf.rewards.control import RANDOM_REWARD
from edgerlhf.runfolder import RunFolder
from edgerlhf.study.graph import Node, attempts, parse_executor, run_local, run_ray
from edgerlhf.study.plan import model_shape, plan_stage, runtime_bytes, task_lengths
from edgerlhf.study.records import NULL, StageRecord
from edgerlhf.study.report import write_report
from edgerlhf.study.stats import DEFAULT_MARGIN, parse_margin
from edgerlhf.tracking import atomic_write_json
from edgerlhf.tracking.checkpoint import list_checkpoints
from edgerlhf.tracking.isolate import run_isolated
from edgerlhf.tracking.lock import folder_lock

__all__ = ["STUDY_PRESETS", "Arm", "StageRecord", "config_key", "parse_arms", "run_stage", "run_study"]

# keys that never change what a stage computes
VOLATILE = {"output_dir", "run_name", "progress", "report_to", "resume", "stage", "lean_update", "task"}
# ("task": the task file's settings are resolved into the other keys, which carry what it changes)
LOCKS = ".locks"  # one lock file per stage folder: the process running the stage holds it

def config_key(cfg, study: Path | None = None) -> str:
    """A hash of what the stage computes. With ``study``, inputs inside the study folder (the run folders of
    earlier stages) are written relative to it, so the key does not change when the study is moved, copied,
    or run from another working directory."""
    d = {k: _relative(v, study) for k, v in to_dict(cfg).items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _relative(v, study: Path | None):
    if study is None:
        return v
    if isinstance(v, list):
        return [_relative(x, study) for x in v]
    if isinstance(v, str) and v and ("/" in v or "\\" in v):
        try:
            return "<study>/" + Path(v).expanduser().resolve().relative_to(Path(study).resolve()).as_posix()
        except ValueError:  # not inside the study: an outside file, keep it as given
            return v
    return v


def _comparable(v, study: Path):
    """A setting as the equivalence check compares it: a path to a folder of this study by that folder's name
    (the study may have moved since), lists item by item, everything else as is."""
    if isinstance(v, list):
        return [_comparable(x, study) for x in v]
    if isinstance(v, str) and ("/" in v or "\\" in v):
        p = Path(v)
        parts = p.parts
        for i in range(len(parts)):  # the first component that is a folder of this study, and what follows
            if parts[i] in (p.anchor, "..", ".") or not parts[i]:
                continue
            if (study / parts[i]).is_dir() and (study / Path(*parts[i:])).exists():
                return "<study>/" + Path(*parts[i:]).as_posix()
    return v


def _equivalent(study: Path, label: str, cfg) -> Path | None:
    """A finished ``<label>-<key>`` folder whose saved config has the same settings as ``cfg``, whatever its key:
    studies made by an older EdgeRLHF (other key formula, or before a setting existed: a setting its config
    lacks counts as its default) are reused, not redone."""
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(cfg)
                if f.default is not MISSING or f.default_factory is not MISSING}
    want = {k: _comparable(v, study) for k, v in to_dict(cfg).items() if k not in VOLATILE}
    pattern = re.compile(re.escape(label) + r"-[0-9a-f]{10}")
    for path in sorted(study.glob(f"{label}-*")):
        cand = RunFolder(path)
        if not pattern.fullmatch(cand.name) or not cand.finished or not cand.config:
            continue
        saved = cand.config
        if all(_comparable(saved.get(k, defaults.get(k)), study) == v for k, v in want.items()):
            return cand.path
    return None


def _start_stage(study: str, stage: str, label: str, raw: dict, name: str, log=print, threads: int = 0) -> str:
    """Run the stage into ``study/name`` holding that folder's lock (``tracking.lock``), in the process that runs
    it: an earlier attempt still stopping there (a Ray retry starts while the killed worker's stage process writes
    its checkpoint) is waited for, then its work is taken as it left it: finished (reused), a checkpoint (resumed
    from), or neither (moved aside, started clean)."""
    study, row = Path(study), registry.get(stage)
    before = torch.get_num_threads()
    if threads:  # float sums depend on how work is split over threads: a set count makes any executor's numbers one
        torch.set_num_threads(threads)
    try:
        with folder_lock(study / LOCKS / name, f"stage {label}", log):
            return _start_locked(study, row, label, raw, name, log)
    finally:
        torch.set_num_threads(before)


def _start_locked(study: Path, row, label: str, raw: dict, name: str, log) -> str:
    """The stage folder as the last attempt left it (the lock held): finished, a checkpoint, or neither."""
    path = study / name
    if RunFolder(path).finished:
        log(f"[run] {label}: {path} was finished by an earlier attempt")
        return str(path)
    kw = {"run_name": name}
    if path.exists():
        if row.online and list_checkpoints(path / "checkpoints"):
            kw["resume"] = str(path)
            log(f"[run] {label}: resuming {path} from its last checkpoint")
        else:  # a crashed stage without a checkpoint: keep it aside for inspection, start clean
            aside = path.with_name(f".{name}.{RunFolder(path).status or 'partial'}-{int(time.time())}")
            shutil.move(str(path), str(aside))
            log(f"[run] {label}: previous attempt moved to {aside}")
    cfg = from_dict(row.config, {**raw, "output_dir": str(study), **kw}, f"study stage {label}")
    log(f"[run] {label}: {path}")
    return str(row.runner()(cfg))


def run_stage(study: Path, stage: str, label: str, overrides: dict, *, isolate: bool = True, log=print,
              threads: int = 0, own_group: bool = False) -> StageRecord:
    """Run one stage in ``study`` unless a finished run with the same resolved config is there; by default
    in its own process, so its peak memory is its own and nothing it held stays behind for the next. ``threads``:
    torch's thread count for the stage (0: as the process has it)."""
    row = registry.get(stage)
    overrides = dict(overrides)
    preset = overrides.pop("preset", None)
    raw = {**(STAGE_PRESETS.get(stage, {}).get(preset, {}) if preset else {}), **overrides}
    cfg = from_dict(row.config, {**raw, "output_dir": str(study)}, f"study stage {label}")
    name = f"{label}-{config_key(cfg, study)}"
    path = study / name
    if not RunFolder(path).finished:  # a folder of the same settings under another key (older EdgeRLHF)?
        same = _equivalent(study, label, cfg)
        if same is not None:
            name, path = same.name, same
    if RunFolder(path).finished:
        log(f"[run] {label}: reusing {path} (finished, same config)")
        return StageRecord(stage, label, path, True, 0.0, RunFolder(path).require_summary())
    t0 = time.perf_counter()
    if isolate:
        out = run_isolated(_start_stage, str(study), stage, label, raw, name, print, threads, what=f"stage {label}",
                           own_group=own_group)
    else:
        out = _start_stage(str(study), stage, label, raw, name, log, threads)
    return StageRecord(stage, label, Path(out), False, time.perf_counter() - t0, RunFolder(out).require_summary())


def run_stage_on_worker(study: str, threads: int, stage: str, label: str, overrides: dict) -> StageRecord:
    """A stage as a Ray task runs it: ``run_stage`` in ``study``, in a process of its own (an online stage that
    stopped with a checkpoint, e.g. on a worker that died, resumes from it). The stage process leaves the worker's
    process group: when the worker dies it gets one SIGTERM, and an online stage writes its checkpoint."""
    return run_stage(Path(study), stage, label, overrides, isolate=True, threads=threads, own_group=True)


def stage_resources(study: Path, device: str, cpus: float = 1.0):
    """``resources(node, overrides)`` for the Ray executor: ``cpus`` CPUs (Ray gives the stage as many threads), a
    GPU on cuda, and the planner's predicted peak as Ray's ``memory`` (stages it has no plan for: CPUs only)."""
    gpu = str(device).startswith("cuda")
    runtime = 0.0 if gpu else runtime_bytes()
    measured = functools.lru_cache(maxsize=None)(task_lengths)  # the task's data tokenized once, not per stage

    def resources(node: Node, overrides: dict) -> dict:
        res = {"num_cpus": float(cpus), "num_gpus": 1.0 if gpu else 0.0}
        row = registry.get(node.stage)
        try:
            cfg = from_dict(row.config, {**overrides, "output_dir": str(study)}, f"study stage {node.label}")
            lengths = measured(getattr(cfg, "task", None) or None, cfg.model)
            peak = plan_stage(node.stage, cfg, model_shape(cfg.model), device="cuda" if gpu else "cpu",
                              runtime=runtime, prompt_tokens=lengths.prompt, response_tokens=lengths.answer,
                              sft_tokens=lengths.sft_row).peak
        except (ValueError, KeyError):  # a measuring stage the planner has no model of
            return res
        if not gpu:  # GPU memory is the GPU's: Ray's `memory` is the host's
            res["memory"] = float(int(peak))
        return res

    return resources


@dataclass(frozen=True)
class Arm:
    """One configuration the study compares: an algorithm, and the RM precision it trains against ("" for DPO)."""

    algorithm: str
    precision: str = ""

    @property
    def name(self) -> str:
        return self.algorithm + (f"-{_slug(self.precision)}" if self.precision else "")

    @property
    def rm_precision(self) -> str:
        """The precision the RM is served at (``int4`` of ``int4~uwo``)."""
        return self.precision.partition(ENSEMBLE_SEP)[0]

    @property
    def ensemble(self) -> str:
        """How the study's RM ensemble serves this arm (``uwo`` of ``int4~uwo``); "" for the single RM."""
        return self.precision.partition(ENSEMBLE_SEP)[2]

    def labels(self, seed: int, base_seed: int) -> tuple[str, str]:
        """(training stage label, evaluation label). The base seed keeps today's names (``ppo-fp32`` /
        ``eval-fp32``), so a one-seed study extended by seeds later reuses everything it ran."""
        sfx = "" if seed == base_seed else f"-seed{seed}"
        short = registry.get(self.algorithm).short_eval_label
        ev = f"eval-{_slug(self.precision)}" if short else f"eval-{self.name}"
        return self.name + sfx, ev + sfx


ENSEMBLE_SEP = "~"


def _slug(precision: str) -> str:
    return precision.replace(":", "-").replace(ENSEMBLE_SEP, "-")


def parse_arms(algorithms: list[str] | str | None, precisions: list[str]) -> list[Arm]:
    """``["ppo", "grpo@fp32", "dpo", "ppo@null", "ppo@int4~uwo"]``: every RM-based algorithm at each of
    ``precisions`` unless it names its own (``@fp32+int8``); ``@null`` is its control arm (a random reward instead
    of the RM); ``@int4~uwo`` trains against the study's RM ensemble (``--reward-ensemble K``) at int4, served by
    uwo (or mean, min, warm); DPO once. Unknown names are one error listing every problem."""
    known = registry.algorithms()
    if isinstance(algorithms, str):
        algorithms = algorithms.split(",")
    arms, errs = [], []
    for item in [a.strip() for a in (algorithms or ["ppo"]) if a.strip()]:
        algo, _, precs = item.partition("@")
        if algo not in known:
            close = difflib.get_close_matches(algo, known, n=1)
            errs.append(f"unknown algorithm {algo!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                        + f"; use {', '.join(known)}")
            continue
        if not registry.get(algo).uses_rm:
            if precs:
                errs.append(f"{item!r}: {algo} has no reward model, so no RM precision to name")
            arms.append(Arm(algo))
            continue
        named = [x.strip() for x in precs.split("+")] if precs else []
        ways = {x: x.partition(ENSEMBLE_SEP)[2] for x in named if ENSEMBLE_SEP in x}
        bad = [x for x, w in ways.items() if w not in SERVING_WAYS]
        if bad:
            errs.append(f"{item!r}: {', '.join(bad)}: after {ENSEMBLE_SEP} name how the RM ensemble serves: "
                        f"{', '.join(SERVING_WAYS)} (e.g. ppo@int4~uwo)")
            continue
        try:
            plain = [x.partition(ENSEMBLE_SEP)[0] for x in named if x != NULL]
            parse_precisions(plain) if plain else None
            mine = [x for x in named if x != NULL] if plain else [] if named else list(precisions)
        except ValueError as e:
            errs.append(f"{item!r}: {e} (or {NULL}: the control arm with a random reward)")
            continue
        arms += [Arm(algo, p) for p in mine] + ([Arm(algo, NULL)] if NULL in named else [])
    if errs:
        raise ValueError("edgerlhf run --algorithms: " + "; ".join(errs))
    seen = set()
    return [a for a in arms if not (a in seen or seen.add(a))]


def run_study(preset: str = "quick", *, precisions: list[str] | None = None, model: str | None = None,
              seed: int = 42, seeds: list[int] | None = None, algorithms: list[str] | str | None = None,
              rm_per_seed: bool = False, task: str | Path | None = None, out: str | Path | None = None,
              device: str = "auto", progress: bool = True, report_to: list[str] | None = None,
              isolate: bool = True, bon: bool = True, bon_precisions: list[str] | None = None,
              equivalence_margin: str | float = DEFAULT_MARGIN, reward_ensemble: int = 0, executor: str = "local",
              max_parallel: int = 0, stage_threads: int = 0) -> Path:
    """The whole study; returns the study folder (``report.md``, ``report.html``, one folder per stage).

    ``seed`` is the study's base seed: the SFT policy, the preference pairs and the reward model are made with
    it, and every evaluation samples with it (so all policies answer the same held-out prompts with the same
    sampling stream: comparisons are paired by prompt). ``seeds`` (default: ``[seed]``) replicate every
    training stage after them, once per (algorithm, RM precision, seed), over that one SFT policy and RM:
    the spread is RL's own run-to-run variance. ``rm_per_seed=True`` also retrains the RM with each seed (the
    precision question's other source of variance); evaluations still score with the base seed's fp32 RM, one
    yardstick for all. Stages are reused by config hash, so a study extended by seeds later redoes nothing.

    ``task``: a task file (``data.taskfile``) naming the data, gold and response length; every stage reads it
    (the study's own settings, such as its presets' budgets, come after it). It is checked whole before the study
    folder exists: a bad task file writes nothing.

    ``bon`` (on by default) adds best-of-n on the SFT policy: N candidates per held-out prompt ranked by the RM at
    each precision of the study (``bon_precisions``: a subset of them), whose paired differences need no RL seeds.
    ``equivalence_margin``: the margin of the report's equivalence verdicts (TOST), fixed before the study runs: a
    number in the yardstick's units (0.05) or a share of the reference configuration's gain ("10%").

    ``reward_ensemble`` K >= 2 trains an RM ensemble of K members beside the single RM (member 0 is that RM: same
    seed and settings) for the arms that name one (``ppo@int4~uwo``: PPO against the ensemble at int4, served by
    UWO); best-of-n then also ranks with member 0 at fp32 (the reference) and each such (precision, way), on the
    same candidates.

    ``executor``: ``local`` (one stage after the other) or ``ray[:ADDRESS]`` (every stage a Ray task as soon as its
    inputs exist, at most ``max_parallel`` at once; :mod:`edgerlhf.study.graph`). The stages, their folders and
    every number are the same either way at the same ``stage_threads``: torch's threads per stage (0: all cores
    under the local executor, a stage's CPUs, cores / ``max_parallel``, under Ray). Float sums depend on how work is
    split over threads, so at other thread counts sampled responses drift apart: the same study statistically, not
    bit for bit.
    """
    require_one_process("the study (edgerlhf run)", registry.data_parallel_stages())  # it runs its stages itself

    if preset not in STUDY_PRESETS:
        raise ValueError(f"unknown study preset {preset!r}; use one of {', '.join(STUDY_PRESETS)}")
    dev = resolve_device(device)
    precisions = parse_precisions(precisions) if precisions else default_precisions(dev)
    arms = parse_arms(algorithms, precisions)
    seeds = list(dict.fromkeys(seeds or [seed]))
    if any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds={seeds}: use non-negative integers, e.g. --seeds 1,2,3")
    parse_margin(equivalence_margin)  # a margin <= 0 or not a number: refused before anything is written
    parse_executor(executor)
    if max_parallel < 0:
        raise ValueError(f"--max-parallel {max_parallel}: 0 (as many as the cluster takes) or more")
    if stage_threads < 0:
        raise ValueError(f"--stage-threads {stage_threads}: 0 (the executor's default) or more")
    ens_arms = [a for a in arms if a.ensemble]
    if ens_arms and reward_ensemble < 2:
        raise ValueError(f"{', '.join(a.name for a in ens_arms)} train against an RM ensemble: add --reward-ensemble K "
                         "(K >= 2 members; 4 is Coste et al.'s choice)")
    if reward_ensemble == 1 or reward_ensemble < 0:
        raise ValueError(f"--reward-ensemble {reward_ensemble}: an ensemble needs K >= 2 members (0: none)")
    rm_precs = list(dict.fromkeys(precisions + [a.precision for a in arms
                                                if a.precision and a.precision != NULL and not a.ensemble]))
    bon_precs = parse_precisions(bon_precisions) if bon_precisions else rm_precs
    missing = [x for x in bon_precs if x not in rm_precs]
    if bon and missing:
        raise ValueError(f"--bon-precisions {', '.join(missing)}: the study measures its RM at {', '.join(rm_precs)} "
                         "only; add them to --precisions, or leave --bon-precisions out (every precision of the study)")
    p = STUDY_PRESETS[preset]
    model = model or p.get("model", "default")
    common = {"model": model, "seed": seed, "device": device, "progress": progress,
              "report_to": report_to or ["tensorboard"]}
    name = f"{preset}-{Path(model).name}-seed{seed}"
    if task:
        t = load_task(str(task))  # every problem at once, before anything is written
        if t.gold == "none" and bon:  # best-of-n's verdicts are judged by the gold: without one it would only rank
            bon = False               # the RM against itself
            print("[run] no best-of-n stage: the task has no gold (gold: none) to judge the candidates by")
        common["task"] = t.path
        name = f"{preset}-{t.label}-{Path(model).name}-seed{seed}" if str(task) not in ("builtin", "default") else name
    study = Path(out or Path("studies") / name)
    study.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records: list[StageRecord] = []
    plan = {"preset": preset, "task": common.get("task", ""), "precisions": rm_precs, "seed": seed, "seeds": seeds,
            "rm_per_seed": rm_per_seed, "bon": bon, "equivalence_margin": str(equivalence_margin),
            "reward_ensemble": reward_ensemble, "executor": executor, "stage_threads": stage_threads,
            "arms": [{"name": a.name, "algorithm": a.algorithm, "precision": a.precision} for a in arms]}

    nodes = study_graph(p, common, arms, seeds, seed, rm_per_seed=rm_per_seed, rm_precs=rm_precs, bon=bon,
                        bon_precs=bon_precs, reward_ensemble=reward_ensemble, ens_arms=ens_arms)

    def run_node(name, label, extra):
        rec = run_stage(study, name, label, extra, isolate=isolate, threads=stage_threads)
        records.append(rec)
        _write_index(study, plan, records, time.perf_counter() - t0)
        return rec

    kind, address = parse_executor(executor)
    if kind == "ray":
        cpus = stage_threads or max(1, (os.cpu_count() or 1) // max(max_parallel, 1))
        done = run_ray(nodes, functools.partial(run_stage_on_worker, str(study), stage_threads), study,
                       address=address, max_parallel=max_parallel, log=print,
                       resources=stage_resources(study, dev, cpus))
        records[:] = [done[n.label] for n in nodes]  # the graph's order, as the local executor writes it
        for r in records:
            r.attempts = attempts(study, r.label)
    else:
        done = run_local(nodes, run_node)
    sft, rm_eval = done["sft"], done["rm-eval"]
    best, best_ens = done.get("bon"), done.get("bon-ensemble")
    runs: dict[Arm, dict[int, tuple[StageRecord, StageRecord]]] = {a: {} for a in arms}
    for s in seeds:
        for arm in arms:
            train_label, eval_label = arm.labels(s, seed)
            runs[arm][s] = (done[train_label], done[eval_label])
    wall = time.perf_counter() - t0
    _write_index(study, plan, records, wall)
    report = write_report(study, sft=sft, rm_eval=rm_eval, runs=runs, base_seed=seed, bon=best,
                          margin=equivalence_margin, bon_ensemble=best_ens)
    print(f"\n[run] study finished in {wall / 60:.1f} min (all stages' compute: "
          f"{_compute_s(records) / 60:.1f} min): {report}")
    return study


def study_graph(p: dict, common: dict, arms: list[Arm], seeds: list[int], seed: int, *, rm_per_seed: bool,
                rm_precs: list[str], bon: bool, bon_precs: list[str], reward_ensemble: int,
                ens_arms: list[Arm]) -> list[Node]:
    """The study's stages as a graph (:class:`~edgerlhf.study.graph.Node`), in the order the local executor runs
    them: 1 the shared stages with the base seed; 2 every arm at every seed; 3 its evaluation on the shared held-out
    prompts and sampling seed."""
    nodes: list[Node] = []

    def add(name: str, label: str, needs: tuple[str, ...], extra) -> None:
        nodes.append(Node(label, name, needs, lambda done, extra=extra: {**common, **p[name], **extra(done)}))

    path = lambda done, lab: str(done[lab].path)  # noqa: E731
    # 1 shared stages, with the base seed
    add("sft", "sft", (), lambda d: {})
    add("prefs", "prefs", ("sft",), lambda d: {"policy": path(d, "sft")})
    add("reward", "reward", ("prefs",), lambda d: {"prefs": path(d, "prefs")})
    add("rm-eval", "rm-eval", ("reward",), lambda d: {"rm": path(d, "reward"), "precisions": rm_precs})
    add("eval", "eval-sft", ("sft", "reward"), lambda d: {"policy": path(d, "sft"), "baseline": "none",
                                                          "reward": path(d, "reward"), "reward_precision": "fp32"})
    # best-of-n on the SFT policy: every precision ranks the same candidates (paired, no RL seed variance)
    if bon:
        add("bon", "bon", ("sft", "reward"), lambda d: {"policy": path(d, "sft"), "rm": path(d, "reward"),
                                                        "precisions": bon_precs})
    if reward_ensemble >= 2:  # the ensemble: K members (member 0 = the single RM above), on the same candidates
        add("reward", "reward-ensemble", ("prefs",), lambda d: {"prefs": path(d, "prefs"), "members": reward_ensemble})
        if bon:
            ways = list(dict.fromkeys(a.precision.replace(ENSEMBLE_SEP, "/") for a in ens_arms))
            add("bon", "bon-ensemble", ("sft", "reward-ensemble", "bon"), lambda d: {
                "policy": path(d, "sft"), "rm": path(d, "reward-ensemble"), "candidates": path(d, "bon"),
                "precisions": list(dict.fromkeys(["fp32"] + [w.partition("/")[0] for w in ways])),
                "ensemble_arms": ["fp32/m0"] + ways})
    # 2 every arm at every seed; 3 its evaluation on the shared held-out prompts and sampling seed
    for s in seeds:
        rm_s = "reward"
        if rm_per_seed and s != seed and any(a.precision for a in arms):
            rm_s = f"reward-seed{s}"
            add("reward", rm_s, ("prefs",), lambda d, s=s: {"prefs": path(d, "prefs"), "seed": s})
            add("rm-eval", f"rm-eval-seed{s}", (rm_s,), lambda d, r=rm_s: {"rm": path(d, r), "precisions": rm_precs})
        for arm in arms:
            train_label, eval_label = arm.labels(s, seed)
            if not registry.get(arm.algorithm).uses_rm:
                needs, extra = ("sft", "prefs"), lambda d: {"prefs": path(d, "prefs")}
            elif arm.precision == NULL:
                needs, extra = ("sft",), lambda d: {"reward": RANDOM_REWARD}
            elif arm.ensemble:
                needs, extra = ("sft", "reward-ensemble"), lambda d, a=arm: {
                    "reward": path(d, "reward-ensemble"), "reward_precision": a.rm_precision, "ensemble": a.ensemble}
            else:
                needs, extra = ("sft", rm_s), lambda d, a=arm, r=rm_s: {"reward": path(d, r),
                                                                         "reward_precision": a.precision}
            add(arm.algorithm, train_label, needs,
                lambda d, s=s, extra=extra: {"policy": path(d, "sft"), "seed": s, **extra(d)})
            add("eval", eval_label, (train_label, "reward", "eval-sft"), lambda d, t=train_label: {
                "policy": path(d, t), "reward": path(d, "reward"), "reward_precision": "fp32",
                "baseline_eval": path(d, "eval-sft")})
    return nodes


def _compute_s(records: list[StageRecord]) -> float:
    """Every stage's own compute, reused or not: a reused stage counts what it took when it ran, a resumed one
    its earlier attempts too (its summary's wall time goes on from them), a fresh one its process's wall time."""
    own = [r.summary.get("wall_time_s") or 0.0 for r in records]
    return sum(w if r.reused else max(w, r.wall_s) for r, w in zip(records, own))


def _write_index(study: Path, plan: dict, records: list[StageRecord], wall: float) -> None:
    atomic_write_json(study / "study.json", {
        **plan, "wall_time_s": round(wall, 1), "compute_s": round(_compute_s(records), 1),
        "stages": [{"stage": r.stage, "label": r.label, "path": r.path.name, "reused": r.reused,
                    "wall_s": round(r.wall_s, 1) if not r.reused else r.summary.get("wall_time_s"),
                    **({"attempts": r.attempts} if r.attempts > 1 else {})} for r in records]})
