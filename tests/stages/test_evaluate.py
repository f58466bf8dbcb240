"""`edgerlhf eval` on tiny policies: paired comparison with the SFT policy, reuse of a baseline's samples."""

import json
from pathlib import Path

import pytest
import torch

from edgerlhf.config import EvalConfig, load_config
from edgerlhf.stages import evaluate, online


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    from conftest import make_tiny_ppo

    root = tmp_path_factory.mktemp("ev")
    return (*make_tiny_ppo(root), root)


def _eval(root, **kw):
    base = {"output_dir": str(root / "runs"), "num_prompts": 12, "max_new_tokens": 8, "report_to": ["none"],
            "progress": False}
    return json.loads((evaluate.run(load_config(EvalConfig, overrides={**base, **kw})) / "summary.json").read_text())


def test_eval_against_the_sft_policy_it_started_from(ppo_run):
    run, sft, root = ppo_run
    s = _eval(root, policy=str(run))
    assert s["baseline"].startswith("SFT policy")
    for k in ("eval/gold_mean", "eval/gold_ci95_low", "eval/win_rate", "eval/win_rate_ci95_high", "eval/gold_gain",
              "eval/gold_gain_ci95_low", "eval/kl", "eval/distinct_2", "eval/mean_tokens", "eval/repetition_rate",
              "baseline/gold_mean", "baseline/distinct_2", "eval/gold_gain_lc", "eval/gold_gain_lc_ci95_low",
              "eval/gold_length_slope", "eval/mean_words", "baseline/mean_words"):
        assert k in s, k
    # the length-controlled gain is the gain less the slope times the change in mean length (words)
    assert s["eval/gold_gain_lc"] == pytest.approx(
        s["eval/gold_gain"] - s["eval/gold_length_slope"] * (s["eval/mean_words"] - s["baseline/mean_words"]))
    assert 0 <= s["eval/win_rate"] <= 1
    assert s["eval/gold_gain"] == pytest.approx(s["eval/gold_mean"] - s["baseline/gold_mean"], abs=1e-9)
    rows = [json.loads(x) for x in (Path(s["run_dir"]) / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {"prompt", "response", "gold", "baseline_response", "baseline_gold"} <= set(rows[0])
    assert "eval/rm_mean" not in s  # a callable reward is not reloadable: no learned-RM column


def test_baseline_samples_are_reused_only_when_sampled_the_same_way(ppo_run):
    run, sft, root = ppo_run
    direct = _eval(root, policy=str(run))
    base = _eval(root, policy=str(sft), baseline="none")
    reused = _eval(root, policy=str(run), baseline_eval=base["run_dir"])
    for k in ("baseline/gold_mean", "eval/gold_gain", "eval/win_rate", "eval/kl"):
        assert reused[k] == pytest.approx(direct[k]), k
    before = sorted(p.name for p in (root / "runs").iterdir())
    with pytest.raises(ValueError, match="sampled differently"):
        _eval(root, policy=str(run), baseline_eval=base["run_dir"], temperature=1.0)
    assert sorted(p.name for p in (root / "runs").iterdir()) == before  # refused before any folder was written


def test_eval_works_on_a_value_free_policy_and_finds_its_sft_baseline(ppo_run):
    from edgerlhf.config import GRPOConfig

    _, sft, root = ppo_run
    cfg = load_config(GRPOConfig, overrides={
        "model": "tiny", "policy": str(sft), "output_dir": str(root / "runs"), "max_steps": 1,
        "num_rollouts_per_step": 8, "num_generations": 4, "rollout_batch_size": 8, "mini_batch_size": 4,
        "gradient_accumulation_steps": 1, "response_length": 8, "gold_eval_prompts": 0, "report_to": ["none"],
        "progress": False})
    run = online.run(cfg, reward_fn=lambda p, r: [len(x) / 20 for x in r])
    s = _eval(root, policy=str(run))
    assert s["baseline"] == "SFT policy (the grpo run's starting point)"
    assert "eval/gold_gain" in s and "eval/kl" in s


def test_response_logprobs_are_the_sums_a_full_forward_gives():
    """Length-sorted batches and the head on response tokens only: the same per-response sums as the plain
    full-logits computation, in the caller's order."""
    from edgerlhf.data.formatting import encode_pair
    from edgerlhf.models.loading import load_causal_lm, load_tokenizer
    from edgerlhf.stages.evaluate import response_logprobs

    tok, model = load_tokenizer("tiny"), load_causal_lm("tiny", seed=5).eval()
    prompts = ["Hi.", "Tell me something rather longer, please.", "Ok", "A fourth prompt"]
    responses = ["Hello there", "No", "A response that runs for a while longer than the others", "Yes."]
    got = response_logprobs(model, tok, prompts, responses, temperature=0.7, batch_size=3)
    want = []
    for p, r in zip(prompts, responses):
        ids, labels = encode_pair(tok, p, r, 256)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float() / 0.7
        tgt = torch.tensor(labels[1:])
        lp = torch.log_softmax(logits, -1)[torch.arange(len(tgt)), tgt.clamp(min=0)]
        want.append(float((lp * (tgt != -100)).sum()))
    assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4)
    assert len(set(round(x, 3) for x in want)) == 4


def _hh_file(path, n):
    rows = [{"chosen": f"\n\nHuman: Review gadget {i}.\n\nAssistant: Lovely gadget {i}.",
             "rejected": f"\n\nHuman: Review gadget {i}.\n\nAssistant: Bad."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_on_the_users_prompts_with_a_callable_gold(ppo_run, tmp_path):
    """prompts=FILE (an HH-RLHF preference file: its prompts) and gold=file.py:function."""
    run, sft, root = ppo_run
    (tmp_path / "my_gold.py").write_text("def length(prompts, responses):\n    return [len(r) / 10 for r in "
                                         "responses]\n")
    s = _eval(root, policy=str(run), prompts=str(_hh_file(tmp_path / "hh.jsonl", 5)),
              gold=f"{tmp_path / 'my_gold.py'}:length")
    assert s["prompts"] == 5 and s["gold"].endswith("my_gold.py:length")
    rows = [json.loads(x) for x in (Path(s["run_dir"]) / "responses.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [f"Review gadget {i}." for i in range(5)]
    assert [r["gold"] for r in rows] == pytest.approx([len(r["response"]) / 10 for r in rows])
    assert [r["baseline_gold"] for r in rows] == pytest.approx([len(r["baseline_response"]) / 10 for r in rows])
    assert s["eval/gold_mean"] == pytest.approx(sum(r["gold"] for r in rows) / 5)


def test_eval_without_a_gold_claims_none_and_compares_by_the_learned_rm(ppo_run, tmp_path):
    from conftest import write_toy_prefs
    from edgerlhf.config import RewardConfig
    from edgerlhf.stages import reward

    run, sft, root = ppo_run
    rm = reward.run(load_config(RewardConfig, overrides={
        "model": "tiny", "prefs": str(write_toy_prefs(tmp_path / "p.jsonl", 16, 1)), "output_dir": str(tmp_path),
        "max_steps": 1, "per_device_train_batch_size": 4, "report_to": ["none"], "progress": False}))
    s = _eval(root, policy=str(run), gold="none", reward=str(rm))
    assert not [k for k in s if "gold" in k and k != "gold"] and s["gold"] == "none"
    for k in ("eval/rm_mean", "eval/rm_gain", "eval/rm_gain_ci95_low", "eval/rm_win_rate", "eval/kl"):
        assert k in s, k
    rows = [json.loads(x) for x in (Path(s["run_dir"]) / "responses.jsonl").read_text().splitlines()]
    assert "gold" not in rows[0] and "baseline_gold" not in rows[0]
    assert s["eval/rm_gain"] == pytest.approx(sum(r["rm"] - r["baseline_rm"] for r in rows) / len(rows))


def test_a_bad_prompt_file_or_gold_is_refused_before_anything_is_written(ppo_run, tmp_path):
    from edgerlhf.config import ConfigError
    from edgerlhf.data.loaders import DataError

    run, _, root = ppo_run
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Fine."}) + "\n" + json.dumps({"question": "No prompt here."}) + "\n")
    before = sorted(p.name for p in (root / "runs").iterdir())
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: no 'prompt' field \(row has: 'question'\)"):
        _eval(root, policy=str(run), prompts=str(bad))
    with pytest.raises(ConfigError, match="gold='sentiment': not a known gold"):
        _eval(root, policy=str(run), gold="sentiment")
    assert sorted(p.name for p in (root / "runs").iterdir()) == before


def test_eval_of_the_exported_file_measures_the_gain_it_keeps(ppo_run, tmp_path):
    """`eval FILE.gguf`: the file is sampled beside the policy it came from (found through the file's metadata),
    paired by prompt and sampling seed, and the share of the policy's gain it keeps is computed from those pairs."""
    from edgerlhf.models.export import export_gguf
    from edgerlhf.rewards.metrics import gain_kept

    run, sft, root = ppo_run
    out = export_gguf(run, "f16", tmp_path / "p.gguf", check=False, progress=False)
    s = _eval(root, policy=out["gguf"])
    assert s["file"] == out["gguf"] and Path(s["source"]) == (run / "adapter").resolve()
    assert s["baseline"].startswith("SFT policy")  # the source run's baseline
    rows = [json.loads(x) for x in (Path(s["run_dir"]) / "responses.jsonl").read_text().splitlines()]
    # paired: the policy's own answers are recorded beside the file's (the tiny model's near-flat distributions let
    # f16 rounding flip a sampled token, so not every answer is the same)
    same = sum(r["response"] == r["source_response"] for r in rows) / len(rows)
    assert s["eval/same_responses"] == pytest.approx(same) and same > 0
    want = gain_kept([r["gold"] for r in rows], [r["source_gold"] for r in rows], [r["baseline_gold"] for r in rows])
    if s["source/gold_gain"] > 0:
        assert s["eval/gain_kept"] == pytest.approx(want[0])
    else:  # the share of a gain is defined only where the policy gained
        assert s["eval/gain_kept"] != s["eval/gain_kept"] and want[0] != want[0]  # NaN
    assert s["source/gold_gain"] == pytest.approx(
        sum(r["source_gold"] - r["baseline_gold"] for r in rows) / len(rows))


def test_eval_of_a_file_that_names_no_run_or_is_not_a_policy_says_what_to_pass(ppo_run, tmp_path):
    from edgerlhf.models.gguf_export import GGUFExportError, write_gguf
    from edgerlhf.models.loading import load_causal_lm, load_tokenizer

    run, sft, root = ppo_run
    bare = write_gguf(load_causal_lm("tiny", seed=0), load_tokenizer("tiny"), tmp_path / "bare.gguf", "f16",
                      progress=False)  # no source recorded
    with pytest.raises(ValueError, match="pass source=RUN"):
        _eval(root, policy=str(bare), run_name="bad1")
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"not a gguf file at all")
    with pytest.raises(GGUFExportError, match="not a readable GGUF"):
        _eval(root, policy=str(not_gguf), run_name="bad2")
    assert not (root / "runs" / "bad1").exists() and not (root / "runs" / "bad2").exists()
