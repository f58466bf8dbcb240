"""Loading a stage config: defaults < a task file's settings < a preset < a YAML file < ``key=value`` overrides,
validated once, every problem in one :class:`~edgerlhf.config.core.ConfigError` before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgerlhf.config.core import ConfigError, coerce, field_types, read_yaml_mapping, unknown_key_message
from edgerlhf.config.task import read_task, stage_settings
from edgerlhf.presets import STAGE_PRESETS

__all__ = ["from_dict", "load_config", "parse_overrides"]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x,y"]`` -> ``{"a": 1, "b": "x,y"}`` (values parsed as YAML scalars)."""
    out, errs = {}, []
    for it in items:
        if "=" not in it:
            errs.append(f"override {it!r} is not key=value")
            continue
        k, v = it.split("=", 1)
        k = k.strip().replace("-", "_")
        try:
            out[k] = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError:
            out[k] = v
        if isinstance(out[k], bool) and v.strip().lower() not in ("true", "false"):
            out[k] = v.strip()  # off / on / yes / no stay words: a string option may use them (bool fields coerce)
    if errs:
        raise ConfigError(errs, "command-line overrides")
    return out


def load_config(cls: type, path: str | Path | None = None, overrides: dict | list | None = None,
                base: dict | None = None, preset: str | None = None) -> Any:
    """Build and validate a stage config: defaults < ``base`` < ``preset`` < the YAML file at ``path`` <
    ``overrides`` (a dict, or ``["key=value", ...]``). Every problem is reported in one :class:`ConfigError`."""
    raw: dict[str, Any] = dict(base or {})
    source = "config"
    if preset:
        known = STAGE_PRESETS.get(cls.stage, {})
        if preset not in known:
            raise ConfigError([f"unknown preset {preset!r} for stage {cls.stage!r}; {_preset_choices(known)}"],
                              "preset")
        raw.update(known[preset])
    if path:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError([f"config file {str(p)!r} not found"], source)
        raw.update(read_yaml_mapping(p))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    raw.update(overrides or {})
    return from_dict(cls, raw, source)


def _preset_choices(known: dict) -> str:
    """The stage's presets for its model, then the tiny model's smoke preset apart (it is every stage's try-out)."""
    own = sorted(k for k in known if k != "smoke")
    smoke = "smoke (the tiny random model, seconds)" if "smoke" in known else ""
    if own:
        return f"use one of {', '.join(own)}" + (f", or {smoke}" if smoke else "")
    return f"use {smoke}" if smoke else "this stage has no presets"


def from_dict(cls: type, raw: dict, source: str = "config") -> Any:
    types_ = field_types(cls)
    errs, kwargs = [], {}
    raw = dict(raw)
    if raw.get("task"):  # a task file's settings come first: everything given here overrides them
        task = read_task(str(raw["task"]))  # every problem with its values, in one ConfigError (its data files:
        # the stage's validation step, data.taskfile.check_task_files, before anything is written)
        raw = {**stage_settings(task, cls), **raw, "task": task.path}
    stage = raw.pop("stage", cls.stage)  # a dumped config.yaml carries its stage
    if stage != cls.stage:
        errs.append(f"this config is for stage {stage!r}, not {cls.stage!r}")
    for k, v in raw.items():
        if k not in types_:
            errs.append(unknown_key_message(k, sorted(types_), cls.stage, getattr(cls, "RENAMED", None)))
            continue
        try:
            kwargs[k] = coerce(v, types_[k], k)
        except ValueError as e:
            errs.append(str(e))
    try:
        cfg = cls(**kwargs)
    except TypeError as e:  # pragma: no cover - every field has a default
        raise ConfigError(errs + [str(e)], source) from None
    errs += cfg.check()  # value rules run on the keys that parsed, so every problem shows at once
    if errs:
        raise ConfigError(errs, source)
    return cfg
