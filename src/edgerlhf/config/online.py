"""The online-RL configs: :class:`OnlineRLConfig` holds what every algorithm of the engine shares (one base
serving policy and reference, the RM at a precision, rollouts, the update's batches, checkpoints); each
algorithm's config adds only its own keys and its renamed-key table. An algorithm is registered once, in
:mod:`edgerlhf.registry`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgerlhf.config.core import check_choices, check_non_negative, check_positive_ints, check_range, opt
from edgerlhf.config.mixins import BaseConfig, EnsembleMixin, GoldEvalMixin, LoraMixin, OptimMixin
from edgerlhf.config.refs import check_dataset, check_precisions, ensemble_meta

__all__ = ["GRPOConfig", "GroupConfig", "OnlineRLConfig", "PPOConfig", "ReinforcePPConfig", "RLOOConfig", "GSPOConfig"]


LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")  # token-loss aggregations (rl/group_math.aggregate)
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class OnlineRLConfig(EnsembleMixin, GoldEvalMixin, LoraMixin, OptimMixin, BaseConfig):
    """Fields every online-RL algorithm shares (PPO, GRPO, RLOO): one base model in memory, the policy a
    LoRA adapter on it, the reference that base with the adapter disabled (the SFT change is merged in), the
    reward model separate at the precision chosen (or any callable). Each algorithm's config adds only its own."""

    stage: ClassVar[str] = "online"
    # config keys that may change when a run is resumed (everything else must match the stored config)
    RESUMABLE: ClassVar[frozenset] = frozenset({
        "resume", "max_steps", "total_episodes", "progress", "save_steps", "save_total_limit", "report_to",
        "gold_eval_prompts", "eval_prompts", "sample_every", "run_name", "output_dir", "max_bad_steps", "lean_update",
        "task"})
    # this stage's names for what other tools (or the other algorithms) call differently
    RENAMED: ClassVar[dict] = {
        "max_completion_length": ("response_length", "TRL's `max_completion_length` is `response_length` here"),
        "generation_batch_size": ("num_rollouts_per_step", "TRL's `generation_batch_size` is `num_rollouts_per_step` "
                                                           "here (episodes per step)"),
        "per_device_train_batch_size": ("mini_batch_size", "the update's micro-batch (episodes per forward/backward) "
                                                           "is `mini_batch_size`"),
    }

    policy: str = opt("", "SFT run folder (or its adapter/): merged into the base, so the reference includes it; "
                          "empty: `model` itself")
    reward: str = opt("", "reward run folder (trained fp32 or QLoRA-style), a quantized RM folder (edgerlhf "
                          "quantize), or 'random': a control arm, a fixed-seed random score per response")
    reward_precision: str = opt("fp32", "precision of the reward model: fp32 | bf16 | fp16 | int8 | int4 (a backend "
                                        "may be named, e.g. int8:bnb); ignored for a quantized RM folder, which loads "
                                        "as stored")
    prompts: str = opt("builtin", "'builtin' (the task's training prompts) or a .jsonl/.json/.csv file with a `prompt` "
                                  "column (string or messages)")
    max_prompts: int = opt(0, "use at most this many prompts (0: all)")
    layout: str = opt("shared", "shared: one base model serves every role | separate: a copy of the base per role (the "
                                "classic layout, to measure the saving)")
    base_precision: str = opt("fp32", "precision of the frozen base under the LoRA adapters: fp32, or int8 / int4 "
                                      "through bitsandbytes (QLoRA-style)")
    num_rollouts_per_step: int = opt(32, "episodes (prompt + sampled response) per step, over all processes under "
                                         "torchrun / accelerate launch (each takes its share); with groups, prompts "
                                         "per step x samples per prompt")
    rollout_batch_size: int = opt(8, "episodes per generate / log-prob / scoring forward during rollouts (per process)")
    mini_batch_size: int = opt(2, "episodes per forward/backward micro-batch in the update (with several processes, at "
                                  "most this per process: an optimizer step's mini_batch_size x "
                                  "gradient_accumulation_steps episodes are split among them)")
    gradient_accumulation_steps: int = opt(4, "micro-batches per optimizer step (an optimizer step sees "
                                              "mini_batch_size x this episodes, over all processes)")
    max_steps: int = opt(20, "steps (ignored when total_episodes > 0)")
    total_episodes: int = opt(0, "episodes in all; 0: max_steps x num_rollouts_per_step")
    learning_rate: float = opt(1e-4, "AdamW learning rate for the adapter(s) (and PPO's value head)")
    lr_scheduler_type: str = opt("constant", "linear | cosine | constant | constant_with_warmup (over optimizer steps)")
    warmup_ratio: float = opt(0.0, "fraction of optimizer steps spent warming up")
    max_grad_norm: float = opt(0.5, "gradient clipping norm (0 disables)")
    gradient_checkpointing: bool = opt(False, "recompute activations in the update's backward (less memory, slower)")
    lean_update: bool = opt(False, "CPU (glibc): during the update, blocks of 1 MiB and more are mapped and returned "
                                   "to the system as soon as they are freed; measured on SmolLM2 GRPO (8 x 48 tokens): "
                                   "about 0.3-0.5 GB lower peak, update about 40% slower")
    cache_trunk: str = opt("auto", "auto: with LoRA in the top lora_layers blocks only, run the frozen blocks below "
                                   "once per step and reuse their output in every later forward (old log-probs, "
                                   "values, reference, each update epoch); exact | off: recompute them every pass")
    response_length: int = opt(48, "new tokens per rollout response (generation stops earlier at EOS)")
    sampler: str = opt("edgerlhf", "rollout sampling: edgerlhf (its own decode loop: identical prompts prefilled once, "
                                   "a row that ended leaves the batch, the LM head in its faster orientation, and the "
                                   "frozen trunk's output kept from the decode instead of recomputed) | generate "
                                   "(transformers' generate, the baseline); the same distribution")
    rollout_logprobs: bool = opt(False, "sampler=edgerlhf: take the old log-probs, entropy and (value head) values "
                                        "from the decode itself instead of a pass of the top blocks; faster, but the "
                                        "decode's cached attention rounds differently, so the first ratio is 1 and the "
                                        "KL at the start 0 only to fp32 rounding (measured on SmolLM2: |log-prob "
                                        "difference| <= 3e-5)")
    temperature: float = opt(0.7, "sampling temperature of the rollouts (log-probs use the same temperature)")
    top_k: int = opt(0, "top-k sampling (0: off)")
    top_p: float = opt(1.0, "nucleus sampling threshold")
    missing_eos_penalty: float = opt(0.0, "subtracted from the score of a response that never emits EOS within "
                                          "response_length (0: off)")
    save_steps: int = opt(0, "write a checkpoint every N steps (0: only on Ctrl-C / SIGTERM); always atomic")
    save_total_limit: int = opt(2, "keep this many newest checkpoints")
    resume: str = opt("", "continue a run: its run folder (latest checkpoint) or one checkpoint folder; the run "
                          "continues in that folder")
    max_bad_steps: int = opt(3, "stop after this many consecutive steps with NaN/inf in rewards, loss or gradients "
                                "(each is skipped)")
    sample_every: int = opt(1, "log one decoded rollout with its rewards every N steps")
    overopt_warning: float = opt(0.0, "over-optimisation early warning (an ensemble reward served by mean|min|uwo): "
                                      "fire when the members' disagreement on the rollouts (objective/ensemble_std), "
                                      "averaged over the last overopt_window steps, stays at least (1 + this) x its "
                                      "mean over the first overopt_window steps for overopt_patience steps; 0: off "
                                      "(the signal is logged whenever the reward is an ensemble)")
    overopt_monitor: str = opt("", "an RM ensemble (edgerlhf reward members=K) that only watches: it scores each "
                                   "step's rollouts at reward_precision (fp32 for a random or callable reward) to log "
                                   "objective/ensemble_std and feed overopt_warning, without being the reward; for a "
                                   "run trained on a single RM or WARM")
    overopt_window: int = opt(4, "steps in each mean of the over-optimisation warning (the first window is its "
                                 "baseline)")
    overopt_patience: int = opt(2, "consecutive steps above the threshold before the warning fires")
    stop_on_overopt: bool = opt(False, "when the warning fires: false = write a checkpoint (kept as "
                                       "checkpoint-overopt-N), flag the run and go on | true = write it and stop (the "
                                       "artifact is the policy at that step; the summary says why)")

    @property
    def steps(self) -> int:
        return self.total_episodes // self.num_rollouts_per_step if self.total_episodes else self.max_steps

    def check(self) -> list[str]:
        errs = super().check() + self.check_lora() + self.check_optim() + self.check_gold() + self.check_gold_eval()
        errs += self.check_formatting("policy")
        if not self.lora:
            errs.append(f"lora=false: {self.stage} here trains a LoRA adapter on a shared base (the reference is that "
                        "base); set lora=true")
        if self.reward and self.reward != "random" and not Path(self.reward).expanduser().exists():
            errs.append(f"reward={self.reward!r}: no such folder (a reward run folder, a quantized RM folder, or "
                        "'random' for a control arm)")
        if self.policy and not Path(self.policy).expanduser().exists():
            errs.append(f"policy={self.policy!r}: no such run folder (pass the SFT run folder or leave empty)")
        errs += check_precisions([self.reward_precision], "reward_precision")
        errs += self.check_ensemble("reward", [self.reward_precision])
        if self.overopt_warning < 0:
            errs.append(f"overopt_warning={self.overopt_warning} must be >= 0 (0: off; 0.5: fire at a 50% rise)")
        if self.overopt_monitor and ensemble_meta(self.overopt_monitor) is None:
            errs.append(f"overopt_monitor={self.overopt_monitor!r}: not an RM ensemble folder (edgerlhf reward "
                        "members=4 makes one)")
        if self.overopt_warning > 0 and not self.overopt_monitor and self.reward \
                and Path(self.reward).expanduser().exists():
            if ensemble_meta(self.reward) is None or self.ensemble == "warm" or self.ensemble.startswith("member-"):
                errs.append(f"overopt_warning={self.overopt_warning}: the warning reads an ensemble's disagreement; "
                            f"reward={self.reward!r} with ensemble={self.ensemble} is one model. Serve an ensemble "
                            "with ensemble=mean|min|uwo, or let one watch: overopt_monitor=<ensemble folder> (or "
                            "overopt_warning=0)")
        errs += check_positive_ints(self, "overopt_window", "overopt_patience")
        if self.prompts != "builtin":
            errs += check_dataset(self.prompts, "prompts")
        errs += check_choices(self, {"layout": ("shared", "separate"), "base_precision": ("fp32", "int8", "int4"),
                                     "cache_trunk": ("auto", "off"), "sampler": ("edgerlhf", "generate")})
        errs += check_positive_ints(self, "num_rollouts_per_step", "rollout_batch_size", "mini_batch_size",
                                    "response_length", "max_bad_steps", "save_total_limit", "sample_every")
        errs += check_non_negative(self, "max_prompts", "total_episodes", "save_steps", "top_k")
        if self.total_episodes == 0 and self.max_steps <= 0:
            errs.append(f"max_steps={self.max_steps} must be positive (or set total_episodes)")
        if self.total_episodes and self.total_episodes < self.num_rollouts_per_step:
            errs.append(f"total_episodes={self.total_episodes} is less than one step "
                        f"(num_rollouts_per_step={self.num_rollouts_per_step})")
        per_opt = self.mini_batch_size * self.gradient_accumulation_steps
        if per_opt > 0 and self.num_rollouts_per_step % per_opt:
            errs.append(f"num_rollouts_per_step={self.num_rollouts_per_step} must be a multiple of mini_batch_size x "
                        f"gradient_accumulation_steps = {per_opt} (episodes per optimizer step)")
        errs += check_range(self, "temperature", 0, lo_open=True)
        errs += check_range(self, "missing_eos_penalty", 0)
        errs += check_range(self, "top_p", 0, 1, lo_open=True, why="1 turns nucleus sampling off")
        if self.resume and not Path(self.resume).expanduser().exists():
            errs.append(f"resume={self.resume!r}: no such run or checkpoint folder")
        return errs

    def check_groups(self, key: str) -> list[str]:
        """A step's episodes must split into whole groups of ``key`` samples per prompt; the message says which
        numbers would work (a frequent confusion with TRL's generation batch and num_generations)."""
        k, n = getattr(self, key), self.num_rollouts_per_step
        if k < 2:
            return [f"{key}={k} must be at least 2: the baseline is the other samples of the same prompt"]
        if n % k == 0:
            return []
        per_opt = max(1, self.mini_batch_size * self.gradient_accumulation_steps)
        unit = math.lcm(k, per_opt)  # whole groups and whole optimizer steps
        lo, hi = (n // unit) * unit, (n // unit + 1) * unit
        sizes = " or ".join(f"{m} ({m // k} prompts x {k})" for m in (lo, hi) if m > 0)
        divisors = [d for d in range(2, min(n, 16) + 1) if n % d == 0]
        return [f"num_rollouts_per_step={n} is not a multiple of {key}={k}: a step is whole groups of {k} samples "
                f"per prompt. Use num_rollouts_per_step={sizes}, or {key} in {divisors} (divisors of {n})"]


@dataclass
class PPOConfig(OnlineRLConfig):
    """PPO: a value function (a head on the shared trunk, or a second adapter), per-token KL in the reward,
    GAE, clipped policy and value losses (Schulman et al. 2017; Ziegler et al. 2019)."""

    stage: ClassVar[str] = "ppo"
    RENAMED: ClassVar[dict] = {
        **OnlineRLConfig.RENAMED,
        "beta": ("kl_coef", "PPO's KL coefficient is `kl_coef` (TRL's GRPO/RLOO call theirs `beta`)"),
        "epsilon": ("cliprange", "PPO's ratio clip is `cliprange` (TRL's GRPO/RLOO call theirs `epsilon`)"),
        "num_iterations": ("num_ppo_epochs", "PPO's passes over a step's episodes are `num_ppo_epochs`"),
        "num_generations": (None, "PPO samples one response per prompt; for groups of samples use `edgerlhf grpo` or "
                                  "`edgerlhf rloo`"),
    }

    value_model: str = opt("head", "head: a linear value head on the policy's trunk (one forward gives log-probs and "
                                   "values) | adapter: a second LoRA adapter plus head (a value trunk of its own, one "
                                   "more forward)")
    num_ppo_epochs: int = opt(2, "passes over each step's episodes")
    cliprange: float = opt(0.2, "policy ratio clip epsilon")
    cliprange_value: float = opt(0.2, "value clip around the rollout values")
    vf_coef: float = opt(0.1, "weight of the value loss")
    ent_coef: float = opt(0.0, "weight of the entropy bonus (loss -= ent_coef * entropy)")
    gamma: float = opt(1.0, "discount")
    lam: float = opt(0.95, "GAE lambda")
    kl_coef: float = opt(0.05, "coefficient of the per-token KL penalty against the reference (initial value when "
                               "adaptive)")
    kl_estimator: str = opt("k1", "per-token KL estimator in the penalty: k1 (log p - log q) | k3 ((r-1) - log r, "
                                  "never negative)")
    kl_adaptive: bool = opt(False, "adapt kl_coef so the per-sequence KL tracks kl_target (Ziegler et al. 2019)")
    kl_target: float = opt(6.0, "target per-sequence KL (nats) for the adaptive coefficient")
    kl_horizon: int = opt(10000, "horizon (episodes) of the adaptive coefficient")
    whiten_rewards: bool = opt(False, "whiten the per-token rewards (keeping their mean) before GAE")
    target_approx_kl: float = opt(0.0, "stop a step's remaining epochs once an optimizer step's approximate KL (0.5 "
                                       "mean (log ratio)^2) exceeds this; 0 disables")

    def check(self) -> list[str]:
        errs = super().check()
        errs += check_choices(self, {"value_model": ("head", "adapter"), "kl_estimator": ("k1", "k3")})
        if self.num_ppo_epochs <= 0:
            errs.append(f"num_ppo_epochs={self.num_ppo_epochs} must be a positive integer")
        for k in ("cliprange_value", "kl_target"):  # learning_rate: OptimMixin.check_optim
            if not getattr(self, k) > 0:
                errs.append(f"{k}={getattr(self, k)} must be > 0")
        errs += check_non_negative(self, "vf_coef", "ent_coef", "kl_coef", "target_approx_kl")
        errs += check_range(self, "cliprange", 0, 1, lo_open=True, hi_open=True,
                            why="the probability ratio is clipped to [1 - cliprange, 1 + cliprange]; 0.1-0.3 is usual")
        errs += check_range(self, "gamma", 0, 1, lo_open=True, why="the discount per token; 1 (no discount) is usual")
        errs += check_range(self, "lam", 0, 1, why="GAE lambda: 0 is one-step TD, 1 is Monte Carlo; 0.95 is usual")
        if self.kl_horizon <= 0:
            errs.append(f"kl_horizon={self.kl_horizon} must be a positive integer")
        return errs


@dataclass
class GroupConfig(OnlineRLConfig):
    """Fields of the value-free group methods, under TRL's names: k samples per prompt, a clipped ratio with
    an optional asymmetric upper bound, the KL coefficient `beta`."""

    RENAMED: ClassVar[dict] = {
        **OnlineRLConfig.RENAMED,
        "kl_coef": ("beta", "TRL's GRPO/RLOO (and this stage) call the KL coefficient `beta`"),
        "init_kl_coef": ("beta", "the KL coefficient is `beta` here, as in TRL's GRPO/RLOO"),
        "cliprange": ("epsilon", "TRL's GRPO/RLOO (and this stage) call the ratio clip `epsilon` (and `epsilon_high` "
                                 "for an asymmetric upper bound)"),
        "eps_clip": ("epsilon", "OpenRLHF's `eps_clip` is `epsilon` here"),
        "num_ppo_epochs": ("num_iterations", "TRL's GRPO/RLOO (and this stage) call the passes over a step's episodes "
                                             "`num_iterations`"),
        "ppo_epochs": ("num_iterations", "the passes over a step's episodes are `num_iterations` here, as in TRL's "
                                         "GRPO/RLOO"),
        "rloo_k": ("num_generations", "old TRL's `rloo_k` is `num_generations` (samples per prompt)"),
        "n_samples_per_prompt": ("num_generations", "OpenRLHF's `n_samples_per_prompt` is `num_generations` here, as "
                                                    "in TRL"),
        "group_size": ("num_generations", "the group size (samples per prompt) is `num_generations`, as in TRL"),
        "value_model": (None, "value-free methods have no value model; for one use `edgerlhf ppo`"),
        "vf_coef": (None, "value-free methods have no value loss; for one use `edgerlhf ppo`"),
    }

    num_generations: int = opt(4, "samples per prompt (a group); the baseline of each sample is computed from its "
                                  "group")
    num_iterations: int = opt(1, "passes over each step's episodes (TRL's num_iterations; 1 is fully on-policy)")
    epsilon: float = opt(0.2, "ratio clip: the ratio is clipped to [1 - epsilon, 1 + epsilon_high]")
    epsilon_high: float | None = opt(None, "upper ratio clip (DAPO's clip-higher, e.g. 0.28); empty: epsilon")
    mask_truncated_completions: bool = opt(False, "drop responses that hit response_length without EOS from the loss "
                                                  "(DAPO)")

    def check(self) -> list[str]:
        errs = super().check() + self.check_groups("num_generations")
        if self.num_iterations <= 0:
            errs.append(f"num_iterations={self.num_iterations} must be a positive integer")
        errs += check_range(self, "epsilon", 0, 1, lo_open=True, hi_open=True,
                            why="the probability ratio is clipped to [1 - epsilon, 1 + epsilon_high]; 0.2 is usual")
        if self.epsilon_high is not None:
            errs += check_range(self, "epsilon_high", 0, lo_open=True, why="DAPO uses 0.28")
        errs += check_range(self, "beta", 0, why="0 drops the reference model and its forward pass")
        return errs


@dataclass
class GRPOConfig(GroupConfig):
    """GRPO (Shao et al. 2024, DeepSeekMath): no value function; each sample's advantage is its reward minus
    its group's mean (scaled by the group's std, the batch's, or not at all); KL (k3) in the loss with
    weight `beta`, which defaults to 0, so the reference forward is skipped. Loss aggregation as TRL's
    `loss_type`: grpo, bnpo, dr_grpo, dapo."""

    stage: ClassVar[str] = "grpo"

    beta: float = opt(0.0, "weight of the per-token k3 KL to the reference in the loss (TRL's default 0: no reference "
                           "forward at all)")
    scale_rewards: str = opt("group", "advantage scale: group (divide by the group's std) | batch (the step's std) | "
                                      "none (Dr. GRPO)")
    loss_type: str = opt("dapo", "token-loss aggregation: grpo (per-sequence mean, then mean) | bnpo (mean over the "
                                 "micro-batch's tokens) | dr_grpo (sum / (sequences x response_length)) | dapo (sum / "
                                 "tokens of the optimizer step)")

    def check(self) -> list[str]:
        errs = super().check()
        return errs + check_choices(self, {"scale_rewards": SCALE_REWARDS, "loss_type": LOSS_TYPES})


@dataclass
class RLOOConfig(GroupConfig):
    """RLOO (Ahmadian et al. 2024): no value function; each sample's baseline is the mean reward of the other
    samples of its prompt; the KL (k1, summed over the response) is subtracted from the reward with weight
    `beta`, as TRL does; the ratio is clipped per sequence."""

    stage: ClassVar[str] = "rloo"

    beta: float = opt(0.05, "weight of the sequence KL to the reference subtracted from the reward (0: no reference "
                            "forward)")
    normalize_advantages: bool = opt(False, "whiten the advantages over the step")


@dataclass
class ReinforcePPConfig(GroupConfig):
    """REINFORCE++-baseline (Hu et al. 2025; OpenRLHF's `reinforce_baseline`, verl's `reinforce_plus_plus_baseline`):
    no value function; each sample's score minus its group's mean, as a return per token, whitened over every
    response token of the step (global mean and std); PPO's clipped ratio per token; the KL to the reference in the
    loss (k2, as OpenRLHF's REINFORCE++-baseline script) or, per token, in the reward (k1)."""

    stage: ClassVar[str] = "reinforce_pp"
    RENAMED: ClassVar[dict] = {
        **GroupConfig.RENAMED,
        "init_kl_coef": ("beta", "OpenRLHF's `init_kl_coef` is `beta` here"),
        "use_kl_loss": ("kl_in", "OpenRLHF's `--use_kl_loss` is `kl_in=loss` here (without it: `kl_in=reward`)"),
        "use_kl_in_reward": ("kl_in", "verl's `use_kl_in_reward=True` is `kl_in=reward` here"),
        "kl_loss_type": ("kl_estimator", "verl's `kl_loss_type` is `kl_estimator` here (k1 | k2 | k3)"),
    }

    beta: float = opt(0.01, "KL coefficient (OpenRLHF's init_kl_coef, default 0.01); 0: no reference forward at all")
    kl_in: str = opt("loss", "where the KL to the reference goes: loss (beta x per-token KL added to the loss; "
                             "OpenRLHF's --use_kl_loss) | reward (-beta x per-token KL in the reward, summed into "
                             "each token's return)")
    kl_estimator: str = opt("auto", "per-token KL estimator: k1 (log p - log q) | k2 (0.5 (log p - log q)^2) | k3 "
                                    "((r-1) - log r) | auto (k2 in the loss, k1 in the reward, as OpenRLHF)")
    loss_type: str = opt("dapo", "token-loss aggregation, as GRPO's: grpo | bnpo | dr_grpo | dapo (sum / tokens of the "
                                 "optimizer step: OpenRLHF's token-level mean)")

    def check(self) -> list[str]:
        errs = super().check()
        return errs + check_choices(self, {"kl_in": ("loss", "reward"), "kl_estimator": ("auto", "k1", "k2", "k3"),
                                           "loss_type": LOSS_TYPES})


@dataclass
class GSPOConfig(GroupConfig):
    """GSPO (Zheng et al. 2025, arXiv 2507.18071; TRL's GRPO with `importance_sampling_level="sequence"`): GRPO's
    group-normalised advantage, but one importance ratio per response, the geometric mean of its tokens' ratios,
    clipped at the sequence level; the clip range is the paper's (3e-4 below, 4e-4 above, on a mean log-ratio); KL
    (k3) in the loss with weight `beta`, 0 by default (no reference forward)."""

    stage: ClassVar[str] = "gspo"
    RENAMED: ClassVar[dict] = {
        **GroupConfig.RENAMED,
        "importance_sampling_level": (None, "GSPO's ratio is always the sequence's (`edgerlhf grpo` is the token-level "
                                            "one)"),
        "loss_type": (None, "GSPO averages its sequence losses over the responses (TRL's loss_type=grpo with "
                            "importance_sampling_level=sequence); `edgerlhf grpo` has the token-level aggregations"),
    }

    epsilon: float = opt(3e-4, "lower clip of the sequence ratio: [1 - epsilon, 1 + epsilon_high] (the paper's 3e-4; a "
                               "sequence ratio is a mean token log-ratio, so its range is far narrower than a token's)")
    epsilon_high: float | None = opt(4e-4, "upper clip of the sequence ratio (the paper's 4e-4); empty: epsilon")
    beta: float = opt(0.0, "weight of the per-token k3 KL to the reference in the loss (0: no reference forward)")
    scale_rewards: str = opt("group", "advantage scale: group (divide by the group's std) | batch (the step's std) | "
                                      "none")

    def check(self) -> list[str]:
        return super().check() + check_choices(self, {"scale_rewards": SCALE_REWARDS})
