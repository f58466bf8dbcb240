"""Reward model on the tiny model: it learns a separable toy set, its head is trained, saved and reloads."""

import json

import pytest
import torch
from safetensors.torch import load_file

from edgerlhf.config import ConfigError, RewardConfig, load_config
from edgerlhf.rewards.learned import load_reward_model
from edgerlhf.stages import reward


def _toy(path, n, seed):
    from conftest import write_toy_prefs

    return write_toy_prefs(path, n, seed)


def _cfg(tmp_path, **kw):
    base = {"model": "tiny", "prefs": str(_toy(tmp_path / "train.jsonl", 96, 1)),
            "eval_prefs": str(_toy(tmp_path / "eval.jsonl", 32, 2)), "output_dir": str(tmp_path / "runs"),
            "max_steps": 40, "per_device_train_batch_size": 8, "learning_rate": 5e-3, "logging_steps": 10,
            "report_to": ["none"], "progress": False, "warmup_ratio": 0.0, "center_rewards_coef": 0.0}
    base.update(kw)
    return load_config(RewardConfig, overrides=base)


def test_reward_model_learns_and_head_round_trips(tmp_path):
    run = reward.run(_cfg(tmp_path))
    s = json.loads((run / "summary.json").read_text())
    assert s["before/eval/accuracy"] < 0.8
    assert s["eval/accuracy"] >= 0.9 and s["eval/accuracy_gold"] >= 0.9

    # the score head is in the saved adapter and differs from a fresh head
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    head = [v for k, v in weights.items() if "score" in k]
    assert head, "score head missing from the adapter"
    from edgerlhf.rewards.learned import load_seq_cls

    fresh, _ = load_seq_cls("tiny", seed=42)
    assert not torch.allclose(head[0], fresh.score.weight)
    assert all("lora_" in k or "score" in k for k in weights)

    # reloading gives the same scores twice, and the trained model ranks the held-out pairs
    rm = load_reward_model(run)
    rows = [json.loads(x) for x in (tmp_path / "eval.jsonl").read_text().splitlines()]
    prompts = [r["prompt"] for r in rows]
    a = rm(prompts, [r["chosen"] for r in rows])
    b = rm(prompts, [r["rejected"] for r in rows])
    assert sum(x > y for x, y in zip(a, b)) / len(rows) == pytest.approx(s["eval/accuracy"])
    assert load_reward_model(run)(prompts, [r["chosen"] for r in rows]) == a


def test_only_lora_and_head_train(tmp_path):
    cfg = _cfg(tmp_path, max_steps=2)
    from edgerlhf.models.adapters import apply_lora
    from edgerlhf.rewards.learned import load_seq_cls

    model = apply_lora(load_seq_cls("tiny", seed=cfg.seed)[0], cfg, "SEQ_CLS")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "score" in n for n in names)
    assert any("score" in n for n in names)


def test_head_less_artifact_is_refused(tmp_path):
    run = reward.run(_cfg(tmp_path, max_steps=1))
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    from safetensors.torch import save_file

    save_file({k: v for k, v in weights.items() if "score" not in k}, run / "adapter" / "adapter_model.safetensors")
    with pytest.raises(ValueError, match="no trained score head"):
        load_reward_model(run)


def test_bad_rows_error_or_skip(tmp_path):
    bad = tmp_path / "bad.jsonl"
    rows = [{"prompt": "p1", "chosen": "good", "rejected": "bad"},
            {"prompt": "p2", "chosen": "same", "rejected": "same"},
            {"prompt": "p3", "chosen": "", "rejected": "bad"}] + \
           [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(20)]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from edgerlhf.data.loaders import DataError

    with pytest.raises(DataError, match=r"bad.jsonl, line 2.*identical"):
        reward.run(_cfg(tmp_path, prefs=str(bad), eval_prefs=""))
    assert not (tmp_path / "runs").exists()
    run = reward.run(_cfg(tmp_path, prefs=str(bad), eval_prefs="", skip_bad_rows=True, max_steps=1))
    assert json.loads((run / "summary.json").read_text())["skipped_rows"] == 2


def test_reward_config_requires_prefs():
    with pytest.raises(ConfigError, match="prefs is required"):
        load_config(RewardConfig)


@pytest.mark.parametrize("base_precision,avx512bf16", [("int8", False), ("int4", True), ("int4", False)],
                         ids=["int8", "int4-avx512bf16-detected", "int4-avx512bf16-absent"])
def test_qlora_style_rm_trains_adapters_through_a_quantized_body(tmp_path, monkeypatch, base_precision, avx512bf16):
    import warnings

    import bitsandbytes.nn.modules as bnb_modules

    from edgerlhf.models.precision import linear_weight_dtypes

    # bitsandbytes' CPU detection forced either way: the backward-less kernel branch is tested on every machine
    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: avx512bf16)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = reward.run(_cfg(tmp_path, base_precision=base_precision, max_steps=6, eval_steps=3))
    # the held-out evaluation in between must not switch the body to a kernel without a backward
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # the adapters received gradients
    assert any("score" in k for k in weights)
    rm = load_reward_model(run)
    assert rm.meta["precision"] == base_precision and rm.meta["backend"].startswith("QLoRA")
    stored = set(linear_weight_dtypes(rm.model.get_base_model()))
    assert stored == ({"int8"} if base_precision == "int8" else {"uint8"})
    with pytest.raises(ValueError, match="trained on a"):
        load_reward_model(run, "fp32")
