import json
import os

import pytest

# Any hidden download must fail the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
