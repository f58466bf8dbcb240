"""Pipeline stages: each ``run(cfg) -> run folder``."""

import importlib

_MODULES = {"eval": "evaluate", "rm-eval": "rm_eval"}


def stage_module(stage: str):
    """The module whose ``run(cfg)`` runs ``stage`` (the name used by configs and the command line)."""
    return importlib.import_module(f"edgerlhf.stages.{_MODULES.get(stage, stage)}")
