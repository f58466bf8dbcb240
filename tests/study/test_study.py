"""The whole study on the tiny model (smoke preset): every artifact, a checkable report, stage reuse, export."""

import json
import re

import pytest
import torch

from edgerlhf.study.pipeline import run_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    run_study("smoke", out=out, progress=False, report_to=["none"])
    return out


def test_smoke_study_produces_every_artifact(study):
    out = study
    index = json.loads((out / "study.json").read_text())
    labels = [s["label"] for s in index["stages"]]
    assert labels[:4] == ["sft", "prefs", "reward", "rm-eval"]
    precisions = index["precisions"]
    assert len(precisions) >= 2
    for p in precisions:
        assert f"ppo-{p}" in labels and f"eval-{p}" in labels
    for s in index["stages"]:
        assert (out / s["path"] / "status").read_text().strip() == "finished", s
    for name in ("report.md", "report.html", "report.json"):
        assert (out / name).stat().st_size > 0
    charts = json.loads((out / "report.json").read_text())["charts"]
    assert len(charts) >= 4
    for c in charts:
        data = (out / c).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, c
    # (its wall time is a benchmark figure: bench/smoke_study.py; no test asserts a time)


def test_html_refers_only_to_existing_files(study):
    out = study
    html = (out / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", html)
    assert refs
    for r in refs:
        assert (out / r).is_file(), r


def test_every_number_in_the_report_is_the_summarys(study):
    out = study
    md = (out / "report.md").read_text()
    cells = json.loads((out / "report.json").read_text())["cells"]
    assert len(cells) > 20
    for c in cells:
        v = json.loads((out / c["file"]).read_text())
        for k in c["key"]:
            v = v[k]
        assert c["format"].format(v) == c["text"], c
        assert c["text"] in md, c
    # the precision table row for the first precision shows its eval gold mean
    p = json.loads((out / "study.json").read_text())["precisions"][0]
    ev = next(s for s in json.loads((out / "study.json").read_text())["stages"] if s["label"] == f"eval-{p}")
    gold = json.loads((out / ev["path"] / "summary.json").read_text())["eval/gold_mean"]
    row = next(line for line in md.splitlines() if line.startswith(f"| {p} |"))
    assert f"{gold:+.3f}" in row


def test_second_run_reuses_finished_stages(study):
    out = study
    before = json.loads((out / "study.json").read_text())["stages"]
    # every file of every stage folder, with its content hash and modification time
    def snapshot():
        return {str(f.relative_to(out)): (f.stat().st_mtime_ns, f.read_bytes())
                for s in before for f in (out / s["path"]).rglob("*") if f.is_file()}

    files = snapshot()
    run_study("smoke", out=out, progress=False, report_to=["none"])
    index = json.loads((out / "study.json").read_text())
    assert [s["path"] for s in index["stages"]] == [s["path"] for s in before]
    assert all(s["reused"] for s in index["stages"])
    assert snapshot() == files  # nothing in a reused stage was rewritten
    # and no stage folder was added beside them
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "charts") == \
        sorted(s["path"] for s in before)


def test_export_reloads_in_plain_transformers_with_the_same_greedy_tokens(study, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgerlhf.models.adapters import load_policy
    from edgerlhf.models.export import export_policy

    out = study
    p = json.loads((out / "study.json").read_text())["precisions"][0]
    ppo_dir = out / next(s["path"] for s in json.loads((out / "study.json").read_text())["stages"] if s["label"] == f"ppo-{p}")
    exported = export_policy(ppo_dir, tmp_path / "hf")
    plain = AutoModelForCausalLM.from_pretrained(exported)
    tok = AutoTokenizer.from_pretrained(exported)
    assert tok.chat_template
    ours, _, _ = load_policy(ppo_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "Review the kettle."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        assert torch.equal(plain.generate(ids, **kw), ours.generate(ids, **kw))
    with pytest.raises(FileExistsError):
        export_policy(ppo_dir, exported)


def test_runs_and_compare_read_the_study(study):
    from edgerlhf.tracking.listing import compare_table, runs_table

    out = study
    table = runs_table(out)
    assert "ppo" in table and "finished" in table and "reward" in table
    index = json.loads((out / "study.json").read_text())
    ppos = [out / s["path"] for s in index["stages"] if s["stage"] == "ppo"][:2]
    cmp = compare_table(ppos)
    assert "config: reward_precision" in cmp and "objective/kl_last" in cmp


def test_generate_and_chat_commands(study, tmp_path, capsys, monkeypatch):
    from edgerlhf.cli import main

    out = study
    index = json.loads((out / "study.json").read_text())
    ppo_dir = out / next(s["path"] for s in index["stages"] if s["stage"] == "ppo")
    assert main(["generate", str(ppo_dir), "Review the kettle.", "--max-new-tokens", "6", "--temperature", "0"]) == 0
    first = capsys.readouterr().out
    assert main(["generate", str(ppo_dir), "Review the kettle.", "--max-new-tokens", "6", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == first  # greedy is deterministic
    said = iter(["Hello there.", "And the toaster?", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(said))
    assert main(["chat", str(ppo_dir), "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.count("bot> ") == 2
