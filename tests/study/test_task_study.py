"""The whole study from a task file in HH-RLHF format (smoke preset, tiny model): once with `gold: none` (the
report judges by the fp32 learned RM, says so first, and no column or key claims a gold) and once with a callable
gold (a gold column, every gold number the callable's). Every number in both reports traces to a summary."""

import json

import pytest

from edgerlhf.config import ConfigError
from edgerlhf.study.pipeline import run_study

STUDY = {"precisions": ["fp32", "int8"], "algorithms": "ppo,dpo", "progress": False, "report_to": ["none"],
         "isolate": False}


def _make_task(root, hh_style, gold):
    return hh_style.write(root / "task", pairs=120, gold_pairs=0, n_eval=24, gold=gold)


@pytest.fixture(scope="module")
def no_gold(tmp_path_factory, hh_style):
    root = tmp_path_factory.mktemp("nogold")
    task = _make_task(root, hh_style, "none")
    return run_study("smoke", task=task, out=root / "s", **STUDY), task


@pytest.fixture(scope="module")
def callable_gold(tmp_path_factory, hh_style):
    root = tmp_path_factory.mktemp("gold")
    task = _make_task(root, hh_style, str(hh_style.__file__) + ":helpfulness")
    return run_study("smoke", task=task, out=root / "s", **STUDY), task


def _stages(out):
    index = json.loads((out / "study.json").read_text())
    return index, {s["label"]: out / s["path"] for s in index["stages"]}


def _headers(md: str) -> list[str]:
    lines = md.splitlines()
    return [ln for i, ln in enumerate(lines)
            if ln.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---")]


def test_task_reaches_every_stage(no_gold):
    out, task = no_gold
    index, path = _stages(out)
    root = task.parent.resolve()
    assert index["task"] == str(task.resolve())
    cfg = lambda label: (path[label] / "config.yaml").read_text()  # noqa: E731
    assert f"dataset: {root / 'prefs.jsonl'}" in cfg("sft") and "sft_from: chosen" in cfg("sft")
    assert f"dataset: {root / 'prefs.jsonl'}" in cfg("prefs")
    assert f"prompts: {root / 'prefs.jsonl'}" in cfg("ppo-fp32")  # RL samples the pairs' prompts
    assert f"prompts: {root / 'eval_prompts.jsonl'}" in cfg("eval-fp32")
    rows = [json.loads(x) for x in (path["eval-fp32"] / "responses.jsonl").read_text().splitlines()]
    evals = [json.loads(x)["prompt"][-1]["content"] for x in (root / "eval_prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == evals[:len(rows)]  # the task's held-out prompts, HH messages as chat turns


def test_without_a_gold_nothing_claims_one(no_gold, report_traces):
    out, _ = no_gold
    index, path = _stages(out)
    md = (out / "report.md").read_text()
    report = report_traces(out)
    assert report["yardstick"]["name"] == "RM"
    first = md.split("Configurations:")[0]
    assert "proxy, not ground truth" in first  # said before anything else
    for header in _headers(md):
        assert "gold" not in header.lower(), header
    assert not any("gold" in c for c in json.loads((out / "report.json").read_text())["charts"])
    for label, p in path.items():
        summary = json.loads((p / "summary.json").read_text())
        assert not [k for k in summary if "gold" in k and k != "gold"], (label, summary.keys())
        if (p / "metrics.jsonl").is_file():
            assert "gold" not in (p / "metrics.jsonl").read_text(), label
        if (p / "responses.jsonl").is_file():
            assert all("gold" not in json.loads(x) for x in (p / "responses.jsonl").read_text().splitlines())
    # the gains are the fp32 RM's, paired over prompts, as the evaluation computed them
    ev = json.loads((path["eval-int8"] / "summary.json").read_text())
    rows = [json.loads(x) for x in (path["eval-int8"] / "responses.jsonl").read_text().splitlines()]
    assert ev["eval/rm_gain"] == pytest.approx(sum(r["rm"] - r["baseline_rm"] for r in rows) / len(rows))
    row = next(ln for ln in md.splitlines() if ln.startswith("| ppo-int8 | 42 |"))
    assert f"{ev['eval/rm_gain']:+.3f}" in row
    assert "reward_precision: fp32" in (path["eval-int8"] / "config.yaml").read_text()


def test_with_a_callable_gold_the_report_is_in_gold(callable_gold, hh_style, report_traces):
    out, _ = callable_gold
    index, path = _stages(out)
    md = (out / "report.md").read_text()
    report = report_traces(out)
    assert report["yardstick"]["name"] == "gold" and "proxy, not ground truth" not in md
    assert any("gold gain per seed" in h for h in _headers(md))
    # every gold number is the callable's: the eval's responses rescored here give its mean
    from edgerlhf.rewards.gold import make_gold

    ev = json.loads((path["eval-fp32"] / "summary.json").read_text())
    rows = [json.loads(x) for x in (path["eval-fp32"] / "responses.jsonl").read_text().splitlines()]
    evals = [json.loads(x)["prompt"] for x in (out.parent / "task" / "eval_prompts.jsonl").read_text().splitlines()]
    gold = hh_style.helpfulness(evals[:len(rows)], [r["response"] for r in rows])
    assert [r["gold"] for r in rows] == pytest.approx(gold)
    assert ev["eval/gold_mean"] == pytest.approx(sum(gold) / len(gold))
    assert make_gold(ev["gold"]) is not None
    # the preference pairs carry the gold's scores, and RL logged it per step
    pair = json.loads((path["prefs"] / "pairs" / "train.jsonl").read_text().splitlines()[0])
    assert {"gold_chosen", "gold_rejected"} <= set(pair)
    assert "objective/gold" in (path["ppo-fp32"] / "metrics.jsonl").read_text()


def test_a_bad_task_file_writes_nothing(tmp_path, hh_style):
    task = _make_task(tmp_path, hh_style, "none")
    task.write_text(task.read_text() + "eval_prompts: prefs.jsonl\nprefs: generate\n")
    with pytest.raises(ConfigError) as e:
        run_study("smoke", task=task, out=tmp_path / "s", **STUDY)
    msg = str(e.value)
    assert "also in prompts (training)" in msg  # the evaluation prompts are the RL prompts
    assert "prefs: generate labels sampled pairs with the gold" in msg  # and gold is none
    assert "sft_from=chosen needs `sft` (or `prefs`) to be a preference file" in msg
    assert not (tmp_path / "s").exists()
