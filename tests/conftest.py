import json
import os

import pytest

# Any hidden download must fail the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    """EDGERLHF_FORCE_AVX512BF16=1 (or 0) runs the whole suite as if bitsandbytes had (or had not) detected
    AVX512-BF16, whatever this CPU has: the branch it takes for 4-bit layers (a backward-less inference
    kernel after a no-grad forward) is then exercised everywhere, on any machine."""
    forced = os.environ.get("EDGERLHF_FORCE_AVX512BF16")
    if forced in ("0", "1"):
        import bitsandbytes.nn.modules as bnb_modules

        bnb_modules.has_avx512bf16 = lambda: forced == "1"


def pytest_report_header(config):
    forced = os.environ.get("EDGERLHF_FORCE_AVX512BF16")
    return (f"bitsandbytes AVX512-BF16 detection forced {'on' if forced == '1' else 'off'}" if forced in ("0", "1")
            else None)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("EDGERLHF_GPU_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="GPU test: opt in with EDGERLHF_GPU_TESTS=1 on a CUDA machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def sft_file(tmp_path):
    """A small, learnable SFT file in TRL's conversational prompt-completion format."""
    rows = [{"prompt": [{"role": "user", "content": f"Rate item {i}."}],
             "completion": [{"role": "assistant", "content": "Great, I love it." if i % 2 else "Awful, it broke."}]}
            for i in range(48)]
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def make_tiny_sft(root):
    """A tiny 'SFT' adapter whose lora_B is non-zero, so it really changes the model."""
    import torch

    from edgerlhf.config import PPOConfig, load_config
    from edgerlhf.models.adapters import apply_lora, write_artifact_meta
    from edgerlhf.models.loading import load_causal_lm, load_tokenizer

    cfg = load_config(PPOConfig, overrides={"model": "tiny"})
    model = apply_lora(load_causal_lm("tiny", seed=42), cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    out = root / "sft" / "adapter"
    model.save_pretrained(out)
    load_tokenizer("tiny").save_pretrained(out)
    write_artifact_meta(out, stage="sft", kind="lora", base_model="tiny", seed=42)
    return root / "sft"


def make_tiny_ppo(root):
    """(a 2-step PPO run of the tiny model on the tiny SFT policy above, that SFT policy): a LoRA policy with an SFT
    policy it started from, as the study's are."""
    from edgerlhf.config import PPOConfig, load_config
    from edgerlhf.stages import online

    sft = make_tiny_sft(root)
    cfg = load_config(PPOConfig, overrides={
        "model": "tiny", "policy": str(sft), "output_dir": str(root / "runs"), "max_steps": 2,
        "num_rollouts_per_step": 8, "rollout_batch_size": 8, "mini_batch_size": 4, "gradient_accumulation_steps": 1,
        "response_length": 8, "gold_eval_prompts": 0, "report_to": ["none"], "progress": False, "learning_rate": 5e-3})
    return online.run(cfg, reward_fn=lambda p, r: [len(x) / 20 for x in r]), sft


@pytest.fixture
def tiny_sft(tmp_path):
    return make_tiny_sft(tmp_path)


TOY_POS = ["great", "lovely", "superb", "wonderful", "excellent", "delightful", "fantastic", "charming"]
TOY_NEG = ["awful", "broken", "dreadful", "terrible", "boring", "sloppy", "horrid", "useless"]


def write_toy_prefs(path, n, seed, gold: bool = True):
    """``n`` separable preference pairs (two positive words chosen, two negative rejected) as JSONL."""
    import json
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.sample(TOY_POS, 2), rng.sample(TOY_NEG, 2)
        row = {"prompt": f"Review item {seed}-{i}:", "chosen": f"It is {a[0]} and {a[1]}.",
               "rejected": f"It is {b[0]} and {b[1]}."}
        if gold:
            row.update(gold_chosen=0.8, gold_rejected=-0.8)
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load_hh_style():
    """tests/data/hh_style.py: the offline HH-RLHF-style task generator (and its rule-based gold)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "data" / "hh_style.py"
    spec = importlib.util.spec_from_file_location("hh_style", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def hh_style():
    return load_hh_style()

def assert_report_traces(out) -> dict:
    """Every number of a study's report is read from a summary (same text once formatted) or names how it was
    computed and from which existing files; returns report.json."""
    md = (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    cells = report["cells"]
    read = [c for c in cells if "file" in c]
    computed = [c for c in cells if "computed" in c]
    assert read and computed and len(cells) > 20
    for c in read:
        v = json.loads((out / c["file"]).read_text())
        for k in c["key"]:
            v = v[k]
        assert c["format"].format(v) == c["text"], c
        assert c["text"] in md, c
    for c in computed:  # computed numbers name what they were computed from, and those files exist
        assert c["text"] in md and c["from"], c
        for f in c["from"]:
            assert (out / (f["file"] if isinstance(f, dict) else f)).is_file(), c
    return report


@pytest.fixture
def report_traces():
    return assert_report_traces
