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
