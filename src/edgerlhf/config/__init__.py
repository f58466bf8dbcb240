"""Typed, validated configuration: one dataclass per stage, a leaf of the package (it imports nothing of EdgeRLHF
but the presets' data and the run-folder reader, both leaves, and no torch).

    core.py      errors, ``opt`` (a field with a default and help), coercion, renamed keys, ``--help-config``
    loading.py   defaults < task file < preset < YAML file < ``key=value``; every problem in one ConfigError
    refs.py      what a value refers to, checked without a model: data files, precisions, golds, input artifacts
    task.py      task files as configuration (keys, values, paths); their data files: ``data.taskfile``
    mixins.py    BaseConfig and the mixins stages combine (gold, LoRA, optimizer, training, pairs)
    stages.py    SFT, prefs, reward, DPO, rm-eval, eval
    online.py    OnlineRLConfig and one config per online algorithm (PPO, GRPO, RLOO, ...)

Which stages exist, and which config each takes, is :mod:`edgerlhf.registry`'s table.
"""

from edgerlhf.config.core import (
                                  RENAMED_KEYS,
                                  ConfigError,
                                  UserCodeError,
                                  check_range,
                                  coerce,
                                  config_help,
                                  field_types,
                                  opt,
                                  read_yaml_mapping,
                                  to_dict,
                                  unknown_key_message,
                                  user_callable,
)
from edgerlhf.config.loading import from_dict, load_config, parse_overrides
from edgerlhf.config.mixins import (
    BaseConfig,
    EnsembleMixin,
    GoldEvalMixin,
    GoldMixin,
    LoraMixin,
    OptimMixin,
    PairsMixin,
    TrainMixin,
)
from edgerlhf.config.online import (
                                  GroupConfig,
                                  GRPOConfig,
                                  GSPOConfig,
                                  OnlineRLConfig,
                                  PPOConfig,
                                  ReinforcePPConfig,
                                  RLOOConfig,
)
from edgerlhf.config.refs import check_dataset, check_precision
from edgerlhf.config.stages import BonConfig, DPOConfig, EvalConfig, PrefsConfig, RewardConfig, RMEvalConfig, SFTConfig
from edgerlhf.config.task import Task, read_task, stage_settings

__all__ = ["RENAMED_KEYS", "BaseConfig", "BonConfig", "ConfigError", "DPOConfig", "EnsembleMixin", "EvalConfig",
           "GRPOConfig",
           "GSPOConfig",
           "GoldEvalMixin", "GoldMixin", "GroupConfig", "LoraMixin", "OnlineRLConfig", "OptimMixin", "PPOConfig",
           "PairsMixin",
           "PrefsConfig", "RLOOConfig", "RMEvalConfig", "ReinforcePPConfig", "RewardConfig", "SFTConfig", "Task",
           "TrainMixin",
           "UserCodeError", "check_dataset", "check_precision", "check_range", "coerce", "config_help",
           "field_types", "from_dict", "load_config", "opt", "parse_overrides", "read_task", "read_yaml_mapping",
           "stage_settings", "to_dict", "unknown_key_message", "user_callable"]
