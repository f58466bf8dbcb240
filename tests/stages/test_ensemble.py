"""Reward-model ensembles on the tiny model: `reward members=K`, the two serving layouts, the aggregations, WARM,
rm-eval / bon / online RL reading an ensemble, the over-optimisation warning's stop, and bad input."""

import importlib.util
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from edgerlhf import load_reward_model
from edgerlhf.config import BonConfig, ConfigError, PPOConfig, RewardConfig, RMEvalConfig, load_config
from edgerlhf.models.precision import stored_bytes
from edgerlhf.rewards.ensemble import EnsembleReward, warm_model
from edgerlhf.rewards.learned import merged_fp32
from edgerlhf.rl.ensemble import aggregate, normalise
from edgerlhf.rl.overopt import Overopt
from edgerlhf.runfolder import read_artifact_meta
from edgerlhf.stages import bon, online, reward, rm_eval


def _reward_cfg(root, **kw):
    from conftest import write_toy_prefs

    base = {"model": "tiny", "prefs": str(write_toy_prefs(root / "train.jsonl", 48, 1)),
            "eval_prefs": str(write_toy_prefs(root / "eval.jsonl", 16, 2)), "output_dir": str(root / "runs"),
            "max_steps": 6, "per_device_train_batch_size": 8, "learning_rate": 5e-3, "logging_steps": 3,
            "report_to": ["none"], "progress": False, "warmup_ratio": 0.0, "norm_pairs": 16}
    return load_config(RewardConfig, overrides={**base, **kw})


@pytest.fixture(scope="module")
def ens(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    run = reward.run(_reward_cfg(root, members=3, run_name="ens"))
    return root, run


def _rows(root):
    rows = [json.loads(x) for x in (root / "eval.jsonl").read_text().splitlines()]
    return [r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows]


def test_members_are_single_rms_and_the_artifact_records_them(ens):
    root, run = ens
    meta = read_artifact_meta(run / "adapter")
    assert meta["kind"] == "ensemble" and [m["seed"] for m in meta["members"]] == [42, 43, 44]
    assert all(m["norm_std"] > 0 for m in meta["members"])
    s = json.loads((run / "summary.json").read_text())
    assert len(s["members"]) == 3 and all("eval/accuracy" in m and "agreement" in m for m in s["members"])
    assert 0 <= s["ensemble/agreement"] <= 1 and "ensemble/uwo/accuracy" in s
    # member 0 is exactly the single RM trained with its seed; member 1 is another model
    single = reward.run(_reward_cfg(root, run_name="single"))
    w0 = load_file(run / "adapter" / "member-0" / "adapter_model.safetensors")
    ws = load_file(single / "adapter" / "adapter_model.safetensors")
    w1 = load_file(run / "adapter" / "member-1" / "adapter_model.safetensors")
    assert w0.keys() == ws.keys() and all(torch.equal(w0[k], ws[k]) for k in w0)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)


def test_bootstrap_members_see_other_pairs(tmp_path):
    a = reward.run(_reward_cfg(tmp_path, members=2, max_steps=2, run_name="same"))
    b = reward.run(_reward_cfg(tmp_path, members=2, max_steps=2, member_data="bootstrap", run_name="boot"))
    wa = load_file(a / "adapter" / "member-1" / "adapter_model.safetensors")
    wb = load_file(b / "adapter" / "member-1" / "adapter_model.safetensors")
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    assert read_artifact_meta(b / "adapter")["member_data"] == "bootstrap"


def test_separate_runs_assemble_into_an_ensemble(tmp_path):
    a = reward.run(_reward_cfg(tmp_path, max_steps=2, run_name="a"))
    b = reward.run(_reward_cfg(tmp_path, max_steps=2, learning_rate=1e-3, run_name="b"))
    out = reward.run(_reward_cfg(tmp_path, members_from=[str(a), str(b)], run_name="ab"))
    meta = read_artifact_meta(out / "adapter")
    assert meta["kind"] == "ensemble" and len(meta["members"]) == 2 and meta["member_data"] == "separate runs"
    for src, m in ((a, "member-0"), (b, "member-1")):
        ws, wm = (load_file(d / "adapter_model.safetensors") for d in (src / "adapter", out / "adapter" / m))
        assert all(torch.equal(ws[k], wm[k]) for k in ws)
    s = json.loads((out / "summary.json").read_text())
    assert [x["source"] for x in s["members"]] == [str(a / "adapter"), str(b / "adapter")]
    assert "ensemble/uwo/accuracy" in s and s["steps"] == 0
    c = reward.run(_reward_cfg(tmp_path, max_steps=1, lora_r=8, run_name="c"))
    with pytest.raises(ConfigError, match="LoRA shape"):
        _reward_cfg(tmp_path, members_from=[str(a), str(c)])
    with pytest.raises(ConfigError, match="is a reward ensemble artifact"):
        _reward_cfg(tmp_path, members_from=[str(a), str(out)])
    with pytest.raises(ConfigError, match="either train K members or assemble"):
        _reward_cfg(tmp_path, members_from=[str(a), str(b)], members=2)


def test_aggregations_are_the_normalised_members_combined(ens):
    root, run = ens
    prompts, chosen, _ = _rows(root)
    meta = read_artifact_meta(run / "adapter")
    raw = torch.tensor([load_reward_model(run, ensemble=f"member-{i}")(prompts, chosen) for i in range(3)])
    z = (raw - torch.tensor([[m["norm_mean"]] for m in meta["members"]])) / torch.tensor(
        [[m["norm_std"]] for m in meta["members"]])
    rm = load_reward_model(run, ensemble="uwo", uwo_lambda=0.7)
    got = rm(prompts, chosen)
    want = z.mean(0) - 0.7 * z.var(0, unbiased=False)
    assert got == pytest.approx(want.tolist(), abs=1e-5)
    assert rm.last_spread == pytest.approx(z.std(0, unbiased=False).tolist(), abs=1e-5)
    assert load_reward_model(run, ensemble="min")(prompts, chosen) == pytest.approx(z.min(0).values.tolist(),
                                                                                      abs=1e-5)
    assert load_reward_model(run)(prompts, chosen) == pytest.approx(z.mean(0).tolist(), abs=1e-5)  # auto = mean


def test_shared_and_merged_layouts_score_the_same_at_fp32(ens):
    root, run = ens
    prompts, chosen, rejected = _rows(root)
    shared = load_reward_model(run, ensemble="mean", layout="shared")
    merged = load_reward_model(run, ensemble="mean", layout="merged")
    assert isinstance(shared, EnsembleReward) and isinstance(merged, EnsembleReward)
    a, b = shared(prompts, chosen), merged(prompts, chosen)
    assert a == pytest.approx(b, abs=1e-4)
    enc = [shared.tokenizer(["a b", "a b c"])["input_ids"], shared.tokenizer(["a c", "a b d"])["input_ids"]]
    assert sum(shared.score_pairs(*enc), []) == pytest.approx(sum(merged.score_pairs(*enc), []), abs=1e-4)
    # memory from stored bytes: one base plus K adapters against K whole models
    sb, mb = shared.stored_bytes()["total"], merged.stored_bytes()["total"]
    one = stored_bytes(merged.members[0].model)["total"]
    assert mb == pytest.approx(3 * one, rel=1e-6)
    assert one < sb < 2 * one


def test_warm_is_the_average_of_the_merged_members(ens):
    root, run = ens
    art = run / "adapter"
    meta = read_artifact_meta(art)
    warm, _ = warm_model(art, meta)
    members = [merged_fp32(art / m["name"], read_artifact_meta(art / m["name"]))[0].state_dict()
               for m in meta["members"]]
    ws = warm.state_dict()
    for k in ("model.layers.1.self_attn.q_proj.weight", "score.weight", "model.embed_tokens.weight"):
        assert torch.allclose(ws[k], sum(m[k] for m in members) / 3, atol=1e-6), k
    # the LoRA-adapted weights really differ between members, so this averaged something
    q = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.allclose(members[0][q], members[1][q])
    prompts, chosen, _ = _rows(root)
    rm = load_reward_model(run, ensemble="warm")
    assert rm.meta["ensemble"] == "warm" and len(rm(prompts, chosen)) == len(prompts)


def test_rm_eval_has_a_row_per_member_aggregation_and_warm(ens):
    root, run = ens
    out = rm_eval.run(load_config(RMEvalConfig, overrides={
        "model": "tiny", "rm": str(run), "pairs": str(root / "eval.jsonl"), "precisions": ["fp32", "bf16"],
        "isolate": False, "output_dir": str(root / "runs"), "report_to": ["none"], "ensemble": "uwo"}))
    s = json.loads((out / "summary.json").read_text())
    want = {f"{p}/{w}" for p in ("fp32", "bf16") for w in ("m0", "m1", "m2", "mean", "min", "uwo", "warm")}
    assert set(s["precisions"]) == want
    assert s["precisions"]["fp32/uwo"]["accuracy_vs_ref"] == 1.0
    assert s["precisions"]["fp32/warm"]["weight_mb"] < s["precisions"]["fp32/mean"]["weight_mb"]


def test_bon_ranks_with_members_aggregations_and_warm(ens):
    from conftest import make_tiny_sft

    root, run = ens
    sft = make_tiny_sft(root)
    out = bon.run(load_config(BonConfig, overrides={
        "policy": str(sft), "rm": str(run), "output_dir": str(root / "runs"), "num_prompts": 4, "num_candidates": 4,
        "max_new_tokens": 6, "precisions": ["fp32"], "bootstrap": 10, "report_to": ["none"], "progress": False,
        "ensemble_arms": ["fp32/m0", "fp32/uwo", "fp32/warm"]}))
    rows = bon.read_candidates(out)
    assert set(rows[0]["rm"]) == {"fp32/m0", "fp32/m1", "fp32/m2", "fp32/uwo", "fp32/warm"}
    meta = read_artifact_meta(run / "adapter")
    raw = torch.tensor([rows[0]["rm"][f"fp32/m{i}"] for i in range(3)])
    z = normalise(raw, [m["norm_mean"] for m in meta["members"]], [m["norm_std"] for m in meta["members"]])
    assert rows[0]["rm"]["fp32/uwo"] == pytest.approx(aggregate(z, "uwo", 0.5).tolist())
    s = json.loads((out / "summary.json").read_text())
    assert s["reference"] == "fp32/m0" and set(s["precisions"]) == {"fp32/m0", "fp32/uwo", "fp32/warm"}
    assert "gold_vs_ref" in s["precisions"]["fp32/uwo"]


def _ppo(root, **kw):
    base = {"model": "tiny", "output_dir": str(root / "runs"), "max_steps": 3, "num_rollouts_per_step": 4,
            "rollout_batch_size": 4, "mini_batch_size": 2, "gradient_accumulation_steps": 2, "response_length": 6,
            "gold_eval_prompts": 0, "report_to": ["none"], "progress": False, "learning_rate": 1e-3,
            "max_prompts": 8}
    return load_config(PPOConfig, overrides={**base, **kw})


def test_online_logs_the_members_disagreement(ens):
    root, run = ens
    out = online.run(_ppo(root, reward=str(run), ensemble="uwo", run_name="ppo-ens"))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    stds = [r["objective/ensemble_std"] for r in rows if "objective/ensemble_std" in r]
    assert len(stds) == 3 and all(x > 0 for x in stds)
    s = json.loads((out / "summary.json").read_text())
    assert s["ensemble"] == "uwo" and s["ensemble_members"] == 3 and "overopt/step" not in s


def test_an_ensemble_can_watch_a_run_trained_on_one_rm(ens, tmp_path):
    root, run = ens
    single = reward.run(_reward_cfg(tmp_path, max_steps=1, run_name="one"))
    out = online.run(_ppo(root, reward=str(single), overopt_monitor=str(run), overopt_warning=0.5,
                          run_name="ppo-watched"))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["objective/ensemble_std"] > 0 and "objective/monitor_scores" in r for r in rows
               if "objective/scores" in r)
    s = json.loads((out / "summary.json").read_text())
    assert s["overopt_monitor"] == str(run) and "ensemble" not in s  # trained on the single RM
    with pytest.raises(ConfigError, match="overopt_monitor=.*not an RM ensemble"):
        _ppo(root, reward=str(single), overopt_monitor=str(single))


@pytest.mark.parametrize("stop", [True, False])
def test_the_warning_keeps_a_checkpoint_records_why_and_stops_when_asked(ens, monkeypatch, stop):
    root, run = ens
    from edgerlhf.stages.online import engine

    seen = []

    def fire_at_2(signal, rise, window, patience):
        seen.append(list(signal))
        return Overopt(2, 0.1, 0.3, 3.0) if len(signal) >= 2 else None

    monkeypatch.setattr(engine, "overopt_warning", fire_at_2)
    out = online.run(_ppo(root, reward=str(run), overopt_warning=0.5, stop_on_overopt=stop, max_steps=4,
                          run_name=f"ppo-warn-{stop}"))
    s = json.loads((out / "summary.json").read_text())
    assert s["overopt/step"] == 2 and s["overopt/ratio"] == 3.0 and s["overopt/stopped"] is stop
    assert s["steps_run"] == (2 if stop else 4)
    kept = out / "overopt" / "step-000002"
    assert (kept / "state.json").is_file() and s["overopt/checkpoint"] == str(kept)
    assert all(len(x) == i + 1 for i, x in enumerate(seen))  # read from the logged disagreement, step by step
    assert all(v > 0 for v in seen[-1])
    # the kept checkpoint resumes like any other
    assert json.loads((kept / "state.json").read_text())["step"] == 2


def test_bad_ensemble_settings_are_refused_before_loading(ens, tmp_path, monkeypatch):
    root, run = ens
    single = reward.run(_reward_cfg(tmp_path, max_steps=1, run_name="one"))
    with pytest.raises(ConfigError, match="single reward model .K=1.*members=4"):
        _ppo(root, reward=str(single), ensemble="uwo")
    with pytest.raises(ConfigError, match="uwo_lambda=-0.5 must be >= 0"):
        _ppo(root, reward=str(run), ensemble="uwo", uwo_lambda=-0.5)
    with pytest.raises(ConfigError, match="ensemble=member-7: .* has members 0..2"):
        _ppo(root, reward=str(run), ensemble="member-7")
    with pytest.raises(ConfigError, match="ensemble='median'"):
        _ppo(root, reward=str(run), ensemble="median")
    with pytest.raises(ConfigError, match="overopt_warning=0.5: the warning reads an ensemble"):
        _ppo(root, reward=str(single), overopt_warning=0.5)
    with pytest.raises(ConfigError, match="members=0 must be >= 1"):
        _reward_cfg(tmp_path, members=0)
    with pytest.raises(ConfigError, match="ensemble_arms: 'int4/m9'"):
        load_config(BonConfig, overrides={"policy": str(run), "rm": str(run), "ensemble_arms": ["int4/m9"]})
    with pytest.raises(ValueError, match="ensemble=uwo"):
        load_reward_model(single, ensemble="uwo")
    # a WARM of members with different LoRA shapes
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    m1 = bad / "adapter" / "member-1" / "adapter_config.json"
    m1.write_text(json.dumps({**json.loads(m1.read_text()), "r": 8}))
    with pytest.raises(ConfigError, match="member-1 has LoRA shape .* weights average only"):
        _ppo(root, reward=str(bad), ensemble="warm")
    # a precision whose backend is missing
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a))
    with pytest.raises(ConfigError, match="int4 needs bitsandbytes, which is not installed: pip install bitsandbytes"):
        _ppo(root, reward=str(run), reward_precision="int4")


def test_the_planner_counts_an_ensembles_memory(ens):
    from edgerlhf.study import plan
    from edgerlhf.study.memory_model import weight_bytes

    _, run = ens
    s = plan.model_shape("tiny")
    kw = dict(runtime=0, prompt_tokens=20, response_tokens=8)

    def rm_mb(**o):
        return plan.plan_stage("ppo", plan.stage_settings("ppo", overrides={"reward": str(run), **o}), s,
                               **kw).term("RM weights")

    one = weight_bytes(s, "int4", 4.0)
    shared, merged, warm = rm_mb(reward_precision="int4"), rm_mb(reward_precision="int4", ensemble_layout="merged"), \
        rm_mb(reward_precision="int4", ensemble="warm")
    assert merged == pytest.approx(3 * one)
    assert one < shared < 1.5 * one  # one base, three small adapters and heads
    assert warm < one  # one RM, its embedding shared with the policy


def test_the_shared_base_runs_the_adapter_free_blocks_once_for_all_members(tmp_path):
    run = reward.run(_reward_cfg(tmp_path, members=2, max_steps=2, lora_layers=1, run_name="top1"))
    prompts, chosen, _ = _rows(tmp_path)
    rm = load_reward_model(run, ensemble="mean")
    assert rm.split == 1 and rm.share_trunk  # tiny has 2 blocks; LoRA in the top one
    seqs = [rm.tokenizer(p + c)["input_ids"] for p, c in zip(prompts, chosen)]
    shared = rm.member_scores_ids(seqs)
    rm.share_trunk = False  # the baseline: every member runs every block
    full = rm.member_scores_ids(seqs)
    assert torch.allclose(shared, full, atol=1e-5)
    merged = load_reward_model(run, ensemble="mean", layout="merged")
    assert torch.allclose(shared, merged.member_scores_ids(seqs), atol=1e-4)
