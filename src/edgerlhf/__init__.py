"""EdgeRLHF: the whole RLHF pipeline (SFT -> reward model -> PPO) on one small machine.

Python API (each stage returns its run folder)::

    from edgerlhf import SFTConfig, run_sft
    run_dir = run_sft(SFTConfig(model="default", max_steps=40))
"""

import logging as _logging
import warnings as _warnings

# Library noise a user should never see scroll by (each is harmless here):
# bitsandbytes tries to fetch an optional CPU kernel from the hub at import and logs its absence;
# peft still reads transformers' deprecated `is_gradient_checkpointing`.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
# torchao logs that its CUDA-only kernels do not load on a CPU machine, and registers enums torch warns about
_logging.getLogger("torchao").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)
# bitsandbytes int8 on CPU warns on every matmul that inputs are cast to fp16 (recorded in results instead)
_logging.getLogger("bitsandbytes.autograd._functions").setLevel(_logging.ERROR)
_warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)

from edgerlhf.config import ConfigError, PPOConfig, SFTConfig, load_config  # noqa: E402

__version__ = "0.1.0"


def run_sft(cfg: SFTConfig):
    """Supervised fine-tuning; returns the run folder (its ``adapter/`` is the artifact)."""
    from edgerlhf.stages.sft import run

    return run(cfg)


def run_ppo(cfg: PPOConfig, reward_fn=None):
    """PPO; ``reward_fn(prompts, responses) -> rewards`` replaces the learned RM. Returns the run folder."""
    from edgerlhf.stages.ppo import run

    return run(cfg, reward_fn)


__all__ = ["ConfigError", "PPOConfig", "SFTConfig", "load_config", "run_ppo", "run_sft", "__version__"]
