"""The online-RL engine on the tiny model, for PPO, GRPO and RLOO: only the right parameters change, PPO did
not move in the refactor (bitwise pin), resume is exact, NaN, OOM and SIGTERM are handled, the reference is
not run when beta=0."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from edgerlhf.config import ConfigError, GRPOConfig, PPOConfig, RLOOConfig, load_config
from edgerlhf.data import SYSTEM_PROMPT
from edgerlhf.models.roles import Roles
from edgerlhf.rl.algorithms import make_algorithm
from edgerlhf.stages import online

CONFIGS = {"ppo": PPOConfig, "grpo": GRPOConfig, "rloo": RLOOConfig}


def length_reward(prompts, responses):
    """A deterministic stand-in reward: longer, vowel-rich responses score higher."""
    return [sum(c in "aeiou" for c in r) / 10 for r in responses]


def _cfg(tmp_path, algo="ppo", **kw):
    base = {"model": "tiny", "output_dir": str(tmp_path / "runs"), "max_steps": 3, "num_rollouts_per_step": 8,
            "rollout_batch_size": 4, "mini_batch_size": 2, "gradient_accumulation_steps": 2, "response_length": 8,
            "gold_eval_prompts": 0, "report_to": ["none"], "progress": False, "learning_rate": 1e-3,
            "max_prompts": 20}
    if algo != "ppo":
        base["num_generations"] = 4
    base.update(kw)
    return load_config(CONFIGS[algo], overrides=base)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _one_update(cfg):
    """Rollout, forwards, advantages and one update through the engine's own functions; returns
    (roles, parameters before, update stats)."""
    algo = make_algorithm(cfg)
    roles = Roles(cfg, dtype=torch.float32, device="cpu", values=algo.needs_values, reference=algo.needs_reference)
    before = {n: p.detach().clone() for n, p in roles.policy.named_parameters()}
    head_before = roles.value_head.summary.weight.detach().clone() if roles.value_head is not None else None
    torch.manual_seed(0)
    b = online.rollout(roles, roles.tokenizer,
                       online.episodes_for_step(online.load_prompts(cfg), 0, cfg, algo.samples_per_prompt), cfg, 4)
    old = online.rollout_forwards(roles, b, cfg.temperature, 4, values=algo.needs_values,
                                  reference=algo.needs_reference)
    from edgerlhf.rl.algorithms import Rollout

    adv = algo.advantages(Rollout(torch.tensor(length_reward(None, b.texts)), old.logprobs, old.ref_logprobs,
                                  old.values, b.resp_mask.float(), b.ended))
    holder = torch.nn.Module()
    holder.params = torch.nn.ParameterList(roles.trainable)
    from edgerlhf.stages.loop import make_optimizer

    opt, sched = make_optimizer(holder, cfg, 8)
    st = online.update(roles, algo, opt, sched, b, old, adv, cfg, online.Sizes(rollout_batch_size=4, mini_batch_size=2))
    return roles, before, head_before, st


@pytest.mark.parametrize("algo,value_model", [("ppo", "head"), ("ppo", "adapter"), ("grpo", None), ("rloo", None)])
def test_one_update_changes_only_the_policy_adapter_and_the_value_parts(tmp_path, algo, value_model):
    cfg = _cfg(tmp_path, value_model=value_model) if algo == "ppo" else _cfg(tmp_path, algo, beta=0.1)
    roles, before, head_before, st = _one_update(cfg)
    # 8 episodes, 4 per optimizer step
    assert st.optimizer_steps == make_algorithm(cfg).update_epochs * 8 // 4 and st.skipped == 0
    changed = {n for n, p in roles.policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing trained"
    assert all("lora_" in n for n in changed), f"non-adapter weights changed: {sorted(changed)[:3]}"
    assert any(".default." in n for n in changed)  # the policy adapter
    if value_model == "adapter":
        assert any(".value." in n for n in changed)  # the value adapter
    if algo == "ppo":
        assert not torch.equal(roles.value_head.summary.weight, head_before)
    else:  # value-free: no value head, no second adapter
        assert roles.value_head is None and not any(".value." in n for n in before)
        assert len(roles.trainable) == sum(1 for n in before if "lora_" in n)
    # the first micro-batch of the first epoch sees ratio 1: dropout is off and log-probs are consistent
    assert st.stats["val/ratio"] == pytest.approx(1.0, abs=0.05)


def test_run_writes_metrics_adapter_and_reloads(tmp_path):
    run = online.run(_cfg(tmp_path), reward_fn=length_reward)
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
    run = online.run(cfg, reward_fn=length_reward)
    full = {r["step"]: r for r in _metrics(run)}
    assert (run / "checkpoints" / "step-000003" / "state.json").is_file()
    resumed = online.run(_cfg(tmp_path, max_steps=6, save_steps=3, save_total_limit=5, run_name="full",
                           resume=str(run / "checkpoints" / "step-000003")), reward_fn=length_reward)
    assert resumed == run
    again = _metrics(run)[6:]  # appended by the resumed run
    assert [r["step"] for r in again] == [4, 5, 6]
    for r in again:
        for k in ("loss/policy", "loss/value", "objective/scores", "objective/kl"):
            assert r[k] == full[r["step"]][k], (r["step"], k)  # bitwise: same floats, not approx
    # the clock goes on: the resumed run's wall time counts the first attempt's compute up to its last step
    s = json.loads((run / "summary.json").read_text())
    assert again[0]["time_s"] >= full[6]["time_s"]
    assert s["wall_time_s"] == pytest.approx(full[6]["time_s"] + s["wall_time_s_this_attempt"], abs=0.02)


def test_resume_refuses_a_changed_setting(tmp_path):
    run = online.run(_cfg(tmp_path, max_steps=2, save_steps=1, run_name="r"), reward_fn=length_reward)
    with pytest.raises(ConfigError, match="learning_rate"):
        online.run(_cfg(tmp_path, max_steps=4, run_name="r", resume=str(run), learning_rate=5e-4),
                   reward_fn=length_reward)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_nan_rewards_are_skipped_then_stop_with_checkpoint_intact(tmp_path, algo):
    calls = {"n": 0}

    def flaky(prompts, responses):
        calls["n"] += 1
        return [math.nan] * len(responses) if calls["n"] >= 3 else length_reward(prompts, responses)

    cfg = _cfg(tmp_path, algo, max_steps=8, save_steps=2, max_bad_steps=2, run_name="nan")
    with pytest.raises(FloatingPointError, match="2 steps in a row"):
        online.run(cfg, reward_fn=flaky)
    run = tmp_path / "runs" / "nan"
    assert (run / "status").read_text().strip() == "failed"
    ck = load_file(run / "checkpoints" / "step-000002" / "trainable.safetensors")
    assert ck and all(torch.isfinite(v).all() for v in ck.values())
    assert any("value_head" in k for k in ck) == (algo == "ppo")  # a value-free run has none
    rows = _metrics(run)
    assert rows[2]["train/skipped_updates"] == 1 and rows[2]["train/optimizer_steps"] == 0


def test_one_nan_step_is_skipped_and_the_run_goes_on(tmp_path):
    calls = {"n": 0}

    def once(prompts, responses):
        calls["n"] += 1
        r = length_reward(prompts, responses)
        return [math.inf] + r[1:] if calls["n"] == 2 else r

    run = online.run(_cfg(tmp_path, max_steps=4), reward_fn=once)
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "finished" and s["bad_steps"] == 1


@pytest.mark.parametrize("algo", ["ppo", "rloo"])
def test_fake_cuda_oom_halves_the_micro_batch_and_retries(tmp_path, monkeypatch, capsys, algo):
    real = Roles.forward

    def forward(self, ids, *a, **kw):
        if torch.is_grad_enabled() and ids.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return real(self, ids, *a, **kw)

    monkeypatch.setattr(Roles, "forward", forward)
    cfg = _cfg(tmp_path, algo, max_steps=2)
    run = online.run(cfg, reward_fn=length_reward)
    s = json.loads((run / "summary.json").read_text())
    assert s["batch/final_mini_batch_size"] == 1 and s["skipped_updates"] == 0
    # 8 episodes, 4 per optimizer step
    assert _metrics(run)[0]["train/optimizer_steps"] == make_algorithm(cfg).update_epochs * 2
    assert "retrying with update batch 1" in capsys.readouterr().out


def test_missing_reward_and_renamed_keys_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="reward is required"):
        online.run(_cfg(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_config(PPOConfig, overrides={"ppo_epochs": 4, "forward_batch_size": 8, "init_kl_coef": 0.1,
                                          "adap_kl_ctrl": True, "batch_size": 32, "cliprange_vaule": 0.2})
    msg = str(e.value)
    for old, new in (("ppo_epochs", "num_ppo_epochs"), ("forward_batch_size", "rollout_batch_size"),
                     ("init_kl_coef", "kl_coef"), ("adap_kl_ctrl", "kl_adaptive"),
                     ("batch_size", "num_rollouts_per_step")):
        assert f"'{old}': renamed" in msg and new in msg
    assert "did you mean 'cliprange_value'" in msg
    with pytest.raises(ConfigError, match="multiple of mini_batch_size"):
        load_config(PPOConfig, overrides={"num_rollouts_per_step": 10, "mini_batch_size": 4})
    assert not (tmp_path / "runs").exists()


def test_separate_layout_runs_with_the_same_trainable_parameters(tmp_path):
    shared_run = online.run(_cfg(tmp_path, max_steps=1, run_name="a"), reward_fn=length_reward)
    shared = json.loads((shared_run / "summary.json").read_text())
    sep = json.loads((online.run(_cfg(tmp_path, max_steps=1, run_name="b", layout="separate"), reward_fn=length_reward)
                      / "summary.json").read_text())
    assert sep["trainable_params"] == shared["trainable_params"]
    assert sep["layout"] == "separate" and sep["status"] == "finished"


@pytest.mark.parametrize("base_precision", ["int8", "int4"])
def test_quantized_base_trains_the_adapter(tmp_path, base_precision):
    run = online.run(_cfg(tmp_path, max_steps=2, base_precision=base_precision), reward_fn=length_reward)
    w = load_file(run / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in w.items())


# -- the engine for every algorithm ----------------------------------------------------------------------

PIN = json.loads((__import__("pathlib").Path(__file__).with_name("ppo_pin.json")).read_text())


def _fingerprint():
    import re

    return torch.__version__, sorted(set(re.findall(r"\b(avx512\w*|amx\w*|avx2|fma)\b", open("/proc/cpuinfo").read())))


def _pin():
    """The pin recorded on this kind of CPU (torch version and the CPU flags that pick kernels), or None."""
    return next((p for p in PIN["pins"] if (p["torch"], p["cpu_flags"]) == _fingerprint()), None)


@pytest.mark.skipif(_pin() is None, reason="no pin recorded for torch %s on a CPU with %s (pinned: %s); floating-point "
                    "kernels differ elsewhere" % (*_fingerprint(), [(p["torch"], p["cpu_flags"]) for p in PIN["pins"]]))
@pytest.mark.parametrize("value_model", ["head", "adapter"])
def test_ppo_did_not_move_in_the_refactor(tmp_path, value_model):
    """Losses, scores and KL of the first steps equal, bitwise, the pinned ones (ppo_pin.json, same settings, one
    pin per CPU kind CI may draw): first recorded before PPO became one algorithm of the engine; re-recorded only
    for a deliberate numeric change, with the size of the change written in the pin's history."""
    cfg = _cfg(tmp_path, value_model=value_model, kl_coef=0.2, ent_coef=0.01, run_name=f"pin-{value_model}",
               sampler="generate")  # the pin is of the update's math; the sampler has its own tests
    rows = [r for r in _metrics(online.run(cfg, reward_fn=length_reward)) if "objective/scores" in r]
    pinned = _pin()["steps"][value_model]
    assert len(rows) == len(pinned) == 3
    for got, want in zip(rows, pinned):
        assert {k: got[k] for k in want} == want  # the same floats, not approx


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_value_free_run_writes_metrics_and_an_artifact_without_value_head(tmp_path, algo):
    run = online.run(_cfg(tmp_path, algo, beta=0.05), reward_fn=length_reward)
    rows = _metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("objective/scores", "objective/gold", "objective/kl", "objective/entropy", "loss/policy",
                "policy/clipfrac", "policy/approxkl", "val/ratio", "train/grad_norm", "memory/peak_mb"):
        assert key in rows[0], key
    assert "loss/value" not in rows[0]
    assert rows[0]["objective/kl"] == 0.0  # the fresh adapter is the reference exactly
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "finished" and s["algorithm"] == algo and s["samples_per_prompt"] == 4
    assert not (run / "adapter" / "value_head.safetensors").exists()
    from edgerlhf.models.adapters import load_policy

    _, _, meta = load_policy(run)
    assert meta["stage"] == algo and meta["algorithm"] == algo


@pytest.mark.parametrize("algo,beta", [("grpo", 0.0), ("grpo", 0.1), ("rloo", 0.0), ("ppo", None)])
def test_the_reference_runs_only_when_its_kl_is_used(tmp_path, monkeypatch, algo, beta):
    calls = {"ref": 0, "body": 0}
    real_ref = Roles.ref_logprobs

    def ref(self, *a, **kw):
        calls["ref"] += 1
        return real_ref(self, *a, **kw)

    monkeypatch.setattr(Roles, "ref_logprobs", ref)
    import edgerlhf.models.roles as R

    real_hidden = R._hidden

    def hidden(*a, **kw):
        calls["body"] += 1
        return real_hidden(*a, **kw)

    monkeypatch.setattr(R, "_hidden", hidden)
    cfg = _cfg(tmp_path, algo, max_steps=1, **({} if beta is None else {"beta": beta}))
    online.run(cfg, reward_fn=length_reward)
    chunks = 8 // cfg.rollout_batch_size          # rollout forwards: one per chunk of rollout_batch_size
    # update forwards: one per micro-batch and epoch
    micro = make_algorithm(cfg).update_epochs * 8 // cfg.mini_batch_size
    uses_ref = algo == "ppo" or beta > 0
    assert calls["ref"] == (chunks if uses_ref else 0)
    assert calls["body"] == chunks + micro + (chunks if uses_ref else 0)


def test_grpo_resume_from_a_mid_epoch_checkpoint_is_exact(tmp_path):
    # 20 prompts, 2 per step (groups of 4): the data stream wraps mid-run
    kw = dict(max_steps=6, save_steps=3, save_total_limit=5, run_name="g", beta=0.05, num_iterations=2)
    run = online.run(_cfg(tmp_path, "grpo", **kw), reward_fn=length_reward)
    full = {r["step"]: r for r in _metrics(run)}
    resumed = online.run(_cfg(tmp_path, "grpo", **kw, resume=str(run / "checkpoints" / "step-000003")),
                         reward_fn=length_reward)
    assert resumed == run
    again = _metrics(run)[6:]
    assert [r["step"] for r in again] == [4, 5, 6]
    for r in again:
        for k in ("loss/policy", "objective/scores", "objective/kl", "policy/approxkl"):
            assert r[k] == full[r["step"]][k], (r["step"], k)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_sigterm_finishes_the_step_writes_a_checkpoint_and_records_interrupted(tmp_path, algo):
    import os
    import signal

    calls = {"n": 0}

    def reward(prompts, responses):
        calls["n"] += 1
        if calls["n"] == 2:  # what `timeout` or a job scheduler sends, in the middle of step 2, and its echo (a
            os.kill(os.getpid(), signal.SIGTERM)  # dying Ray worker: parent death per thread, its group killed)
            os.kill(os.getpid(), signal.SIGTERM)
        return length_reward(prompts, responses)

    with pytest.raises(KeyboardInterrupt):
        online.run(_cfg(tmp_path, algo, max_steps=5, run_name="t"), reward_fn=reward)
    run = tmp_path / "runs" / "t"
    assert (run / "status").read_text().strip() == "interrupted"
    assert (run / "checkpoints" / "step-000002" / "state.json").is_file()  # before any save_steps
    assert [r["step"] for r in _metrics(run)] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the run
    done = online.run(_cfg(tmp_path, algo, max_steps=5, run_name="t", resume=str(run)), reward_fn=length_reward)
    assert (done / "status").read_text().strip() == "finished"
    assert [r["step"] for r in _metrics(done) if "objective/scores" in r] == [1, 2, 3, 4, 5]


def test_group_and_renamed_key_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(GRPOConfig, overrides={"num_rollouts_per_step": 30, "num_generations": 4, "mini_batch_size": 2,
                                           "gradient_accumulation_steps": 1})
    assert "num_rollouts_per_step=30 is not a multiple of num_generations=4" in str(e.value)
    assert "num_rollouts_per_step=28 (7 prompts x 4) or 32 (8 prompts x 4)" in str(e.value)
    with pytest.raises(ConfigError, match="num_generations=1 must be at least 2"):
        load_config(RLOOConfig, overrides={"num_generations": 1})
    with pytest.raises(ConfigError) as e:
        load_config(GRPOConfig, overrides={"kl_coef": 0.1, "cliprange": 0.2, "num_ppo_epochs": 2, "rloo_k": 4,
                                           "max_completion_length": 32, "generation_batch_size": 16,
                                           "value_model": "head", "epsilon": 1.5, "loss_type": "token"})
    msg = str(e.value)
    for old, new in (("kl_coef", "beta"), ("cliprange", "epsilon"), ("num_ppo_epochs", "num_iterations"),
                     ("rloo_k", "num_generations"), ("max_completion_length", "response_length"),
                     ("generation_batch_size", "num_rollouts_per_step")):
        assert f"'{old}': renamed" in msg and f"`{new}`" in msg, old
    assert "value-free methods have no value model" in msg
    assert "epsilon=1.5 must be in (0, 1)" in msg and "loss_type='token'" in msg
    with pytest.raises(ConfigError) as e:
        load_config(PPOConfig, overrides={"beta": 0.1, "num_generations": 4, "epsilon": 0.2})
    msg = str(e.value)
    assert "'beta': renamed" in msg and "`kl_coef`" in msg and "`edgerlhf grpo`" in msg and "`cliprange`" in msg
    assert not (tmp_path / "runs").exists()


def test_resuming_with_another_algorithm_is_refused(tmp_path):
    run = online.run(_cfg(tmp_path, max_steps=1, save_steps=1, run_name="p"), reward_fn=length_reward)
    with pytest.raises(ConfigError, match="is a 'ppo' run; resume it with `edgerlhf ppo"):
        online.run(_cfg(tmp_path, "grpo", max_steps=2, run_name="p", resume=str(run)), reward_fn=length_reward)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_cached_trunk_runs_the_frozen_blocks_once_per_episode_and_keeps_ratio_one(tmp_path, monkeypatch, algo):
    """LoRA in the top block only: block 0 runs once per episode: in the rollout's decode, which keeps its
    output for the cache; never again in the old-log-prob, reference or update forwards. The first optimizer
    step still sees ratio exactly 1."""
    kw = dict(lora_layers=1, max_steps=1, mini_batch_size=4, gradient_accumulation_steps=2)
    cfg = _cfg(tmp_path, **kw) if algo == "ppo" else _cfg(tmp_path, algo, beta=0.05, **kw)
    algo_ = make_algorithm(cfg)
    roles = Roles(cfg, dtype=torch.float32, device="cpu", values=algo_.needs_values, reference=algo_.needs_reference)
    assert roles.split == 1
    torch.manual_seed(0)
    b = online.rollout(roles, roles.tokenizer,
                       online.episodes_for_step(online.load_prompts(cfg), 0, cfg, algo_.samples_per_prompt), cfg, 4)
    rows = {"block0": 0}
    block0 = roles.policy.get_base_model().model.layers[0]
    block0.register_forward_hook(lambda *a: rows.__setitem__("block0", rows["block0"] + a[1][0].shape[0]))
    old = online.rollout_forwards(roles, b, cfg.temperature, 4, values=algo_.needs_values,
                                  reference=algo_.needs_reference)
    assert rows["block0"] == 0  # the decode computed the trunk: not again here, nor for the reference
    assert old.trunk.hidden.shape[:2] == b.ids.shape
    # ... and it is the frozen blocks' output at every position a later pass reads
    fresh = roles.trunk(b.ids, b.mask).hidden
    rows["block0"] = 0
    used = b.mask.bool().clone()
    used[torch.arange(len(b.ids)), b.n_prompt + b.resp_mask.sum(1) - 1] = False  # a row's last token predicts nothing
    assert torch.allclose(old.trunk.hidden[used], fresh[used], atol=1e-5)
    from edgerlhf.rl.algorithms import Rollout
    from edgerlhf.stages.loop import make_optimizer

    adv = algo_.advantages(Rollout(torch.tensor(length_reward(None, b.texts)), old.logprobs, old.ref_logprobs,
                                   old.values, b.resp_mask.float(), b.ended))
    holder = torch.nn.Module()
    holder.params = torch.nn.ParameterList(roles.trainable)
    opt, sched = make_optimizer(holder, cfg, 8)
    first = {}
    real_loss = algo_.loss

    def spy(mb):
        out = real_loss(mb)
        first.setdefault("ratio", out.stats["val/ratio"].item())
        return out

    monkeypatch.setattr(algo_, "loss", spy)
    st = online.update(roles, algo_, opt, sched, b, old, adv, cfg,
                       online.Sizes(rollout_batch_size=4, mini_batch_size=4))
    assert rows["block0"] == 0  # the update ran only the top block
    assert first["ratio"] == 1.0  # exactly: the same cached input, the same kernels
    assert st.optimizer_steps > 0
    changed = [n for n, p in roles.policy.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert changed and all(".layers.1." in n for n in changed)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_rollout_logprobs_are_the_forward_ones_to_rounding(tmp_path, algo):
    """rollout_logprobs=true: the old log-probs, entropy and values are the decode's own, equal to those of a
    separate pass over the same tokens up to fp32 rounding, and the forward phase runs no policy pass."""
    kw = dict(lora_layers=1, max_steps=1, rollout_logprobs=True)
    cfg = _cfg(tmp_path, **kw) if algo == "ppo" else _cfg(tmp_path, algo, beta=0.05, **kw)
    algo_ = make_algorithm(cfg)
    roles = Roles(cfg, dtype=torch.float32, device="cpu", values=algo_.needs_values, reference=algo_.needs_reference)
    with torch.no_grad():  # an adapter that is not the reference, so policy and reference differ
        for p in roles.trainable:
            p.add_(0.05 * torch.randn_like(p))
    torch.manual_seed(0)
    b = online.rollout(roles, roles.tokenizer,
                       online.episodes_for_step(online.load_prompts(cfg), 0, cfg, algo_.samples_per_prompt), cfg, 4)
    assert b.recorded.logprobs is not None and b.recorded.trunk is not None
    calls = {"policy": 0}
    real_forward = Roles.forward

    def count(self, *a, **k):
        calls["policy"] += 1
        return real_forward(self, *a, **k)

    Roles.forward = count
    try:
        fast = online.rollout_forwards(roles, b, cfg.temperature, 4, values=algo_.needs_values, reference=True)
    finally:
        Roles.forward = real_forward
    assert calls["policy"] == 0
    slow = online.rollout_forwards(roles, b._replace(recorded=None), cfg.temperature, 4, values=algo_.needs_values,
                                   reference=True)
    m = b.resp_mask.bool()
    for k in ("logprobs", "entropy", "ref_logprobs") + (("values",) if algo == "ppo" else ()):
        assert torch.allclose(getattr(fast, k)[m], getattr(slow, k)[m], atol=1e-4), k
    assert (fast.logprobs[~m] == 0).all()
    assert not torch.allclose(fast.logprobs[m], fast.ref_logprobs[m])


def test_resume_is_exact_with_a_cached_trunk(tmp_path):
    kw = dict(max_steps=4, save_steps=2, save_total_limit=5, run_name="c", beta=0.05, num_iterations=2, lora_layers=1)
    run = online.run(_cfg(tmp_path, "grpo", **kw), reward_fn=length_reward)
    full = {r["step"]: r for r in _metrics(run)}
    online.run(_cfg(tmp_path, "grpo", **kw, resume=str(run / "checkpoints" / "step-000002")), reward_fn=length_reward)
    again = _metrics(run)[4:]
    assert [r["step"] for r in again] == [3, 4]
    for r in again:
        for k in ("loss/policy", "objective/scores", "objective/kl", "policy/approxkl"):
            assert r[k] == full[r["step"]][k], (r["step"], k)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_bf16_with_a_cached_trunk_trains(tmp_path, algo):
    """A GPU runs in bf16 with the presets' lora_layers=10: the frozen trunk the decode records must be in the blocks'
    dtype (it was fp32 and the first block above it failed: 'expected m1 and m2 to have the same dtype'). bf16 on
    the CPU exercises the same path."""
    run = online.run(_cfg(tmp_path, algo, dtype="bf16", lora_layers=1, max_steps=1), reward_fn=length_reward)
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "finished"
    from edgerlhf.models.adapters import read_artifact_meta

    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    assert any(v.float().abs().max() > 0 for k, v in weights.items() if "lora_B" in k)  # the adapter moved
    assert read_artifact_meta(run / "adapter")["stage"] == algo


def test_random_reward_control_arm_trains_on_a_fixed_seed_random_score(tmp_path, monkeypatch):
    """reward=random: no RM is loaded, every rollout is scored by the seed's random function, and the artifact
    says so (so eval's reward=auto does not look for an RM)."""
    from edgerlhf.models.adapters import read_artifact_meta
    from edgerlhf.rewards.control import RandomReward
    from edgerlhf.stages.online import engine

    calls = []

    class Recording(RandomReward):
        def __call__(self, prompts, responses):
            out = super().__call__(prompts, responses)
            calls.append((self.seed, len(responses), out))
            return out

    monkeypatch.setattr(engine, "RandomReward", Recording)
    run = online.run(_cfg(tmp_path, "grpo", reward="random", max_steps=2, seed=5))
    s = json.loads((run / "summary.json").read_text())
    assert s["reward"] == "random" and s["reward_precision"] == "null"
    # the built-in task's prompts all open with its system message: the artifact records it for the export
    assert read_artifact_meta(run / "adapter")["system_prompt"] == SYSTEM_PROMPT
    assert read_artifact_meta(run / "adapter")["reward_precision"] == "null"
    assert [c[:2] for c in calls] == [(5, 8), (5, 8)]  # every rollout of both steps, with the run's seed
    rows = _metrics(run)
    assert [r["objective/scores"] for r in rows] == pytest.approx([sum(c[2]) / 8 for c in calls], abs=1e-5)
    with pytest.raises(ConfigError, match="'random' for a control arm"):
        _cfg(tmp_path, reward="randm")
