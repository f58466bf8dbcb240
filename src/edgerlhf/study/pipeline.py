"""``edgerlhf run``: the precision study end to end.

    SFT -> preference pairs -> reward model (trained once) -> the RM measured at each precision
        -> PPO once per precision (same seed, same prompts) -> evaluation against SFT -> report

Every stage is an ordinary run folder inside the study folder, named ``<stage>-<key>`` where ``key`` is a
hash of the stage's resolved config (its inputs are run folders, whose names carry their own keys). A
folder whose status is ``finished`` is reused, so a rerun, or a rerun after a crash, does only the work
left; a PPO stage that stopped with a checkpoint resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgerlhf.config import ONLINE_STAGES, STAGE_CONFIGS, from_dict, to_dict
from edgerlhf.presets import STAGE_PRESETS, STUDY_PRESETS  # noqa: F401  (STUDY_PRESETS re-exported)

# keys that never change what a stage computes
VOLATILE = {"output_dir", "run_name", "progress", "report_to", "resume", "stage", "lean_update"}

def config_key(cfg) -> str:
    d = {k: v for k, v in to_dict(cfg).items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass
class StageRecord:
    stage: str
    label: str
    path: Path
    reused: bool
    wall_s: float
    summary: dict = field(default_factory=dict)


def _status(path: Path) -> str:
    f = path / "status"
    return f.read_text().strip() if f.is_file() else ""


def _run_child(stage: str, cfg: dict) -> str:
    from edgerlhf.stages import stage_module

    cfg = dict(cfg)
    cfg.pop("stage", None)
    return str(stage_module(stage).run(from_dict(STAGE_CONFIGS[stage], cfg)))


def run_stage(study: Path, stage: str, label: str, overrides: dict, *, isolate: bool = True, log=print) -> StageRecord:
    """Run one stage in ``study`` unless a finished run with the same resolved config is there; by default
    in its own process, so its peak memory is its own and nothing it held stays behind for the next."""
    from edgerlhf.stages import stage_module

    overrides = dict(overrides)
    preset = overrides.pop("preset", None)
    raw = {**(STAGE_PRESETS.get(stage, {}).get(preset, {}) if preset else {}), **overrides}
    cfg = from_dict(STAGE_CONFIGS[stage], {**raw, "output_dir": str(study)}, f"study stage {label}")
    name = f"{label}-{config_key(cfg)}"
    path = study / name
    if _status(path) == "finished":
        log(f"[run] {label}: reusing {path} (finished, same config)")
        return StageRecord(stage, label, path, True, 0.0, json.loads((path / "summary.json").read_text()))
    kw = {"run_name": name}
    if path.exists():
        from edgerlhf.tracking.checkpoint import list_checkpoints

        if stage in ONLINE_STAGES and list_checkpoints(path / "checkpoints"):
            kw["resume"] = str(path)
            log(f"[run] {label}: resuming {path} from its last checkpoint")
        else:  # a crashed stage without a checkpoint: keep it aside for inspection, start clean
            aside = path.with_name(f".{name}.{_status(path) or 'partial'}-{int(time.time())}")
            shutil.move(str(path), str(aside))
            log(f"[run] {label}: previous attempt moved to {aside}")
    cfg = from_dict(STAGE_CONFIGS[stage], {**raw, "output_dir": str(study), **kw}, f"study stage {label}")
    log(f"[run] {label}: {path}")
    t0 = time.perf_counter()
    if isolate:
        from edgerlhf.tracking.isolate import run_isolated

        out = run_isolated(_run_child, stage, to_dict(cfg), what=f"stage {label}")
    else:
        out = stage_module(stage).run(cfg)
    return StageRecord(stage, label, Path(out), False, time.perf_counter() - t0,
                       json.loads((Path(out) / "summary.json").read_text()))


def run_study(preset: str = "quick", *, precisions: list[str] | None = None, model: str | None = None,
              seed: int = 42, out: str | Path | None = None, device: str = "auto", progress: bool = True,
              report_to: list[str] | None = None, isolate: bool = True) -> Path:
    """The whole study; returns the study folder (``report.md``, ``report.html``, one folder per stage)."""
    from edgerlhf.models.loading import resolve_device
    from edgerlhf.models.precision import default_precisions, parse_precisions
    from edgerlhf.study.report import write_report

    if preset not in STUDY_PRESETS:
        raise ValueError(f"unknown study preset {preset!r}; use one of {', '.join(STUDY_PRESETS)}")
    dev = resolve_device(device)
    precisions = parse_precisions(precisions) if precisions else default_precisions(dev)
    p = STUDY_PRESETS[preset]
    model = model or p.get("model", "default")
    common = {"model": model, "seed": seed, "device": device, "progress": progress,
              "report_to": report_to or ["tensorboard"]}
    study = Path(out or Path("studies") / f"{preset}-{Path(model).name}-seed{seed}")
    study.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records: list[StageRecord] = []

    def stage(name, label, extra):
        rec = run_stage(study, name, label, {**common, **p[name], **extra}, isolate=isolate)
        records.append(rec)
        _write_index(study, preset, precisions, seed, records, time.perf_counter() - t0)
        return rec

    sft = stage("sft", "sft", {})
    prefs = stage("prefs", "prefs", {"policy": str(sft.path)})
    rm = stage("reward", "reward", {"prefs": str(prefs.path)})
    rm_eval = stage("rm-eval", "rm-eval", {"rm": str(rm.path), "precisions": precisions})
    sft_eval = stage("eval", "eval-sft", {"policy": str(sft.path), "baseline": "none", "reward": str(rm.path),
                                          "reward_precision": "fp32"})
    ppo, ev = {}, {}
    for prec in precisions:
        tag = prec.replace(":", "-")
        ppo[prec] = stage("ppo", f"ppo-{tag}", {"policy": str(sft.path), "reward": str(rm.path), "reward_precision": prec})
        ev[prec] = stage("eval", f"eval-{tag}", {"policy": str(ppo[prec].path), "reward": str(rm.path),
                                                 "reward_precision": "fp32", "baseline_eval": str(sft_eval.path)})
    wall = time.perf_counter() - t0
    _write_index(study, preset, precisions, seed, records, wall)
    report = write_report(study, sft=sft, rm_eval=rm_eval, ppo=ppo, evals=ev)
    print(f"\n[run] study finished in {wall / 60:.1f} min: {report}")
    return study


def _write_index(study: Path, preset, precisions, seed, records: list[StageRecord], wall: float) -> None:
    from edgerlhf.tracking import atomic_write_json

    atomic_write_json(study / "study.json", {
        "preset": preset, "precisions": list(precisions), "seed": seed, "wall_time_s": round(wall, 1),
        "stages": [{"stage": r.stage, "label": r.label, "path": r.path.name, "reused": r.reused,
                    "wall_s": round(r.wall_s, 1) if not r.reused else r.summary.get("wall_time_s")} for r in records]})
