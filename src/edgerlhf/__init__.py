"""EdgeRLHF: the whole RLHF pipeline (SFT -> reward model -> PPO / GRPO / RLOO) on one small machine.

Python API: one config class and one ``run_*`` function per stage; each stage returns its run folder, and
the next stage reads only that folder::

    import edgerlhf as E

    sft = E.run_sft(E.load_config(E.SFTConfig, overrides=["max_steps=40"]))
    prefs = E.run_prefs(E.PrefsConfig(policy=str(sft)))
    rm = E.run_reward(E.RewardConfig(prefs=str(prefs)))
    E.run_rm_eval(E.RMEvalConfig(rm=str(rm), precisions=["fp32", "int4"]))
    ppo = E.run_ppo(E.PPOConfig(policy=str(sft), reward=str(rm), reward_precision="int4"))
    E.run_eval(E.EvalConfig(policy=str(ppo)))
    model, tokenizer, meta = E.load_policy(ppo)          # the aligned policy, merged
    rm_fn = E.load_reward_model(rm, "int4")             # rm_fn(prompts, responses) -> list[float]
    E.run_study("quick")                                # all of it, with a report

Importing ``edgerlhf`` is cheap: torch and transformers load on the first call that needs them.
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

from edgerlhf import registry as _registry  # noqa: E402 - after the logging set-up above
from edgerlhf.config import ConfigError, UserCodeError, load_config  # noqa: E402

__version__ = "0.1.0"


def _stage_function(stage: _registry.Stage):
    """``edgerlhf.run_<stage>(cfg)`` for one row of the registry (online stages also take ``reward_fn``): checks that
    ``cfg`` is that stage's config, then runs the stage (imported on first use, so ``import edgerlhf`` stays cheap)."""

    def check(cfg):
        if not isinstance(cfg, stage.config):
            right = next((s.function_name for s in _registry.STAGES if isinstance(cfg, s.config)), None)
            raise TypeError(f"{stage.function_name} takes a {stage.config.__name__}, not a {type(cfg).__name__}"
                            + (f"; use {right}" if right else ""))

    if stage.online:
        def run(cfg, reward_fn=None):
            check(cfg)
            return stage.runner()(cfg, reward_fn)
    else:
        def run(cfg):
            check(cfg)
            return stage.runner()(cfg)
    run.__name__ = run.__qualname__ = stage.function_name
    run.__doc__ = stage.doc
    run.__module__ = __name__
    return run


for _stage in _registry.STAGES:  # SFTConfig + run_sft, ..., PPOConfig + run_ppo, GSPOConfig + run_gspo, ...
    globals()[_stage.config.__name__] = _stage.config
    globals()[_stage.function_name] = _stage_function(_stage)


def run_study(preset: str = "quick", *, precisions: list | None = None, model: str | None = None, seed: int = 42,
              seeds: list | None = None, algorithms: list | str | None = None, rm_per_seed: bool = False,
              task=None, out=None, device: str = "auto", progress: bool = True, report_to: list | None = None,
              isolate: bool = True, bon: bool = True, bon_precisions: list | None = None,
              equivalence_margin="10%"):
    """The whole study: SFT -> prefs -> RM -> rm-eval -> each arm (algorithm x RM precision) per seed -> eval
    -> report.

    ``preset`` is smoke | quick | full; ``precisions`` defaults to fp32/int8/int4 on a CPU and bf16/int8/int4
    on a GPU; ``algorithms`` (default ``["ppo"]``): ppo, grpo, rloo, dpo, an RM-based one optionally with its
    own precisions (``"grpo@fp32"``); ``seeds`` (default ``[seed]``) replicate every arm's training over one
    SFT policy and RM made with ``seed``, which also seeds every evaluation (comparisons paired by prompt);
    ``rm_per_seed`` also retrains the RM per seed; ``task`` names a task file (data, gold, response length;
    checked whole before anything is written). ``out`` defaults to ``studies/<preset>-<model>-seed<seed>``;
    ``isolate`` runs each stage in its own process (its peak memory its own). ``bon`` adds best-of-n on the SFT
    policy (N candidates per held-out prompt ranked by the RM at each precision, or ``bon_precisions``);
    ``equivalence_margin`` is the margin of the equivalence verdicts, a number in gold units or a share of the
    reference's gain ("10%"). An algorithm written ``"ppo@null"`` adds its control arm (a random reward).
    Finished stages are reused. Returns the study folder (``report.md``, ``report.html``, ``report.json``, one run
    folder per stage)."""
    from edgerlhf.study.pipeline import run_study as run

    return run(preset, precisions=precisions, model=model, seed=seed, seeds=seeds, algorithms=algorithms,
               rm_per_seed=rm_per_seed, task=task, out=out, device=device, progress=progress, report_to=report_to,
               isolate=isolate, bon=bon, bon_precisions=bon_precisions, equivalence_margin=equivalence_margin)


def load_policy(path, *, dtype=None, device="cpu", merge: bool = True):
    """A trained policy (SFT or PPO run folder, its ``adapter/``) as ``(model, tokenizer, meta)``: the base
    model with the adapter(s) merged in (``merge=False`` keeps the PEFT wrapper)."""
    import torch

    from edgerlhf.models.adapters import load_policy as load

    return load(path, dtype=dtype or torch.float32, device=device, merge=merge)


def load_reward_model(path, precision: str | None = None, *, device: str = "cpu", batch_size: int = 32,
                      ensemble: str = "auto", uwo_lambda: float = 0.5, layout: str = "shared"):
    """A trained reward model (reward run folder, its ``adapter/``, or a quantized RM folder) as a scorer:
    ``rm(prompts, responses) -> list[float]``. ``precision`` is fp32 | bf16 | fp16 | int8 | int4 (a backend may
    be named: int8:bnb, int8:torchao, int4:bnb); a quantized folder loads as stored. An ensemble (``edgerlhf reward
    members=K``) serves by ``ensemble``: mean | min | uwo (``uwo_lambda``; members in ``layout`` shared | merged),
    warm (one weight-averaged RM) or member-N; auto = mean. Its ``last_spread`` is the members' disagreement."""
    from edgerlhf.rewards.serving import load_reward as load

    return load(path, precision, device=device, batch_size=batch_size, ensemble=ensemble, uwo_lambda=uwo_lambda,
                layout=layout)


def best_of(policy, prompts: list, n: int, reward: str, *, temperature: float = 0.7, max_new_tokens: int = 96,
            seed: int = 0, device: str = "cpu", ensemble: str = "auto", uwo_lambda: float = 0.5):
    """Best-of-n at serving time: ``n`` samples per prompt from ``policy`` (a run folder), each scored by the reward
    model ``reward`` (``"RM[:precision]"``, e.g. ``"runs/reward-1:int4"``); per prompt the tuple (best response, its
    score, every (response, score)). An ensemble RM serves by ``ensemble`` (as
    :func:`load_reward_model`). Bad specs are refused before any model loads."""
    from edgerlhf.models.adapters import load_policy as load
    from edgerlhf.rewards.serving import load_reward_spec
    from edgerlhf.stages.bon import best_of as pick

    if n < 1:
        raise ValueError(f"best_of: n={n} must be at least 1")
    rm = load_reward_spec(reward, device=device, ensemble=ensemble, uwo_lambda=uwo_lambda)
    model, tok, _ = load(policy, device=device)
    return pick(model, tok, list(prompts), n, rm, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)


__all__ = ["ConfigError", "UserCodeError", "best_of", "load_config", "load_policy", "load_reward_model", "run_study",
           "__version__", *(s.config.__name__ for s in _registry.STAGES), *(s.function_name for s in _registry.STAGES)]
