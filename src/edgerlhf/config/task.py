"""Task files, as configuration: one YAML file names everything task-specific, and every stage and the study read
it. This module reads the file and checks its *values* (keys, types, paths resolved relative to the file, the gold
named); :mod:`edgerlhf.data.taskfile` checks its *data files* (readable rows, evaluation prompts that are also
training prompts), since that needs the loaders.

    # my_task.yaml  (paths are relative to this file)
    name: helpful-answers
    sft: prefs.jsonl          # SFT data; with sft_from: chosen, a preference file's chosen side
    sft_from: chosen
    prefs: prefs.jsonl        # preference pairs, or `generate` (sample from the SFT policy, label with `gold`)
    prompts: rl_prompts.jsonl # online-RL prompts (and the prompts `generate` samples pairs for)
    eval_prompts: eval.jsonl  # held out: a prompt also used for training is an error naming both rows
    gold: gold_rm/            # vader | none | module:function | path/file.py:function | a reward run folder
    response_length: 64       # new tokens per response: RL rollouts, sampled pairs, evaluations, SFT samples
    max_length: 384           # tokens of prompt + response in training rows (null: each stage's default)

The built-in review task is the default task file shipped with the package (``edgerlhf/data/tasks/builtin.yaml``,
``task=builtin``): it maps to exactly the stages' defaults. A task's settings come first, below presets, the
config file and ``key=value`` overrides (:func:`stage_settings`), and a stage's ``config.yaml`` records them
resolved, so a run folder says what it trained on without the task file.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

from edgerlhf.config.core import ConfigError, coerce, opt, read_yaml_mapping, unknown_key_message
from edgerlhf.config.online import OnlineRLConfig
from edgerlhf.config.refs import check_gold

__all__ = ["BUILTIN_TASK", "Task", "read_task", "stage_settings"]

# the shipped default task file (package data of edgerlhf.data; named here by path, nothing imported)
BUILTIN_TASK = Path(__file__).resolve().parents[1] / "data" / "tasks" / "builtin.yaml"

# keys other tools or habits use for the same thing
_RENAMED = {
    "dataset": ("sft", "a task names its SFT data `sft`, its pairs `prefs`, its RL prompts `prompts`"),
    "train": ("sft", "a task names its SFT data `sft`, its pairs `prefs`, its RL prompts `prompts`"),
    "eval": ("eval_prompts", "the held-out prompts are `eval_prompts`"),
    "test": ("eval_prompts", "the held-out prompts are `eval_prompts`"),
    "eval_dataset": ("eval_prompts", "the held-out prompts are `eval_prompts`"),
    "max_new_tokens": ("response_length", "a task's response budget is `response_length`"),
    "max_completion_length": ("response_length", "a task's response budget is `response_length`"),
    "max_seq_length": ("max_length", "TRL renamed `max_seq_length` to `max_length`"),
    "reward": ("gold", "a task names its ground-truth scorer `gold`; the learned RM is trained by the study"),
    "gold_scorer": ("gold", "the gold scorer is `gold`"),
    "preferences": ("prefs", "the preference pairs are `prefs`"),
}


@dataclass
class Task:
    """Everything task-specific. Paths are relative to the task file; ``builtin`` names the embedded review task."""

    name: str = opt("", "a short name for reports (default: the file's name)")
    sft: str = opt("builtin", "SFT data: builtin | a file of prompt/completion or messages rows | with "
                              "sft_from=chosen, "
                              "a preference file (empty: `prefs`)")
    sft_from: str = opt("", "'chosen': SFT learns each pair's prompt -> chosen response (the original HH setup)")
    prefs: str = opt("generate", "preference pairs: generate (k samples per prompt of `prompts` from the SFT policy, "
                                 "labelled by `gold`) | a file of prompt/chosen/rejected rows or HH-RLHF transcripts")
    prompts: str = opt("builtin", "online-RL prompts (and the prompts `generate` samples): builtin | any file the "
                                  "loaders read (prompt-only, SFT or preference rows: their prompt part)")
    eval_prompts: str = opt("builtin", "held-out evaluation prompts: builtin | a file; none of them may be a training "
                                       "prompt")
    gold: str = opt("vader", "the gold scorer: vader | none (reports use the learned RM and say it is a proxy) | "
                             "module:function | path/file.py:function | a reward run folder (RM as gold)")
    chat_template: bool = opt(True, "format rows with the model's chat template (false: plain text, prompt then "
                                    "response then EOS: for a base model or a text-continuation task)")
    response_length: int = opt(48, "new tokens per response: RL rollouts, generated pairs, evaluations, SFT samples")
    max_length: int | None = opt(None, "tokens of prompt + response per training row (null: each stage's default)")

    path: str = ""  # the file it came from (set by load_task)

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem


def _resolve(value: str, root: Path) -> str:
    """A data setting with its path made absolute (relative to the task file); keywords stay as they are."""
    if not value or value in ("builtin", "generate") or value.startswith("hf:"):
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def _gold_path(value: str, root: Path) -> str:
    """``gold``: a reward folder or ``file.py:function`` is relative to the task file; other kinds stay."""
    if value in ("vader", "none", ""):
        return value
    mod, sep, fn = value.rpartition(":")
    if sep and mod.endswith(".py"):
        return f"{_resolve(mod, root)}:{fn}"
    if not sep or "/" in value:  # a folder (module:function has a colon and no slash)
        cand = Path(value).expanduser()
        cand = cand if cand.is_absolute() else root / cand
        return str(cand.resolve()) if cand.exists() or not sep else value
    return value


def read_task(spec: str | Path, errs: list[str] | None = None) -> Task:
    """Read a task file (``builtin`` is the shipped default) and check its values; one ConfigError lists every
    problem. Its data files are checked by :func:`edgerlhf.data.taskfile.check_task_files` (``load_task`` does
    both). With ``errs`` (a list), the problems are appended to it instead of raised."""
    raise_here = errs is None
    errs = [] if errs is None else errs
    path = BUILTIN_TASK if str(spec) in ("builtin", "default") else Path(spec).expanduser()
    source = str(path)
    if not path.is_file():
        raise ConfigError([f"task file {str(spec)!r} not found (use a YAML file, or `builtin` for the built-in task)"],
                          "task")
    data = read_yaml_mapping(path)
    types_ = {k: t for k, t in typing.get_type_hints(Task).items() if k != "path"}
    kw = {}
    for k, v in data.items():
        if k not in types_:
            errs.append(unknown_key_message(k, sorted(types_), "task", _RENAMED))
            continue
        try:
            kw[k] = coerce(v, types_[k], k)
        except ValueError as e:
            errs.append(str(e))
    task = Task(**kw, path=str(path.resolve()))
    root = path.resolve().parent
    for k in ("sft", "prefs", "prompts", "eval_prompts"):
        setattr(task, k, _resolve(getattr(task, k), root))
    task.gold = _gold_path(task.gold, root)

    # values
    if task.sft_from not in ("", "chosen"):
        errs.append(f"sft_from={task.sft_from!r}: use 'chosen' (SFT on a preference file's chosen side) or leave it "
                    "out")
    if task.sft_from and not data.get("sft"):  # SFT on the chosen side of the task's own pairs
        task.sft = task.prefs
    if task.sft_from and task.sft in ("builtin", "generate"):
        errs.append(f"sft_from=chosen needs `sft` (or `prefs`) to be a preference file, not {task.sft!r}")
    if task.response_length <= 0:
        errs.append(f"response_length={task.response_length} must be a positive integer")
    if task.max_length is not None and task.max_length < 8:
        errs.append(f"max_length={task.max_length} must be at least 8 tokens (or null: each stage's default)")
    errs += check_gold(task.gold)
    if task.prefs == "generate" and task.gold == "none":
        errs.append("prefs: generate labels sampled pairs with the gold, and gold is none: name a gold "
                    "(vader, module:function, a reward run folder) or give a preference file")
    if task.prefs in ("builtin", ""):
        errs.append(f"prefs={task.prefs!r}: use generate (sample pairs, label them with the gold) or a preference file")
    for k in ("sft", "prompts", "eval_prompts"):
        if getattr(task, k) == "generate":
            errs.append(f"{k}=generate: `generate` is for prefs only; use builtin or a file")
    if errs and raise_here:
        raise ConfigError(errs, f"task file {source}")
    return task


def stage_settings(task: Task, stage_cls) -> dict:
    """The config keys a task sets for one stage (only keys that stage has)."""
    rl = {"prompts": task.prompts, "eval_prompts": "" if task.eval_prompts == "builtin" else task.eval_prompts}
    # prefs' gold "auto" is vader when generating: the built-in task maps to exactly the stage's defaults
    prefs_gold = "auto" if task.prefs == "generate" and task.gold == "vader" else task.gold
    by_stage = {
        "sft": {"dataset": task.sft, "sft_from": task.sft_from, "sample_max_new_tokens": task.response_length,
                "eval_prompts": rl["eval_prompts"]},
        "prefs": {"dataset": task.prefs, "prompts": task.prompts, "max_new_tokens": task.response_length,
                  "gold": prefs_gold},
        "reward": {"prefs": task.prefs} if task.prefs != "generate" else {},
        "dpo": {"prefs": task.prefs} if task.prefs != "generate" else {},
        "eval": {"prompts": rl["eval_prompts"], "max_new_tokens": task.response_length},
        "bon": {"prompts": rl["eval_prompts"], "max_new_tokens": task.response_length},  # the eval's prompts
    }
    out = dict(by_stage.get(stage_cls.stage, {}))
    if issubclass(stage_cls, OnlineRLConfig):
        out.update({**rl, "response_length": task.response_length})
    names = {f.name for f in dataclasses.fields(stage_cls)}
    if "gold" in names:
        out.setdefault("gold", task.gold)
    out["chat_template"] = task.chat_template
    if task.max_length is not None and "max_length" in names:
        out["max_length"] = task.max_length
    return {k: v for k, v in out.items() if k in names}
