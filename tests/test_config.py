import pytest
import yaml

from edgerlhf.config import ConfigError, SFTConfig, from_dict, load_config, parse_overrides


def test_defaults_validate():
    cfg = load_config(SFTConfig)
    assert cfg.lora_r == 16 and cfg.lora_alpha == 32 and cfg.lora_dropout == 0.05
    assert cfg.target_modules == ["all-linear"]


def test_yaml_then_overrides_win(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("learning_rate: 0.001\nlora_r: 8\ntarget_modules: [q_proj, v_proj]\n")
    cfg = load_config(SFTConfig, p, ["lora_r=4", "gradient_checkpointing=true", "report_to=none"])
    assert cfg.learning_rate == 0.001 and cfg.lora_r == 4 and cfg.gradient_checkpointing is True
    assert cfg.target_modules == ["q_proj", "v_proj"] and cfg.report_to == ["none"]


def test_unknown_key_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown key 'lerning_rate'.*did you mean 'learning_rate'"):
        load_config(SFTConfig, overrides=["lerning_rate=1e-4"])


@pytest.mark.parametrize("old,new", [("max_seq_length", "max_length"), ("lora_rank", "lora_r"),
                                     ("torch_dtype", "dtype"), ("lr", "learning_rate")])
def test_renamed_keys_name_their_replacement(old, new):
    with pytest.raises(ConfigError, match=rf"'{old}': renamed.*{new}"):
        load_config(SFTConfig, overrides=[f"{old}=1"])


def test_ppo_key_in_sft_says_it_belongs_elsewhere():
    with pytest.raises(ConfigError, match=r"'ppo_epochs'.*num_ppo_epochs.*does not apply"):
        load_config(SFTConfig, overrides=["ppo_epochs=2"])


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, overrides=["learning_rate=-1", "per_device_train_batch_size=0", "bogus=1",
                                          "max_length=abc"])
    msg = str(e.value)
    assert len(e.value.problems) == 4
    for part in ("learning_rate=-1.0 must be > 0", "per_device_train_batch_size=0", "'bogus'",
                 "max_length='abc' must be an integer"):
        assert part in msg


@pytest.mark.parametrize("override,match", [
    ("gradient_accumulation_steps=0", "gradient_accumulation_steps=0 must be a positive integer"),
    ("lora_r=0", "lora_r=0 must be a positive integer"),
    ("lora_dropout=1.5", r"lora_dropout=1.5 must be in \[0, 1\)"),
    ("warmup_ratio=1", "warmup_ratio"),
    ("max_steps=0", "max_steps=0"),
    ("dtype=int3", "dtype='int3' is not one of"),
    ("report_to=tensorbord", "report_to has"),
    ("lr_scheduler_type=wave", "lr_scheduler_type='wave'"),
    ("dataset=missing.jsonl", "dataset='missing.jsonl': file not found"),
    ("dataset=data.parquet", "unsupported file type"),
    ("device=tpu", "device='tpu'"),
    ("max_length=4", "max_length=4 must be at least 8"),
    ("gradient_checkpointing=maybe", "gradient_checkpointing='maybe' must be true or false"),
    ("model=./no/such/folder", "no such local folder"),
])
def test_each_value_rule(override, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "parquet" in override:
        (tmp_path / "data.parquet").write_text("x")
    with pytest.raises(ConfigError, match=match):
        load_config(SFTConfig, overrides=[override])


def test_missing_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(SFTConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(SFTConfig, bad)


def test_override_syntax():
    assert parse_overrides(["a=1", "b=x,y", "c="]) == {"a": 1, "b": "x,y", "c": ""}
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["oops"])


def test_dumped_config_round_trips(tmp_path):
    from edgerlhf.config import to_dict

    cfg = load_config(SFTConfig, overrides=["lora_r=4"])
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(SFTConfig, p) == cfg
    with pytest.raises(ConfigError, match="for stage 'reward'"):
        from_dict(SFTConfig, {"stage": "reward"})


@pytest.mark.parametrize("cls,override,match", [
    ("PPOConfig", "cliprange=1.5", r"cliprange=1.5 must be in \(0, 1\): the probability ratio is clipped"),
    ("PPOConfig", "cliprange=0", r"cliprange=0.0 must be in \(0, 1\)"),
    ("PPOConfig", "cliprange_value=0", "cliprange_value=0.0 must be > 0"),
    ("PPOConfig", "lam=1.2", r"lam=1.2 must be in \[0, 1\]: GAE lambda"),
    ("PPOConfig", "gamma=0", r"gamma=0.0 must be in \(0, 1\]"),
    ("PPOConfig", "gamma=1.01", r"gamma=1.01 must be in \(0, 1\]"),
    ("PPOConfig", "top_p=0", r"top_p=0.0 must be in \(0, 1\]"),
    ("PPOConfig", "top_p=1.5", r"top_p=1.5 must be in \(0, 1\]"),
    ("PPOConfig", "kl_coef=-0.1", "kl_coef=-0.1 must be >= 0"),
    ("PPOConfig", "temperature=0", "temperature=0.0 must be > 0"),
    ("PPOConfig", "kl_coef=.nan", "kl_coef=nan must be a finite number"),
    ("PPOConfig", "learning_rate=.inf", "learning_rate=inf must be a finite number"),
    ("PrefsConfig", "label_noise=0.5", r"label_noise=0.5 must be in \[0, 0.5\)"),
    ("PrefsConfig", "top_p=2", r"top_p=2.0 must be in \(0, 1\]"),
    ("PrefsConfig", "temperature=0", "temperature=0.0 must be > 0"),
    ("PrefsConfig", "eval_fraction=1", r"eval_fraction=1.0 must be in \(0, 1\)"),
])
def test_value_ranges_name_the_key_and_the_interval(cls, override, match):
    import edgerlhf.config as C

    with pytest.raises(ConfigError, match=match):
        load_config(getattr(C, cls), overrides=[override])


def test_each_problem_is_reported_once():
    from edgerlhf.config import GRPOConfig, PPOConfig

    for cls in (PPOConfig, GRPOConfig, SFTConfig):
        with pytest.raises(ConfigError) as e:
            load_config(cls, overrides=["learning_rate=-1", "warmup_ratio=2"])
        assert len(e.value.problems) == len(set(e.value.problems)) == 2, e.value.problems


def test_off_and_on_are_words_for_string_options_and_booleans_for_bool_ones(tmp_path):
    from edgerlhf.config import GRPOConfig

    cfg = load_config(GRPOConfig, overrides=["cache_trunk=off", "gradient_checkpointing=on", "progress=no"])
    assert cfg.cache_trunk == "off" and cfg.gradient_checkpointing is True and cfg.progress is False
    p = tmp_path / "c.yaml"
    p.write_text("cache_trunk: off\ngradient_checkpointing: yes\n")  # YAML 1.1 reads both as booleans
    cfg = load_config(GRPOConfig, p)
    assert cfg.cache_trunk == "off" and cfg.gradient_checkpointing is True
    with pytest.raises(ConfigError, match=r"cache_trunk='on': use one of auto, off"):
        load_config(GRPOConfig, overrides=["cache_trunk=on"])
