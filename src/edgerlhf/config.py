"""Typed, validated configuration: one dataclass per stage.

A config comes from (in order, later wins): the dataclass defaults, an optional preset, an optional YAML
file, and ``key=value`` overrides from the command line. :func:`load_config` validates once and reports
*every* problem in a single :class:`ConfigError` before anything is written to disk.

Unknown keys are errors with a "did you mean" suggestion; keys that other tools (old TRL, trlx, torchtune)
use for the same thing get a precise "renamed" message (see :data:`RENAMED_KEYS`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml


class ConfigError(ValueError):
    """All problems found in one config, reported together."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = list(problems)
        head = f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {source}:"
        super().__init__("\n".join([head] + [f"  - {p}" for p in problems]))


def opt(default: Any, help: str, **kw) -> Any:  # noqa: A002 - "help" reads best at call sites
    """A dataclass field with a default and a help string (shown by ``edgerlhf <stage> --help-config``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


# Keys other tools use, mapped to ours: old name -> (new name or None, explanation).
RENAMED_KEYS: dict[str, tuple[str | None, str]] = {
    "ppo_epochs": ("num_ppo_epochs", "TRL renamed `ppo_epochs` to `num_ppo_epochs` (0.12); use num_ppo_epochs"),
    "init_kl_coef": ("kl_coef", "old TRL's `init_kl_coef` is `kl_coef` here; set kl_adaptive=true for an adaptive coefficient"),
    "adap_kl_ctrl": ("kl_adaptive", "old TRL's `adap_kl_ctrl` is `kl_adaptive` here"),
    "forward_batch_size": ("rollout_batch_size", "old TRL's `forward_batch_size` is `rollout_batch_size` here (prompts per generate/score forward)"),
    "batch_size": ("per_device_train_batch_size", "use `per_device_train_batch_size` (sequences per optimizer micro-step); for online RL, `num_rollouts_per_step` (episodes per step)"),
    "max_seq_length": ("max_length", "TRL renamed `max_seq_length` to `max_length`"),
    "center_rewards_coefficient": ("center_rewards_coef", "TRL's `center_rewards_coefficient` is `center_rewards_coef` here"),
    "lora_rank": ("lora_r", "the LoRA rank is `lora_r`"),
    "r": ("lora_r", "the LoRA rank is `lora_r`"),
    "lora_target_modules": ("target_modules", "LoRA target modules are `target_modules` (a list, or 'all-linear')"),
    "epochs": ("num_train_epochs", "use `num_train_epochs`"),
    "lr": ("learning_rate", "use `learning_rate`"),
    "torch_dtype": ("dtype", "transformers 5 renamed `torch_dtype` to `dtype`"),
    "bf16": ("dtype", "choose the compute dtype with `dtype` (auto | fp32 | bf16 | fp16)"),
    "fp16": ("dtype", "choose the compute dtype with `dtype` (auto | fp32 | bf16 | fp16)"),
    "model_name": ("model", "use `model` (default | tiny | hub id | local folder)"),
    "model_name_or_path": ("model", "use `model` (default | tiny | hub id | local folder)"),
    "steps": ("max_steps", "old TRL's `steps` counted episodes; here `max_steps` counts RL steps (or set total_episodes)"),
    "kl_penalty": ("kl_estimator", "TRL's `kl_penalty` ('kl' | 'full' | ...) is `kl_estimator` here: k1 (TRL's 'kl') or k3"),
    "target": ("kl_target", "old TRL's adaptive-KL `target` is `kl_target` here (with kl_adaptive=true)"),
    "horizon": ("kl_horizon", "old TRL's adaptive-KL `horizon` is `kl_horizon` here"),
    "target_kl": ("target_approx_kl", "old TRL's early-stopping `target_kl` is `target_approx_kl` here (0 disables)"),
    "early_stopping": ("target_approx_kl", "early stopping on approximate KL is on whenever `target_approx_kl` > 0"),
    "max_new_tokens": ("response_length", "the online-RL response budget is `response_length` (new tokens per rollout)"),
    "local_rollout_forward_batch_size": ("rollout_batch_size", "TRL's `local_rollout_forward_batch_size` is `rollout_batch_size` here"),
    "num_mini_batches": ("mini_batch_size", "set the micro-batch with `mini_batch_size` and the optimizer step with `gradient_accumulation_steps`"),
    "sft_model_path": ("policy", "the starting policy is `policy` (an SFT run folder)"),
    "reward_model_path": ("reward", "the reward model is `reward` (a reward run folder or a quantized RM folder)"),
    "entropy_coef": ("ent_coef", "the entropy bonus weight is `ent_coef`"),
}

def check_range(cfg, key: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False, why: str = "") -> list[str]:
    """``[]`` if ``cfg.<key>`` lies in the interval, else one message naming the key, its value and the
    interval in interval notation (``cliprange=1.5 must be in (0, 1): ...``)."""
    v = getattr(cfg, key)
    ok = (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
    if ok:
        return []
    if hi is None:
        rule = f"must be {'>' if lo_open else '>='} {lo:g}"
    elif lo is None:
        rule = f"must be {'<' if hi_open else '<='} {hi:g}"
    else:
        rule = f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return [f"{key}={v} {rule}" + (f": {why}" if why else "")]


_REPORT_TO = {"none", "tensorboard", "mlflow", "wandb"}
_DTYPES = {"auto", "fp32", "bf16", "fp16"}


@dataclass
class BaseConfig:
    """Fields every stage shares."""

    stage: ClassVar[str] = "base"

    model: str = opt("default", "base model: 'default' (embedded SmolLM2-135M-Instruct), 'tiny' (random 2-layer Llama for tests), a hub id, or a local folder")
    output_dir: str = opt("runs", "where run folders are created")
    run_name: str = opt("", "run folder name; empty means '<stage>-<timestamp>'")
    seed: int = opt(42, "random seed (python, numpy, torch)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = opt("auto", "compute dtype: auto (fp32 on CPU, bf16 on a GPU that supports it) | fp32 | bf16 | fp16")
    report_to: list = opt(["tensorboard"], "metric sinks besides metrics.jsonl: none | tensorboard | mlflow | wandb (a list)")
    progress: bool = opt(True, "show progress bars")
    chat_template: bool = opt(True, "format rows with the model's chat template (false: plain text, prompt then response then EOS, as for a base model or a text-continuation task); recorded in each artifact, and a stage reading an artifact must use the same")
    task: str = opt("", "a task file (YAML) naming the data, gold and response length (README: 'Your own task'; 'builtin': the shipped default); its settings come before presets, the config file and key=value overrides")

    # -- validation --------------------------------------------------------------------------------
    def check_formatting(self, *keys: str) -> list[str]:
        """An input artifact (policy, reward model) formats rows as it was trained: with or without the chat
        template. A stage that reads it with the other setting would score or continue text it never saw."""
        errs = []
        for key in keys:
            value = getattr(self, key, "")
            if not value or not Path(value).expanduser().exists():
                continue
            try:
                from edgerlhf.models.adapters import find_artifact, read_artifact_meta

                used = read_artifact_meta(find_artifact(value)).get("use_chat_template", True)
            except (FileNotFoundError, ValueError, OSError):
                continue  # not an artifact: the stage's own check names that
            if used != self.chat_template:
                word = str(used).lower()
                errs.append(f"chat_template={str(self.chat_template).lower()}, but {key}={value!r} was trained with "
                            f"chat_template={word}: set chat_template={word} (a task file sets it for every stage)")
        return errs

    def check(self) -> list[str]:
        """Value rules; return one message per problem (subclasses extend)."""
        errs = []
        if self.dtype not in _DTYPES:
            errs.append(f"dtype={self.dtype!r} is not one of {sorted(_DTYPES)}")
        bad = [r for r in self.report_to if r not in _REPORT_TO]
        if bad:
            errs.append(f"report_to has {bad}; valid sinks are {sorted(_REPORT_TO)}")
        if "none" in self.report_to and len(self.report_to) > 1:
            errs.append("report_to: 'none' cannot be combined with other sinks")
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            errs.append(f"device={self.device!r}: use auto, cpu, cuda or cuda:N")
        m = self.model
        if m not in ("default", "tiny") and (m.startswith((".", "/", "~")) or Path(m).suffix) \
                and not Path(m).expanduser().exists():
            errs.append(f"model={m!r}: no such local folder (use 'default', 'tiny', a hub id or an existing folder)")
        return errs


@dataclass
class GoldMixin:
    """The gold scorer: the yardstick a stage is judged by (never trained on)."""

    gold: str = opt("vader", "gold scorer: vader | none (no gold: gain and win rate come from the learned RM, a proxy) | module:function | path/to/file.py:function (called as f(prompts, responses) -> list of floats) | a reward run folder (an independent RM as the gold)")

    def check_gold(self) -> list[str]:
        from edgerlhf.rewards.gold import check_gold

        return check_gold(self.gold)


@dataclass
class GoldEvalMixin(GoldMixin):
    """The gold evaluation a training stage runs on held-out prompts after training."""

    eval_prompts: str = opt("", "held-out prompts of the gold evaluation after training: empty = the built-in task's (when training on it; otherwise none is run), or a file any loader reads")
    gold_eval_prompts: int = opt(128, "held-out prompts sampled once after training (temperature 0.7) and scored by the gold scorer, with a 95% CI; 0 disables")

    def check_gold_eval(self) -> list[str]:
        errs = []
        if self.gold_eval_prompts < 0:
            errs.append(f"gold_eval_prompts={self.gold_eval_prompts} must be >= 0")
        if self.eval_prompts:
            errs += _check_dataset(self.eval_prompts, "eval_prompts")
        return errs

    def gold_eval_source(self, trains_on_builtin: bool) -> str | None:
        """Where the after-training gold evaluation's prompts come from: a file, 'builtin', or None (not run)."""
        if not self.gold_eval_prompts or self.gold == "none":
            return None
        return self.eval_prompts or ("builtin" if trains_on_builtin else None)


@dataclass
class LoraMixin:
    lora: bool = opt(True, "train a LoRA adapter (false: full fine-tuning)")
    lora_r: int = opt(16, "LoRA rank r")
    lora_alpha: int = opt(32, "LoRA alpha (scaling = alpha / r)")
    lora_dropout: float = opt(0.05, "dropout on the LoRA input")
    target_modules: list = opt(["all-linear"], "modules that get LoRA: ['all-linear'] or names such as [q_proj, v_proj]")
    lora_layers: int = opt(0, "LoRA only in the last N transformer blocks (0: all). Blocks below get no backward pass: measured on SmolLM2-135M (30 blocks), N=10 halves step time and peak memory")

    def check_lora(self) -> list[str]:
        errs = []
        if self.lora_r <= 0:
            errs.append(f"lora_r={self.lora_r} must be a positive integer")
        if self.lora_alpha <= 0:
            errs.append(f"lora_alpha={self.lora_alpha} must be positive")
        if not 0.0 <= self.lora_dropout < 1.0:
            errs.append(f"lora_dropout={self.lora_dropout} must be in [0, 1)")
        if self.lora_layers < 0:
            errs.append(f"lora_layers={self.lora_layers} must be >= 0 (0: all blocks)")
        if not self.target_modules:
            errs.append("target_modules is empty; use ['all-linear'] or a list of module names")
        return errs


@dataclass
class OptimMixin:
    """The optimizer's fields, shared by every training stage (supervised and online RL)."""

    learning_rate: float = opt(2e-4, "peak learning rate (AdamW)")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    lr_scheduler_type: str = opt("cosine", "learning-rate schedule: linear | cosine | constant | constant_with_warmup")
    warmup_ratio: float = opt(0.05, "fraction of optimizer steps spent warming up")
    gradient_accumulation_steps: int = opt(1, "micro-batches per optimizer step")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 disables)")
    gradient_checkpointing: bool = opt(False, "recompute activations in backward to save memory (works with LoRA)")

    def check_optim(self) -> list[str]:
        errs = []
        if not self.learning_rate > 0:
            errs.append(f"learning_rate={self.learning_rate} must be > 0")
        if self.weight_decay < 0:
            errs.append(f"weight_decay={self.weight_decay} must be >= 0")
        if self.lr_scheduler_type not in ("linear", "cosine", "constant", "constant_with_warmup"):
            errs.append(f"lr_scheduler_type={self.lr_scheduler_type!r}: use linear, cosine, constant or constant_with_warmup")
        errs += check_range(self, "warmup_ratio", 0, 1, hi_open=True)
        if self.gradient_accumulation_steps <= 0:
            errs.append(f"gradient_accumulation_steps={self.gradient_accumulation_steps} must be a positive integer")
        if self.max_grad_norm < 0:
            errs.append(f"max_grad_norm={self.max_grad_norm} must be >= 0")
        return errs


@dataclass
class TrainMixin(OptimMixin):
    """Supervised training over a data set (SFT, reward model)."""

    per_device_train_batch_size: int = opt(8, "sequences per micro-batch, per process (a step: this x gradient_accumulation_steps x processes)")
    num_train_epochs: float = opt(1.0, "passes over the training data (ignored when max_steps > 0)")
    max_steps: int = opt(-1, "optimizer steps; -1 means derive from num_train_epochs")
    logging_steps: int = opt(5, "log metrics every N optimizer steps")
    eval_steps: int = opt(0, "evaluate (and log a decoded sample) every N steps; 0: only at the end")

    def check_train(self) -> list[str]:
        errs = self.check_optim()
        if self.per_device_train_batch_size <= 0:
            errs.append(f"per_device_train_batch_size={self.per_device_train_batch_size} must be a positive integer")
        if self.max_steps <= 0 and self.max_steps != -1:
            errs.append(f"max_steps={self.max_steps}: use a positive number, or -1 to train num_train_epochs")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            errs.append(f"num_train_epochs={self.num_train_epochs} must be > 0 when max_steps=-1")
        if self.logging_steps <= 0:
            errs.append(f"logging_steps={self.logging_steps} must be a positive integer")
        if self.eval_steps < 0:
            errs.append(f"eval_steps={self.eval_steps} must be >= 0")
        return errs


def _check_dataset(value: str, key: str) -> list[str]:
    """'builtin', 'hf:<hub id>', or a local .jsonl/.json/.csv file."""
    if value in ("builtin", "") or value.startswith("hf:"):
        return []
    p = Path(value).expanduser()
    if p.suffix.lower() not in (".jsonl", ".json", ".csv"):
        return [f"{key}={value!r}: unsupported file type {p.suffix or '(none)'!r}; use a .jsonl, .json or .csv "
                "file, 'builtin', or 'hf:<hub id>' for a datasets hub id"]
    if not p.is_file():
        return [f"{key}={value!r}: file not found (use 'builtin', a .jsonl/.json/.csv file, or 'hf:<hub id>')"]
    return []


@dataclass
class SFTConfig(GoldEvalMixin, LoraMixin, TrainMixin, BaseConfig):
    """Supervised fine-tuning: teaches the base model the task's format."""

    stage: ClassVar[str] = "sft"

    dataset: str = opt("builtin", "'builtin' (the embedded review task), a .jsonl/.json/.csv file with prompt/completion or messages, or 'hf:<hub id>' when online")
    eval_dataset: str = opt("", "evaluation file (same formats); empty: the built-in task's held-out prompts, or a split of `dataset`")
    sft_from: str = opt("", "'chosen': `dataset` (and `eval_dataset`) are preference files (prompt/chosen/rejected or HH-RLHF transcripts) and SFT learns each pair's prompt -> chosen response, as the original HH setup did; empty: SFT rows")
    max_train_samples: int = opt(0, "use at most this many training rows (0: all)")
    max_eval_samples: int = opt(64, "held-out rows for eval loss (0: all)")
    max_length: int = opt(128, "truncate prompt+completion to this many tokens")
    learning_rate: float = opt(2e-4, "peak learning rate (AdamW); LoRA wants ~1e-4..5e-4, full fine-tuning ~1e-5")
    sample_prompts: int = opt(2, "prompts decoded before and after training (and at each evaluation)")
    sample_max_new_tokens: int = opt(48, "new tokens per decoded sample and per gold-evaluation response")

    def check(self) -> list[str]:
        errs = super().check() + self.check_train() + self.check_lora() + self.check_gold_eval()
        errs += self.check_gold() if self.gold_eval_prompts else []  # SFT uses its gold only there
        errs += _check_dataset(self.dataset, "dataset")
        if self.sft_from not in ("", "chosen"):
            errs.append(f"sft_from={self.sft_from!r}: use 'chosen' (a preference file's chosen side) or leave it empty")
        elif self.sft_from and self.dataset == "builtin":
            errs.append("sft_from=chosen needs `dataset` to be a preference file (the built-in task has SFT rows)")
        if self.eval_dataset:
            errs += _check_dataset(self.eval_dataset, "eval_dataset")
        if self.max_length < 8:
            errs.append(f"max_length={self.max_length} must be at least 8 tokens")
        for k in ("max_train_samples", "max_eval_samples", "sample_prompts"):
            if getattr(self, k) < 0:
                errs.append(f"{k}={getattr(self, k)} must be >= 0")
        if self.sample_max_new_tokens <= 0:
            errs.append(f"sample_max_new_tokens={self.sample_max_new_tokens} must be positive")
        return errs


@dataclass
class PrefsConfig(GoldMixin, BaseConfig):
    """Preference pairs: sampled from a policy and labelled by the gold scorer, or read from a file."""

    stage: ClassVar[str] = "prefs"

    policy: str = opt("", "SFT run folder (or its adapter/) to sample from; empty: sample from `model` itself")
    dataset: str = opt("generate", "'generate' (sample k responses per built-in prompt, label with the gold scorer) or a preference file (.jsonl/.json/.csv: prompt/chosen/rejected or HH-RLHF transcripts) or 'hf:<hub id>'")
    prompts: str = opt("builtin", "generate only: the prompts to sample pairs for: 'builtin' (the task's training prompts) or any file the loaders read (prompt-only, SFT or preference rows: their prompt part)")
    gold: str = opt("auto", "scores that label generated pairs (and, for a preference file, are recorded beside each pair as gold_chosen / gold_rejected): auto (vader when generating, none for a file) | vader | none | module:function | path/to/file.py:function | a reward run folder")
    num_prompts: int = opt(300, "prompts to sample (generate only; from a prompts file: at most this many)")
    samples_per_prompt: int = opt(4, "k responses per prompt; every pair of them is a candidate (k=4 gives 6)")
    temperature: float = opt(1.0, "sampling temperature")
    top_k: int = opt(0, "top-k sampling (0: off)")
    top_p: float = opt(1.0, "nucleus sampling threshold")
    max_new_tokens: int = opt(48, "tokens per sampled response")
    rollout_batch_size: int = opt(64, "prompts per generate call (bigger is faster on CPU until memory runs out)")
    label_noise: float = opt(0.15, "fraction of kept pairs whose label is flipped (synthetic-labeller noise, Gao et al. 2022)")
    tie_threshold: float = opt(0.1, "pairs whose gold scores differ by at most this are near-ties: dropped from training, kept in eval as 'all pairs'")
    eval_fraction: float = opt(0.1, "fraction of prompts held out (split by prompt: no prompt in both splits)")
    max_pairs_per_prompt: int = opt(0, "keep at most this many pairs per prompt (0: all)")
    max_length: int = opt(256, "rows whose prompt+response exceed this many tokens are bad rows (files only)")
    skip_bad_rows: bool = opt(False, "drop and count bad rows in files instead of stopping at the first")

    def check(self) -> list[str]:
        errs = super().check() + self.check_formatting("policy")
        if self.gold != "auto":
            errs += self.check_gold()
        if self.dataset != "generate":
            errs += _check_dataset(self.dataset, "dataset")
        elif self.gold == "none":
            errs.append("gold=none: generated pairs are labelled by the gold scorer; name one (vader, module:function, "
                        "a reward run folder) or give a preference file as `dataset`")
        if self.prompts != "builtin":
            errs += _check_dataset(self.prompts, "prompts")
        if self.policy and not Path(self.policy).expanduser().exists():
            errs.append(f"policy={self.policy!r}: no such run folder (pass the SFT run folder or leave empty)")
        for k in ("num_prompts", "max_new_tokens", "rollout_batch_size", "max_length"):
            if getattr(self, k) <= 0:
                errs.append(f"{k}={getattr(self, k)} must be a positive integer")
        if self.samples_per_prompt < 2:
            errs.append(f"samples_per_prompt={self.samples_per_prompt} must be at least 2 to form a pair")
        if not 0 <= self.label_noise < 0.5:
            errs.append(f"label_noise={self.label_noise} must be in [0, 0.5): at 0.5 labels carry no signal")
        if self.tie_threshold < 0:
            errs.append(f"tie_threshold={self.tie_threshold} must be >= 0")
        if not 0 < self.eval_fraction < 1:
            errs.append(f"eval_fraction={self.eval_fraction} must be in (0, 1)")
        errs += check_range(self, "temperature", 0, lo_open=True, why="pairs are sampled; a temperature of 0 would make every sample the same")
        errs += check_range(self, "top_p", 0, 1, lo_open=True, why="1 turns nucleus sampling off")
        if self.max_pairs_per_prompt < 0:
            errs.append(f"max_pairs_per_prompt={self.max_pairs_per_prompt} must be >= 0")
        return errs


@dataclass
class PairsMixin:
    """Training on preference pairs (reward model, DPO): where the pairs come from and how they are encoded."""

    prefs: str = opt("", "a prefs run folder, or a preference file (.jsonl/.json/.csv) or 'hf:<hub id>'")
    eval_prefs: str = opt("", "held-out preference file; empty: the prefs run's eval split, or 10% of `prefs` split by prompt")
    max_length: int = opt(192, "tokens of prompt+response per sequence (longer rows are bad rows)")
    skip_bad_rows: bool = opt(False, "drop and count bad rows instead of stopping at the first")
    max_train_pairs: int = opt(0, "use at most this many training pairs (0: all)")
    eval_batch_size: int = opt(32, "sequences per forward when scoring held-out pairs")
    shared_prefix: bool = opt(True, "run each pair's shared prefix (the prompt) once and both responses on its KV cache, in training and scoring: exact for a causal model, fewer tokens (off: both sequences whole, as before; gradient checkpointing always runs them whole)")

    def check_pairs(self) -> list[str]:
        errs = []
        if not self.prefs:
            errs.append("prefs is required: a prefs run folder (edgerlhf prefs ...) or a preference file")
        elif not Path(self.prefs).expanduser().is_dir():
            errs += _check_dataset(self.prefs, "prefs")
        if self.eval_prefs:
            errs += _check_dataset(self.eval_prefs, "eval_prefs")
        if self.max_length < 8:
            errs.append(f"max_length={self.max_length} must be at least 8 tokens")
        if self.max_train_pairs < 0:
            errs.append(f"max_train_pairs={self.max_train_pairs} must be >= 0")
        if self.eval_batch_size <= 0:
            errs.append(f"eval_batch_size={self.eval_batch_size} must be a positive integer")
        return errs


@dataclass
class RewardConfig(LoraMixin, TrainMixin, PairsMixin, BaseConfig):
    """Reward model: a one-output score head on the base model, LoRA on the body, Bradley-Terry loss."""

    stage: ClassVar[str] = "reward"

    learning_rate: float = opt(1e-3, "peak learning rate (AdamW) for the LoRA body and the score head; measured on the built-in task: 1e-3 reaches 0.80 held-out gold accuracy in one epoch where 3e-4 reaches 0.66")
    lora_layers: int = opt(10, "LoRA only in the last N transformer blocks (0: all); measured on SmolLM2-135M (30 blocks), a 16x64-token step: 2.3 s and 2.4 GB with 10 vs 4.1 s and 4.8 GB with all")
    per_device_train_batch_size: int = opt(8, "preference pairs per micro-batch (2x sequences), per process")
    margin: float = opt(0.0, "Bradley-Terry margin m: loss = -log sigmoid(r_chosen - r_rejected - m)")
    center_rewards_coef: float = opt(0.01, "weight of the reward-centering term coef * mean((r_c + r_r)^2), keeps rewards near zero mean (Eisenstein et al. 2023)")
    base_precision: str = opt("fp32", "precision of the frozen body during training: fp32, or int8 / int4 through bitsandbytes (QLoRA-style: the adapter and score head stay in floating point)")

    def check(self) -> list[str]:
        errs = super().check() + self.check_train() + self.check_lora() + self.check_pairs()
        if self.base_precision not in ("fp32", "int8", "int4"):
            errs.append(f"base_precision={self.base_precision!r}: use fp32, int8 or int4")
        if self.base_precision != "fp32" and not self.lora:
            errs.append("base_precision int8/int4 needs lora=true: a quantised body cannot be fully fine-tuned")
        if self.center_rewards_coef < 0:
            errs.append(f"center_rewards_coef={self.center_rewards_coef} must be >= 0")
        return errs


@dataclass
class DPOConfig(LoraMixin, TrainMixin, PairsMixin, BaseConfig):
    """DPO (Rafailov et al. 2023): the policy learns from preference pairs directly, no reward model. The SFT
    policy is merged into the base; the policy is a LoRA adapter on it and the reference that base with the
    adapter off (the SFT change kept, as in PPO). The reference's log-probs are computed once, before training."""

    stage: ClassVar[str] = "dpo"
    RENAMED: ClassVar[dict] = {
        "precompute_ref_log_probs": (None, "the reference's log-probs are always computed once, before training, and cached"),
        "ref_model": (None, "the reference is the SFT policy itself (the adapter disabled): nothing to name"),
        "max_prompt_length": (None, "nothing is truncated: a pair longer than `max_length` is a bad row (skip_bad_rows=true drops it)"),
        "max_completion_length": (None, "nothing is truncated: a pair longer than `max_length` is a bad row (skip_bad_rows=true drops it)"),
    }

    policy: str = opt("", "SFT run folder (or its adapter/): merged into the base, so the reference includes it; empty: `model` itself")
    beta: float = opt(0.1, "DPO's beta: the strength of the implicit KL to the reference (TRL's default 0.1)")
    loss_type: str = opt("sigmoid", "sigmoid (Rafailov et al. 2023, -log sigmoid(beta h)) | ipo (Azar et al. 2023, (h - 1/(2 beta))^2 on per-token mean log-probs)")
    label_smoothing: float = opt(0.0, "sigmoid only: the labels' assumed flip probability (cDPO); 0 is plain DPO")
    learning_rate: float = opt(5e-5, "peak learning rate (AdamW) for the LoRA adapter")
    lora_layers: int = opt(10, "LoRA only in the last N transformer blocks (0: all), as the online presets")
    per_device_train_batch_size: int = opt(8, "preference pairs per micro-batch (2x sequences), per process")

    def check(self) -> list[str]:
        errs = super().check() + self.check_train() + self.check_lora() + self.check_pairs()
        errs += self.check_formatting("policy")
        if not self.lora:
            errs.append("lora=false: DPO here trains a LoRA adapter (its reference is the base with the adapter off)")
        if self.loss_type not in ("sigmoid", "ipo"):
            errs.append(f"loss_type={self.loss_type!r}: use sigmoid or ipo")
        errs += check_range(self, "beta", 0, lo_open=True)
        errs += check_range(self, "label_smoothing", 0, 0.5, hi_open=True)
        if self.label_smoothing and self.loss_type != "sigmoid":
            errs.append(f"label_smoothing={self.label_smoothing} applies to loss_type=sigmoid only")
        if self.policy and not Path(self.policy).expanduser().exists():
            errs.append(f"policy={self.policy!r}: no such folder")
        return errs


@dataclass
class RMEvalConfig(BaseConfig):
    """Reward-model precision table: size, memory, latency and agreement with the fp32 RM."""

    stage: ClassVar[str] = "rm-eval"

    rm: str = opt("", "reward run folder (or its adapter/)")
    reference: str = opt("", "RM whose fp32 scores every agreement is measured against; empty: `rm` itself (set it to the fp32-trained RM when `rm` was trained QLoRA-style)")
    precisions: list = opt([], "precisions to measure (fp32, bf16, fp16, int8, int4; a backend may be named: int8:bnb, int8:torchao, int4:bnb); empty: fp32/int8/int4 on CPU, bf16/int8/int4 on a GPU")
    pairs: str = opt("", "held-out preference file; empty: the held-out split of the prefs run the RM was trained on")
    max_pairs: int = opt(0, "measure on at most this many held-out pairs (0: all)")
    batch_size: int = opt(16, "sequences per forward (latency is reported per batch)")
    isolate: bool = opt(True, "measure each precision in its own process, so each peak memory is its own")

    def check(self) -> list[str]:
        from edgerlhf.models.precision import check_precision

        errs = super().check()
        if not self.rm:
            errs.append("rm is required: a reward run folder")
        elif not Path(self.rm).expanduser().exists():
            errs.append(f"rm={self.rm!r}: no such folder")
        for p in self.precisions:
            try:
                check_precision(p)
            except ValueError as e:
                errs.append(f"precisions: {e}")
        if self.pairs:
            errs += _check_dataset(self.pairs, "pairs")
        if self.reference and not Path(self.reference).expanduser().exists():
            errs.append(f"reference={self.reference!r}: no such folder")
        if self.max_pairs < 0:
            errs.append(f"max_pairs={self.max_pairs} must be >= 0")
        if self.batch_size <= 0:
            errs.append(f"batch_size={self.batch_size} must be a positive integer")
        return errs


@dataclass
class OnlineRLConfig(GoldEvalMixin, LoraMixin, OptimMixin, BaseConfig):
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
        "generation_batch_size": ("num_rollouts_per_step", "TRL's `generation_batch_size` is `num_rollouts_per_step` here (episodes per step)"),
        "per_device_train_batch_size": ("mini_batch_size", "the update's micro-batch (episodes per forward/backward) is `mini_batch_size`"),
    }

    policy: str = opt("", "SFT run folder (or its adapter/): merged into the base, so the reference includes it; empty: `model` itself")
    reward: str = opt("", "reward run folder (trained fp32 or QLoRA-style) or a quantized RM folder (edgerlhf quantize)")
    reward_precision: str = opt("fp32", "precision of the reward model: fp32 | bf16 | fp16 | int8 | int4 (a backend may be named, e.g. int8:bnb); ignored for a quantized RM folder, which loads as stored")
    prompts: str = opt("builtin", "'builtin' (the task's training prompts) or a .jsonl/.json/.csv file with a `prompt` column (string or messages)")
    max_prompts: int = opt(0, "use at most this many prompts (0: all)")
    layout: str = opt("shared", "shared: one base model serves every role | separate: a copy of the base per role (the classic layout, to measure the saving)")
    base_precision: str = opt("fp32", "precision of the frozen base under the LoRA adapters: fp32, or int8 / int4 through bitsandbytes (QLoRA-style)")
    num_rollouts_per_step: int = opt(32, "episodes (prompt + sampled response) per step, over all processes under torchrun / accelerate launch (each takes its share); with groups, prompts per step x samples per prompt")
    rollout_batch_size: int = opt(8, "episodes per generate / log-prob / scoring forward during rollouts (per process)")
    mini_batch_size: int = opt(2, "episodes per forward/backward micro-batch in the update (with several processes, at most this per process: an optimizer step's mini_batch_size x gradient_accumulation_steps episodes are split among them)")
    gradient_accumulation_steps: int = opt(4, "micro-batches per optimizer step (an optimizer step sees mini_batch_size x this episodes, over all processes)")
    max_steps: int = opt(20, "steps (ignored when total_episodes > 0)")
    total_episodes: int = opt(0, "episodes in all; 0: max_steps x num_rollouts_per_step")
    learning_rate: float = opt(1e-4, "AdamW learning rate for the adapter(s) (and PPO's value head)")
    lr_scheduler_type: str = opt("constant", "linear | cosine | constant | constant_with_warmup (over optimizer steps)")
    warmup_ratio: float = opt(0.0, "fraction of optimizer steps spent warming up")
    max_grad_norm: float = opt(0.5, "gradient clipping norm (0 disables)")
    gradient_checkpointing: bool = opt(False, "recompute activations in the update's backward (less memory, slower)")
    lean_update: bool = opt(False, "CPU (glibc): during the update, blocks of 1 MiB and more are mapped and returned to the system as soon as they are freed; measured on SmolLM2 GRPO (8 x 48 tokens): about 0.3-0.5 GB lower peak, update about 40% slower")
    cache_trunk: str = opt("auto", "auto: with LoRA in the top lora_layers blocks only, run the frozen blocks below once per step and reuse their output in every later forward (old log-probs, values, reference, each update epoch); exact | off: recompute them every pass")
    response_length: int = opt(48, "new tokens per rollout response (generation stops earlier at EOS)")
    sampler: str = opt("edgerlhf", "rollout sampling: edgerlhf (its own decode loop: identical prompts prefilled once, a row that ended leaves the batch, the LM head in its faster orientation, and the frozen trunk's output kept from the decode instead of recomputed) | generate (transformers' generate, the baseline); the same distribution")
    rollout_logprobs: bool = opt(False, "sampler=edgerlhf: take the old log-probs, entropy and (value head) values from the decode itself instead of a pass of the top blocks; faster, but the decode's cached attention rounds differently, so the first ratio is 1 and the KL at the start 0 only to fp32 rounding (measured on SmolLM2: |log-prob difference| <= 3e-5)")
    temperature: float = opt(0.7, "sampling temperature of the rollouts (log-probs use the same temperature)")
    top_k: int = opt(0, "top-k sampling (0: off)")
    top_p: float = opt(1.0, "nucleus sampling threshold")
    missing_eos_penalty: float = opt(0.0, "subtracted from the score of a response that never emits EOS within response_length (0: off)")
    save_steps: int = opt(0, "write a checkpoint every N steps (0: only on Ctrl-C / SIGTERM); always atomic")
    save_total_limit: int = opt(2, "keep this many newest checkpoints")
    resume: str = opt("", "continue a run: its run folder (latest checkpoint) or one checkpoint folder; the run continues in that folder")
    max_bad_steps: int = opt(3, "stop after this many consecutive steps with NaN/inf in rewards, loss or gradients (each is skipped)")
    sample_every: int = opt(1, "log one decoded rollout with its rewards every N steps")

    # -- what the engine reads; each algorithm's config maps its own key names onto these --------------
    @property
    def samples_per_prompt(self) -> int:
        return 1

    @property
    def update_epochs(self) -> int:
        raise NotImplementedError

    @property
    def steps(self) -> int:
        return self.total_episodes // self.num_rollouts_per_step if self.total_episodes else self.max_steps

    def check(self) -> list[str]:
        from edgerlhf.models.precision import check_precision

        errs = super().check() + self.check_lora() + self.check_optim() + self.check_gold() + self.check_gold_eval()
        errs += self.check_formatting("policy")
        if not self.lora:
            errs.append(f"lora=false: {self.stage} here trains a LoRA adapter on a shared base (the reference is that base); set lora=true")
        if self.reward and not Path(self.reward).expanduser().exists():
            errs.append(f"reward={self.reward!r}: no such folder")
        if self.policy and not Path(self.policy).expanduser().exists():
            errs.append(f"policy={self.policy!r}: no such run folder (pass the SFT run folder or leave empty)")
        try:
            check_precision(self.reward_precision)
        except ValueError as e:
            errs.append(f"reward_precision: {e}")
        if self.prompts != "builtin":
            errs += _check_dataset(self.prompts, "prompts")
        for k, choices in (("layout", ("shared", "separate")), ("base_precision", ("fp32", "int8", "int4")),
                           ("cache_trunk", ("auto", "off")), ("sampler", ("edgerlhf", "generate"))):
            if getattr(self, k) not in choices:
                errs.append(f"{k}={getattr(self, k)!r}: use one of {', '.join(choices)}")
        for k in ("num_rollouts_per_step", "rollout_batch_size", "mini_batch_size", "response_length",
                  "max_bad_steps", "save_total_limit", "sample_every"):
            if getattr(self, k) <= 0:
                errs.append(f"{k}={getattr(self, k)} must be a positive integer")
        for k in ("max_prompts", "total_episodes", "save_steps", "top_k"):
            if getattr(self, k) < 0:
                errs.append(f"{k}={getattr(self, k)} must be >= 0")
        if self.total_episodes == 0 and self.max_steps <= 0:
            errs.append(f"max_steps={self.max_steps} must be positive (or set total_episodes)")
        if self.total_episodes and self.total_episodes < self.num_rollouts_per_step:
            errs.append(f"total_episodes={self.total_episodes} is less than one step (num_rollouts_per_step={self.num_rollouts_per_step})")
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
        "num_generations": (None, "PPO samples one response per prompt; for groups of samples use `edgerlhf grpo` or `edgerlhf rloo`"),
    }

    value_model: str = opt("head", "head: a linear value head on the policy's trunk (one forward gives log-probs and values) | adapter: a second LoRA adapter plus head (a value trunk of its own, one more forward)")
    num_ppo_epochs: int = opt(2, "passes over each step's episodes")
    cliprange: float = opt(0.2, "policy ratio clip epsilon")
    cliprange_value: float = opt(0.2, "value clip around the rollout values")
    vf_coef: float = opt(0.1, "weight of the value loss")
    ent_coef: float = opt(0.0, "weight of the entropy bonus (loss -= ent_coef * entropy)")
    gamma: float = opt(1.0, "discount")
    lam: float = opt(0.95, "GAE lambda")
    kl_coef: float = opt(0.05, "coefficient of the per-token KL penalty against the reference (initial value when adaptive)")
    kl_estimator: str = opt("k1", "per-token KL estimator in the penalty: k1 (log p - log q) | k3 ((r-1) - log r, never negative)")
    kl_adaptive: bool = opt(False, "adapt kl_coef so the per-sequence KL tracks kl_target (Ziegler et al. 2019)")
    kl_target: float = opt(6.0, "target per-sequence KL (nats) for the adaptive coefficient")
    kl_horizon: int = opt(10000, "horizon (episodes) of the adaptive coefficient")
    whiten_rewards: bool = opt(False, "whiten the per-token rewards (keeping their mean) before GAE")
    target_approx_kl: float = opt(0.0, "stop a step's remaining epochs once an optimizer step's approximate KL (0.5 mean (log ratio)^2) exceeds this; 0 disables")

    @property
    def update_epochs(self) -> int:
        return self.num_ppo_epochs

    def check(self) -> list[str]:
        errs = super().check()
        for k, choices in (("value_model", ("head", "adapter")), ("kl_estimator", ("k1", "k3"))):
            if getattr(self, k) not in choices:
                errs.append(f"{k}={getattr(self, k)!r}: use one of {', '.join(choices)}")
        if self.num_ppo_epochs <= 0:
            errs.append(f"num_ppo_epochs={self.num_ppo_epochs} must be a positive integer")
        for k in ("cliprange_value", "kl_target"):  # learning_rate: OptimMixin.check_optim
            if not getattr(self, k) > 0:
                errs.append(f"{k}={getattr(self, k)} must be > 0")
        for k in ("vf_coef", "ent_coef", "kl_coef", "target_approx_kl"):
            if getattr(self, k) < 0:
                errs.append(f"{k}={getattr(self, k)} must be >= 0")
        errs += check_range(self, "cliprange", 0, 1, lo_open=True, hi_open=True,
                            why="the probability ratio is clipped to [1 - cliprange, 1 + cliprange]; 0.1-0.3 is usual")
        errs += check_range(self, "gamma", 0, 1, lo_open=True, why="the discount per token; 1 (no discount) is usual")
        errs += check_range(self, "lam", 0, 1, why="GAE lambda: 0 is one-step TD, 1 is Monte Carlo; 0.95 is usual")
        if self.kl_horizon <= 0:
            errs.append(f"kl_horizon={self.kl_horizon} must be a positive integer")
        return errs


@dataclass
class _GroupConfig(OnlineRLConfig):
    """Fields of the value-free group methods, under TRL's names: k samples per prompt, a clipped ratio with
    an optional asymmetric upper bound, the KL coefficient `beta`."""

    RENAMED: ClassVar[dict] = {
        **OnlineRLConfig.RENAMED,
        "kl_coef": ("beta", "TRL's GRPO/RLOO (and this stage) call the KL coefficient `beta`"),
        "init_kl_coef": ("beta", "the KL coefficient is `beta` here, as in TRL's GRPO/RLOO"),
        "cliprange": ("epsilon", "TRL's GRPO/RLOO (and this stage) call the ratio clip `epsilon` (and `epsilon_high` for an asymmetric upper bound)"),
        "eps_clip": ("epsilon", "OpenRLHF's `eps_clip` is `epsilon` here"),
        "num_ppo_epochs": ("num_iterations", "TRL's GRPO/RLOO (and this stage) call the passes over a step's episodes `num_iterations`"),
        "ppo_epochs": ("num_iterations", "the passes over a step's episodes are `num_iterations` here, as in TRL's GRPO/RLOO"),
        "rloo_k": ("num_generations", "old TRL's `rloo_k` is `num_generations` (samples per prompt)"),
        "n_samples_per_prompt": ("num_generations", "OpenRLHF's `n_samples_per_prompt` is `num_generations` here, as in TRL"),
        "group_size": ("num_generations", "the group size (samples per prompt) is `num_generations`, as in TRL"),
        "value_model": (None, "value-free methods have no value model; for one use `edgerlhf ppo`"),
        "vf_coef": (None, "value-free methods have no value loss; for one use `edgerlhf ppo`"),
    }

    num_generations: int = opt(4, "samples per prompt (a group); the baseline of each sample is computed from its group")
    num_iterations: int = opt(1, "passes over each step's episodes (TRL's num_iterations; 1 is fully on-policy)")
    epsilon: float = opt(0.2, "ratio clip: the ratio is clipped to [1 - epsilon, 1 + epsilon_high]")
    epsilon_high: float | None = opt(None, "upper ratio clip (DAPO's clip-higher, e.g. 0.28); empty: epsilon")
    mask_truncated_completions: bool = opt(False, "drop responses that hit response_length without EOS from the loss (DAPO)")

    @property
    def samples_per_prompt(self) -> int:
        return self.num_generations

    @property
    def update_epochs(self) -> int:
        return self.num_iterations

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
class GRPOConfig(_GroupConfig):
    """GRPO (Shao et al. 2024, DeepSeekMath): no value function; each sample's advantage is its reward minus
    its group's mean (scaled by the group's std, the batch's, or not at all); KL (k3) in the loss with
    weight `beta`, which defaults to 0, so the reference forward is skipped. Loss aggregation as TRL's
    `loss_type`: grpo, bnpo, dr_grpo, dapo."""

    stage: ClassVar[str] = "grpo"

    beta: float = opt(0.0, "weight of the per-token k3 KL to the reference in the loss (TRL's default 0: no reference forward at all)")
    scale_rewards: str = opt("group", "advantage scale: group (divide by the group's std) | batch (the step's std) | none (Dr. GRPO)")
    loss_type: str = opt("dapo", "token-loss aggregation: grpo (per-sequence mean, then mean) | bnpo (mean over the micro-batch's tokens) | dr_grpo (sum / (sequences x response_length)) | dapo (sum / tokens of the optimizer step)")

    def check(self) -> list[str]:
        errs = super().check()
        for k, choices in (("scale_rewards", ("group", "batch", "none")), ("loss_type", ("grpo", "bnpo", "dr_grpo", "dapo"))):
            if getattr(self, k) not in choices:
                errs.append(f"{k}={getattr(self, k)!r}: use one of {', '.join(choices)}")
        return errs


@dataclass
class RLOOConfig(_GroupConfig):
    """RLOO (Ahmadian et al. 2024): no value function; each sample's baseline is the mean reward of the other
    samples of its prompt; the KL (k1, summed over the response) is subtracted from the reward with weight
    `beta`, as TRL does; the ratio is clipped per sequence."""

    stage: ClassVar[str] = "rloo"

    beta: float = opt(0.05, "weight of the sequence KL to the reference subtracted from the reward (0: no reference forward)")
    normalize_advantages: bool = opt(False, "whiten the advantages over the step")


@dataclass
class EvalConfig(GoldMixin, BaseConfig):
    """Evaluate a policy on held-out prompts against a baseline (by default its own SFT policy)."""

    stage: ClassVar[str] = "eval"

    policy: str = opt("", "the policy to evaluate: a PPO / GRPO / RLOO or SFT run folder (or its adapter/)")
    baseline: str = opt("auto", "policy compared against (win rate, paired gold gain, KL): 'auto' (the SFT policy an RL policy started from), a run folder, 'base' (the bare model), or 'none'")
    reward: str = opt("auto", "reward model for the learned-RM mean: 'auto' (the one the RL run used, at its precision), a reward run folder, or 'none'")
    reward_precision: str = opt("", "precision of `reward` (empty: the one the RL run used, else fp32)")
    num_prompts: int = opt(128, "held-out prompts: the first N of `prompts`")
    prompts: str = opt("", "evaluation prompts: empty = the built-in task's held-out prompts; or a file any loader reads (.jsonl/.json/.csv: prompt-only, SFT or preference rows, HH-RLHF transcripts; their prompt part)")
    temperature: float = opt(0.7, "sampling temperature")
    max_new_tokens: int = opt(48, "new tokens per response")
    batch_size: int = opt(64, "prompts per generate call")
    num_samples: int = opt(6, "prompt/response examples kept in the summary")
    baseline_eval: str = opt("", "an eval run folder of the baseline policy itself (same prompts, seed, temperature, length): its responses are reused instead of sampled again")

    def check(self) -> list[str]:
        errs = super().check() + self.check_formatting("policy")
        if not self.policy:
            errs.append("policy is required: a PPO or SFT run folder")
        elif not Path(self.policy).expanduser().exists():
            errs.append(f"policy={self.policy!r}: no such folder")
        errs += self.check_gold()
        if self.prompts and not self.prompts.startswith("hf:") and not Path(self.prompts).expanduser().is_file():
            errs.append(f"prompts={self.prompts!r}: no such file (or leave it empty for the built-in held-out prompts)")
        if self.baseline_eval and not (Path(self.baseline_eval).expanduser() / "responses.jsonl").is_file():
            errs.append(f"baseline_eval={self.baseline_eval!r}: not an eval run folder (no responses.jsonl)")
        for k in ("baseline", "reward"):
            v = getattr(self, k)
            if v not in ("auto", "none", "base", "") and not Path(v).expanduser().exists():
                errs.append(f"{k}={v!r}: no such folder (or use auto / none{' / base' if k == 'baseline' else ''})")
        for k in ("num_prompts", "max_new_tokens", "batch_size"):
            if getattr(self, k) <= 0:
                errs.append(f"{k}={getattr(self, k)} must be a positive integer")
        if self.temperature < 0:
            errs.append(f"temperature={self.temperature} must be >= 0")
        return errs


STAGE_CONFIGS: dict[str, type[BaseConfig]] = {"sft": SFTConfig, "prefs": PrefsConfig, "reward": RewardConfig,
                                              "rm-eval": RMEvalConfig, "ppo": PPOConfig, "grpo": GRPOConfig,
                                              "rloo": RLOOConfig, "dpo": DPOConfig, "eval": EvalConfig}
ONLINE_STAGES = tuple(k for k, c in STAGE_CONFIGS.items() if issubclass(c, OnlineRLConfig))
# the stages that run data-parallel under torchrun / accelerate launch (the others run in one process)
DATA_PARALLEL_STAGES = ("sft", "reward", "dpo") + ONLINE_STAGES


# -- loading -------------------------------------------------------------------------------------------

def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Coerce YAML/override values to the field type; raise ValueError with a readable message."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if typ is list or origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}={value!r} must be a list (YAML list or comma-separated)")
        return list(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ValueError(f"{key}={value!r} must be true or false")
    if typ is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ValueError(f"{key}={value!r} must be an integer")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{key}={value!r} must be a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{key}={value!r} must be a finite number")
        return float(value)
    if typ is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{key}={value!r} must be a string")
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted off / on / no / yes as a boolean
            return "on" if value else "off"
        return str(value)
    return value


def unknown_key_message(key: str, valid: list[str], stage: str = "", renamed: dict | None = None) -> str:
    where = f" for stage {stage!r}" if stage else ""
    if renamed and key in renamed:  # the stage's own table first: the same old name may mean another key here
        new, why = renamed[key]
        return f"unknown key {key!r}: renamed — {why}" if new in valid else f"unknown key {key!r}{where}: {why}"
    if key in RENAMED_KEYS:
        new, why = RENAMED_KEYS[key]
        if new in valid:
            return f"unknown key {key!r}: renamed — {why}"
        if key == "batch_size" and "num_rollouts_per_step" in valid:
            return "unknown key 'batch_size': renamed — an online-RL step's batch (episodes per step) is `num_rollouts_per_step`"
        return f"unknown key {key!r}{where} ({why}; it does not apply to this stage)"
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r}{where}{hint}"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x,y"]`` -> ``{"a": 1, "b": "x,y"}`` (values parsed as YAML scalars)."""
    out, errs = {}, []
    for it in items:
        if "=" not in it:
            errs.append(f"override {it!r} is not key=value")
            continue
        k, v = it.split("=", 1)
        k = k.strip().replace("-", "_")
        try:
            out[k] = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError:
            out[k] = v
        if isinstance(out[k], bool) and v.strip().lower() not in ("true", "false"):
            out[k] = v.strip()  # off / on / yes / no stay words: a string option may use them (bool fields coerce)
    if errs:
        raise ConfigError(errs, "command-line overrides")
    return out


def load_config(cls: type[BaseConfig], path: str | Path | None = None, overrides: dict | list | None = None,
                base: dict | None = None, preset: str | None = None) -> BaseConfig:
    """Build and validate a stage config: defaults < ``base`` < ``preset`` < the YAML file at ``path`` <
    ``overrides`` (a dict, or ``["key=value", ...]``). Every problem is reported in one :class:`ConfigError`."""
    from edgerlhf.presets import STAGE_PRESETS

    raw: dict[str, Any] = dict(base or {})
    source = "config"
    if preset:
        known = STAGE_PRESETS.get(cls.stage, {})
        if preset not in known:
            raise ConfigError([f"unknown preset {preset!r} for stage {cls.stage!r}; use one of "
                               f"{', '.join(sorted(known)) or '(none defined)'}"], "preset")
        raw.update(known[preset])
    if path:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError([f"config file {str(p)!r} not found"], source)
        raw.update(read_yaml_mapping(p))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    raw.update(overrides or {})
    return from_dict(cls, raw, source)


def read_yaml_mapping(path: Path) -> dict:
    """A YAML file whose top level is a mapping (config and task files); a ConfigError naming the file otherwise."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError([f"not valid YAML: {e}"], str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(["top level must be a mapping of key: value"], str(path))
    return data


def from_dict(cls: type[BaseConfig], raw: dict, source: str = "config") -> BaseConfig:
    types_ = _field_types(cls)
    errs, kwargs = [], {}
    raw = dict(raw)
    if raw.get("task"):  # a task file's settings come first: everything given here overrides them
        from edgerlhf.data.taskfile import load_task, stage_settings

        task = load_task(str(raw["task"]))  # every problem with the task file, in one ConfigError
        raw = {**stage_settings(task, cls), **raw, "task": task.path}
    stage = raw.pop("stage", cls.stage)  # a dumped config.yaml carries its stage
    if stage != cls.stage:
        errs.append(f"this config is for stage {stage!r}, not {cls.stage!r}")
    for k, v in raw.items():
        if k not in types_:
            errs.append(unknown_key_message(k, sorted(types_), cls.stage, getattr(cls, "RENAMED", None)))
            continue
        try:
            kwargs[k] = _coerce(v, types_[k], k)
        except ValueError as e:
            errs.append(str(e))
    try:
        cfg = cls(**kwargs)
    except TypeError as e:  # pragma: no cover - every field has a default
        raise ConfigError(errs + [str(e)], source) from None
    errs += cfg.check()  # value rules run on the keys that parsed, so every problem shows at once
    if errs:
        raise ConfigError(errs, source)
    return cfg


def to_dict(cfg: BaseConfig) -> dict:
    return {"stage": cfg.stage, **dataclasses.asdict(cfg)}


def config_help(cls: type[BaseConfig]) -> str:
    lines = [f"{cls.stage} config keys (YAML file and/or key=value overrides):"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name:<30} {default!r:<16} {f.metadata.get('help', '')}")
    return "\n".join(lines)
