"""Task files: the built-in task is exactly the stages' defaults; a user's task reaches every stage; a bad task
file is one error listing every problem, and nothing is written."""

import dataclasses
import json
from pathlib import Path

import pytest

from edgerlhf.config import (
    ConfigError,
    DPOConfig,
    EvalConfig,
    PPOConfig,
    PrefsConfig,
    RewardConfig,
    SFTConfig,
    load_config,
)
from edgerlhf.data.taskfile import BUILTIN_TASK, load_task, stage_settings
from edgerlhf.registry import STAGE_CONFIGS


def _default(cls, name):
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def test_builtin_task_is_every_stages_defaults():
    task = load_task("builtin")
    assert Path(task.path) == BUILTIN_TASK.resolve() and task.label == "reviews"
    seen = 0
    for cls in STAGE_CONFIGS.values():
        for k, v in stage_settings(task, cls).items():
            assert v == _default(cls, k), (cls.stage, k, v)
            seen += 1
    assert seen >= 15  # the task really sets keys in every stage that has them


def _task(tmp_path, hh_style, **over):
    path = hh_style.write(tmp_path / "task", pairs=60, gold_pairs=0, n_eval=12)
    text = path.read_text()
    for k, v in over.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{k}:")]
        text = "\n".join(lines + [f"{k}: {v}"]) + "\n"
    path.write_text(text)
    return path


def test_user_task_reaches_every_stage_relative_to_its_file(tmp_path, hh_style, monkeypatch):
    path = _task(tmp_path, hh_style, response_length=24, max_length=160)
    monkeypatch.chdir(tmp_path)  # paths in the task are relative to the task file, not to here
    root = path.parent.resolve()
    sft = load_config(SFTConfig, overrides={"task": str(path), "model": "tiny"})
    assert (sft.dataset, sft.sft_from) == (str(root / "prefs.jsonl"), "chosen")
    assert sft.eval_prompts == str(root / "eval_prompts.jsonl") and sft.max_length == 160 and sft.gold == "none"
    assert sft.task == str(path.resolve())
    prefs = load_config(PrefsConfig, overrides={"task": str(path)})
    assert prefs.dataset == str(root / "prefs.jsonl") and prefs.max_new_tokens == 24 and prefs.gold == "none"
    assert load_config(RewardConfig, overrides={"task": str(path)}).prefs == str(root / "prefs.jsonl")
    assert load_config(DPOConfig, overrides={"task": str(path)}).max_length == 160
    ppo = load_config(PPOConfig, overrides={"task": str(path)}, preset="quick")  # presets set budgets, not the task
    assert (ppo.prompts, ppo.response_length, ppo.gold) == (str(root / "prefs.jsonl"), 24, "none")
    ev = load_config(EvalConfig, overrides={"task": str(path), "policy": str(tmp_path)})
    assert (ev.prompts, ev.max_new_tokens, ev.gold) == (str(root / "eval_prompts.jsonl"), 24, "none")
    # key=value overrides win over the task
    assert load_config(PPOConfig, overrides={"task": str(path), "response_length": 9}).response_length == 9


def test_callable_gold_in_the_task_resolves_relative_to_it(tmp_path, hh_style):
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "mygold.py").write_text("def score(prompts, responses):\n    return [1.0] * len(responses)\n")
    path = _task(tmp_path, hh_style, gold="mygold.py:score")
    task = load_task(path)
    assert task.gold == f"{path.parent.resolve() / 'mygold.py'}:score"
    from edgerlhf.rewards.gold import make_gold

    assert make_gold(task.gold)(["q"], ["a"]) == [1.0]


def test_bad_task_file_is_one_error_listing_every_problem(tmp_path, hh_style):
    path = _task(tmp_path, hh_style)
    d = path.parent
    (d / "empty.jsonl").write_text("")
    # an evaluation prompt that is also a training prompt: the same question, as a plain string this time
    train_chosen = json.loads((d / "prefs.jsonl").read_text().splitlines()[3])["chosen"]
    train_q = train_chosen.split("\n\nHuman: ")[-1].split("\n\nAssistant:")[0]
    with open(d / "eval_prompts.jsonl", "a") as f:
        f.write(json.dumps({"prompt": train_q}) + "\n")
    n_eval = len((d / "eval_prompts.jsonl").read_text().splitlines())
    path.write_text(path.read_text() + "gold: nosuchgold\nrespons_length: 8\nsft: missing.jsonl\nprompts: empty.jsonl\n"
                    "max_new_tokens: 8\n")
    text = path.read_text().replace("gold: none\n", "")
    path.write_text(text)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError) as e:
        load_task(path)
    msg = str(e.value)
    assert "did you mean 'response_length'" in msg  # unknown key
    assert "max_new_tokens" in msg and "renamed" in msg and "response_length" in msg
    assert "nosuchgold" in msg and "not a known gold" in msg
    assert "missing.jsonl not found" in msg
    assert "empty.jsonl" in msg and "has no rows" in msg
    assert "also in prefs (training)" in msg and f"eval_prompts.jsonl, line {n_eval}" in msg
    assert "prefs.jsonl, line 4" in msg
    assert len(e.value.problems) >= 6
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_generate_without_a_gold_and_sft_from_without_pairs(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("prefs: generate\ngold: none\nsft_from: chosen\n")
    with pytest.raises(ConfigError) as e:
        load_task(path)
    assert "prefs: generate labels sampled pairs with the gold" in str(e.value)
    assert "sft_from=chosen needs `sft` (or `prefs`) to be a preference file" in str(e.value)


def test_missing_task_file_and_stage_errors_name_it(tmp_path):
    with pytest.raises(ConfigError, match="task file .*nope.yaml.* not found"):
        load_config(SFTConfig, overrides={"task": str(tmp_path / "nope.yaml")})


def test_overlap_counts_a_string_and_a_message_prompt_as_the_same(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "How do I   boil an egg?",
                                                      "completion": "Ten minutes."}) + "\n")
    (tmp_path / "eval.jsonl").write_text(json.dumps({"prompt": [{"role": "user",
                                                                 "content": "How do I boil an egg?"}]}) + "\n")
    (tmp_path / "t.yaml").write_text("sft: train.jsonl\nprompts: train.jsonl\neval_prompts: eval.jsonl\n")
    with pytest.raises(ConfigError) as e:
        load_task(tmp_path / "t.yaml")
    assert "also in sft (training)" in str(e.value) and "also in prompts (training)" in str(e.value)
    assert "eval.jsonl, line 1 = " in str(e.value)


def test_keywords_in_the_wrong_place(tmp_path):
    (tmp_path / "t.yaml").write_text("prefs: builtin\nsft: generate\n")
    with pytest.raises(ConfigError) as e:
        load_task(tmp_path / "t.yaml")
    assert "prefs='builtin': use generate" in str(e.value)
    assert "sft=generate: `generate` is for prefs only" in str(e.value)
