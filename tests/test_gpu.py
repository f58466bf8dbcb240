"""GPU checks (opt in: EDGERLHF_GPU_TESTS=1 on a CUDA machine). CI has no GPU; these run by hand."""

import json

import pytest
import torch

pytestmark = pytest.mark.gpu


def _reward(prompts, responses):
    return [sum(c in "aeiou" for c in r) / 10 for r in responses]


@pytest.mark.parametrize("algo,base_precision", [("ppo", "fp32"), ("ppo", "int8"), ("ppo", "int4"), ("grpo", "int4"),
                                                 ("rloo", "fp32")])
def test_online_rl_on_cuda_with_a_quantized_base(tmp_path, algo, base_precision):
    from edgerlhf.config import load_config
    from edgerlhf.registry import STAGE_CONFIGS
    from edgerlhf.stages import online

    extra = {} if algo == "ppo" else {"num_generations": 4, "beta": 0.05}
    cfg = load_config(STAGE_CONFIGS[algo], overrides={**extra,
        "model": "tiny", "device": "cuda", "output_dir": str(tmp_path), "max_steps": 3, "num_rollouts_per_step": 8,
        "rollout_batch_size": 8, "mini_batch_size": 4, "gradient_accumulation_steps": 1, "response_length": 8,
        "gold_eval_prompts": 4, "report_to": ["none"], "progress": False, "base_precision": base_precision,
        "gradient_checkpointing": True})
    run = online.run(cfg, reward_fn=_reward)
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "finished" and s["device"].startswith("cuda")
    assert s["memory/cuda_max_allocated_mb"] > 0 and s["memory/peak_mb"] == s["memory/cuda_max_allocated_mb"]
    assert s["skipped_updates"] == 0


def test_smoke_study_on_cuda_uses_the_gpu_precisions(tmp_path):
    from edgerlhf.study.pipeline import run_study

    out = run_study("smoke", out=tmp_path / "s", device="cuda", progress=False, report_to=["none"])
    index = json.loads((out / "study.json").read_text())
    assert index["precisions"] == ["bf16", "int8", "int4"]
    rm_eval = next(s["path"] for s in index["stages"] if s["stage"] == "rm-eval")
    rm = json.loads((out / rm_eval / "summary.json").read_text())
    assert rm["precisions"]["int4"]["weight_mb"] < rm["precisions"]["bf16"]["weight_mb"]
    assert (out / "report.html").is_file()
    assert torch.cuda.max_memory_allocated() > 0
