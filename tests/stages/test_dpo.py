"""DPO on the tiny model: it learns a separable toy set, only the adapter trains, the reference is the SFT
policy, and the artifact is a policy like the others (eval, export, chat read it)."""

import json

import pytest
import torch

from edgerlhf.config import ConfigError, DPOConfig, load_config
from edgerlhf.stages import dpo


def _toy(path, n, seed):
    from conftest import write_toy_prefs

    return write_toy_prefs(path, n, seed, gold=False)


def _cfg(tmp_path, **kw):
    base = {"model": "tiny", "prefs": str(_toy(tmp_path / "train.jsonl", 64, 1)),
            "eval_prefs": str(_toy(tmp_path / "eval.jsonl", 16, 2)), "output_dir": str(tmp_path / "runs"),
            "max_steps": 12, "per_device_train_batch_size": 8, "learning_rate": 5e-3, "logging_steps": 4,
            "report_to": ["none"], "progress": False, "warmup_ratio": 0.0, "lora_layers": 1, "beta": 0.5}
    base.update(kw)
    return load_config(DPOConfig, overrides=base)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_learns_the_pairs_and_only_the_top_adapter_trains(tmp_path, tiny_sft, loss_type):
    from safetensors.torch import load_file

    run = dpo.run(_cfg(tmp_path, policy=str(tiny_sft), loss_type=loss_type))
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "finished" and s["algorithm"] == "dpo"
    assert s["before/eval/margin"] == 0.0  # a fresh adapter is the reference (next test)
    # ipo: per-token means
    assert s["eval/accuracy"] > 0.8 and s["eval/margin"] > (0.1 if loss_type == "sigmoid" else 0.02)
    assert s["train/loss_last"] < s["train/loss_first"]
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    changed = [k for k, v in weights.items() if "lora_B" in k and v.abs().sum() > 0]
    assert changed and all(".layers.1." in k for k in changed)  # lora_layers=1: the top block of 2 only
    meta = json.loads((run / "adapter" / "edgerlhf.json").read_text())
    assert meta["stage"] == "dpo" and meta["sft"] == "sft" and (run / "adapter" / "sft").is_dir()
    assert "system_prompt" in meta  # the system message its pairs' prompts share ("" for none), for the export


def test_a_fresh_adapter_is_its_reference_so_the_before_metrics_need_no_pass(tmp_path, tiny_sft):
    """DPO skips the held-out pass before training: with the adapter fresh the policy's log-probs are the
    reference's bit for bit, so the metrics are those of pol = ref (loss log 2, accuracy 1/2, margin 0)."""
    from peft import get_peft_model

    from edgerlhf.data.formatting import encode_pair
    from edgerlhf.models.adapters import lora_config
    from edgerlhf.models.roles import load_base, no_dropout

    cfg = _cfg(tmp_path, policy=str(tiny_sft))
    base, tok, _ = load_base(cfg.policy, cfg.model, dtype=torch.float32, device=torch.device("cpu"), seed=0)
    model = get_peft_model(base, lora_config(cfg, "CAUSAL_LM", base))
    no_dropout(model)
    model.eval()
    rows = [json.loads(x) for x in (tmp_path / "eval.jsonl").read_text().splitlines()][:6]
    enc = [(encode_pair(tok, r["prompt"], r["chosen"], 192), encode_pair(tok, r["prompt"], r["rejected"], 192))
           for r in rows]
    pol = dpo._all_logprobs(model, enc, tok.pad_token_id, 4, False, True)
    with model.disable_adapter():
        ref = dpo._all_logprobs(model, enc, tok.pad_token_id, 4, False, True)
    assert torch.equal(pol, ref)
    before = dpo.held_out_stats(ref, ref, cfg)
    assert before["eval/loss"] == pytest.approx(0.693147, abs=1e-6) and before["eval/accuracy"] == 0.5
    assert before["eval/margin"] == 0.0 and before["eval/pairs"] == 6


def test_dpo_policy_reloads_and_its_reference_is_the_sft_policy(tmp_path, tiny_sft):
    """The artifact reloads as a policy (SFT merged, DPO adapter on top) that differs from the SFT policy,
    and the reference log-probs DPO used are the SFT policy's own."""
    from edgerlhf.data.formatting import encode_pair
    from edgerlhf.models.adapters import load_policy
    from edgerlhf.models.logprobs import batch_logprobs

    run = dpo.run(_cfg(tmp_path, policy=str(tiny_sft)))
    policy, tok, meta = load_policy(run)
    sft, _, _ = load_policy(tiny_sft)
    rows = [json.loads(x) for x in (tmp_path / "eval.jsonl").read_text().splitlines()][:4]
    enc = [encode_pair(tok, r["prompt"], r["chosen"], 192) for r in rows]
    with torch.no_grad():
        lp_pol, lp_sft = batch_logprobs(policy, enc, tok.pad_token_id), batch_logprobs(sft, enc, tok.pad_token_id)
    assert (lp_pol - lp_sft).mean() > 0  # DPO raised the chosen responses above the reference
    s = json.loads((run / "summary.json").read_text())
    assert s["before/eval/loss"] == pytest.approx(0.6931, abs=1e-3)  # -log sigmoid(0) with the reference = SFT
    assert s["before/eval/accuracy"] == pytest.approx(0.5, abs=0.15)  # margins of 0 are ties, counted 1/2
    # `edgerlhf eval` reads it like any policy: its SFT starting point is the baseline, KL measured against it
    from edgerlhf.config import EvalConfig
    from edgerlhf.stages import evaluate

    ev = evaluate.run(load_config(EvalConfig, overrides={
        "policy": str(run), "output_dir": str(tmp_path / "runs"), "num_prompts": 6, "max_new_tokens": 6,
        "report_to": ["none"], "progress": False}))
    e = json.loads((ev / "summary.json").read_text())
    assert e["status"] == "finished" and "eval/kl" in e and "SFT policy" in e["baseline"]


def test_shared_prefix_and_whole_sequences_give_the_same_run(tmp_path, tiny_sft):
    a = json.loads((dpo.run(_cfg(tmp_path, policy=str(tiny_sft), run_name="a", max_steps=3))
                    / "summary.json").read_text())
    b = json.loads((dpo.run(_cfg(tmp_path, policy=str(tiny_sft), run_name="b", max_steps=3, shared_prefix=False))
                    / "summary.json").read_text())
    for k in ("train/loss_first", "train/loss_last", "eval/loss", "eval/margin"):
        assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k


def test_dpo_config_errors_name_the_key_and_the_fix(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(DPOConfig, overrides={"prefs": "", "loss_type": "hinge", "beta": 0, "label_smoothing": 0.1,
                                          "precompute_ref_log_probs": True})
    msg = str(e.value)
    assert "prefs is required" in msg and "loss_type='hinge'" in msg and "beta=0" in msg
    assert "precompute_ref_log_probs" in msg and "computed once" in msg
    with pytest.raises(ConfigError, match="label_smoothing=0.1 applies to loss_type=sigmoid only"):
        load_config(DPOConfig, overrides={"prefs": str(_toy(tmp_path / "p.jsonl", 4, 0)), "loss_type": "ipo",
                                          "label_smoothing": 0.1})
