"""Checks of what a config value refers to, without loading a model and without torch: data files, precision
names, gold scorers, and input artifacts (a policy or RM trained with or without the chat template).

These are the config layer's own vocabulary: ``models.precision`` builds on :data:`PRECISIONS` / :data:`BACKENDS`,
``rewards.gold`` on :func:`import_callable` and :func:`check_gold`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

from edgerlhf.runfolder import find_artifact, read_artifact_meta

__all__ = ["BACKENDS", "GOLD_KINDS", "PRECISIONS", "check_dataset", "check_gold", "check_precision",
           "check_ensemble", "check_ensemble_arms", "ensemble_meta", "formatting_mismatch", "import_callable",
           "missing_backend",
           "valid_precision_names"]

# -- reward-model precisions -----------------------------------------------------------------------------------

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "int4")
# integer backends: bitsandbytes everywhere; torchao's int8 weight-only as a CPU alternative.
# A precision may name its backend: "int8:torchao", "int4:bnb"; plain "int8" takes the device default.
BACKENDS = {"int8": ("bnb", "torchao"), "int4": ("bnb",)}


def valid_precision_names() -> str:
    return ", ".join(list(PRECISIONS) + [f"{p}:{b}" for p, bs in BACKENDS.items() for b in bs])


def check_precision(name: str) -> str:
    """``name`` if it is a precision (optionally with a backend), else a ValueError listing the valid ones."""
    base, _, backend = name.partition(":")
    if base not in PRECISIONS or (backend and backend not in BACKENDS.get(base, ())):
        raise ValueError(f"unknown precision {name!r}; valid precisions are {valid_precision_names()}")
    return name


def check_precisions(names, key: str = "precisions") -> list[str]:
    """One message per name in ``names`` that is not a precision (:func:`check_precision`'s message, under ``key``)."""
    errs = []
    for name in names:
        try:
            check_precision(name)
        except ValueError as e:
            errs.append(f"{key}: {e}")
    return errs


# -- reward-model ensembles -----------------------------------------------------------------------------------

SERVING_WAYS = ("mean", "min", "uwo", "warm")  # how an ensemble gives one score (rl.ensemble: the first three)
ENSEMBLE_WAYS = ("auto", *SERVING_WAYS)  # and member-N
ENSEMBLE_LAYOUTS = ("shared", "merged")
_BACKEND_PACKAGES = {"bnb": "bitsandbytes", "torchao": "torchao"}


def missing_backend(precision: str) -> str | None:
    """The message for an integer precision whose backend package is not installed (found without importing it),
    or None."""
    base, _, backend = precision.partition(":")
    if base not in BACKENDS:
        return None
    names = [backend] if backend else ["bnb"] if base == "int4" else ["torchao", "bnb"]
    if any(importlib.util.find_spec(_BACKEND_PACKAGES[b]) for b in names):
        return None
    pkgs = " or ".join(_BACKEND_PACKAGES[b] for b in names)
    return f"precision {precision} needs {pkgs}, which is not installed: pip install {pkgs.split(' or ')[-1]}, or " \
           "use fp32 / bf16"


def ensemble_meta(path: str) -> dict | None:
    """The metadata of a reward-model ensemble artifact, or None (a single RM, or not an artifact)."""
    try:
        meta = read_artifact_meta(find_artifact(path))
    except (FileNotFoundError, ValueError, OSError):
        return None
    return meta if meta.get("kind") == "ensemble" else None


def check_ensemble(key: str, path: str, ensemble: str, uwo_lambda: float, layout: str,
                   precisions=()) -> list[str]:
    """Problems with serving ``path`` with these ensemble settings, found before any model loads: an aggregation
    asked of a single RM, a member that does not exist, a WARM of members that cannot be averaged, lambda < 0, an
    unknown layout, a precision whose backend is missing."""
    errs = []
    if ensemble not in ENSEMBLE_WAYS and not (ensemble.startswith("member-") and ensemble[7:].isdigit()):
        errs.append(f"ensemble={ensemble!r}: use one of {', '.join(ENSEMBLE_WAYS)} or member-N (member N alone)")
    if uwo_lambda < 0:
        errs.append(f"uwo_lambda={uwo_lambda} must be >= 0 (UWO = mean - lambda x the members' variance)")
    if layout not in ENSEMBLE_LAYOUTS:
        errs.append(f"ensemble_layout={layout!r}: use one of {', '.join(ENSEMBLE_LAYOUTS)}")
    for p in precisions:
        if p and (msg := missing_backend(p)):
            errs.append(msg)
    if not path or path in ("random", "none", "auto") or not Path(path).expanduser().exists():
        return errs
    meta = ensemble_meta(path)
    if meta is None:
        if ensemble != "auto":
            errs.append(f"ensemble={ensemble}: {key}={path!r} is a single reward model (K=1); an aggregation needs an "
                        "ensemble of K >= 2 members (edgerlhf reward members=4), or leave ensemble=auto")
        return errs
    k = len(meta.get("members", []))
    if k < 2:
        errs.append(f"{key}={path!r} holds {k} member(s): an ensemble needs K >= 2 (retrain with members=4)")
    if ensemble.startswith("member-") and ensemble[7:].isdigit() and int(ensemble[7:]) >= k:
        errs.append(f"ensemble={ensemble}: {key}={path!r} has members 0..{k - 1}")
    if ensemble == "warm":
        errs += warm_problems(path, meta)
    return errs


def check_ensemble_arms(arms, path: str) -> list[str]:
    """best-of-n's rankers of an ensemble, ``PRECISION/WHO`` (WHO: m<i>, mean, min, uwo, warm)."""
    if not arms:
        return []
    meta = ensemble_meta(path) if path and Path(path).expanduser().exists() else None
    if meta is None:
        return [f"ensemble_arms={list(arms)}: rm={path!r} is not an ensemble (edgerlhf reward members=4); leave "
                "ensemble_arms empty and use precisions"]
    k, errs = len(meta.get("members", [])), []
    for a in arms:
        prec, _, who = str(a).partition("/")
        try:
            check_precision(prec)
        except ValueError as e:
            errs.append(f"ensemble_arms: {a!r}: {e}")
        ok = who in SERVING_WAYS or (who[:1] == "m" and who[1:].isdigit() and int(who[1:]) < k)
        if not ok:
            errs.append(f"ensemble_arms: {a!r}: after the precision use m0..m{k - 1}, mean, min, uwo or warm "
                        "(e.g. int4/uwo)")
    if len(set(arms)) != len(arms):
        errs.append(f"ensemble_arms={list(arms)}: an arm is listed twice")
    if any(str(a).endswith("/warm") for a in arms):
        errs += warm_problems(path, meta)
    return errs


def lora_shape(art: Path) -> dict:
    """What must agree for LoRA RMs' weights to be averaged or served on one base, from the adapter's
    ``adapter_config.json`` (rank, alpha, target modules, the blocks it is in); {} for a full fine-tune."""
    f = Path(art) / "adapter_config.json"
    if not f.is_file():
        return {}
    c = json.loads(f.read_text())
    return {"r": c.get("r"), "alpha": c.get("lora_alpha"), "target_modules": sorted(c.get("target_modules") or []),
            "layers": c.get("layers_to_transform")}


def warm_problems(path: str, meta: dict) -> list[str]:
    """WARM averages weights: its members must share the base model and the LoRA shape (rank, alpha, layers,
    target modules)."""
    art = find_artifact(path)
    metas = []
    for m in meta.get("members", []):
        try:
            metas.append((m["name"], {**read_artifact_meta(art / m["name"]), "lora": lora_shape(art / m["name"])}))
        except (FileNotFoundError, ValueError, KeyError) as e:
            return [f"{path}: member {m.get('name')!r} is missing ({e}); retrain the ensemble"]
    return shape_problems(metas, "ensemble=warm", "weights average only between members fine-tuned from one base "
                                                  "with one LoRA shape; use ensemble=mean|min|uwo (scores, not "
                                                  "weights, are combined)")


def check_members_from(paths, model: str, members: int) -> list[str]:
    """Reward runs to assemble into an ensemble: each a single fp32 LoRA RM of ``model``, one LoRA shape."""
    if not paths:
        return []
    errs = []
    if members > 1:
        errs.append(f"members={members} and members_from: either train K members or assemble runs, not both")
    if len(paths) < 2:
        errs.append(f"members_from={list(paths)}: an ensemble needs K >= 2 reward runs")
    metas = []
    for p in paths:
        try:
            art = find_artifact(p)
            meta = read_artifact_meta(art)
        except (FileNotFoundError, ValueError) as e:
            errs.append(f"members_from: {p!r}: {e}")
            continue
        if meta.get("stage") != "reward" or meta.get("kind") != "lora" or meta.get("base_precision", "fp32") != "fp32":
            errs.append(f"members_from: {p!r} is a {meta.get('stage')} {meta.get('kind')} artifact "
                        f"(base {meta.get('base_precision', 'fp32')}); use single fp32-trained LoRA reward runs")
            continue
        if meta.get("base_model") != model:
            errs.append(f"members_from: {p!r} was trained on model={meta.get('base_model')!r}; set model= to it "
                        f"(now {model!r})")
        metas.append((str(p), {**meta, "lora": lora_shape(art)}))
    if len(metas) >= 2:
        errs += shape_problems(metas, "members_from", "members must share one base and one LoRA shape")
        if model == "tiny" and len({m.get("seed") for _, m in metas}) > 1:
            errs.append("members_from: the tiny random model's body is drawn from the seed, so runs with other seeds "
                        "have other bodies; assemble tiny runs of one seed (a pretrained model's body is the same)")
    return errs


def shape_problems(metas: list[tuple[str, dict]], what: str, why: str) -> list[str]:
    """One message per member whose base model or LoRA shape differs from the first's."""
    errs = []
    name0, m0 = metas[0]
    for name, m in metas[1:]:
        for label, k in (("base model", "base_model"), ("LoRA shape", "lora")):
            if m.get(k) != m0.get(k):
                errs.append(f"{what}: {name} has {label} {m.get(k)!r} but {name0} has {m0.get(k)!r}: {why}")
    return errs


# -- data files ------------------------------------------------------------------------------------------------

def check_dataset(value: str, key: str) -> list[str]:
    """'builtin', 'hf:<hub id>', or a local .jsonl/.json/.csv file."""
    if value in ("builtin", "") or value.startswith("hf:"):
        return []
    p = Path(value).expanduser()
    if p.suffix.lower() not in (".jsonl", ".json", ".csv"):
        return [f"{key}={value!r}: unsupported file type {p.suffix or '(none)'!r}; use a .jsonl, .json or .csv "
                "file, 'builtin', or 'hf:<hub id>' for a datasets hub id"]
    if not p.is_file():
        return [f"{key}={value!r}: file not found (use 'builtin', a .jsonl/.json/.csv file, or 'hf:<hub id>')"]
    return []


# -- gold scorers ----------------------------------------------------------------------------------------------

GOLD_KINDS = "vader, none, module:function, path/to/file.py:function, or a trained reward-model folder"


def import_callable(spec: str, what: str = "gold"):
    """``module:function`` or ``path/to/file.py:function`` -> the callable (a ValueError naming what is wrong)."""
    mod_name, _, fn_name = spec.rpartition(":")
    if not mod_name or not fn_name:
        raise ValueError(f"{what}={spec!r}: use module:function or path/to/file.py:function")
    if mod_name.endswith(".py"):
        path = Path(mod_name).expanduser()
        if not path.is_file():
            raise ValueError(f"{what}={spec!r}: no such file {mod_name!r}")
        loader = importlib.util.spec_from_file_location(f"edgerlhf_user_{what}_{path.stem}", path)
        module = importlib.util.module_from_spec(loader)
        try:
            loader.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's file: say which and why
            raise ValueError(f"{what}={spec!r}: importing {mod_name} failed: {type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise ValueError(f"{what}={spec!r}: cannot import {mod_name!r} ({e}); put its folder on PYTHONPATH or "
                             "name the file: path/to/file.py:function") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        have = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise ValueError(f"{what}={spec!r}: {mod_name} has no function {fn_name!r} (it has: "
                         f"{', '.join(have) or 'none'})")
    return fn


def is_reward_folder(spec: str) -> bool:
    return Path(spec).expanduser().is_dir()


def parse_reward_spec(spec: str) -> tuple[str, str | None]:
    """``RM[:precision]`` (best-of-n at serving time) -> (reward folder, precision or None). The folder must be a
    reward run (or a quantized RM folder); the precision one of :data:`PRECISIONS` (a backend may follow)."""
    spec = (spec or "").strip()
    if not spec:
        raise ValueError("best-of-n needs a reward model: reward=RM[:precision], e.g. reward=runs/reward-1:int4")
    path, precision = spec, None
    if not Path(spec).expanduser().exists() and ":" in spec:
        head, _, tail = spec.partition(":")
        while True:  # the first split whose right side is a precision (a path may hold ':' itself)
            if tail.split(":")[0] in PRECISIONS:
                path, precision = head, tail
                break
            more, sep, tail = tail.partition(":")
            if not sep:
                break
            head = f"{head}:{more}"
    if precision is not None:
        check_precision(precision)
    if not Path(path).expanduser().exists():
        head, _, tail = spec.rpartition(":")
        if head and Path(head).expanduser().exists():  # the folder is right, the precision is not
            raise ValueError(f"reward={spec!r}: unknown precision {tail!r}; use one of {valid_precision_names()}")
        raise ValueError(f"reward={spec!r}: no such reward folder; use RM[:precision] with a reward run folder and "
                         f"one of {', '.join(PRECISIONS)}")
    try:
        stage = read_artifact_meta(find_artifact(path)).get("stage")
    except (FileNotFoundError, ValueError):
        stage = None
    if stage != "reward":
        raise ValueError(f"reward={spec!r}: {path} is not a reward model folder (a reward run, its adapter/, or a "
                         "quantized RM folder)" + (f"; it holds a {stage!r} artifact" if stage else ""))
    return path, precision


def check_gold(spec: str) -> list[str]:
    """Problems with a ``gold`` setting, found without loading a model."""
    spec = (spec or "").strip()
    if spec in ("vader", "none"):
        return []
    if is_reward_folder(spec):
        try:
            stage = read_artifact_meta(find_artifact(spec)).get("stage", "")
        except (FileNotFoundError, ValueError) as e:
            return [f"gold={spec!r}: a folder, but not a trained reward model ({e})"]
        if stage != "reward":  # (a quantized RM folder keeps its reward meta)
            return [f"gold={spec!r}: a {stage or 'non-EdgeRLHF'} artifact, not a reward model; name a reward run "
                    "folder"]
        return []
    if ":" in spec:
        try:
            import_callable(spec)
        except ValueError as e:
            return [str(e)]
        return []
    return [f"gold={spec!r}: not a known gold; use {GOLD_KINDS}"]


# -- input artifacts -------------------------------------------------------------------------------------------

def formatting_mismatch(key: str, value: str, chat_template: bool) -> str | None:
    """An input artifact (policy, reward model) formats rows as it was trained: with or without the chat template.
    A stage that reads it with the other setting would score or continue text it never saw: the message naming the
    fix, or None (agreeing, or not an artifact: the stage's own check names that)."""
    if not value or not Path(value).expanduser().exists():
        return None
    try:
        used = read_artifact_meta(find_artifact(value)).get("use_chat_template", True)
    except (FileNotFoundError, ValueError, OSError):
        return None
    if used == chat_template:
        return None
    word = str(used).lower()
    return (f"chat_template={str(chat_template).lower()}, but {key}={value!r} was trained with chat_template={word}: "
            f"set chat_template={word} (a task file sets it for every stage)")
