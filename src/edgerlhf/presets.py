"""Named settings, in one place: read by the command line (``--preset``), ``load_config(preset=...)`` and
the study. Pure data: this module imports nothing of EdgeRLHF's.
"""

# Presets: named sets of overrides, applied before the YAML file and the key=value overrides (and after a task
# file's settings). They set budgets, not the task: the response length a task names is not overridden by the
# quick / full presets (the smoke budget does shorten it).

# The smoke budget per stage: the tiny random model, every artifact in seconds. The study's smoke preset and every
# stage's ``--preset smoke`` (``edgerlhf reward --preset smoke prefs=...``) are these settings.
# The value-free group methods (GRPO, RLOO, REINFORCE++-baseline, GSPO) share their budgets and batch shapes: 8 prompts
# x 4 samples per step; each adds only its own KL setting below.
_GROUP_SMOKE = {"max_steps": 2, "num_rollouts_per_step": 8, "num_generations": 4, "rollout_batch_size": 8,
                "mini_batch_size": 4, "gradient_accumulation_steps": 1, "response_length": 8, "gold_eval_prompts": 0,
                "max_prompts": 64}
_GROUP = {"num_rollouts_per_step": 32, "num_generations": 4, "rollout_batch_size": 32, "mini_batch_size": 8,
          "gradient_accumulation_steps": 1, "num_iterations": 2, "lora_layers": 10, "temperature": 0.7}
_GROUP_QUICK = {**_GROUP, "learning_rate": 2e-4, "max_steps": 8}
_GROUP_FULL = {**_GROUP, "learning_rate": 1e-4, "total_episodes": 2048, "save_steps": 8}

SMOKE: dict[str, dict] = {
    "sft": {"max_steps": 4, "per_device_train_batch_size": 4, "max_eval_samples": 8,
            "logging_steps": 2, "sample_max_new_tokens": 8, "gold_eval_prompts": 0},
    "prefs": {"num_prompts": 12, "samples_per_prompt": 4, "max_new_tokens": 8, "eval_fraction": 0.25,
              "tie_threshold": 0.0, "label_noise": 0.0},
    "reward": {"max_steps": 4, "per_device_train_batch_size": 4, "logging_steps": 2, "lora_layers": 0},
    "rm-eval": {"max_pairs": 16, "batch_size": 8},
    "ppo": {"max_steps": 2, "num_rollouts_per_step": 8, "rollout_batch_size": 8, "mini_batch_size": 4,
            "gradient_accumulation_steps": 1, "response_length": 8, "gold_eval_prompts": 0, "max_prompts": 64},
    "grpo": _GROUP_SMOKE,
    "rloo": _GROUP_SMOKE,
    "reinforce_pp": _GROUP_SMOKE,
    "gspo": _GROUP_SMOKE,
    "dpo": {"max_steps": 2, "per_device_train_batch_size": 4, "max_train_pairs": 8, "eval_batch_size": 8,
            "lora_layers": 1, "logging_steps": 1},
    "eval": {"num_prompts": 8, "max_new_tokens": 8},
    "bon": {"num_prompts": 6, "num_candidates": 4, "max_new_tokens": 8, "bootstrap": 50},
}

STAGE_PRESETS: dict[str, dict[str, dict]] = {
    "sft": {
        # the demo: SmolLM2-135M on the built-in review task, a few minutes on 2 CPU cores
        "demo": {"model": "default", "max_steps": 40, "per_device_train_batch_size": 8, "learning_rate": 3e-4,
                 "logging_steps": 5, "max_eval_samples": 64},
        "smoke": {"model": "tiny", "max_steps": 4, "per_device_train_batch_size": 4, "max_eval_samples": 8,
                  "logging_steps": 1, "report_to": ["none"], "sample_max_new_tokens": 8, "gold_eval_prompts": 8},
    },
    "ppo": {
        # The user's original settings, in our key names. Their learning rate (1.41e-5) suits full
        # fine-tuning; a LoRA adapter (B starts at 0) barely moves at it, which is why quick/full differ.
        "user": {"num_rollouts_per_step": 32, "mini_batch_size": 2, "gradient_accumulation_steps": 4,
                 "learning_rate": 1.41e-5, "max_grad_norm": 0.5, "cliprange": 0.2, "cliprange_value": 0.2,
                 "vf_coef": 0.1, "response_length": 64, "rollout_batch_size": 8, "lora_r": 16, "lora_alpha": 32,
                 "lora_dropout": 0.05},
        # Tuned for LoRA on the built-in task on 2 CPU cores (bench/online_alignment.py): a LoRA learning rate
        # (1e-4), big rollout and update batches (the CPU's throughput grows with batch), LoRA in the top 10
        # blocks only (backward stops there: about half the update time), and a KL coefficient that keeps
        # response length and diversity near the SFT policy's.
        "quick": {"num_rollouts_per_step": 32, "rollout_batch_size": 32, "mini_batch_size": 8,
                  "gradient_accumulation_steps": 1, "num_ppo_epochs": 2, "learning_rate": 2e-4, "kl_coef": 0.05,
                  "lora_layers": 10, "max_steps": 8, "temperature": 0.7},
        "full": {"num_rollouts_per_step": 32, "rollout_batch_size": 32, "mini_batch_size": 8,
                 "gradient_accumulation_steps": 1, "num_ppo_epochs": 2, "learning_rate": 1e-4, "kl_coef": 0.1,
                 "lora_layers": 10, "total_episodes": 2048, "temperature": 0.7,
                 "save_steps": 8},
    },
    # The value-free methods at PPO's episode budget and batch shapes (quick: 8 steps x 32 episodes = 256,
    # full: 2,048): 8 prompts x 4 samples per step, the same rollout and update batches, LoRA in the top 10
    # blocks, 2 passes per step as PPO's 2 epochs. GRPO keeps TRL's beta=0 (no reference forward); RLOO keeps
    # TRL's beta=0.05 in the reward. Measured side by side with PPO by bench/online_alignment.py.
    "grpo": {"quick": {**_GROUP_QUICK, "beta": 0.0}, "full": {**_GROUP_FULL, "beta": 0.0}},
    "rloo": {"quick": {**_GROUP_QUICK, "beta": 0.05}, "full": {**_GROUP_FULL, "beta": 0.05}},
    # REINFORCE++-baseline at the same budget and shapes, with OpenRLHF's defaults: beta=0.01 (its init_kl_coef),
    # the KL in the loss (k2, as its REINFORCE++-baseline script).
    "reinforce_pp": {"quick": {**_GROUP_QUICK, "beta": 0.01, "kl_in": "loss"},
                     "full": {**_GROUP_FULL, "beta": 0.01, "kl_in": "loss"}},
    # GSPO at the same budget and shapes, with the paper's sequence clip (3e-4 / 4e-4, its config's defaults) and
    # TRL's beta=0 (no reference forward).
    "gspo": {"quick": {**_GROUP_QUICK, "beta": 0.0}, "full": {**_GROUP_FULL, "beta": 0.0}},
    # DPO at the online presets' budget: quick = 32 steps x 8 pairs (256 pairs, each seen once), so the reference
    # pass covers only the pairs used; LoRA in the top 10 blocks as the online presets. Learning rate measured on
    # the built-in task (README, "DPO").
    "dpo": {
        "quick": {"max_steps": 32, "per_device_train_batch_size": 8, "max_train_pairs": 256, "learning_rate": 5e-4,
                  "lora_layers": 10, "logging_steps": 4},
        "full": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 5e-4, "lora_layers": 10,
                 "logging_steps": 10},
    },
}

# every stage but SFT (which has its own, above) gets the smoke budget as its `--preset smoke`, on the tiny model
for _stage, _settings in SMOKE.items():
    STAGE_PRESETS.setdefault(_stage, {}).setdefault("smoke", {"model": "tiny", "report_to": ["none"], **_settings})


# Settings per study preset: one dict of overrides per stage. ``quick`` is `make demo`.
STUDY_PRESETS: dict[str, dict[str, dict]] = {
    "smoke": {"model": "tiny", **SMOKE},  # the tiny random model: every artifact in well under two minutes (tests)
    "quick": {  # the default model; `make demo`
        "sft": {"max_steps": 40, "per_device_train_batch_size": 8, "learning_rate": 3e-4, "logging_steps": 5,
                "max_eval_samples": 64, "gold_eval_prompts": 0},
        "prefs": {"num_prompts": 260, "eval_fraction": 0.15},  # 200 measured: RM gold accuracy 0.61 (260: 0.80)
        "reward": {},
        "rm-eval": {"max_pairs": 200},
        "ppo": {"preset": "quick", "gold_eval_prompts": 0},
        "grpo": {"preset": "quick", "gold_eval_prompts": 0},
        "rloo": {"preset": "quick", "gold_eval_prompts": 0},
        "reinforce_pp": {"preset": "quick", "gold_eval_prompts": 0},
        "gspo": {"preset": "quick", "gold_eval_prompts": 0},
        "dpo": {"preset": "quick"},
        "eval": {"num_prompts": 128},
        "bon": {"num_prompts": 128, "num_candidates": 32},  # the eval's prompts and sampling, 32 candidates each
    },
    "full": {  # the default model, the full PPO preset (about 2,000 episodes per precision)
        "sft": {"max_steps": 80, "per_device_train_batch_size": 8, "learning_rate": 3e-4, "logging_steps": 10,
                "max_eval_samples": 64, "gold_eval_prompts": 0},
        "prefs": {"num_prompts": 300, "eval_fraction": 0.15},
        "reward": {},
        "rm-eval": {},
        "ppo": {"preset": "full", "gold_eval_prompts": 0},
        "grpo": {"preset": "full", "gold_eval_prompts": 0},
        "rloo": {"preset": "full", "gold_eval_prompts": 0},
        "reinforce_pp": {"preset": "full", "gold_eval_prompts": 0},
        "gspo": {"preset": "full", "gold_eval_prompts": 0},
        "dpo": {"preset": "full"},
        "eval": {"num_prompts": 256},
        "bon": {"num_prompts": 256, "num_candidates": 64},
    },
}
