"""SFT on the tiny model: only LoRA weights change, the loss goes down, the run folder is complete."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from edgerlhf.config import ConfigError, SFTConfig, load_config
from edgerlhf.models.adapters import load_policy
from edgerlhf.models.loading import load_causal_lm
from edgerlhf.stages import sft


def _cfg(tmp_path, sft_file, **kw):
    base = {"model": "tiny", "dataset": str(sft_file), "output_dir": str(tmp_path / "runs"), "max_steps": 12,
            "per_device_train_batch_size": 8, "learning_rate": 1e-2, "logging_steps": 2, "report_to": ["none"],
            "sample_prompts": 1, "sample_max_new_tokens": 4, "progress": False, "warmup_ratio": 0.0}
    base.update(kw)
    return load_config(SFTConfig, overrides=base)


def test_sft_changes_only_lora_and_lowers_loss(tmp_path, sft_file):
    run = sft.run(_cfg(tmp_path, sft_file))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["eval/loss_after"] < summary["eval/loss_before"] - 0.5
    assert summary["train/loss_last"] < summary["train/loss_first"]

    # the adapter holds only LoRA weights, and training moved lora_B away from its zero init
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    assert any(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k)

    # the base weights are untouched: reloading base+adapter with merge=False shows the same base
    policy, _, meta = load_policy(run, merge=False)
    assert meta["system_prompt"] == ""  # its prompts have no system message: recorded for the export
    base = load_causal_lm("tiny", seed=meta["seed"])
    base_sd = base.state_dict()
    for name, p in policy.get_base_model().state_dict().items():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        assert torch.equal(p, base_sd[key]), name


def test_run_folder_contents(tmp_path, sft_file):
    run = sft.run(_cfg(tmp_path, sft_file, max_steps=4, report_to=["tensorboard"]))
    assert (run / "status").read_text().strip() == "finished"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["stage"] == "sft" and cfg["max_steps"] == 4 and cfg["lora_r"] == 16
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4]
    for key in ("train/loss", "train/lr", "train/tokens_per_s", "timing/step_s", "memory/peak_mb"):
        assert key in train_rows[0] and train_rows[0][key] > 0
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "samples.jsonl").is_file()


def test_gradient_checkpointing_with_lora_trains_the_adapter(tmp_path, sft_file):
    """The classic failure: checkpointing over frozen inputs leaves LoRA without gradients (saved as zeros)."""
    run = sft.run(_cfg(tmp_path, sft_file, max_steps=3, gradient_checkpointing=True))
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)


def test_bad_config_writes_nothing(tmp_path, sft_file):
    with pytest.raises(ConfigError):
        _cfg(tmp_path, sft_file, learning_rate=-1)
    assert not (tmp_path / "runs").exists()


def test_bad_data_writes_nothing(tmp_path):
    from edgerlhf.data.loaders import DataError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "completion": "ok"}\n{"prompt": "hi"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl.*line 2"):
        sft.run(_cfg(tmp_path, bad))
    assert not (tmp_path / "runs").exists()


def test_existing_run_folder_is_not_overwritten(tmp_path, sft_file):
    cfg = _cfg(tmp_path, sft_file, max_steps=1, run_name="mine")
    run = sft.run(cfg)
    before = (run / "summary.json").read_text()
    with pytest.raises(FileExistsError, match="already exists"):
        sft.run(cfg)
    assert (run / "summary.json").read_text() == before


def test_lora_layers_limits_the_adapter_to_the_top_blocks(tmp_path, sft_file):
    run = sft.run(_cfg(tmp_path, sft_file, max_steps=2, lora_layers=1))
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    assert weights and all(".layers.1." in k for k in weights)  # tiny has blocks 0 and 1
    assert any(k.endswith("mlp.down_proj.lora_A.weight") for k in weights)


def test_prompt_too_long_for_the_template_names_the_row(tmp_path):
    from edgerlhf.data.loaders import DataError

    f = tmp_path / "long.jsonl"
    rows = [{"prompt": "short one", "completion": "ok"}] * 3 + [{"prompt": "overlong " * 8, "completion": "ok"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the loader's length check (no template) passes at 40 tokens; the template pushes the prompt over
    with pytest.raises(DataError, match=r"long.jsonl, the row whose prompt starts 'overlong overlong.*max_length"):
        sft.run(_cfg(tmp_path, f, max_length=36))
    assert not (tmp_path / "runs").exists()


def test_sft_from_the_chosen_side_of_hh_transcripts(tmp_path):
    """`sft_from=chosen`: a preference file (here HH-RLHF transcripts) gives prompt -> chosen rows; the prompt
    is the user / assistant message list, so the model's chat template applies."""
    rows = [{"chosen": f"\n\nHuman: Name fruit {i}.\n\nAssistant: Apple number {i}.",
             "rejected": f"\n\nHuman: Name fruit {i}.\n\nAssistant: No."} for i in range(24)]
    hh = tmp_path / "hh.jsonl"
    hh.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(tmp_path, hh, sft_from="chosen", max_steps=2)
    from edgerlhf.models.loading import load_tokenizer

    train, held, skipped = sft.load_rows(cfg, load_tokenizer("tiny"))
    assert skipped == 0 and len(train) + len(held) == 24
    assert all(r["prompt"][-1]["role"] == "user" and r["completion"][0]["content"].startswith("Apple") for r in train)
    run = sft.run(cfg)
    assert (run / "status").read_text().strip() == "finished"
    with pytest.raises(ConfigError, match="sft_from='rejected'"):
        _cfg(tmp_path, hh, sft_from="rejected")
    from edgerlhf.data.loaders import DataError

    plain = tmp_path / "sft.jsonl"
    plain.write_text('{"prompt": "hi", "completion": "ok"}\n')
    with pytest.raises(DataError, match=r"sft.jsonl, line 1: field 'chosen' is missing"):
        sft.run(_cfg(tmp_path, plain, sft_from="chosen", run_name="x"))
    assert not (tmp_path / "runs" / "x").exists()


def test_chat_template_off_trains_plain_text_and_later_stages_must_agree(tmp_path, sft_file):
    """chat_template=false: rows are plain text (prompt, response, EOS); the artifact records it, every loader
    formats as it was trained, and a later stage set the other way is an error naming the fix."""
    from edgerlhf.config import PPOConfig
    from edgerlhf.data.formatting import completion_text, prompt_text
    from edgerlhf.models.adapters import find_artifact, read_artifact_meta

    run = sft.run(_cfg(tmp_path, sft_file, max_steps=2, chat_template=False))
    assert read_artifact_meta(find_artifact(run))["use_chat_template"] is False
    _, tok, _ = load_policy(run)
    assert tok.chat_template is None
    msgs = [{"role": "user", "content": "Rate item 3."}]
    assert prompt_text(tok, msgs) == "Rate item 3.\n"
    assert completion_text(tok, msgs, "Great.") == "Great." + tok.eos_token
    with pytest.raises(ConfigError, match="was trained with chat_template=false: set chat_template=false"):
        load_config(PPOConfig, overrides={"model": "tiny", "policy": str(run)})
    assert load_config(PPOConfig, overrides={"model": "tiny", "policy": str(run), "chat_template": False}).policy
    # the default keeps the template, and says so in the artifact
    run2 = sft.run(_cfg(tmp_path, sft_file, max_steps=1, run_name="with-template"))
    assert read_artifact_meta(find_artifact(run2))["use_chat_template"] is True
    assert load_policy(run2)[1].chat_template
