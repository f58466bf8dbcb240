"""Task files' data: :func:`load_task` reads a task file (:func:`edgerlhf.config.task.read_task`: keys, values,
paths) and checks its data files (:func:`check_task_files`): missing or unreadable files and the rows that are
bad, empty files, and evaluation prompts that are also training prompts (naming both rows); one
:class:`~edgerlhf.config.ConfigError` lists every problem, before anything is written. Also the prompts a task's
settings name (:func:`task_prompts`, :func:`held_out_prompts`).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgerlhf.config.core import ConfigError
from edgerlhf.config.task import BUILTIN_TASK, Task, read_task, stage_settings
from edgerlhf.data.loaders import (
    DataError,
    load_preference_rows,
    load_prompt_rows,
    load_sft_rows,
    prompt_rows_with_locations,
)
from edgerlhf.data.task import build_task, eval_prompts

__all__ = ["BUILTIN_TASK", "Task", "check_task_files", "held_out_prompts", "load_task", "stage_settings",
           "task_prompts"]


def task_prompts(source: str, split: str) -> list[tuple[str, object]]:
    """``(location, prompt)`` for every row of a data setting (``builtin``: the embedded task's ``split``)."""
    if source == "builtin":
        return [(f"built-in {split} prompt {r['id']}", r["prompt"]) for r in build_task()[split]]
    return prompt_rows_with_locations(source)


def _canonical(prompt) -> str:
    """A prompt as compared for overlap: its turns' roles and whitespace-normalised text (a string prompt is one
    user turn, so the same question in both formats is the same prompt)."""
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return json.dumps([(m["role"], " ".join(str(m["content"]).split())) for m in msgs])


def load_task(spec: str | Path) -> Task:
    """Read and check a task file whole (``builtin`` is the shipped default): its values and its data files; one
    ConfigError lists every problem."""
    errs: list[str] = []
    task = read_task(spec, errs)
    check_task_files(task, errs)
    if errs:
        raise ConfigError(errs, f"task file {task.path}")
    return task


def check_task_files(task: Task, errs: list[str] | None = None) -> list[str]:
    """Problems with a task's data files (every bad or missing one, each with its first bad row) and with held-out
    prompts that are also training prompts; appended to ``errs`` when given, and returned."""
    errs = [] if errs is None else errs
    readable = {}
    checks = [("sft", task.sft, load_sft_rows if not task.sft_from else load_preference_rows),
              ("prefs", task.prefs, load_preference_rows), ("prompts", task.prompts, None),
              ("eval_prompts", task.eval_prompts, None)]
    for key, value, loader in checks:
        if value in ("builtin", "generate", "") or value.startswith("hf:"):
            continue
        if not Path(value).is_file():
            errs.append(f"{key}: file {value} not found")
            continue
        if Path(value).suffix.lower() not in (".jsonl", ".json", ".csv"):
            errs.append(f"{key}: {value} is not a .jsonl, .json or .csv file")
            continue
        try:
            if loader is not None:
                loader(value)
            readable[key] = task_prompts(value, "")
            if not readable[key]:
                errs.append(f"{key}: {value} has no rows")
        except DataError as e:
            errs.append(f"{key}: {e}")

    # held-out means held out: no evaluation prompt may be a training prompt
    if "eval_prompts" in readable or task.eval_prompts == "builtin":
        held = readable.get("eval_prompts") if task.eval_prompts != "builtin" else task_prompts("builtin", "eval")
        where = {}
        for loc, p in held or []:
            where.setdefault(_canonical(p), loc)
        for key in ("sft", "prefs", "prompts"):
            value = getattr(task, key)
            if value == "builtin":
                rows = task_prompts("builtin", "train") if task.eval_prompts != "builtin" else []
            else:
                rows = readable.get(key, [])
            both = [(where[_canonical(p)], loc) for loc, p in rows if _canonical(p) in where]
            if both:
                shown = "; ".join(f"{e} = {t}" for e, t in both[:3])
                more = f" (and {len(both) - 3} more)" if len(both) > 3 else ""
                errs.append(f"eval_prompts: {len(both)} evaluation prompt{'s are' if len(both) > 1 else ' is'} also in "
                            f"{key} (training): {shown}{more}; remove them from one side")
    return errs


def held_out_prompts(source: str, n: int = 0) -> list:
    """The first ``n`` (0: all) evaluation prompts of ``source``: 'builtin' / '' (the built-in task's held-out
    prompts) or any file the loaders read."""
    if source in ("", "builtin"):
        return [r["prompt"] for r in eval_prompts(n or None)]
    return load_prompt_rows(source, max_rows=n)[0]
