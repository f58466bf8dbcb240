import json

from edgerlhf.cli import main


def test_bad_config_exits_2_and_names_the_key(capsys, tmp_path):
    assert main(["sft", f"output_dir={tmp_path}", "ppo_epochs=2", "lerning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "'ppo_epochs'" in err and "did you mean 'learning_rate'" in err
    assert not any(tmp_path.iterdir())


def test_help_config_lists_keys_with_help(capsys):
    assert main(["reward", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "center_rewards_coef" in out and "Bradley-Terry" in out


def test_sft_smoke_preset_runs(tmp_path, sft_file):
    assert main(["sft", "--preset", "smoke", f"dataset={sft_file}", f"output_dir={tmp_path}", "run_name=s",
                 "progress=false"]) == 0
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["status"] == "finished"


def test_overrides_may_follow_options(capsys, tmp_path):
    # argparse alone rejects key=value words after an option; they must still reach the config
    assert main(["rm-eval", str(tmp_path / "nope"), "--precisions", "int8", "batch_size=0"]) == 2
    err = capsys.readouterr().err
    assert "batch_size=0 must be a positive integer" in err and "no such folder" in err


def test_ppo_without_reward_and_with_old_keys_exits_2(capsys, tmp_path):
    assert main(["ppo", "model=tiny", f"output_dir={tmp_path}"]) == 2
    assert "reward is required" in capsys.readouterr().err
    assert main(["ppo", "--preset", "user", "ppo_epochs=4", "forward_batch_size=8", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "num_ppo_epochs" in err and "rollout_batch_size" in err
    assert not any(tmp_path.iterdir())


def test_user_preset_carries_the_reports_settings():
    from edgerlhf.config import PPOConfig, load_config
    from edgerlhf.presets import STAGE_PRESETS as PRESETS

    cfg = load_config(PPOConfig, base=PRESETS["ppo"]["user"])
    assert (cfg.num_rollouts_per_step, cfg.mini_batch_size, cfg.gradient_accumulation_steps, cfg.learning_rate,
            cfg.max_grad_norm, cfg.cliprange, cfg.cliprange_value, cfg.vf_coef, cfg.response_length,
            cfg.rollout_batch_size, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == \
        (32, 2, 4, 1.41e-5, 0.5, 0.2, 0.2, 0.1, 64, 8, 16, 32, 0.05)


def test_runs_on_a_missing_folder_exits_2(capsys, tmp_path):
    assert main(["runs", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_grpo_and_rloo_commands_exist_with_their_own_keys(capsys, tmp_path):
    assert main(["grpo", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "num_generations" in out and "scale_rewards" in out and "loss_type" in out and "value_model" not in out
    assert main(["rloo", "--help-config"]) == 0
    assert "normalize_advantages" in capsys.readouterr().out
    assert main(["grpo", "model=tiny", f"output_dir={tmp_path}", "kl_coef=0.1", "num_rollouts_per_step=6"]) == 2
    err = capsys.readouterr().err
    assert "`beta`" in err and "not a multiple of num_generations=4" in err
    assert not any(tmp_path.iterdir())


def test_every_online_preset_validates():
    from edgerlhf.config import load_config
    from edgerlhf.presets import STAGE_PRESETS
    from edgerlhf.registry import STAGE_CONFIGS

    for stage in ("ppo", "grpo", "rloo"):
        for name in STAGE_PRESETS[stage]:
            cfg = load_config(STAGE_CONFIGS[stage], preset=name)
            if name == "smoke":  # the tiny model's seconds-long budget (tests/test_registry.py runs it)
                assert cfg.model == "tiny" and cfg.num_rollouts_per_step * cfg.steps <= 16, (stage, name)
                continue
            assert cfg.num_rollouts_per_step * cfg.steps in (256, 2048, 32 * 20), (stage, name)


def test_grpo_command_refuses_a_missing_reward_before_writing(tmp_path, capsys):
    assert main(["grpo", "model=tiny", f"output_dir={tmp_path}", "run_name=g", "max_steps=1", "num_rollouts_per_step=8",
                 "rollout_batch_size=8", "mini_batch_size=4", "gradient_accumulation_steps=1", "response_length=8",
                 "gold_eval_prompts=0", "report_to=none", "progress=false", "max_prompts=16",
                 "reward=" + str(tmp_path / "missing")]) == 2
    assert "reward='" in capsys.readouterr().err and not (tmp_path / "g").exists()


def test_eval_takes_the_folder_as_a_word_or_as_policy_equals(capsys, tmp_path):
    # with no folder word, the first key=value is a key=value (it used to become policy='policy=...')
    assert main(["eval", f"policy={tmp_path / 'nope'}", "num_prompts=0"]) == 2
    err = capsys.readouterr().err
    assert f"policy='{tmp_path / 'nope'}': no such folder" in err and "num_prompts=0" in err
    assert main(["eval", str(tmp_path / "nope2"), "num_prompts=0"]) == 2
    assert f"policy='{tmp_path / 'nope2'}': no such folder" in capsys.readouterr().err


def test_stage_task_flag_reads_the_task_file(capsys, tmp_path):
    (tmp_path / "t.yaml").write_text("gold: nosuchgold\nrespons_length: 8\n")
    assert main(["sft", "--task", str(tmp_path / "t.yaml"), f"output_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'response_length'" in err and "nosuchgold" in err
    assert not (tmp_path / "runs").exists()
