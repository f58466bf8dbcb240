"""What an exported file keeps (`export --gguf TYPE` ends with it, `--gguf all` tabulates it), and the policy's LoRA as
a GGUF adapter applied on a base file: its delta lands where the policy's is, and a base it was not trained on is
refused. Reading a GGUF file back parses the 49k-token vocabulary (~20 s on 2 cores): few files are read here."""

import json
import math

import numpy as np
import pytest
import torch

from edgerlhf.cli import main
from edgerlhf.models.adapters import load_policy
from edgerlhf.models.export import export_gguf, export_gguf_adapter
from edgerlhf.models.gguf_adapter import (
    adapter_base_problem,
    load_gguf_model,
    read_gguf_adapter,
    read_gguf_policy_info,
)
from edgerlhf.models.gguf_export import GGUF_TYPES, GGUFExportError
from edgerlhf.stages import deploy


@pytest.fixture(scope="module")
def ppo(tmp_path_factory):
    """A tiny PPO run (LoRA on an SFT policy), its f16 file, its adapter file and its SFT policy's f16 file."""
    from conftest import make_tiny_ppo

    root = tmp_path_factory.mktemp("deploy")
    run, sft = make_tiny_ppo(root)
    files = root / "files"
    export_gguf(run, "f16", files / "policy.gguf", check=False, progress=False)
    export_gguf_adapter(run, files / "adapter.gguf")
    export_gguf(run / "adapter" / "sft", "f16", files / "base.gguf", check=False, progress=False)
    return run, sft, files


def test_the_adapter_on_its_base_file_is_the_policy(ppo):
    """SFT base file (F16) + the adapter (alpha / rank x B A, q / k rows taken back from llama.cpp's layout) gives
    the policy's weights to F16 rounding; the base file alone misses the adapted weights by the RL delta."""
    run, _, files = ppo
    policy, _, _ = load_policy(run, dtype=torch.float32, merge=True)
    want = dict(policy.named_parameters())
    alone = dict(load_gguf_model(files / "base.gguf").named_parameters())
    both = dict(load_gguf_model(files / "base.gguf", files / "adapter.gguf").named_parameters())
    factors, alpha, source = read_gguf_adapter(files / "adapter.gguf")
    assert factors and alpha > 0 and source == str((run / "adapter").resolve())
    changed = [n for n in want if (alone[n] - want[n]).abs().max() > 1e-3]
    assert any("q_proj" in n for n in changed) and any("k_proj" in n for n in changed)  # the permuted rows too
    for n in changed:
        miss, err = (alone[n] - want[n]).abs().max().item(), (both[n] - want[n]).abs().max().item()
        assert err < 1e-3 < miss, (n, err, miss)
    assert all((both[n] - want[n]).abs().max() < 1e-3 for n in want)


def test_a_base_the_adapter_was_not_trained_on_is_named_with_the_fix(ppo, tmp_path):
    run, sft, files = ppo
    adapter, src = files / "adapter.gguf", str((run / "adapter").resolve())
    copy_inside_run = str((run / "adapter" / "sft").resolve())
    assert adapter_base_problem("b.gguf", copy_inside_run, adapter, src) == ""
    assert adapter_base_problem("b.gguf", str(sft / "adapter"), adapter, src) == ""  # the same weights elsewhere
    twice = adapter_base_problem("b.gguf", src, adapter, src)
    assert "the policy itself" in twice and "twice" in twice and f"edgerlhf export {run / 'adapter' / 'sft'}" in twice
    assert "records no policy run" in adapter_base_problem("b.gguf", "", adapter, src)
    other = tmp_path / "other"
    other.mkdir()
    (other / "adapter_model.safetensors").write_bytes(b"other weights")
    assert "whose weights differ" in adapter_base_problem("b.gguf", str(other), adapter, src)
    # through `eval`: refused before any run folder is written; on its base, measured as a file is
    out = tmp_path / "runs"
    args = [f"adapter={adapter}", f"output_dir={out}", "num_prompts=4", "max_new_tokens=8", "report_to=none",
            "progress=false"]
    assert main(["eval", f"policy={files / 'policy.gguf'}", *args]) != 0
    assert not out.exists() or not any(out.iterdir())
    assert main(["eval", f"policy={files / 'base.gguf'}", *args]) == 0
    (summary,) = out.glob("*/summary.json")
    s = json.loads(summary.read_text())
    assert s["file"] == f"{files / 'base.gguf'} + {adapter}" and "the adapter's delta added" in s["file_loader"]
    assert s["source"] == src and "eval/same_responses" in s and "source/gold_gain" in s
    with pytest.raises(GGUFExportError, match="adapter file, not a model"):
        read_gguf_policy_info(adapter)


def test_export_ends_with_the_gain_the_file_keeps(ppo, tmp_path, capsys):
    run, _, _ = ppo
    out = tmp_path / "p.gguf"
    assert main(["export", str(run), "--gguf", "q8_0", str(out), "--check-prompts", "8", "--loader", "transformers",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "reloaded with transformers" in printed
    assert "[export] gain kept: " in printed and "over 8 held-out prompts" in printed and "vader" in printed
    assert main(["export", str(run), "--gguf", "q8_0", str(tmp_path / "q.gguf"), "--no-check"]) == 0
    assert "gain kept" not in capsys.readouterr().out


def test_the_gain_kept_for_a_file_and_for_the_adapter_on_its_base(ppo):
    """The gain check samples the run's held-out prompts from the policy, its SFT policy and the file with one seed
    per sample; the file's row is `eval FILE.gguf`'s number, for a plain file and for the adapter on its base."""
    run, _, files = ppo
    rows, why = deploy.measure_gain(run, [(files / "policy.gguf", None), (files / "base.gguf", files / "adapter.gguf")],
                                    loader="transformers", samples=2, num_prompts=16,
                                    progress=False)
    assert why == "" and len(rows) == 2 and all(r["samples_per_prompt"] == 2 for r in rows)
    for r in rows:
        assert r["prompts"] == 16 and r["file_loader"].startswith("transformers") and r["gold"] == "vader"
        assert 0 < r["eval/same_responses"] <= 1  # paired by seed: an F16 copy samples mostly the same answers
        if r["source/gold_gain"] > 0:
            assert r["eval/gain_kept_ci95_low"] <= r["eval/gain_kept"] <= r["eval/gain_kept_ci95_high"]
        else:
            assert math.isnan(r["eval/gain_kept"])
    assert " + " in rows[1]["file"] and rows[0]["source/gold_gain"] == rows[1]["source/gold_gain"]
    # the F16 file keeps the gain to sampling noise: its paired differences from the policy average 0 within 4 SE
    d = np.array(rows[0]["scores"]["file"]) - np.array(rows[0]["scores"]["policy"])
    assert abs(d.mean()) <= 4 * d.std(ddof=1) / np.sqrt(len(d)) + 1e-12
    with pytest.raises(ValueError, match="at least one response per prompt"):
        deploy.measure_gain(run, [], samples=0)
    # the SFT policy has nothing to measure a gain over: said, not guessed
    assert deploy.measure_gain(run / "adapter" / "sft", [])[1].endswith("no SFT policy it started from to measure a "
                                                                          "gain over")


def test_the_warning_below_90_percent(capsys):
    row = {"eval/gain_kept": 0.62, "eval/gain_kept_ci95_low": 0.4, "eval/gain_kept_ci95_high": 0.8, "prompts": 64,
           "source/gold_gain": 0.3, "gold": "vader", "file_loader": "transformers", "eval/same_responses": 0.1}
    deploy._say_gain(row)
    out = capsys.readouterr().out
    assert "62.0% (95% CI 40.0% .. 80.0% over 64 held-out prompts)" in out and "WARNING" in out
    deploy._say_gain({**row, "eval/gain_kept": 0.95})
    assert "WARNING" not in capsys.readouterr().out


def test_gguf_all_writes_every_type_and_the_adapter_on_two_bases_with_one_table(ppo, tmp_path, capsys):
    run, _, _ = ppo
    out = tmp_path / "all"
    assert main(["export", str(run), "--gguf", "all", str(out), "--no-check", "--no-progress"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert {f"{k}.{ext}" for k in GGUF_TYPES for ext in ("gguf", "Modelfile")} <= set(names)
    assert {"adapter.gguf", "base-q8_0.gguf", "base-q4_0.gguf", "table.md", "results.json"} <= set(names)
    assert "FROM ./base-q4_0.gguf" in (out / "adapter.Modelfile").read_text()
    table = (out / "table.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table[2:9]] == [f"| {k}" for k in GGUF_TYPES] + [
        "| adapter on q8_0", "| adapter on q4_0"]
    assert all("not measured" in line for line in table[2:9])
    res = json.loads((out / "results.json").read_text())
    assert res[-1]["adapter"].endswith("adapter.gguf") and res[-1]["mib"] > res[0]["mib"] / 4
    assert main(["export", str(run), "--gguf", "all", str(out), "--no-check"]) == 2  # never overwrites
    assert "not empty" in capsys.readouterr().err


def test_a_type_the_package_cannot_write_and_a_missing_loader_say_what_to_do(monkeypatch):
    with pytest.raises(GGUFExportError, match="K-quants cannot be written by the gguf package.*llama-quantize"):
        export_gguf("tiny", "q4_k_m", "x.gguf")
    from edgerlhf.models import gguf_adapter

    monkeypatch.setattr(gguf_adapter.importlib.util, "find_spec", lambda name: None)
    assert gguf_adapter.file_loader("auto") == "transformers"
    with pytest.raises(ValueError, match="pip install llama-cpp-python"):
        gguf_adapter.file_loader("llama.cpp")


def test_the_table_takes_quantisations_own_effect_out_with_the_control_rows():
    """q4_0's file gains as much as the policy, but the SFT policy at q4_0 alone gains half of it: the RL delta
    keeps 50% over its own type; a type without a control gets no such number."""
    pol, base = [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]

    def row(kind, file_scores):
        return {"type": kind, "mib": 1.0, "eval/gain_kept": float(np.mean(file_scores)),
                "scores": {"file": file_scores, "policy": pol, "baseline": base}}
    rows = [row("q4_0", [1.0] * 4), row("adapter on q4_0", [0.9] * 4), row("q4_1", [0.2] * 4),
            row("control: SFT policy at q4_0", [0.5] * 4)]
    deploy.delta_kept_rows(rows)
    assert rows[0]["delta_kept"] == pytest.approx(0.5) and rows[1]["delta_kept"] == pytest.approx(0.4)
    assert "delta_kept" not in rows[2]
    table = deploy.gguf_table(rows).splitlines()
    assert "over the SFT policy at its type" in table[0]
    assert "| q4_0 | 1.0 MiB |  |  | 100.0% | 50.0% (50.0% .. 50.0%) |  |" == table[2]
