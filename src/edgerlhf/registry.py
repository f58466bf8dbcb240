"""One table of stages and algorithms: the only place a stage or an online-RL algorithm is registered.

Everything that lists stages is derived from :data:`STAGES`: the command line (a subcommand per row, ``--preset``
where the row has presets, ``--help-config`` from its config class), the top-level ``edgerlhf.run_*`` functions,
the study's arms (the rows that train a policy; with or without a reward model), the memory planner (by the
row's ``kind``), the report (online or not) and ``edgerlhf runs`` (the row's key metrics), and which commands may
run data-parallel under ``torchrun`` / ``accelerate launch``.

Adding an online algorithm is: one module in ``rl/algorithms/`` (its advantages and loss), one config class in
``config/online.py`` (only its own keys), its presets in ``presets.py``, and one row here. Nothing in the engine,
the command line or the study changes.

Run functions and algorithm classes are named by ``"module:attribute"`` and imported on first use (as torchtune's
recipe registry names recipes): the table is read by every layer, from ``edgerlhf runs`` to the command line's
``--help``, without importing torch, and the stages it names can import what they need without an import cycle.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from edgerlhf.config import (
    BaseConfig,
    BonConfig,
    DPOConfig,
    EvalConfig,
    GRPOConfig,
    GSPOConfig,
    OnlineRLConfig,
    PPOConfig,
    PrefsConfig,
    ReinforcePPConfig,
    RewardConfig,
    RLOOConfig,
    RMEvalConfig,
    SFTConfig,
)
from edgerlhf.presets import STAGE_PRESETS

__all__ = ["STAGES", "Stage", "algorithms", "data_parallel_stages", "get", "online_stages", "resolve"]

# the summary numbers `edgerlhf runs` shows for every online-RL run
_ONLINE_METRICS = (("RM score", "objective/scores_last", "{:+.3f}"), ("gold", "objective/gold_last", "{:+.3f}"),
                   ("KL", "objective/kl_last", "{:.2f}"), ("held-out gold", "eval/gold_mean", "{:+.3f}"))


def resolve(ref: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (imported on first use)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Stage:
    """One row of the table.

    ``kind`` says what the stage does, for the planner's memory model and the report: supervised (SFT), sampling
    (preference pairs), reward (an RM trained on pairs), measure (the RM at each precision), online (online RL on
    the shared engine), pairs (a policy trained on pairs directly: DPO), evaluate."""

    name: str                                  # the subcommand, the config's ``stage`` and run folders' prefix
    config: type[BaseConfig]
    run: str                                   # "module:function": ``run(cfg) -> run folder`` (+ reward_fn online)
    help: str                                  # one line for ``edgerlhf --help``
    kind: str
    key_metrics: tuple[tuple[str, str, str], ...] = ()   # (label, summary.json key, format) for ``edgerlhf runs``
    doc: str = ""                              # the docstring of ``edgerlhf.run_<name>``
    algorithm: str = ""                        # online RL: "module:Class" of its ``rl.algorithms`` plug-in
    data_parallel: bool = False                # may run under torchrun / accelerate launch (one process otherwise)
    trains_policy: bool = False                # an arm of the study (a policy evaluated against the SFT policy)
    uses_rm: bool = False                      # trains against a reward model (so each RM precision is an arm)
    positional: tuple[str, str, str] = ()      # (argument, config key, help): ``edgerlhf eval RUN`` = policy=RUN
    short_eval_label: bool = False             # the study names its evaluations eval-<precision> (studies made
                                               # before other algorithms existed keep being reused)

    @property
    def online(self) -> bool:
        return issubclass(self.config, OnlineRLConfig)

    @property
    def presets(self) -> dict[str, dict]:
        return STAGE_PRESETS.get(self.name, {})

    @property
    def function_name(self) -> str:
        return "run_" + self.name.replace("-", "_")

    def runner(self) -> Callable:
        """The stage's ``run(cfg, ...)``, imported now."""
        return resolve(self.run)

    def algorithm_class(self) -> type:
        if not self.algorithm:
            raise ValueError(f"{self.name} is not an online-RL algorithm")
        return resolve(self.algorithm)


STAGES: tuple[Stage, ...] = (
    Stage("sft", SFTConfig, "edgerlhf.stages.sft:run", "supervised fine-tuning with LoRA (stage 1)", "supervised",
          (("eval loss", "eval/loss_after", "{:.3f}"), ("gold", "eval/gold_mean", "{:+.3f}")),
          doc="Supervised fine-tuning (LoRA by default) on the task's demonstrations. Returns the run folder; its "
              "``adapter/`` is the SFT policy that prefs, the online stages, DPO and eval take as ``policy``.",
          data_parallel=True),
    Stage("prefs", PrefsConfig, "edgerlhf.stages.prefs:run", "preference pairs: sample k responses per prompt and "
          "label them with the gold scorer, or read a file (stage 2)", "sampling",
          (("pairs", "pairs_train", "{}"),),
          doc="Preference pairs: k responses per prompt sampled from ``cfg.policy`` and labelled by the gold scorer, "
              "or a user's preference file converted. Returns the run folder (``pairs/train.jsonl``, "
              "``pairs/eval.jsonl``)."),
    Stage("reward", RewardConfig, "edgerlhf.stages.reward:run", "reward model: Bradley-Terry training of a score head "
          "with LoRA (stage 3)", "reward",
          (("acc gold", "eval/accuracy_gold", "{:.3f}"), ("acc", "eval/accuracy", "{:.3f}"),
           ("spearman", "eval/spearman_gold", "{:.3f}")),
          doc="A Bradley-Terry reward model (score head + LoRA) on ``cfg.prefs``. Returns the run folder; load the RM "
              "with :func:`edgerlhf.load_reward_model`.",
          data_parallel=True),
    Stage("rm-eval", RMEvalConfig, "edgerlhf.stages.rm_eval:run", "reward-model precision table: size, memory, "
          "latency, agreement with fp32", "measure", (("pairs", "pairs", "{}"),),
          doc="The RM measured at each precision (size, peak memory, latency, agreement with its fp32 self). Returns "
              "the run folder (``table.md``, ``summary.json``).",
          positional=("rm_dir", "rm", "reward run folder (same as rm=...)")),
    Stage("ppo", PPOConfig, "edgerlhf.stages.online:run", "PPO alignment: one base model serves policy, reference "
          "and value; RM at a chosen precision (stage 4)", "online", _ONLINE_METRICS,
          doc="PPO on one shared base model (policy adapter, value head, reference = adapter off). "
              "``reward_fn(prompts, responses) -> list[float]`` replaces the learned RM named by ``cfg.reward``. "
              "Returns the run folder; its ``adapter/`` is the aligned policy.",
          algorithm="edgerlhf.rl.algorithms.ppo:PPO", data_parallel=True, trains_policy=True, uses_rm=True,
          short_eval_label=True),
    Stage("grpo", GRPOConfig, "edgerlhf.stages.online:run", "GRPO alignment: groups of samples per prompt, no value "
          "function, no reference at beta=0 (stage 4)", "online", _ONLINE_METRICS,
          doc="GRPO (value-free; group-normalised advantages over ``num_generations`` samples per prompt; KL in the "
              "loss with weight ``beta``, 0 by default, which skips the reference entirely). ``reward_fn`` as in "
              ":func:`edgerlhf.run_ppo`. Returns the run folder; its ``adapter/`` is the aligned policy.",
          algorithm="edgerlhf.rl.algorithms.grpo:GRPO", data_parallel=True, trains_policy=True, uses_rm=True),
    Stage("rloo", RLOOConfig, "edgerlhf.stages.online:run", "RLOO alignment: groups of samples per prompt, "
          "leave-one-out baseline, KL in the reward (stage 4)", "online", _ONLINE_METRICS,
          doc="RLOO (value-free; leave-one-out baseline over ``num_generations`` samples per prompt; KL in the reward "
              "with weight ``beta``). ``reward_fn`` as in :func:`edgerlhf.run_ppo`. Returns the run folder; its "
              "``adapter/`` is the aligned policy.",
          algorithm="edgerlhf.rl.algorithms.rloo:RLOO", data_parallel=True, trains_policy=True, uses_rm=True),
    Stage("reinforce_pp", ReinforcePPConfig, "edgerlhf.stages.online:run", "REINFORCE++-baseline alignment: "
          "group-mean baseline, advantages whitened over the whole step, KL in the loss or the reward (stage 4)",
          "online", _ONLINE_METRICS,
          doc="REINFORCE++-baseline (value-free; each sample's reward minus its prompt's group mean over "
              "``num_generations`` samples, whitened over every response token of the step; PPO's clipped ratio per "
              "token; KL to the reference with weight ``beta`` in the loss (``kl_in=loss``, k2, the default) or per "
              "token in the reward (``kl_in=reward``, k1), as OpenRLHF's ``reinforce_baseline``). ``reward_fn`` as in "
              ":func:`edgerlhf.run_ppo`. Returns the run folder; its ``adapter/`` is the aligned policy.",
          algorithm="edgerlhf.rl.algorithms.reinforce_pp:ReinforcePP", data_parallel=True, trains_policy=True,
          uses_rm=True),
    Stage("gspo", GSPOConfig, "edgerlhf.stages.online:run", "GSPO alignment: GRPO's groups with one importance "
          "ratio per response (the geometric mean of its tokens'), clipped at the sequence level (stage 4)", "online",
          _ONLINE_METRICS,
          doc="GSPO (value-free; GRPO's group-normalised advantages, one importance ratio per response, the geometric "
              "mean of its tokens' ratios, clipped at the sequence level with the paper's 3e-4 / 4e-4). ``reward_fn`` "
              "as in :func:`edgerlhf.run_ppo`. Returns the run folder; its ``adapter/`` is the aligned policy.",
          algorithm="edgerlhf.rl.algorithms.gspo:GSPO", data_parallel=True, trains_policy=True, uses_rm=True),
    Stage("dpo", DPOConfig, "edgerlhf.stages.dpo:run", "DPO alignment from the preference pairs directly: no reward "
          "model, no sampling; the SFT policy is the reference (stage 4)", "pairs",
          (("acc", "eval/accuracy", "{:.3f}"), ("margin", "eval/margin", "{:+.3f}"), ("loss", "eval/loss", "{:.3f}")),
          doc="DPO on preference pairs (a prefs run folder or a file): the SFT policy merged as the base, a LoRA "
              "adapter as the policy, the base with the adapter off as the reference (its log-probs computed once). "
              "Returns the run folder; ``adapter/`` is the policy, read by eval, export and chat like the online ones.",
          data_parallel=True, trains_policy=True),
    Stage("bon", BonConfig, "edgerlhf.stages.bon:run", "best-of-n on shared candidates: N samples per held-out "
          "prompt ranked by the RM at each precision; gold curves, Gao et al. fit, ranking certificate", "measure",
          (("gold gain @N", "bon/ref_gold_gain_at_N", "{:+.3f}"), ("N", "N", "{}")),
          doc="Best-of-n without resampling: ``cfg.num_candidates`` responses per held-out prompt sampled once from "
              "``cfg.policy``, scored by the gold and ranked by the RM ``cfg.rm`` at each of ``cfg.precisions``; the "
              "expected gold of best-of-n over all n-subsets for n = 1, 2, 4, ..., N, KL = log n - (n-1)/n, the "
              "Gao et al. fit and how each precision ranks the candidates against the first. Returns the run folder "
              "(``candidates.jsonl``, ``table.md``).",
          positional=("policy_dir", "policy", "the policy to sample candidates from (same as policy=...)")),
    Stage("eval", EvalConfig, "edgerlhf.stages.evaluate:run", "evaluate a policy on held-out prompts: gold mean with "
          "CI, RM mean, KL, win rate vs SFT, diversity", "evaluate",
          (("gold", "eval/gold_mean", "{:+.3f}"), ("gain", "eval/gold_gain", "{:+.3f}"),
           ("win", "eval/win_rate", "{:.3f}"), ("RM gain", "eval/rm_gain", "{:+.3f}")),
          doc="A policy on held-out prompts against its baseline (by default the SFT policy it started from): gold "
              "and learned-RM means with CIs, win rate, paired gain, KL, diversity. Returns the run folder.",
          positional=("policy_dir", "policy", "PPO / GRPO / RLOO / DPO or SFT run folder (same as policy=...)")),
)

# the algorithm every other one is compared against in the study's report
REFERENCE_ALGORITHM = "ppo"

_BY_NAME = {s.name: s for s in STAGES}


def get(name: str) -> Stage:
    """The row of stage ``name``; a ValueError with "did you mean" otherwise."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
    raise ValueError(f"unknown stage {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                     + f"; the stages are {', '.join(_BY_NAME)}")


def of_config(cfg: BaseConfig) -> Stage:
    return get(cfg.stage)


def names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def online_stages() -> tuple[str, ...]:
    return tuple(s.name for s in STAGES if s.online)


def data_parallel_stages() -> tuple[str, ...]:
    """The stages that may run under torchrun / accelerate launch: the supervised ones, then the online ones."""
    rows = [s for s in STAGES if s.data_parallel]
    return tuple(s.name for s in rows if not s.online) + tuple(s.name for s in rows if s.online)


def algorithms() -> tuple[str, ...]:
    """The study's algorithms: the stages that train a policy."""
    return tuple(s.name for s in STAGES if s.trains_policy)


STAGE_CONFIGS: dict[str, type[BaseConfig]] = {s.name: s.config for s in STAGES}
