"""The core of the configuration: the errors, ``opt`` (a field with a default and help), coercion of YAML and
``key=value`` values to field types, loading (defaults < task file < preset < YAML file < overrides), the
"did you mean" / "renamed" messages for unknown keys, and ``--help-config``.

A config comes from (in order, later wins): the dataclass defaults, a task file's settings, an optional preset,
an optional YAML file, and ``key=value`` overrides. :func:`load_config` validates once and reports *every*
problem in a single :class:`ConfigError` before anything is written to disk.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import traceback
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """All problems found in one config, reported together."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = list(problems)
        head = f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {source}:"
        super().__init__("\n".join([head] + [f"  - {p}" for p in problems]))


class UserCodeError(RuntimeError):
    """The user's own code (a gold or reward callable) raised: the message names the callable and shows the
    user's frames only (file, line, code), not EdgeRLHF's internals; ``__cause__`` keeps the original error."""

    @classmethod
    def from_exception(cls, what: str, exc: BaseException) -> "UserCodeError":
        """``what`` (e.g. "gold my_gold.py:score") raised ``exc``: the frames from the first one outside EdgeRLHF
        on (the user's function and what it called), then the error itself."""
        frames = traceback.extract_tb(exc.__traceback__)
        ours = str(Path(__file__).resolve().parents[1])  # the edgerlhf package folder
        first = next((i for i, f in enumerate(frames) if not str(Path(f.filename).resolve()).startswith(ours)), 0)
        shown = "".join(traceback.format_list(frames[first:])).rstrip()
        err = cls(f"{what} raised {type(exc).__name__}: {exc}\n{shown}\n(the error is in this code, not in EdgeRLHF: "
                  "the traceback above shows only its frames)")
        err.__cause__ = exc
        return err


def user_callable(fn, what: str):
    """``fn`` (the user's own code: a reward or gold callable) wrapped so that an exception inside it is raised as a
    :class:`UserCodeError` naming ``what`` and showing the user's frames."""

    def call(*args, **kw):
        try:
            return fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - the user's code: name it and show its frames, not ours
            raise UserCodeError.from_exception(what, e) from e

    call.__name__ = getattr(fn, "__name__", type(fn).__name__)
    call.__wrapped__ = fn
    return call


def opt(default: Any, help: str, **kw) -> Any:  # noqa: A002 - "help" reads best at call sites
    """A dataclass field with a default and a help string (shown by ``edgerlhf <stage> --help-config``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


# Keys other tools use, mapped to ours: old name -> (new name or None, explanation).
RENAMED_KEYS: dict[str, tuple[str | None, str]] = {
    "ppo_epochs": ("num_ppo_epochs", "TRL renamed `ppo_epochs` to `num_ppo_epochs` (0.12); use num_ppo_epochs"),
    "init_kl_coef": ("kl_coef", "old TRL's `init_kl_coef` is `kl_coef` here; set kl_adaptive=true for an adaptive "
                                "coefficient"),
    "adap_kl_ctrl": ("kl_adaptive", "old TRL's `adap_kl_ctrl` is `kl_adaptive` here"),
    "forward_batch_size": ("rollout_batch_size", "old TRL's `forward_batch_size` is `rollout_batch_size` here (prompts "
                                                 "per generate/score forward)"),
    "batch_size": ("per_device_train_batch_size", "use `per_device_train_batch_size` (sequences per optimizer "
                                                  "micro-step); for online RL, `num_rollouts_per_step` (episodes per "
                                                  "step)"),
    "max_seq_length": ("max_length", "TRL renamed `max_seq_length` to `max_length`"),
    "center_rewards_coefficient": ("center_rewards_coef", "TRL's `center_rewards_coefficient` is `center_rewards_coef` "
                                                          "here"),
    "lora_rank": ("lora_r", "the LoRA rank is `lora_r`"),
    "r": ("lora_r", "the LoRA rank is `lora_r`"),
    "lora_target_modules": ("target_modules", "LoRA target modules are `target_modules` (a list, or 'all-linear')"),
    "epochs": ("num_train_epochs", "use `num_train_epochs`"),
    "lr": ("learning_rate", "use `learning_rate`"),
    "torch_dtype": ("dtype", "transformers 5 renamed `torch_dtype` to `dtype`"),
    "bf16": ("dtype", "choose the compute dtype with `dtype` (auto | fp32 | bf16 | fp16)"),
    "fp16": ("dtype", "choose the compute dtype with `dtype` (auto | fp32 | bf16 | fp16)"),
    "model_name": ("model", "use `model` (default | tiny | hub id | local folder)"),
    "model_name_or_path": ("model", "use `model` (default | tiny | hub id | local folder)"),
    "steps": ("max_steps", "old TRL's `steps` counted episodes; here `max_steps` counts RL steps (or set "
                           "total_episodes)"),
    "kl_penalty": ("kl_estimator", "TRL's `kl_penalty` ('kl' | 'full' | ...) is `kl_estimator` here: k1 (TRL's 'kl') "
                                   "or k3"),
    "target": ("kl_target", "old TRL's adaptive-KL `target` is `kl_target` here (with kl_adaptive=true)"),
    "horizon": ("kl_horizon", "old TRL's adaptive-KL `horizon` is `kl_horizon` here"),
    "target_kl": ("target_approx_kl", "old TRL's early-stopping `target_kl` is `target_approx_kl` here (0 disables)"),
    "early_stopping": ("target_approx_kl", "early stopping on approximate KL is on whenever `target_approx_kl` > 0"),
    "max_new_tokens": ("response_length", "the online-RL response budget is `response_length` (new tokens per "
                                          "rollout)"),
    "local_rollout_forward_batch_size": ("rollout_batch_size", "TRL's `local_rollout_forward_batch_size` is "
                                                               "`rollout_batch_size` here"),
    "num_mini_batches": ("mini_batch_size", "set the micro-batch with `mini_batch_size` and the optimizer step with "
                                            "`gradient_accumulation_steps`"),
    "sft_model_path": ("policy", "the starting policy is `policy` (an SFT run folder)"),
    "reward_model_path": ("reward", "the reward model is `reward` (a reward run folder or a quantized RM folder)"),
    "entropy_coef": ("ent_coef", "the entropy bonus weight is `ent_coef`"),
}

def check_range(cfg, key: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False, why: str = "") -> list[str]:
    """``[]`` if ``cfg.<key>`` lies in the interval, else one message naming the key, its value and the
    interval in interval notation (``cliprange=1.5 must be in (0, 1): ...``)."""
    v = getattr(cfg, key)
    ok = (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
    if ok:
        return []
    if hi is None:
        rule = f"must be {'>' if lo_open else '>='} {lo:g}"
    elif lo is None:
        rule = f"must be {'<' if hi_open else '<='} {hi:g}"
    else:
        rule = f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return [f"{key}={v} {rule}" + (f": {why}" if why else "")]


def check_choices(cfg, choices: dict[str, tuple]) -> list[str]:
    """One message per key whose value is not among its choices (``layout='x': use one of shared, separate``)."""
    return [f"{k}={getattr(cfg, k)!r}: use one of {', '.join(c)}" for k, c in choices.items()
            if getattr(cfg, k) not in c]


def check_positive_ints(cfg, *keys: str) -> list[str]:
    """One message per key whose value is not a positive integer."""
    return [f"{k}={getattr(cfg, k)} must be a positive integer" for k in keys if getattr(cfg, k) <= 0]


def check_non_negative(cfg, *keys: str) -> list[str]:
    """One message per key whose value is negative."""
    return [f"{k}={getattr(cfg, k)} must be >= 0" for k in keys if getattr(cfg, k) < 0]



# -- loading -------------------------------------------------------------------------------------------

def field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, typ: Any, key: str) -> Any:
    """Coerce YAML/override values to the field type; raise ValueError with a readable message."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], key)
    if typ is list or origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}={value!r} must be a list (YAML list or comma-separated)")
        return list(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ValueError(f"{key}={value!r} must be true or false")
    if typ is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ValueError(f"{key}={value!r} must be an integer")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{key}={value!r} must be a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{key}={value!r} must be a finite number")
        return float(value)
    if typ is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{key}={value!r} must be a string")
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted off / on / no / yes as a boolean
            return "on" if value else "off"
        return str(value)
    return value


def unknown_key_message(key: str, valid: list[str], stage: str = "", renamed: dict | None = None) -> str:
    where = f" for stage {stage!r}" if stage else ""
    if renamed and key in renamed:  # the stage's own table first: the same old name may mean another key here
        new, why = renamed[key]
        return f"unknown key {key!r}: renamed — {why}" if new in valid else f"unknown key {key!r}{where}: {why}"
    if key in RENAMED_KEYS:
        new, why = RENAMED_KEYS[key]
        if new in valid:
            return f"unknown key {key!r}: renamed — {why}"
        if key == "batch_size" and "num_rollouts_per_step" in valid:
            return ("unknown key 'batch_size': renamed — an online-RL step's batch (episodes per step) is "
                    "`num_rollouts_per_step`")
        return f"unknown key {key!r}{where} ({why}; it does not apply to this stage)"
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r}{where}{hint}"


def read_yaml_mapping(path: Path) -> dict:
    """A YAML file whose top level is a mapping (config and task files); a ConfigError naming the file otherwise."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError([f"not valid YAML: {e}"], str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(["top level must be a mapping of key: value"], str(path))
    return data


def to_dict(cfg) -> dict:
    return {"stage": cfg.stage, **dataclasses.asdict(cfg)}


def config_help(cls: type) -> str:
    lines = [f"{cls.stage} config keys (YAML file and/or key=value overrides):"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name:<30} {default!r:<16} {f.metadata.get('help', '')}")
    return "\n".join(lines)
