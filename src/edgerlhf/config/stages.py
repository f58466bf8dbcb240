"""The configs of the stages that are not online RL: SFT, preference pairs, reward model, DPO, the RM precision
table and the evaluation. Each adds only its own keys to :class:`~edgerlhf.config.mixins.BaseConfig` and the
mixins; the online-RL configs are in :mod:`edgerlhf.config.online`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgerlhf.config.core import check_non_negative, check_positive_ints, check_range, opt
from edgerlhf.config.mixins import (
    BaseConfig,
    EnsembleMixin,
    GoldEvalMixin,
    GoldMixin,
    LoraMixin,
    PairsMixin,
    TrainMixin,
)
from edgerlhf.config.refs import check_dataset, check_ensemble_arms, check_members_from, check_precisions

__all__ = ["BonConfig", "DPOConfig", "EvalConfig", "PrefsConfig", "RMEvalConfig", "RewardConfig", "SFTConfig"]


@dataclass
class SFTConfig(GoldEvalMixin, LoraMixin, TrainMixin, BaseConfig):
    """Supervised fine-tuning: teaches the base model the task's format."""

    stage: ClassVar[str] = "sft"

    dataset: str = opt("builtin", "'builtin' (the embedded review task), a .jsonl/.json/.csv file with "
                                  "prompt/completion or messages, or 'hf:<hub id>' when online")
    eval_dataset: str = opt("", "evaluation file (same formats); empty: the built-in task's held-out prompts, or a "
                                "split of `dataset`")
    sft_from: str = opt("", "'chosen': `dataset` (and `eval_dataset`) are preference files (prompt/chosen/rejected or "
                            "HH-RLHF transcripts) and SFT learns each pair's prompt -> chosen response, as the "
                            "original HH setup did; empty: SFT rows")
    max_train_samples: int = opt(0, "use at most this many training rows (0: all)")
    max_eval_samples: int = opt(64, "held-out rows for eval loss (0: all)")
    max_length: int = opt(128, "truncate prompt+completion to this many tokens")
    learning_rate: float = opt(2e-4, "peak learning rate (AdamW); LoRA wants ~1e-4..5e-4, full fine-tuning ~1e-5")
    sample_prompts: int = opt(2, "prompts decoded before and after training (and at each evaluation)")
    sample_max_new_tokens: int = opt(48, "new tokens per decoded sample and per gold-evaluation response")

    def check(self) -> list[str]:
        errs = super().check() + self.check_train() + self.check_lora() + self.check_gold_eval()
        errs += self.check_gold() if self.gold_eval_prompts else []  # SFT uses its gold only there
        errs += check_dataset(self.dataset, "dataset")
        if self.sft_from not in ("", "chosen"):
            errs.append(f"sft_from={self.sft_from!r}: use 'chosen' (a preference file's chosen side) or leave it empty")
        elif self.sft_from and self.dataset == "builtin":
            errs.append("sft_from=chosen needs `dataset` to be a preference file (the built-in task has SFT rows)")
        if self.eval_dataset:
            errs += check_dataset(self.eval_dataset, "eval_dataset")
        if self.max_length < 8:
            errs.append(f"max_length={self.max_length} must be at least 8 tokens")
        errs += check_non_negative(self, "max_train_samples", "max_eval_samples", "sample_prompts")
        if self.sample_max_new_tokens <= 0:
            errs.append(f"sample_max_new_tokens={self.sample_max_new_tokens} must be positive")
        return errs


@dataclass
class PrefsConfig(GoldMixin, BaseConfig):
    """Preference pairs: sampled from a policy and labelled by the gold scorer, or read from a file."""

    stage: ClassVar[str] = "prefs"

    policy: str = opt("", "SFT run folder (or its adapter/) to sample from; empty: sample from `model` itself")
    dataset: str = opt("generate", "'generate' (sample k responses per built-in prompt, label with the gold scorer) or "
                                   "a preference file (.jsonl/.json/.csv: prompt/chosen/rejected or HH-RLHF "
                                   "transcripts) or 'hf:<hub id>'")
    prompts: str = opt("builtin", "generate only: the prompts to sample pairs for: 'builtin' (the task's training "
                                  "prompts) or any file the loaders read (prompt-only, SFT or preference rows: their "
                                  "prompt part)")
    gold: str = opt("auto", "scores that label generated pairs (and, for a preference file, are recorded beside each "
                            "pair as gold_chosen / gold_rejected): auto (vader when generating, none for a file) | "
                            "vader | none | module:function | path/to/file.py:function | a reward run folder")
    num_prompts: int = opt(300, "prompts to sample (generate only; from a prompts file: at most this many)")
    samples_per_prompt: int = opt(4, "k responses per prompt; every pair of them is a candidate (k=4 gives 6)")
    temperature: float = opt(1.0, "sampling temperature")
    top_k: int = opt(0, "top-k sampling (0: off)")
    top_p: float = opt(1.0, "nucleus sampling threshold")
    max_new_tokens: int = opt(48, "tokens per sampled response")
    rollout_batch_size: int = opt(64, "prompts per generate call (bigger is faster on CPU until memory runs out)")
    label_noise: float = opt(0.15, "fraction of kept pairs whose label is flipped (synthetic-labeller noise, Gao et "
                                   "al. 2022)")
    tie_threshold: float = opt(0.1, "pairs whose gold scores differ by at most this are near-ties: dropped from "
                                    "training, kept in eval as 'all pairs'")
    eval_fraction: float = opt(0.1, "fraction of prompts held out (split by prompt: no prompt in both splits)")
    max_pairs_per_prompt: int = opt(0, "keep at most this many pairs per prompt (0: all)")
    max_length: int = opt(256, "rows whose prompt+response exceed this many tokens are bad rows (files only)")
    skip_bad_rows: bool = opt(False, "drop and count bad rows in files instead of stopping at the first")

    def check(self) -> list[str]:
        errs = super().check() + self.check_formatting("policy")
        if self.gold != "auto":
            errs += self.check_gold()
        if self.dataset != "generate":
            errs += check_dataset(self.dataset, "dataset")
        elif self.gold == "none":
            errs.append("gold=none: generated pairs are labelled by the gold scorer; name one (vader, module:function, "
                        "a reward run folder) or give a preference file as `dataset`")
        if self.prompts != "builtin":
            errs += check_dataset(self.prompts, "prompts")
        if self.policy and not Path(self.policy).expanduser().exists():
            errs.append(f"policy={self.policy!r}: no such run folder (pass the SFT run folder or leave empty)")
        errs += check_positive_ints(self, "num_prompts", "max_new_tokens", "rollout_batch_size", "max_length")
        if self.samples_per_prompt < 2:
            errs.append(f"samples_per_prompt={self.samples_per_prompt} must be at least 2 to form a pair")
        if not 0 <= self.label_noise < 0.5:
            errs.append(f"label_noise={self.label_noise} must be in [0, 0.5): at 0.5 labels carry no signal")
        if self.tie_threshold < 0:
            errs.append(f"tie_threshold={self.tie_threshold} must be >= 0")
        if not 0 < self.eval_fraction < 1:
            errs.append(f"eval_fraction={self.eval_fraction} must be in (0, 1)")
        errs += check_range(self, "temperature", 0, lo_open=True, why="pairs are sampled; a temperature of 0 would "
                                                                      "make every sample the same")
        errs += check_range(self, "top_p", 0, 1, lo_open=True, why="1 turns nucleus sampling off")
        if self.max_pairs_per_prompt < 0:
            errs.append(f"max_pairs_per_prompt={self.max_pairs_per_prompt} must be >= 0")
        return errs


@dataclass
class RewardConfig(LoraMixin, TrainMixin, PairsMixin, BaseConfig):
    """Reward model: a one-output score head on the base model, LoRA on the body, Bradley-Terry loss."""

    stage: ClassVar[str] = "reward"

    learning_rate: float = opt(1e-3, "peak learning rate (AdamW) for the LoRA body and the score head; measured on the "
                                     "built-in task: 1e-3 reaches 0.80 held-out gold accuracy in one epoch where 3e-4 "
                                     "reaches 0.66")
    lora_layers: int = opt(10, "LoRA only in the last N transformer blocks (0: all); measured on SmolLM2-135M (30 "
                               "blocks), a 16x64-token step: 2.3 s and 2.4 GB with 10 vs 4.1 s and 4.8 GB with all")
    per_device_train_batch_size: int = opt(8, "preference pairs per micro-batch (2x sequences), per process")
    margin: float = opt(0.0, "Bradley-Terry margin m: loss = -log sigmoid(r_chosen - r_rejected - m)")
    center_rewards_coef: float = opt(0.01, "weight of the reward-centering term coef * mean((r_c + r_r)^2), keeps "
                                           "rewards near zero mean (Eisenstein et al. 2023)")
    base_precision: str = opt("fp32", "precision of the frozen body during training: fp32, or int8 / int4 through "
                                      "bitsandbytes (QLoRA-style: the adapter and score head stay in floating point)")
    members: int = opt(1, "reward models trained (1: one RM; K >= 2: an ensemble of K members, member i trained "
                          "exactly as a single RM with seed + i: its LoRA and head initialisation and data order); one "
                          "artifact holds them, served with `ensemble=mean|min|uwo|warm` by every consumer")
    member_data: str = opt("same", "ensemble members' training pairs: same (every member sees the training pairs, in "
                                   "its own order) | bootstrap (each member a resample with replacement, seed + i)")
    members_from: list = opt([], "reward run folders to make the ensemble of instead of training (single fp32 LoRA "
                                 "RMs of this model with one LoRA shape, e.g. trained with seeds 42..45): each copied "
                                 "in, its normalisation and held-out numbers measured as a trained member's")
    norm_pairs: int = opt(256, "ensemble: each member's score mean and std (the normalisation before aggregating) "
                               "are measured on the first N training pairs (both responses)")

    def check(self) -> list[str]:
        errs = super().check() + self.check_train() + self.check_lora() + self.check_pairs()
        if self.members < 1:
            errs.append(f"members={self.members} must be >= 1 (1: one RM; 4: an ensemble of four, Coste et al.'s "
                        "4-5 members suffice)")
        if self.member_data not in ("same", "bootstrap"):
            errs.append(f"member_data={self.member_data!r}: use same or bootstrap")
        errs += check_members_from(self.members_from, self.model, self.members)
        if (self.members > 1 or self.members_from) and self.norm_pairs < 2:
            errs.append(f"norm_pairs={self.norm_pairs} must be >= 2 (a member's score std needs responses)")
        if self.members > 1 and self.base_precision != "fp32":
            errs.append(f"members={self.members} with base_precision={self.base_precision}: ensemble members are "
                        "trained on an fp32 body (serve them quantised with reward_precision=int4); set "
                        "base_precision=fp32")
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
        "precompute_ref_log_probs": (None, "the reference's log-probs are always computed once, before training, and "
                                           "cached"),
        "ref_model": (None, "the reference is the SFT policy itself (the adapter disabled): nothing to name"),
        "max_prompt_length": (None, "nothing is truncated: a pair longer than `max_length` is a bad row "
                                    "(skip_bad_rows=true drops it)"),
        "max_completion_length": (None, "nothing is truncated: a pair longer than `max_length` is a bad row "
                                        "(skip_bad_rows=true drops it)"),
    }

    policy: str = opt("", "SFT run folder (or its adapter/): merged into the base, so the reference includes it; "
                          "empty: `model` itself")
    beta: float = opt(0.1, "DPO's beta: the strength of the implicit KL to the reference (TRL's default 0.1)")
    loss_type: str = opt("sigmoid", "sigmoid (Rafailov et al. 2023, -log sigmoid(beta h)) | ipo (Azar et al. 2023, (h "
                                    "- 1/(2 beta))^2 on per-token mean log-probs)")
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
class RMEvalConfig(EnsembleMixin, BaseConfig):
    """Reward-model precision table: size, memory, latency and agreement with the fp32 RM."""

    stage: ClassVar[str] = "rm-eval"

    rm: str = opt("", "reward run folder (or its adapter/)")
    reference: str = opt("", "RM whose fp32 scores every agreement is measured against; empty: `rm` itself (set it to "
                             "the fp32-trained RM when `rm` was trained QLoRA-style)")
    precisions: list = opt([], "precisions to measure (fp32, bf16, fp16, int8, int4; a backend may be named: int8:bnb, "
                               "int8:torchao, int4:bnb); empty: fp32/int8/int4 on CPU, bf16/int8/int4 on a GPU")
    pairs: str = opt("", "held-out preference file; empty: the held-out split of the prefs run the RM was trained on")
    max_pairs: int = opt(0, "measure on at most this many held-out pairs (0: all)")
    batch_size: int = opt(16, "sequences per forward (latency is reported per batch)")
    isolate: bool = opt(True, "measure each precision in its own process, so each peak memory is its own")

    def check(self) -> list[str]:
        errs = super().check()
        if not self.rm:
            errs.append("rm is required: a reward run folder")
        elif not Path(self.rm).expanduser().exists():
            errs.append(f"rm={self.rm!r}: no such folder")
        errs += check_precisions(self.precisions)
        errs += self.check_ensemble("rm", self.precisions)
        if self.pairs:
            errs += check_dataset(self.pairs, "pairs")
        if self.reference and not Path(self.reference).expanduser().exists():
            errs.append(f"reference={self.reference!r}: no such folder")
        if self.max_pairs < 0:
            errs.append(f"max_pairs={self.max_pairs} must be >= 0")
        if self.batch_size <= 0:
            errs.append(f"batch_size={self.batch_size} must be a positive integer")
        return errs


@dataclass
class EvalConfig(EnsembleMixin, GoldMixin, BaseConfig):
    """Evaluate a policy on held-out prompts against a baseline (by default its own SFT policy)."""

    stage: ClassVar[str] = "eval"

    policy: str = opt("", "the policy to evaluate: a PPO / GRPO / RLOO or SFT run folder (or its adapter/), or a GGUF "
                          "file exported from one (`edgerlhf export --gguf`): then the share of the policy's gain it "
                          "keeps is measured too")
    source: str = opt("", "policy=FILE.gguf: the policy run it was exported from (default: the one the file records)")
    adapter: str = opt("", "policy=BASE.gguf: a GGUF LoRA adapter file (`export --gguf-adapter`) applied on that base "
                           "file; the policy run the adapter records is the source")
    loader: str = opt("auto", "policy=FILE.gguf: what samples the file: transformers (its GGUF loader, dequantised to "
                              "float32) | llama.cpp (llama-cpp-python, when installed) | auto (llama.cpp when "
                              "installed)")
    baseline: str = opt("auto", "policy compared against (win rate, paired gold gain, KL): 'auto' (the SFT policy an "
                                "RL policy started from), a run folder, 'base' (the bare model), or 'none'")
    reward: str = opt("auto", "reward model for the learned-RM mean: 'auto' (the one the RL run used, at its "
                              "precision), a reward run folder, or 'none'")
    reward_precision: str = opt("", "precision of `reward` (empty: the one the RL run used, else fp32)")
    num_prompts: int = opt(128, "held-out prompts: the first N of `prompts`")
    prompts: str = opt("", "evaluation prompts: empty = the built-in task's held-out prompts; or a file any loader "
                           "reads (.jsonl/.json/.csv: prompt-only, SFT or preference rows, HH-RLHF transcripts; their "
                           "prompt part)")
    temperature: float = opt(0.7, "sampling temperature")
    max_new_tokens: int = opt(48, "new tokens per response")
    batch_size: int = opt(64, "prompts per generate call")
    num_samples: int = opt(6, "prompt/response examples kept in the summary")
    baseline_eval: str = opt("", "an eval run folder of the baseline policy itself (same prompts, seed, temperature, "
                                 "length): its responses are reused instead of sampled again")

    def check(self) -> list[str]:
        gguf = self.policy.endswith(".gguf")
        errs = super().check() + self.check_formatting("source" if gguf else "policy")
        if not self.policy:
            errs.append("policy is required: a PPO or SFT run folder")
        elif not Path(self.policy).expanduser().exists():
            errs.append(f"policy={self.policy!r}: no such {'file' if gguf else 'folder'}")
        if self.source and not gguf:
            errs.append(f"source={self.source!r} is for a GGUF policy (policy=FILE.gguf); policy={self.policy!r} is a "
                        "run folder")
        elif self.source and not Path(self.source).expanduser().exists():
            errs.append(f"source={self.source!r}: no such folder (the policy run the GGUF file was exported from)")
        if self.loader not in ("auto", "transformers", "llama.cpp"):
            errs.append(f"loader={self.loader!r}: choose auto, transformers or llama.cpp")
        if self.adapter and not gguf:
            errs.append(f"adapter={self.adapter!r} is applied on a GGUF base file: policy=BASE.gguf (the run's SFT "
                        f"policy exported with --gguf), not {self.policy!r}")
        elif self.adapter and not Path(self.adapter).expanduser().is_file():
            errs.append(f"adapter={self.adapter!r}: no such file (a GGUF LoRA adapter, `export --gguf-adapter`)")
        errs += self.check_gold()
        if self.prompts and not self.prompts.startswith("hf:") and not Path(self.prompts).expanduser().is_file():
            errs.append(f"prompts={self.prompts!r}: no such file (or leave it empty for the built-in held-out prompts)")
        if self.baseline_eval and not (Path(self.baseline_eval).expanduser() / "responses.jsonl").is_file():
            errs.append(f"baseline_eval={self.baseline_eval!r}: not an eval run folder (no responses.jsonl)")
        errs += self.check_ensemble("reward", [self.reward_precision])
        for k in ("baseline", "reward"):
            v = getattr(self, k)
            if v not in ("auto", "none", "base", "") and not Path(v).expanduser().exists():
                errs.append(f"{k}={v!r}: no such folder (or use auto / none{' / base' if k == 'baseline' else ''})")
        errs += check_positive_ints(self, "num_prompts", "max_new_tokens", "batch_size")
        if self.temperature < 0:
            errs.append(f"temperature={self.temperature} must be >= 0")
        return errs


@dataclass
class BonConfig(EnsembleMixin, GoldMixin, BaseConfig):
    """Best-of-n on shared candidates: N responses per held-out prompt sampled once, ranked by the RM at each
    precision, and the gold of best-of-n for n = 1, 2, 4, ..., N without resampling."""

    stage: ClassVar[str] = "bon"

    policy: str = opt("", "the policy the candidates are sampled from: an SFT run folder (the study's choice) or any "
                          "PPO / GRPO / RLOO / DPO run folder")
    rm: str = opt("", "reward run folder (trained fp32) whose RM ranks the candidates at each precision")
    precisions: list = opt([], "precisions the RM ranks the candidates at (the first is the reference the others are "
                               "compared with); empty: fp32/int8/int4 on CPU, bf16/int8/int4 on a GPU")
    num_candidates: int = opt(32, "N: candidates sampled per prompt (at least 2)")
    ns: list = opt([], "the n of the best-of-n curve, each between 1 and N; empty: 1, 2, 4, ... up to N")
    num_prompts: int = opt(128, "held-out prompts: the first N of `prompts`")
    prompts: str = opt("", "prompts file (as eval's `prompts`); empty: the built-in task's held-out prompts")
    temperature: float = opt(0.7, "sampling temperature (eval's, so n = 1 is the policy as evaluated)")
    max_new_tokens: int = opt(48, "new tokens per candidate")
    batch_size: int = opt(256, "sequences per sampling batch (a prompt's N candidates share one prefill when they "
                               "fall in one batch: keep it a multiple of N; 256 samples 2.2x faster than 64 on a "
                               "2-core CPU)")
    rm_batch_size: int = opt(32, "candidate pairs per RM forward")
    candidates: str = opt("", "a bon run folder whose candidates (same policy, prompts and sampling) are reused: only "
                              "the precisions it has not scored are scored")
    bootstrap: int = opt(1000, "bootstrap draws over prompts for the intervals of the fitted alpha and beta")
    num_samples: int = opt(3, "prompts whose candidates are shown in the summary")
    ensemble_arms: list = opt([], "rm an ensemble: the rankers compared, PRECISION/WHO with WHO one of m<i> (member i "
                                  "alone), mean, min, uwo, warm (e.g. [fp32/m0, int4/m0, int4/uwo, int4/warm]; the "
                                  "first is the reference); each member is scored once per precision and every "
                                  "aggregation is computed from those scores; empty: m0, mean, min, uwo and warm at "
                                  "every precision")

    def check(self) -> list[str]:
        errs = super().check() + self.check_formatting("policy", "rm") + self.check_gold()
        for key, what in (("policy", "a policy run folder (the SFT run in the study)"), ("rm", "a reward run folder")):
            v = getattr(self, key)
            if not v:
                errs.append(f"{key} is required: {what}")
            elif not Path(v).expanduser().exists():
                errs.append(f"{key}={v!r}: no such folder")
        errs += check_precisions(self.precisions)
        errs += self.check_ensemble("rm", self.precisions + [a.partition("/")[0] for a in self.ensemble_arms])
        errs += check_ensemble_arms(self.ensemble_arms, self.rm)
        if self.num_candidates < 2:
            errs.append(f"num_candidates={self.num_candidates}: best-of-n needs at least 2 candidates per prompt (the "
                        "study's quick preset uses 32)")
        bad = [n for n in self.ns if not isinstance(n, int) or not 1 <= n <= max(self.num_candidates, 1)]
        if bad:
            errs.append(f"ns={bad}: each n must be an integer between 1 and num_candidates={self.num_candidates} "
                        "(raise num_candidates to look further)")
        if self.prompts and not self.prompts.startswith("hf:") and not Path(self.prompts).expanduser().is_file():
            errs.append(f"prompts={self.prompts!r}: no such file (or leave it empty for the built-in held-out prompts)")
        if self.candidates and not (Path(self.candidates).expanduser() / "candidates.jsonl").is_file():
            errs.append(f"candidates={self.candidates!r}: not a bon run folder (no candidates.jsonl)")
        errs += check_positive_ints(self, "num_prompts", "max_new_tokens", "batch_size", "rm_batch_size", "bootstrap")
        errs += check_non_negative(self, "num_samples")
        if self.temperature <= 0:
            errs.append(f"temperature={self.temperature}: best-of-n needs sampling (a temperature > 0; 0 is greedy "
                        "and makes every candidate the same)")
        return errs
