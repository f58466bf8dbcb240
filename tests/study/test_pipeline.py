"""The study's plan: arms (algorithm x RM precision), labels per seed, relocatable keys, and clear errors."""

from pathlib import Path

import pytest

from edgerlhf.study.pipeline import Arm, parse_arms


def test_arms_expand_precisions_unless_an_algorithm_names_its_own():
    arms = parse_arms("ppo,grpo@fp32,dpo", ["fp32", "int8", "int4"])
    assert [a.name for a in arms] == ["ppo-fp32", "ppo-int8", "ppo-int4", "grpo-fp32", "dpo"]
    assert parse_arms(None, ["fp32"]) == [Arm("ppo", "fp32")]
    assert [a.name for a in parse_arms(["rloo@fp32+int4:bnb"], ["fp32"])] == ["rloo-fp32", "rloo-int4-bnb"]


def test_base_seed_keeps_todays_labels_and_other_seeds_get_a_suffix():
    assert Arm("ppo", "int8").labels(42, 42) == ("ppo-int8", "eval-int8")
    assert Arm("ppo", "int8").labels(1, 42) == ("ppo-int8-seed1", "eval-int8-seed1")
    assert Arm("grpo", "fp32").labels(42, 42) == ("grpo-fp32", "eval-grpo-fp32")
    assert Arm("dpo").labels(2, 42) == ("dpo-seed2", "eval-dpo-seed2")


def test_bad_algorithms_are_one_error_naming_each_problem():
    with pytest.raises(ValueError) as e:
        parse_arms("ppo,grop,dpo@int8,rloo@int3", ["fp32"])
    msg = str(e.value)
    assert "'grop'" in msg and "did you mean 'grpo'" in msg
    assert "'dpo@int8'" in msg and "no reward model" in msg
    assert "'rloo@int3'" in msg


def test_keys_are_relative_to_the_study_folder(tmp_path):
    from edgerlhf.config import SFTConfig, load_config
    from edgerlhf.study.pipeline import config_key

    def key(study: Path, data: Path):
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text('{"prompt": "a", "completion": "b"}\n')
        cfg = load_config(SFTConfig, overrides={"model": "tiny", "output_dir": str(study), "dataset": str(data)})
        return config_key(cfg, study)

    a, b = tmp_path / "a", tmp_path / "moved" / "b"
    assert key(a, a / "d.jsonl") == key(b, b / "d.jsonl")  # an input inside the study: relative to it
    assert key(a, tmp_path / "x.jsonl") != key(a, tmp_path / "y.jsonl")  # outside files keep their path


def test_relative_paths_inside_and_outside_the_study(tmp_path):
    from edgerlhf.study.pipeline import _relative

    study = tmp_path / "s"
    assert _relative(str(study / "sft-123"), study) == "<study>/sft-123"
    assert _relative([str(study / "x" / "y")], study) == ["<study>/x/y"]
    assert _relative("/elsewhere/data.jsonl", study) == "/elsewhere/data.jsonl"
    assert _relative("fp32", study) == "fp32"


def test_cli_rejects_bad_seed_lists(capsys):
    from edgerlhf.cli import main

    assert main(["run", "--preset", "smoke", "--seeds", "1,x"]) == 2
    assert "--seeds '1,x'" in capsys.readouterr().err


def test_every_command_prints_its_help(capsys):
    """Every subcommand's --help renders (argparse %-formats help strings: a bare % in one crashes --help)."""
    from edgerlhf.cli import main

    for cmd in ("run", "demo", "plan", "runs", "compare", "export", "generate", "chat", "quantize"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0, cmd
    main_help = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "--no-bon" in main_help and "--equivalence-margin" in main_help and "default 10%" in main_help
    assert "--best-of" in main_help


def test_a_stage_made_by_an_older_edgerlhf_is_found_by_its_settings(tmp_path):
    """Another key formula, or a config saved before a setting existed (it counts as its default), or inputs
    that pointed into the study from another place: the same settings are the same stage."""
    import yaml

    from edgerlhf.config import SFTConfig, load_config, to_dict
    from edgerlhf.study.pipeline import _equivalent

    study = tmp_path / "study"
    (study / "prefs-0000000000").mkdir(parents=True)
    data = study / "prefs-0000000000" / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    cfg = load_config(SFTConfig, overrides={"model": "tiny", "output_dir": str(study), "dataset": str(data)})
    old = study / "sft-0123456789"
    old.mkdir()
    saved = to_dict(cfg)
    saved.pop("gold_eval_prompts")  # a setting this old run predates, at its default now
    saved["dataset"] = "/somewhere/else/study/prefs-0000000000/d.jsonl"  # the study was elsewhere then
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    assert _equivalent(study, "sft", cfg) is None  # not finished: never reused
    (old / "status").write_text("finished\n")
    assert _equivalent(study, "sft", cfg) == old
    other = load_config(SFTConfig, overrides={"model": "tiny", "output_dir": str(study), "dataset": str(data),
                                              "learning_rate": 1e-3})
    assert _equivalent(study, "sft", other) is None  # a changed setting is another stage
    assert _equivalent(study, "sft-x", cfg) is None  # and only folders of the label count


def test_null_arms_are_the_control_of_their_algorithm():
    arms = parse_arms("ppo,ppo@null,grpo@null+int4", ["fp32", "int4"])
    assert [a.name for a in arms] == ["ppo-fp32", "ppo-int4", "ppo-null", "grpo-int4", "grpo-null"]
    with pytest.raises(ValueError) as e:
        parse_arms("ppo@nul,dpo@null", ["fp32"])
    assert "null: the control arm" in str(e.value) and "dpo has no reward model" in str(e.value)


def test_study_options_are_checked_before_anything_is_written(tmp_path):
    from edgerlhf.study.pipeline import run_study

    for kw, msg in (({"equivalence_margin": 0}, "margin"), ({"equivalence_margin": "-5%"}, "margin"),
                    ({"bon_precisions": ["int8"]}, "measures its RM at fp32, int4 only")):
        with pytest.raises(ValueError, match=msg):
            run_study("smoke", out=tmp_path / "s", precisions=["fp32", "int4"], progress=False, **kw)
        assert not (tmp_path / "s").exists()


def test_ensemble_arms_name_their_precision_and_way():
    arms = parse_arms("ppo@fp32+int4~uwo+int4~warm", ["fp32"])
    assert [a.name for a in arms] == ["ppo-fp32", "ppo-int4-uwo", "ppo-int4-warm"]
    assert [(a.rm_precision, a.ensemble) for a in arms] == [("fp32", ""), ("int4", "uwo"), ("int4", "warm")]
    with pytest.raises(ValueError, match="after ~ name how the RM ensemble serves: mean, min, uwo, warm"):
        parse_arms("ppo@int4~median", ["fp32"])
