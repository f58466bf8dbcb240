"""Seeds added until decided: the group-sequential boundaries against published tables and by simulation, one
look's verdict by hand, and `--seeds auto` end to end on the tiny model."""

import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from edgerlhf.study.group_seq import crossing_probabilities, nominal_levels, obf_spending, spending_bounds
from edgerlhf.study.sequential import auto_seeds, decide, has_comparison, run_sequential


def _equal(k):
    return [i / k for i in range(1, k + 1)]


def test_crossing_probabilities_match_the_published_tables():
    # Jennison & Turnbull (2000) Tables 2.1 and 2.3: Pocock's C_P(5, 0.05) = 2.413 and O'Brien-Fleming's
    # C_B(5, 0.05) = 2.040 (bounds C_B sqrt(K / k)) keep the two-sided level at 0.05 over 5 equal looks
    assert sum(crossing_probabilities([2.413] * 5, _equal(5))) == pytest.approx(0.05, abs=3e-4)
    assert sum(crossing_probabilities([2.040 * math.sqrt(5 / k) for k in range(1, 6)], _equal(5))) == pytest.approx(
        0.05, abs=3e-4)
    # Armitage, McPherson & Rowe (1969): testing at 1.96 at every look inflates 0.05 to 0.083 / 0.126 / 0.193
    for k, want in ((2, 0.083), (4, 0.126), (10, 0.193)):
        assert sum(crossing_probabilities([1.96] * k, _equal(k))) == pytest.approx(want, abs=1.5e-3), k


def test_spending_bounds_spend_what_the_function_allows():
    ts = [0.25, 0.5, 0.75, 1.0]
    b = spending_bounds(ts)
    assert b[0] == pytest.approx(norm.ppf(1 - obf_spending(0.25) / 2), abs=1e-6)  # look 1 in closed form
    spent = np.cumsum(crossing_probabilities(b, ts))
    assert spent == pytest.approx([obf_spending(t) for t in ts], abs=2e-5)
    assert b == sorted(b, reverse=True) and 1.96 < b[-1] < 2.1  # strict early, near the fixed level at the end
    lv = nominal_levels(b)
    assert lv[-1] < 0.05 and lv[0] < 1e-3
    with pytest.raises(ValueError, match="increasing"):
        spending_bounds([0.5, 0.4, 1.0])


def test_the_design_keeps_the_error_rate_that_naive_looks_lose():
    """Simulated: a z statistic looked at after each of 4 equal rounds under no effect; rejecting at any look past
    the design's bound happens 5% of the time, past 1.96 about 12.6%."""
    rng = np.random.default_rng(0)
    z_steps = rng.normal(size=(100_000, 4)).cumsum(1) / np.sqrt(np.arange(1, 5))
    b = np.array(spending_bounds(_equal(4)))
    assert (np.abs(z_steps) > b).any(1).mean() == pytest.approx(0.05, abs=0.004)
    assert (np.abs(z_steps) > 1.96).any(1).mean() == pytest.approx(0.126, abs=0.006)


def test_one_looks_verdict_by_hand():
    assert decide([0.50, 0.55, 0.60], margin=0.1, level_diff=0.05, level_eq=0.05) == "different"  # t = 17.3
    # mean 0.001, se 0.0058: the 90% interval (t 2.92) is ±0.017 inside ±0.05; p = 0.87
    assert decide([0.0, 0.01, -0.007], margin=0.05, level_diff=0.05, level_eq=0.05) == "equivalent"
    assert decide([0.0, 0.01, -0.007], margin=0.01, level_diff=0.05, level_eq=0.05) == "undecided"
    assert decide([0.3], margin=1.0, level_diff=0.05, level_eq=0.05) == "undecided"  # one seed says nothing
    assert auto_seeds(42, 4) == [42, 1, 2, 3] and auto_seeds(2, 3) == [2, 1, 3]


def test_auto_seeds_without_a_comparison_is_refused_before_anything_runs(tmp_path):
    assert not has_comparison("ppo", ["fp32"]) and has_comparison("ppo", ["fp32", "int4"])
    assert has_comparison("ppo,ppo@null", ["fp32"]) and has_comparison("ppo,dpo", ["fp32"])
    with pytest.raises(ValueError, match="these arms make none"):
        run_sequential("smoke", algorithms="ppo", precisions=["fp32"], out=tmp_path / "s")
    with pytest.raises(ValueError, match="at least 3"):
        run_sequential("smoke", max_seeds=2, precisions=["fp32", "int8"], out=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_auto_seeds_end_to_end(tmp_path, capsys):
    from edgerlhf.cli import main

    out = tmp_path / "s"
    assert main(["run", "--preset", "smoke", "--precisions", "fp32,int8", "--no-bon", "--seeds", "auto",
                 "--max-seeds", "3", "--out", str(out), "--report-to", "none", "--no-progress"]) == 0
    seq = json.loads((out / "sequential.json").read_text())
    assert [x["seeds"] for x in seq["planned_looks"]] == [2, 3] and 1 <= seq["looks_used"] <= 2
    last = seq["history"][-1]
    assert set(last["verdicts"]) == {"ppo-int8 vs ppo-fp32"}
    assert seq["looks_used"] == 2 or all(v != "undecided" for v in last["verdicts"].values())  # stopped: decided
    assert last["level_difference"] < 0.05 and "O'Brien-Fleming" in seq["design"]
    index = json.loads((out / "study.json").read_text())
    assert index["seeds"] == [42, 1, 2][: last["seeds"]]
    assert "Seeds added until decided" in (out / "report.md").read_text()
