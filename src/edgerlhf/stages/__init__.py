"""Pipeline stages: each ``run(cfg) -> run folder``. The online-RL stages (ppo, grpo, rloo) are one engine,
``online.py``, running the algorithm their config names (``rl/algorithms/``)."""

import importlib

_MODULES = {"eval": "evaluate", "rm-eval": "rm_eval", "ppo": "online", "grpo": "online", "rloo": "online"}


def stage_module(stage: str):
    """The module whose ``run(cfg)`` runs ``stage`` (the name used by configs and the command line)."""
    return importlib.import_module(f"edgerlhf.stages.{_MODULES.get(stage, stage)}")
