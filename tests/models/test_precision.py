"""Reward-model precisions are real in memory, reload identically, and bad names are clear errors."""

import json

import pytest
import torch

from edgerlhf.config import RewardConfig, load_config
from edgerlhf.models.precision import (
    PRECISIONS,
    default_precisions,
    linear_weight_dtypes,
    parse_precisions,
    stored_bytes,
)
from edgerlhf.rewards.learned import load_reward_model
from edgerlhf.stages import reward, rm_eval

PAIRS = [{"prompt": f"Review {i}:", "chosen": "It is great and lovely.", "rejected": "It is awful and broken.",
          "gold_chosen": 0.8, "gold_rejected": -0.8} for i in range(24)]


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rm")
    f = tmp / "pairs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    cfg = load_config(RewardConfig, overrides={"model": "tiny", "prefs": str(f), "eval_prefs": str(f),
                                               "output_dir": str(tmp / "runs"), "max_steps": 2,
                                               "report_to": ["none"], "progress": False})
    return reward.run(cfg), f


def test_each_precision_loads_and_scores_the_same_batch(rm_run):
    run, _ = rm_run
    prompts, responses = [p["prompt"] for p in PAIRS[:4]], [p["chosen"] for p in PAIRS[:4]]
    ref = load_reward_model(run, "fp32")
    ref_scores = ref(prompts, responses)
    sizes = {}
    for prec in list(PRECISIONS) + ["int8:torchao"]:
        rm = load_reward_model(run, prec)
        scores = rm(prompts, responses)
        assert len(scores) == 4 and all(torch.isfinite(torch.tensor(scores)))
        assert max(abs(a - b) for a, b in zip(scores, ref_scores)) < 0.5, prec
        sizes[prec] = stored_bytes(rm.model)["total"]
        dtypes = linear_weight_dtypes(rm.model)
        if prec.startswith("int8"):
            assert set(dtypes) == {"int8"}
        elif prec == "int4":
            assert set(dtypes) == {"uint8"}  # packed 4-bit
        else:
            assert set(dtypes) == {"fp32": {"float32"}, "bf16": {"bfloat16"}, "fp16": {"float16"}}[prec]
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"]
    assert sizes["int8:torchao"] < sizes["fp32"]
    assert sizes["bf16"] < sizes["fp32"] and sizes["fp16"] == sizes["bf16"]


def test_stored_bytes_counts_quantisation_state_and_not_footprint(rm_run):
    run, _ = rm_run
    rm8 = load_reward_model(run, "int8:bnb")
    size = stored_bytes(rm8.model)
    # int8 weights plus float scales: the int8 share must be there, and float tensors (embeddings, norms,
    # scales, score head) too
    assert size["by_dtype"]["int8"] > 0 and size["by_dtype"].get("float32", 0) > 0
    n_linear = sum(m.weight.numel() for n, m in rm8.model.named_modules()
                   if ".layers." in n and getattr(m, "weight", None) is not None and m.weight.dim() == 2)
    assert size["by_dtype"]["int8"] == n_linear


@pytest.mark.parametrize("precision", ["int8", "int4", "bf16", "int8:torchao"])
def test_quantized_artifact_reloads_with_identical_scores(rm_run, tmp_path, precision):
    run, _ = rm_run
    out = rm_eval.quantize(str(run), precision, str(tmp_path / f"rm-{precision.replace(':', '-')}"))
    prompts, responses = [p["prompt"] for p in PAIRS[:4]], [p["rejected"] for p in PAIRS[:4]]
    live = load_reward_model(run, precision)(prompts, responses)
    reloaded = load_reward_model(out)
    assert reloaded.meta["precision"] == precision
    assert reloaded(prompts, responses) == pytest.approx(live, abs=1e-5)
    # on-disk weights agree with the measured in-memory bytes (safetensors adds only a small header)
    disk = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    mem = json.loads((out / "edgerlhf.json").read_text())["weight_bytes"]
    assert abs(disk - mem) / mem < 0.05, (disk, mem)
    with pytest.raises(ValueError, match="stored at"):
        load_reward_model(out, "fp32" if precision != "fp32" else "int8")


def test_bad_precision_lists_valid_ones(rm_run):
    run, _ = rm_run
    with pytest.raises(ValueError, match="valid precisions are fp32, bf16, fp16, int8, int4, int8:bnb, int8:torchao"):
        load_reward_model(run, "int3")
    with pytest.raises(ValueError, match="valid precisions"):
        parse_precisions("fp32,int2")


def test_default_precisions_are_device_aware():
    assert default_precisions("cpu") == ["fp32", "int8", "int4"]
    assert default_precisions("cuda") == ["bf16", "int8", "int4"]


def test_rm_eval_table(rm_run, tmp_path):
    from edgerlhf.config import RMEvalConfig

    run, f = rm_run
    cfg = load_config(RMEvalConfig, overrides={"rm": str(run), "pairs": str(f), "precisions": ["fp32", "int8", "int4"],
                                               "output_dir": str(tmp_path), "isolate": False, "report_to": ["none"],
                                               "batch_size": 8})
    out = rm_eval.run(cfg)
    s = json.loads((out / "summary.json").read_text())
    p = s["precisions"]
    assert set(p) == {"fp32", "int8", "int4"}
    assert p["fp32"]["flip_rate"] == 0 and p["fp32"]["max_abs_dev_over_std"] == 0
    assert p["int4"]["weight_bytes"] < p["int8"]["weight_bytes"] < p["fp32"]["weight_bytes"]
    for r in p.values():
        assert r["latency_s_per_batch"] > 0 and r["memory/peak_mb"] > 0 and 0 <= r["flip_rate"] <= 1
    assert "| int4 |" in (out / "table.md").read_text()


def test_int8_default_backend_is_recorded(rm_run):
    run, _ = rm_run
    rm = load_reward_model(run, "int8")
    assert rm.meta["backend"].startswith("torchao")  # the measured CPU default
    assert load_reward_model(run, "int8:bnb").meta["backend"].startswith("bitsandbytes")
