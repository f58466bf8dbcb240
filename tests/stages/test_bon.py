"""`edgerlhf bon` on the tiny model: candidates sampled once and ranked at each precision, the file and the
summary, reuse of candidates, best-of-n at serving time, and bad input refused before anything is written."""

import json

import pytest

from edgerlhf.config import BonConfig, ConfigError, RewardConfig, load_config
from edgerlhf.rl.best_of_n import bon_curves
from edgerlhf.stages import bon, reward


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from conftest import make_tiny_sft, write_toy_prefs

    root = tmp_path_factory.mktemp("bon")
    sft = make_tiny_sft(root)
    rm = reward.run(load_config(RewardConfig, overrides={
        "model": "tiny", "prefs": str(write_toy_prefs(root / "p.jsonl", 16, 1)), "output_dir": str(root / "runs"),
        "max_steps": 2, "per_device_train_batch_size": 4, "report_to": ["none"], "progress": False}))
    return root, sft, rm


def _cfg(root, sft, rm, **kw):
    base = {"policy": str(sft), "rm": str(rm), "output_dir": str(root / "runs"), "num_prompts": 5,
            "num_candidates": 6, "max_new_tokens": 6, "precisions": ["fp32", "int8"], "bootstrap": 20,
            "report_to": ["none"], "progress": False}
    return load_config(BonConfig, overrides={**base, **kw})


def test_bon_stage_end_to_end_and_reuse(runs):
    root, sft, rm = runs
    out = bon.run(_cfg(root, sft, rm, run_name="b1"))
    rows = bon.read_candidates(out)
    assert len(rows) == 5
    for r in rows:
        assert len(r["responses"]) == len(r["gold"]) == len(r["words"]) == 6
        assert set(r["rm"]) == {"fp32", "int8"} and all(len(v) == 6 for v in r["rm"].values())
    s = json.loads((out / "summary.json").read_text())
    assert s["ns"] == [1, 2, 4, 6] and s["reference"] == "fp32" and s["N"] == 6
    assert s["kl"][0] == 0.0 and s["kl"] == sorted(s["kl"])
    fp32, int8 = s["precisions"]["fp32"], s["precisions"]["int8"]
    # the summary's curve is the estimator over the saved file
    want = bon_curves([r["gold"] for r in rows], [r["rm"]["fp32"] for r in rows], s["ns"]).mean(0)
    assert fp32["gold"] == pytest.approx(want.tolist())
    assert fp32["gold"][0] == pytest.approx(sum(sum(r["gold"]) for r in rows) / 30)  # n = 1: every candidate
    assert len(int8["gold_vs_ref"]) == 4 and int8["gold_vs_ref"][0] == pytest.approx(0.0)
    for k in ("kendall_tau", "top1_agreement", "std_ratio", "alpha", "beta", "alpha_ci95"):
        assert k in int8, k
    assert -1 <= int8["kendall_tau"] <= 1 and 0 <= int8["top1_agreement"] <= 1
    assert "| int8 |" in (out / "table.md").read_text()
    # the chunked, prompt-shared scoring gives each candidate the score the RM gives it alone
    from edgerlhf.rewards.learned import load_reward_model

    alone = load_reward_model(rm, "fp32")
    for r in rows[:2]:
        assert alone([r.get("messages", r["prompt"])] * 6, r["responses"]) == pytest.approx(r["rm"]["fp32"], abs=1e-4)
    # a rerun with the candidates of the first: nothing sampled, only the new precision scored
    out2 = bon.run(_cfg(root, sft, rm, run_name="b2", precisions=["fp32", "int4"], candidates=str(out)))
    s2 = json.loads((out2 / "summary.json").read_text())
    rows2 = bon.read_candidates(out2)
    assert s2["candidates_from"] == str(out) and "timing/sample_s" not in s2
    assert [r["responses"] for r in rows2] == [r["responses"] for r in rows]
    assert [k for k in s2 if k.startswith("timing/rm_")] == ["timing/rm_int4_s"]  # fp32 was already scored
    assert [r["rm"]["fp32"] for r in rows2] == [r["rm"]["fp32"] for r in rows]


def test_candidates_from_other_sampling_are_refused(runs):
    root, sft, rm = runs
    first = bon.run(_cfg(root, sft, rm, run_name="c1", num_prompts=3, precisions=["fp32"]))
    with pytest.raises(ValueError, match="sampled differently.*temperature"):
        bon.run(_cfg(root, sft, rm, run_name="c2", num_prompts=3, temperature=0.9, candidates=str(first)))
    assert not (root / "runs" / "c2").exists()


def test_bad_input_is_refused_before_anything_is_written(runs):
    root, sft, rm = runs
    with pytest.raises(ConfigError) as e:
        _cfg(root, sft, rm, num_candidates=1, ns=[1, 3], precisions=["fp32", "int3"], temperature=0.0)
    msg = str(e.value)
    for part in ("num_candidates=1", "ns=[3]", "int3", "temperature=0.0"):
        assert part in msg, part
    with pytest.raises(ConfigError, match="ns=\\[9\\].*raise num_candidates"):
        _cfg(root, sft, rm, ns=[1, 9])
    with pytest.raises(ConfigError, match="rm is required"):
        _cfg(root, sft, "")
    with pytest.raises(ValueError, match="not a reward model"):
        bon.run(_cfg(root, sft, sft, run_name="bad"))
    assert not (root / "runs" / "bad").exists()


def test_best_of_at_serving_time_keeps_the_highest_scored(runs):
    import edgerlhf as E

    root, sft, rm = runs
    out = E.best_of(str(sft), ["Review the kettle:", "Review the lamp:"], 4, f"{rm}:fp32", max_new_tokens=6)
    assert len(out) == 2
    for text, score, cands in out:
        assert len(cands) == 4 and score == max(s for _, s in cands) and (text, score) in cands
    with pytest.raises(ValueError, match="unknown precision 'int3'"):
        E.best_of(str(sft), ["x"], 2, f"{rm}:int3")
    with pytest.raises(ValueError, match="not a reward model folder"):
        E.best_of(str(sft), ["x"], 2, str(sft))


def test_generate_best_of_on_the_command_line(runs, capsys):
    from edgerlhf.cli import main

    root, sft, rm = runs
    assert main(["generate", str(sft), "Review the kettle:", "--best-of", "3", f"reward={rm}:int8",
                 "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() and "[best-of-3] RM scores" in out.err
    for argv, msg in ((["--best-of", "3", f"reward={rm}:int3"], "unknown precision 'int3'"),
                      (["--best-of", "3"], "needs a reward model"),
                      ([f"reward={rm}"], "only used with --best-of"),
                      (["--best-of", "3", f"reward={rm}", "--temperature", "0"], "needs sampling")):
        assert main(["generate", str(sft), "x", *argv]) == 2, argv
        assert msg in capsys.readouterr().err, argv
