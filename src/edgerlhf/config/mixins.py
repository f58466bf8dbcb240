"""What every stage config shares: :class:`BaseConfig` (model, output, seed, device, dtype, sinks, chat template,
task) and the mixins a stage combines (gold, held-out gold evaluation, LoRA, optimizer, supervised training,
preference pairs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgerlhf.config.core import check_range, opt
from edgerlhf.config.refs import check_dataset, check_ensemble, check_gold, formatting_mismatch

_REPORT_TO = {"none", "tensorboard", "mlflow", "wandb"}
_DTYPES = {"auto", "fp32", "bf16", "fp16"}


@dataclass
class BaseConfig:
    """Fields every stage shares."""

    stage: ClassVar[str] = "base"

    model: str = opt("default", "base model: 'default' (embedded SmolLM2-135M-Instruct), 'tiny' (random 2-layer Llama "
                                "for tests), a hub id, or a local folder")
    output_dir: str = opt("runs", "where run folders are created")
    run_name: str = opt("", "run folder name; empty means '<stage>-<timestamp>'")
    seed: int = opt(42, "random seed (python, numpy, torch)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = opt("auto", "compute dtype: auto (fp32 on CPU, bf16 on a GPU that supports it) | fp32 | bf16 | fp16")
    report_to: list = opt(["tensorboard"], "metric sinks besides metrics.jsonl: none | tensorboard | mlflow | wandb (a "
                                           "list)")
    progress: bool = opt(True, "show progress bars")
    chat_template: bool = opt(True, "format rows with the model's chat template (false: plain text, prompt then "
                                    "response then EOS, as for a base model or a text-continuation task); recorded in "
                                    "each artifact, and a stage reading an artifact must use the same")
    task: str = opt("", "a task file (YAML) naming the data, gold and response length (README: 'Your own task'; "
                        "'builtin': the shipped default); its settings come before presets, the config file and "
                        "key=value overrides")

    # -- validation --------------------------------------------------------------------------------
    def check_formatting(self, *keys: str) -> list[str]:
        """Input artifacts (policy, reward model) must have been trained with this config's chat_template setting."""
        return [msg for key in keys if (msg := formatting_mismatch(key, getattr(self, key, ""), self.chat_template))]

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

    gold: str = opt("vader", "gold scorer: vader | none (no gold: gain and win rate come from the learned RM, a proxy) "
                             "| module:function | path/to/file.py:function (called as f(prompts, responses) -> list of "
                             "floats) | a reward run folder (an independent RM as the gold)")

    def check_gold(self) -> list[str]:
        return check_gold(self.gold)


@dataclass
class EnsembleMixin:
    """How a reward-model ensemble (``edgerlhf reward members=K``) serves; a single RM ignores these."""

    ensemble: str = opt("auto", "how an ensemble RM's K members give one score, each member first normalised on its "
                                "training pairs: auto (= mean) | mean | min (worst case, WCO) | uwo (mean - uwo_lambda "
                                "x the members' variance; Coste et al. 2023) | warm (one RM: the members' weights "
                                "averaged, Ramé et al. 2024; one RM's cost) | member-N (member N alone); a single RM "
                                "takes only auto")
    uwo_lambda: float = opt(0.5, "ensemble=uwo: the weight of the members' variance (on normalised scores: a variance "
                                 "of 1 costs half a standard deviation at 0.5); not tuned here")
    ensemble_layout: str = opt("shared", "ensemble=mean|min|uwo: shared (one base at the precision, K LoRA adapters "
                                         "and heads on it: about one RM's memory) | merged (K merged RMs, each at "
                                         "the precision: K times the memory)")

    def check_ensemble(self, key: str, precisions=()) -> list[str]:
        return check_ensemble(key, getattr(self, key, ""), self.ensemble, self.uwo_lambda, self.ensemble_layout,
                              precisions)


@dataclass
class GoldEvalMixin(GoldMixin):
    """The gold evaluation a training stage runs on held-out prompts after training."""

    eval_prompts: str = opt("", "held-out prompts of the gold evaluation after training: empty = the built-in task's "
                                "(when training on it; otherwise none is run), or a file any loader reads")
    gold_eval_prompts: int = opt(128, "held-out prompts sampled once after training (temperature 0.7) and scored by "
                                      "the gold scorer, with a 95% CI; 0 disables")

    def check_gold_eval(self) -> list[str]:
        errs = []
        if self.gold_eval_prompts < 0:
            errs.append(f"gold_eval_prompts={self.gold_eval_prompts} must be >= 0")
        if self.eval_prompts:
            errs += check_dataset(self.eval_prompts, "eval_prompts")
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
    target_modules: list = opt(["all-linear"], "modules that get LoRA: ['all-linear'] or names such as "
                                               "[q_proj, v_proj]")
    lora_layers: int = opt(0, "LoRA only in the last N transformer blocks (0: all). Blocks below get no backward pass: "
                              "measured on SmolLM2-135M (30 blocks), N=10 halves step time and peak memory")

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
            errs.append(f"lr_scheduler_type={self.lr_scheduler_type!r}: use linear, cosine, constant or "
                        "constant_with_warmup")
        errs += check_range(self, "warmup_ratio", 0, 1, hi_open=True)
        if self.gradient_accumulation_steps <= 0:
            errs.append(f"gradient_accumulation_steps={self.gradient_accumulation_steps} must be a positive integer")
        if self.max_grad_norm < 0:
            errs.append(f"max_grad_norm={self.max_grad_norm} must be >= 0")
        return errs


@dataclass
class TrainMixin(OptimMixin):
    """Supervised training over a data set (SFT, reward model)."""

    per_device_train_batch_size: int = opt(8, "sequences per micro-batch, per process (a step: this x "
                                              "gradient_accumulation_steps x processes)")
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


@dataclass
class PairsMixin:
    """Training on preference pairs (reward model, DPO): where the pairs come from and how they are encoded."""

    prefs: str = opt("", "a prefs run folder, or a preference file (.jsonl/.json/.csv) or 'hf:<hub id>'")
    eval_prefs: str = opt("", "held-out preference file; empty: the prefs run's eval split, or 10% of `prefs` split by "
                              "prompt")
    max_length: int = opt(192, "tokens of prompt+response per sequence (longer rows are bad rows)")
    skip_bad_rows: bool = opt(False, "drop and count bad rows instead of stopping at the first")
    max_train_pairs: int = opt(0, "use at most this many training pairs (0: all)")
    eval_batch_size: int = opt(32, "sequences per forward when scoring held-out pairs")
    shared_prefix: bool = opt(True, "run each pair's shared prefix (the prompt) once and both responses on its KV "
                                    "cache, in training and scoring: exact for a causal model, fewer tokens (off: both "
                                    "sequences whole, as before; gradient checkpointing always runs them whole)")

    def check_pairs(self) -> list[str]:
        errs = []
        if not self.prefs:
            errs.append("prefs is required: a prefs run folder (edgerlhf prefs ...) or a preference file")
        elif not Path(self.prefs).expanduser().is_dir():
            errs += check_dataset(self.prefs, "prefs")
        if self.eval_prefs:
            errs += check_dataset(self.eval_prefs, "eval_prefs")
        if self.max_length < 8:
            errs.append(f"max_length={self.max_length} must be at least 8 tokens")
        if self.max_train_pairs < 0:
            errs.append(f"max_train_pairs={self.max_train_pairs} must be >= 0")
        if self.eval_batch_size <= 0:
            errs.append(f"eval_batch_size={self.eval_batch_size} must be a positive integer")
        return errs
