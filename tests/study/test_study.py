"""The whole study on the tiny model (smoke preset), replicated: 2 seeds x (PPO at 2 RM precisions, GRPO at
fp32, DPO): every artifact, a checkable report with intervals and comparisons, stage reuse, export."""

import json
import math
import re

import pytest
import torch

from edgerlhf.study.pipeline import run_study

# the base seed (42) keeps today's names (ppo-fp32, eval-fp32); seed 7 replicates every arm
STUDY = {"seed": 42, "seeds": [42, 7], "algorithms": "ppo,grpo@fp32,dpo,ppo@null", "precisions": ["fp32", "int8"],
         "progress": False, "report_to": ["none"], "isolate": False}
ARMS = ["ppo-fp32", "ppo-int8", "grpo-fp32", "dpo", "ppo-null"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    run_study("smoke", out=out, **STUDY)
    return out


def test_smoke_study_produces_every_artifact(study):
    out = study
    index = json.loads((out / "study.json").read_text())
    labels = [s["label"] for s in index["stages"]]
    assert labels[:4] == ["sft", "prefs", "reward", "rm-eval"] and "bon" in labels
    precisions = index["precisions"]
    assert precisions == ["fp32", "int8"] and index["seeds"] == [42, 7]
    for p in precisions:
        assert {f"ppo-{p}", f"eval-{p}", f"ppo-{p}-seed7", f"eval-{p}-seed7"} <= set(labels)
    assert {"grpo-fp32", "eval-grpo-fp32", "grpo-fp32-seed7", "dpo", "eval-dpo", "dpo-seed7",
            "eval-dpo-seed7"} <= set(labels)
    assert not any(x.startswith(("grpo-int8", "reward-seed")) for x in labels)  # grpo@fp32 only; one RM
    assert len(labels) == 6 + 2 * 2 * len(ARMS)  # sft, prefs, reward, rm-eval, eval-sft, bon; then every arm
    # each seed trained with its own seed; every evaluation sampled with the base seed (paired by prompt)
    by_label = {s["label"]: s for s in index["stages"]}
    cfg = lambda lab: (out / by_label[lab]["path"] / "config.yaml").read_text()  # noqa: E731
    assert "seed: 7" in cfg("ppo-fp32-seed7") and "seed: 42" in cfg("ppo-fp32") and "seed: 7" in cfg("dpo-seed7")
    assert "seed: 42" in cfg("eval-fp32-seed7") and "seed: 42" in cfg("eval-dpo-seed7")
    assert index["compute_s"] >= index["wall_time_s"] * 0.5
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


def test_every_number_in_the_report_is_the_summarys(study, report_traces):
    out = study
    md = (out / "report.md").read_text()
    report_traces(out)
    # each run's row shows its eval gold mean
    index = json.loads((out / "study.json").read_text())
    ev = next(s for s in index["stages"] if s["label"] == "eval-int8-seed7")
    gold = json.loads((out / ev["path"] / "summary.json").read_text())["eval/gold_mean"]
    row = next(line for line in md.splitlines() if line.startswith("| ppo-int8 | 7 |"))
    assert f"{gold:+.3f}" in row


def test_report_replicated_rows_intervals_and_comparisons(study):
    """Per configuration: each seed's value, a t interval over seeds and a bootstrap over seeds and prompts,
    recomputed here from responses.jsonl; comparisons vs fp32 and vs PPO, Holm-corrected."""
    from edgerlhf.study.stats import compare, detectable_difference, holm, t_interval

    out = study
    md = (out / "report.md").read_text()
    index = json.loads((out / "study.json").read_text())
    path = {s["label"]: out / s["path"] for s in index["stages"]}

    def gains(label):
        rows = [json.loads(x) for x in (path[label] / "responses.jsonl").read_text().splitlines()]
        return [r["gold"] - r["baseline_gold"] for r in rows]

    g = [gains("eval-dpo"), gains("eval-dpo-seed7")]
    iv = t_interval([sum(x) / len(x) for x in g])
    row = next(line for line in md.splitlines() if line.startswith("| dpo | 42, 7 |"))
    assert f"{iv.low:+.3f} .. {iv.high:+.3f}" in row and f"{iv.mean:+.3f}" in row
    report = json.loads((out / "report.json").read_text())
    cmps = {(c["a"], c["b"]): c for c in report["comparisons"]}
    assert set(cmps) == {("ppo-int8", "ppo-fp32"), ("grpo-fp32", "ppo-fp32"), ("dpo", "ppo-fp32"),
                         ("ppo-fp32", "ppo-null")}
    # the control arm: PPO's reference arm against the same training on a random reward; a relative margin is a
    # share of the real arm's gain
    ctl = cmps[("ppo-fp32", "ppo-null")]
    fp32_gain = sum(sum(x) / len(x) for x in (gains("eval-fp32"), gains("eval-fp32-seed7"))) / 2
    assert ctl["kind"] == "control" and ctl["equivalence"] in ("different", "equivalent", "undecided")
    assert ctl["margin"] == pytest.approx(0.1 * fp32_gain) if fp32_gain > 0 else math.isnan(ctl["margin"])
    assert "reward: random" in (path["ppo-null"] / "config.yaml").read_text()
    ref = compare([gains("eval-int8"), gains("eval-int8-seed7")], [gains("eval-fp32"), gains("eval-fp32-seed7")])
    got = cmps[("ppo-int8", "ppo-fp32")]
    assert got["diff"] == pytest.approx(ref.diff) and got["ci_both"] == pytest.approx(list(ref.both[:3]))
    a_, b_ = [gains("eval-int8"), gains("eval-int8-seed7")], [gains("eval-fp32"), gains("eval-fp32-seed7")]
    diffs = [sum(x) / len(x) - sum(y) / len(y) for x, y in zip(a_, b_)]
    assert got["seeds"] == [42, 7] and got["detectable"] == pytest.approx(detectable_difference(diffs))
    ps = [cmps[k]["p"] for k in cmps]
    assert [cmps[k]["p_holm"] for k in cmps] == pytest.approx(holm(ps))
    assert "2 seeds per configuration" in md and "not measured" not in md


def test_one_seed_study_says_rl_variance_is_not_measured(study):
    """The default call (one seed, PPO) on the same folder: every stage it needs is already there (the base
    seed's runs kept their names), nothing runs, and the report says what one seed cannot show."""
    out = study
    run_study("smoke", out=out, precisions=["fp32", "int8"], progress=False, report_to=["none"], isolate=False)
    index = json.loads((out / "study.json").read_text())
    assert all(s["reused"] for s in index["stages"]) and len(index["stages"]) == 6 + 2 * 2
    md = (out / "report.md").read_text()
    assert "RL's run-to-run variance is not measured" in md
    for c in json.loads((out / "report.json").read_text())["comparisons"]:  # every verdict says one seed
        assert c["seeds"] == [42] and "one seed" in c["verdict"], c
    run_study("smoke", out=out, **STUDY)  # back to the replicated report for the tests after this one


def test_best_of_n_section_and_length_control_are_recomputed_from_the_files(study):
    """The report's best-of-n verdicts from candidates.jsonl (every precision ranks the same candidates), the
    margin rule and the headline; the length-controlled gain from responses.jsonl."""
    from edgerlhf.stages.bon import read_candidates
    from edgerlhf.study.bon_report import bon_verdicts
    from edgerlhf.study.records import Run, StageRecord, controlled_gains
    from edgerlhf.study.stats import hierarchical_bootstrap, resolve_margin

    out = study
    md = (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    index = json.loads((out / "study.json").read_text())
    path = {s["label"]: out / s["path"] for s in index["stages"]}
    bs = json.loads((path["bon"] / "summary.json").read_text())
    assert list(bs["precisions"]) == ["fp32", "int8"]
    gold = bs["precisions"]["fp32"]["gold"]
    margin = resolve_margin("10%", gold[-1] - gold[0])
    want = bon_verdicts(read_candidates(path["bon"]), ["fp32", "int8"], bs["ns"], margin)
    got = report["best_of_n"]
    assert [(g["precision"], g["n"]) for g in got] == [("int8", n) for n in bs["ns"][1:]]  # n = 1 is identical
    assert [g["diff"] for g in got] == pytest.approx([w["diff"] for w in want])
    assert [g["equivalence"] for g in got] == [w["eq"].verdict for w in want]
    assert all(g["equivalence"] in ("different", "equivalent", "undecided") for g in got)
    assert "## Best-of-n on shared candidates" in md and "charts/best_of_n.png" in report["charts"]
    assert any("int8 RM against fp32" in h and "best-of-n" in h for h in report["headline"])
    assert "Kendall τ on policy samples" in md
    for c in report["comparisons"]:
        assert c["equivalence"] in ("different", "equivalent", "undecided") and "ci90_seeds" in c
    rs = [Run(s, None, StageRecord("eval", lab, path[lab], True, 0.0)) for s, lab in ((42, "eval-fp32"),
                                                                                       (7, "eval-fp32-seed7"))]
    lc = hierarchical_bootstrap(controlled_gains(rs))
    row = next(line for line in md.splitlines() if line.startswith("| ppo-fp32 | 42, 7 |"))
    assert f"{lc.mean:+.3f}" in row and f"{lc.low:+.3f} .. {lc.high:+.3f}" in row


def test_second_run_reuses_finished_stages(study):
    out = study
    before = json.loads((out / "study.json").read_text())["stages"]
    # every file of every stage folder, with its content hash and modification time
    def snapshot():
        return {str(f.relative_to(out)): (f.stat().st_mtime_ns, f.read_bytes())
                for s in before for f in (out / s["path"]).rglob("*") if f.is_file()}

    files = snapshot()
    run_study("smoke", out=out, **STUDY)
    index = json.loads((out / "study.json").read_text())
    assert [s["path"] for s in index["stages"]] == [s["path"] for s in before]
    assert all(s["reused"] for s in index["stages"])
    assert snapshot() == files  # nothing in a reused stage was rewritten
    # and no stage folder was added beside them (hidden ones are bookkeeping: .locks)
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "charts" and p.name[0] != ".") == \
        sorted(s["path"] for s in before)


def test_export_reloads_in_plain_transformers_with_the_same_greedy_tokens(study, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgerlhf.models.adapters import load_policy
    from edgerlhf.models.export import export_policy

    out = study
    p = json.loads((out / "study.json").read_text())["precisions"][0]
    ppo_dir = out / next(s["path"] for s in json.loads((out / "study.json").read_text())["stages"]
                         if s["label"] == f"ppo-{p}")
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


def test_a_moved_study_reuses_its_stages_and_rm_per_seed_retrains_only_the_rm(study, tmp_path):
    """Keys are relative to the study folder: a copy elsewhere reuses every stage. ``rm_per_seed`` then adds
    a reward model trained with seed 7 and PPO on it; the evaluation still scores with the base seed's RM."""
    import shutil

    moved = tmp_path / "elsewhere" / "study"
    shutil.copytree(study, moved)
    before = json.loads((study / "study.json").read_text())["stages"]
    run_study("smoke", out=moved, **STUDY)
    index = json.loads((moved / "study.json").read_text())
    assert all(s["reused"] for s in index["stages"])
    assert [s["path"] for s in index["stages"]] == [s["path"] for s in before]

    run_study("smoke", out=moved, **{**STUDY, "algorithms": "ppo@fp32", "rm_per_seed": True})
    index = json.loads((moved / "study.json").read_text())
    ran = {s["label"]: s for s in index["stages"] if not s["reused"]}
    assert set(ran) == {"reward-seed7", "rm-eval-seed7", "ppo-fp32-seed7", "eval-fp32-seed7"}
    rm7 = moved / ran["reward-seed7"]["path"]
    assert "seed: 7" in (rm7 / "config.yaml").read_text()
    ppo_cfg = (moved / ran["ppo-fp32-seed7"]["path"] / "config.yaml").read_text()
    assert ran["reward-seed7"]["path"] in ppo_cfg  # trained against its own seed's RM
    base_rm = next(s["path"] for s in index["stages"] if s["label"] == "reward")
    assert base_rm in (moved / ran["eval-fp32-seed7"]["path"] / "config.yaml").read_text()  # one yardstick


def test_an_ensemble_arm_adds_the_ensemble_its_best_of_n_and_its_report_section(study, tmp_path):
    """``--reward-ensemble 2`` with ``ppo@fp32~uwo``: the ensemble RM (member 0 = the study's RM), PPO against it,
    best-of-n on the same candidates with member 0 as the reference, and the report's ensemble section."""
    import shutil

    moved = tmp_path / "ens"
    shutil.copytree(study, moved)
    run_study("smoke", out=moved, **{**STUDY, "seeds": [42], "algorithms": "ppo@fp32+fp32~uwo",
                                     "reward_ensemble": 2})
    index = json.loads((moved / "study.json").read_text())
    ran = {s["label"]: s for s in index["stages"] if not s["reused"]}
    assert {"reward-ensemble", "bon-ensemble", "ppo-fp32-uwo", "eval-fp32-uwo"} <= set(ran)
    ppo_cfg = (moved / ran["ppo-fp32-uwo"]["path"] / "config.yaml").read_text()
    assert ran["reward-ensemble"]["path"] in ppo_cfg and "ensemble: uwo" in ppo_cfg
    single = next(s["path"] for s in index["stages"] if s["label"] == "reward")
    from safetensors.torch import load_file

    w0 = load_file(moved / ran["reward-ensemble"]["path"] / "adapter" / "member-0" / "adapter_model.safetensors")
    ws = load_file(moved / single / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(w0[k], ws[k]) for k in ws)  # member 0 is the study's single RM
    bon_ens = json.loads((moved / ran["bon-ensemble"]["path"] / "summary.json").read_text())
    assert bon_ens["reference"] == "fp32/m0" and "fp32/uwo" in bon_ens["precisions"]
    md = (moved / "report.md").read_text()
    assert "Best-of-n with the reward-model ensemble" in md and "ppo-fp32-uwo" in md
    with pytest.raises(ValueError, match="add --reward-ensemble K"):
        run_study("smoke", out=moved, **{**STUDY, "algorithms": "ppo@int4~uwo"})


def test_plan_power_reads_the_pilot_and_prices_each_comparison(study, tmp_path, capsys):
    from edgerlhf.cli import main
    from edgerlhf.study.power_plan import plan_power

    assert main(["run", "--plan-power", str(study), "--detect", "0.1", "--max-parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "(2 seeds;" in out and "at 2 stage(s) at a time" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and " vs " in line]
    assert {r.split(" | ")[0] for r in rows} >= {"| ppo-int8 vs ppo-fp32", "| grpo-fp32 vs ppo-fp32",
                                                 "| ppo-fp32 vs ppo-null"}
    for r in rows:
        cells = r.strip("| ").split(" | ")
        assert cells[1] == "2" and cells[4] == "0.100"  # the pilot's seeds; the difference asked for
        assert cells[6] == "more than 1000" or 2 <= int(cells[6].split()[0]) <= int(cells[6].split()[1].strip("()"))
        sd, sd_hi = (float(x.strip("()")) for x in cells[3].split())
        assert sd_hi >= 3.9 * sd  # from 2 seeds the sd's 80% upper bound is 3.95 times the estimate
    # one seed cannot say how a comparison spreads over seeds
    one = tmp_path / "one"
    one.mkdir()
    (one / "study.json").write_text(json.dumps({"seeds": [42], "stages": []}))
    with pytest.raises(ValueError, match="ran one seed .* 2 or more"):
        plan_power(one)
