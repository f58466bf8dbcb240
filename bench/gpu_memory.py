"""Online RL's CUDA memory for 0.5-1.7 B models (the 8 GB claim), on a GPU, for PPO and GRPO (beta=0).

    python bench/gpu_memory.py --sizes 0.5,1.7 --precisions bf16,int8,int4 --algorithms ppo,grpo

No such weights ship offline, so each model is a randomly initialised Llama of that shape saved to a local
folder (memory does not depend on the weights' values): "0.5" has Qwen2.5-0.5B's blocks with SmolLM2's
49k vocabulary (0.40 B parameters), "1.7" SmolLM2-1.7B's shape (1.71 B). Runs 3 steps per setting (8 episodes x
48 new tokens; GRPO: 2 prompts x 4 samples, beta=0; LoRA r=16, gradient checkpointing, a callable reward so no RM
is needed), each in its own process, and prints
`torch.cuda.max_memory_allocated` and the median step time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = {"0.5": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2),
          "1.7": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                      num_key_value_heads=32)}


def make_model(size: str, root: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgerlhf.models.loading import load_tokenizer

    out = root / f"llama-{size}b"
    if (out / "config.json").exists():
        return out
    tok = load_tokenizer("tiny")
    cfg = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, **SHAPES[size])
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = LlamaForCausalLM(cfg).to(torch.bfloat16)
    m.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"{size}B: {sum(p.numel() for p in m.parameters()) / 1e9:.2f} B parameters")
    return out


CHILD = """
import json, sys
from edgerlhf.config import load_config
from edgerlhf.registry import STAGE_CONFIGS
from edgerlhf.rewards import GoldScorer
from edgerlhf.stages import online
cfg = load_config(STAGE_CONFIGS[sys.argv[1]], overrides=sys.argv[2:])
run = online.run(cfg, reward_fn=GoldScorer())
print("RESULT", (run / "summary.json").read_text().replace(chr(10), " "))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="0.5,1.7")
    ap.add_argument("--precisions", default="bf16,int8,int4")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--algorithms", default="ppo,grpo")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edgerlhf-gpu-"))
    rows = []
    for size in a.sizes.split(","):
        path = make_model(size, root)
        for algo, prec in [(x, p) for x in a.algorithms.split(",") for p in a.precisions.split(",")]:
            extra = ["num_generations=4", "beta=0"] if algo == "grpo" else []
            over = [*extra, f"model={path}", "device=cuda", f"base_precision={'fp32' if prec == 'bf16' else prec}",
                    "dtype=bf16", "num_rollouts_per_step=8", "rollout_batch_size=8", "mini_batch_size=2",
                    "gradient_accumulation_steps=4",
                    "response_length=48", f"max_steps={a.steps}", "gradient_checkpointing=true", "gold_eval_prompts=0",
                    "progress=false", "report_to=none", f"output_dir={root}/runs", f"run_name={algo}-{size}-{prec}"]
            p = subprocess.run([sys.executable, "-c", CHILD, algo, *over], capture_output=True, text=True)
            line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT")), None)
            if line is None:
                print(p.stdout[-2000:], p.stderr[-3000:])
                continue
            s = json.loads(line[len("RESULT"):])
            rows.append((algo, size, prec, s["memory/cuda_max_allocated_mb"], s["timing/step_s_median"],
                         s["trainable_params"]))
            print("ROW", *rows[-1], flush=True)  # as it goes: a run stopped early still shows what it measured
    print(f"\n{'algo':<6}{'model':<8}{'base':<8}{'CUDA max MB':>12}{'step s':>9}{'trainable':>12}{'fits 8 GB':>10}")
    for algo, size, prec, mb, st, tr in rows:
        print(f"{algo:<6}{size + 'B':<8}{prec:<8}{mb:>12.0f}{st:>9.2f}{tr:>12,}{'yes' if mb < 8192 else 'no':>10}")


if __name__ == "__main__":
    main()
