"""The Python API a notebook user expects: every stage at the top level, documented, and the Python API page
of the docs (docs/python-api.md) running as written (on the tiny model, with tiny step counts)."""

import inspect
import json
import re
from pathlib import Path

import pytest

import edgerlhf

PYTHON_API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"

API = ["SFTConfig", "PrefsConfig", "RewardConfig", "RMEvalConfig", "PPOConfig", "GRPOConfig", "RLOOConfig",
       "EvalConfig", "load_config", "run_sft", "run_prefs", "run_reward", "run_rm_eval", "run_ppo", "run_grpo",
       "run_rloo", "run_eval", "run_study", "load_policy", "load_reward_model", "ConfigError", "DPOConfig", "run_dpo"]

# What the docs' Python API page shows for the default model -> the same call on the tiny model with tiny step
# counts. Each left side must stand on the page: an edit of the page that drops one fails here, not silently.
TINY = [
    ('"model": "default"', '"model": "tiny"'),
    ('"max_steps": 40}', '"max_steps": 2, "max_eval_samples": 4, "sample_max_new_tokens": 4, "gold_eval_prompts": 0, '
                        '"report_to": ["none"]}'),
    ('"num_prompts": 260}', '"num_prompts": 12, "max_new_tokens": 8, "tie_threshold": 0.0, "label_noise": 0.0, '
                            '"eval_fraction": 0.25, "report_to": ["none"]}'),
    ('"prefs": str(prefs)}', '"prefs": str(prefs), "max_steps": 2, "lora_layers": 0, "report_to": ["none"]}'),
    ('"members": 4}', '"members": 4, "max_steps": 2, "lora_layers": 0, "report_to": ["none"]}'),
    ('"precisions": ["fp32", "int4"]}', '"precisions": ["fp32", "int4"], "max_pairs": 8, "isolate": False, '
                                        '"report_to": ["none"]}'),
    ('"reward_precision": "int4"}', '"reward_precision": "int4", "max_steps": 1, "num_rollouts_per_step": 8, '
                                    '"rollout_batch_size": 8, "mini_batch_size": 4, "response_length": 8, '
                                    '"lora_layers": 0, "max_prompts": 32, "gold_eval_prompts": 0, '
                                    '"report_to": ["none"]}'),
    ('"reward": str(rm)}))', '"reward": str(rm), "max_steps": 1, "num_rollouts_per_step": 8, "rollout_batch_size": 8, '
                             '"mini_batch_size": 4, "response_length": 8, "lora_layers": 0, "max_prompts": 32, '
                             '"gold_eval_prompts": 0, "report_to": ["none"]}))'),
    ('"policy": str(ppo)}', '"policy": str(ppo), "num_prompts": 8, "max_new_tokens": 8, "report_to": ["none"]}'),
    ('E.run_study("quick", precisions=["fp32", "int4"])',
     'E.run_study("smoke", precisions=["fp32", "int4"], out="study", progress=False, report_to=["none"], '
     'isolate=False)'),
]


def test_the_whole_api_is_at_the_top_level_with_docstrings():
    for name in API:
        obj = getattr(edgerlhf, name)
        assert name in edgerlhf.__all__, name
        assert inspect.getdoc(obj) and len(inspect.getdoc(obj)) > 40, f"{name} has no real docstring"


def test_load_config_takes_a_preset_and_names_a_bad_one():
    cfg = edgerlhf.load_config(edgerlhf.PPOConfig, preset="quick", overrides={"max_steps": 3})
    assert cfg.max_steps == 3 and cfg.lora_layers == 10  # the preset, then the override
    with pytest.raises(edgerlhf.ConfigError, match=r"unknown preset 'fast' for stage 'ppo'; use one of full, quick, "
                                                   r"user"):
        edgerlhf.load_config(edgerlhf.PPOConfig, preset="fast")


def _docs_python() -> str:
    page = PYTHON_API_PAGE.read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) == 1, f"{PYTHON_API_PAGE} should hold one python block"
    return blocks[0]


def test_docs_python_api_page_runs_as_written(tmp_path, monkeypatch, capsys):
    code = _docs_python()
    for default, tiny in TINY:
        assert default in code, f"{PYTHON_API_PAGE.name} no longer has {default!r}: update TINY in this test"
        code = code.replace(default, tiny)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, str(PYTHON_API_PAGE), "exec"), ns)  # noqa: S102 - the docs' own example
    for name in ("sft", "prefs", "rm", "rm4", "table", "ppo", "ppo_len", "grpo", "dpo", "report", "study"):
        assert Path(ns[name]).is_dir(), name
    assert len(ns["rm_uwo"]) == 4 and len(ns["rm_uwo"].last_spread) == 1
    for name in ("sft", "prefs", "rm", "table", "ppo", "ppo_len", "grpo", "dpo", "report"):
        assert (Path(ns[name]) / "status").read_text().strip() == "finished", name
    assert (Path(ns["study"]) / "report.md").is_file()
    assert json.loads((Path(ns["ppo_len"]) / "summary.json").read_text())["reward_precision"] == "callable"
    printed = capsys.readouterr().out
    assert re.search(r"^\[-?\d+\.\d+(e-?\d+)?\]$", printed, re.M), "the RM call prints one float in a list"
    model, _tok, meta = ns["model"], ns["tokenizer"], ns["meta"]
    assert not hasattr(model, "peft_config") and meta.get("stage") == "sft"
