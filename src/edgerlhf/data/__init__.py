"""Datasets: the built-in review-continuation task."""

from edgerlhf.data.task import (  # noqa: F401
    SYSTEM_PROMPT,
    build_task,
    eval_prompts,
    train_rows,
)
