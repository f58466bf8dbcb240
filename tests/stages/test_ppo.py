"""PPO on the tiny model: only the right parameters change, resume is exact, NaN and OOM are handled."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from edgerlhf.config import ConfigError, PPOConfig, load_config
from edgerlhf.models.roles import Roles
from edgerlhf.rl.ppo_math import gae, per_token_rewards, whiten
from edgerlhf.stages import ppo


def length_reward(prompts, responses):
    """A deterministic stand-in reward: longer, vowel-rich responses score higher."""
    return [sum(c in "aeiou" for c in r) / 10 for r in responses]


def _cfg(tmp_path, **kw):
    base = {"model": "tiny", "output_dir": str(tmp_path / "runs"), "max_steps": 3, "num_rollouts_per_step": 8,
            "rollout_batch_size": 4, "mini_batch_size": 2, "gradient_accumulation_steps": 2, "response_length": 8,
            "gold_eval_prompts": 0, "report_to": ["none"], "progress": False, "learning_rate": 1e-3,
            "max_prompts": 20}
    base.update(kw)
    return load_config(PPOConfig, overrides=base)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("value_model", ["head", "adapter"])
def test_one_ppo_step_changes_only_the_ppo_adapter_and_value(tmp_path, value_model):
    cfg = _cfg(tmp_path, value_model=value_model)
    roles = Roles(cfg, dtype=torch.float32, device="cpu")
    before = {n: p.detach().clone() for n, p in roles.policy.named_parameters()}
    head_before = roles.value_head.summary.weight.detach().clone()
    torch.manual_seed(0)
    b = ppo.rollout(roles, roles.tokenizer, ppo.load_prompts(cfg)[:8], cfg, 4)
    old = ppo.rollout_forwards(roles, b, cfg.temperature, 4)
    rm = b.resp_mask.float()
    rewards = per_token_rewards(torch.tensor(length_reward(None, b.texts)), old["logprobs"] - old["ref_logprobs"], rm, 0.05)
    adv, ret = gae(rewards, old["values"], rm, 1.0, 0.95)
    holder = torch.nn.Module()
    holder.params = torch.nn.ParameterList(roles.trainable)
    from edgerlhf.stages.loop import make_optimizer

    opt, sched = make_optimizer(holder, cfg, 8)
    sizes = {"mini_batch_size": 2}
    st = ppo.ppo_update(roles, opt, sched, b, old, whiten(adv, rm), ret, cfg, sizes, lambda s: None)
    assert st.optimizer_steps == 4 and st.skipped == 0
    changed = {n for n, p in roles.policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing trained"
    assert all("lora_" in n for n in changed), f"non-adapter weights changed: {sorted(changed)[:3]}"
    assert any(".default." in n for n in changed)  # the PPO adapter
    if value_model == "adapter":
        assert any(".value." in n for n in changed)  # the value adapter
    assert not torch.equal(roles.value_head.summary.weight, head_before)
    # the first micro-batch of the first epoch sees ratio 1: dropout is off and log-probs are consistent
    assert st.ratio == pytest.approx(1.0, abs=0.05)


def test_run_writes_metrics_adapter_and_reloads(tmp_path):
    run = ppo.run(_cfg(tmp_path), reward_fn=length_reward)
    rows = _metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("objective/scores", "objective/gold", "objective/kl", "objective/kl_per_token", "objective/entropy",
                "objective/rlhf_reward", "policy/clipfrac", "policy/approxkl", "loss/policy", "loss/value",
                "val/ratio", "val/mean_length", "val/distinct_2", "timing/generate", "timing/score", "timing/update",
                "memory/peak_mb", "timing/tokens_per_s"):
        assert key in rows[0], key
    assert rows[0]["objective/kl"] == 0.0  # the fresh adapter is the reference exactly
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "finished" and s["episodes"] == 24
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert sum(x["tag"] == "sample/rollout" for x in samples) == 3
    from edgerlhf.models.adapters import load_policy

    model, tok, meta = load_policy(run)
    assert meta["stage"] == "ppo"
    assert set(load_file(run / "adapter" / "value_head.safetensors")) == {"summary.weight", "summary.bias"}


def test_resume_from_a_mid_epoch_checkpoint_is_exact(tmp_path):
    # 20 prompts, 8 per step: step 3 starts mid-epoch
    cfg = _cfg(tmp_path, max_steps=6, save_steps=3, save_total_limit=5, run_name="full")
    run = ppo.run(cfg, reward_fn=length_reward)
    full = {r["step"]: r for r in _metrics(run)}
    assert (run / "checkpoints" / "step-000003" / "state.json").is_file()
    resumed = ppo.run(_cfg(tmp_path, max_steps=6, save_steps=3, save_total_limit=5, run_name="full",
                           resume=str(run / "checkpoints" / "step-000003")), reward_fn=length_reward)
    assert resumed == run
    again = _metrics(run)[6:]  # appended by the resumed run
    assert [r["step"] for r in again] == [4, 5, 6]
    for r in again:
        for k in ("loss/policy", "loss/value", "objective/scores", "objective/kl"):
            assert r[k] == full[r["step"]][k], (r["step"], k)  # bitwise: same floats, not approx


def test_resume_refuses_a_changed_setting(tmp_path):
    run = ppo.run(_cfg(tmp_path, max_steps=2, save_steps=1, run_name="r"), reward_fn=length_reward)
    with pytest.raises(ConfigError, match="learning_rate"):
        ppo.run(_cfg(tmp_path, max_steps=4, run_name="r", resume=str(run), learning_rate=5e-4), reward_fn=length_reward)


def test_nan_rewards_are_skipped_then_stop_with_checkpoint_intact(tmp_path):
    calls = {"n": 0}

    def flaky(prompts, responses):
        calls["n"] += 1
        return [math.nan] * len(responses) if calls["n"] >= 3 else length_reward(prompts, responses)

    cfg = _cfg(tmp_path, max_steps=8, save_steps=2, max_bad_steps=2, run_name="nan")
    with pytest.raises(FloatingPointError, match="2 steps in a row"):
        ppo.run(cfg, reward_fn=flaky)
    run = tmp_path / "runs" / "nan"
    assert (run / "status").read_text().strip() == "failed"
    ck = load_file(run / "checkpoints" / "step-000002" / "trainable.safetensors")
    assert all(torch.isfinite(v).all() for v in ck.values())
    rows = _metrics(run)
    assert rows[2]["train/skipped_updates"] == 1 and rows[2]["train/optimizer_steps"] == 0


def test_one_nan_step_is_skipped_and_the_run_goes_on(tmp_path):
    calls = {"n": 0}

    def once(prompts, responses):
        calls["n"] += 1
        r = length_reward(prompts, responses)
        return [math.inf] + r[1:] if calls["n"] == 2 else r

    run = ppo.run(_cfg(tmp_path, max_steps=4), reward_fn=once)
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "finished" and s["bad_steps"] == 1


def test_fake_cuda_oom_halves_the_micro_batch_and_retries(tmp_path, monkeypatch, capsys):
    real = Roles.forward

    def forward(self, ids, *a, **kw):
        if torch.is_grad_enabled() and ids.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return real(self, ids, *a, **kw)

    monkeypatch.setattr(Roles, "forward", forward)
    run = ppo.run(_cfg(tmp_path, max_steps=2), reward_fn=length_reward)
    s = json.loads((run / "summary.json").read_text())
    assert s["batch/final_mini_batch_size"] == 1 and s["skipped_updates"] == 0
    assert _metrics(run)[0]["train/optimizer_steps"] == 4
    assert "retrying with update batch 1" in capsys.readouterr().out


def test_missing_reward_and_renamed_keys_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="reward is required"):
        ppo.run(_cfg(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_config(PPOConfig, overrides={"ppo_epochs": 4, "forward_batch_size": 8, "init_kl_coef": 0.1,
                                          "adap_kl_ctrl": True, "batch_size": 32, "cliprange_vaule": 0.2})
    msg = str(e.value)
    for old, new in (("ppo_epochs", "num_ppo_epochs"), ("forward_batch_size", "rollout_batch_size"),
                     ("init_kl_coef", "kl_coef"), ("adap_kl_ctrl", "kl_adaptive"), ("batch_size", "num_rollouts_per_step")):
        assert f"'{old}': renamed" in msg and new in msg
    assert "did you mean 'cliprange_value'" in msg
    with pytest.raises(ConfigError, match="multiple of mini_batch_size"):
        load_config(PPOConfig, overrides={"num_rollouts_per_step": 10, "mini_batch_size": 4})
    assert not (tmp_path / "runs").exists()


def test_separate_layout_runs_with_the_same_trainable_parameters(tmp_path):
    shared = json.loads((ppo.run(_cfg(tmp_path, max_steps=1, run_name="a"), reward_fn=length_reward) / "summary.json").read_text())
    sep = json.loads((ppo.run(_cfg(tmp_path, max_steps=1, run_name="b", layout="separate"), reward_fn=length_reward)
                      / "summary.json").read_text())
    assert sep["trainable_params"] == shared["trainable_params"]
    assert sep["layout"] == "separate" and sep["status"] == "finished"


@pytest.mark.parametrize("base_precision", ["int8", "int4"])
def test_quantized_base_trains_the_adapter(tmp_path, base_precision):
    run = ppo.run(_cfg(tmp_path, max_steps=2, base_precision=base_precision), reward_fn=length_reward)
    w = load_file(run / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in w.items())
