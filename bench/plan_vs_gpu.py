"""The memory planner's GPU predictions against the CUDA peaks `bench/gpu_memory.py` measured on an H200 (README,
"On a GPU": PPO, batch 8 x 48, gradient checkpointing, LoRA r=16 on every block, a callable reward, randomly
initialised Llamas of 0.40 B and 1.71 B parameters). Prints predicted vs measured `max_memory_allocated`; needs no
GPU (the measured numbers are that run's, quoted here).

    python bench/plan_vs_gpu.py
"""
from transformers import LlamaConfig

from edgerlhf.study.plan import MiB, plan_stage, shape_from_config, stage_settings

SHAPES = {"0.5": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2),
          "1.7": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                      num_key_value_heads=32)}
MEASURED_MB = {("0.5", "bf16"): 1071, ("0.5", "int8"): 800, ("0.5", "int4"): 557,  # H200, bench/gpu_memory.py
               ("1.7", "bf16"): 3713, ("1.7", "int8"): 2374, ("1.7", "int4"): 1434}

print("| model | base | predicted MiB | measured MB | error |\n|---|---|---|---|---|")
for size, kw in SHAPES.items():
    shape = shape_from_config(LlamaConfig(vocab_size=49152, tie_word_embeddings=True, **kw))
    for prec in ("bf16", "int8", "int4"):
        cfg = stage_settings("ppo", preset="none", overrides={
            "base_precision": "fp32" if prec == "bf16" else prec, "dtype": "bf16", "num_rollouts_per_step": 8,
            "rollout_batch_size": 8, "mini_batch_size": 2, "gradient_accumulation_steps": 4, "response_length": 48,
            "gradient_checkpointing": True, "reward": "none"})
        p = plan_stage("ppo", cfg, shape, device="cuda", prompt_tokens=45, response_tokens=48)
        pred = (p.peak - p.term("CUDA context (outside allocated)")) / MiB
        m = MEASURED_MB[(size, prec)]
        print(f"| {shape.params / 1e9:.2f} B | {prec} | {pred:,.0f} | {m:,} | {pred / m - 1:+.1%} |")
