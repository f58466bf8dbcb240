"""REINFORCE++-baseline on the engine, on the tiny model: added as one module, one config, presets and one registry row,
it runs through ``edgerlhf.run_reinforce_pp``, trains only the policy's LoRA adapter, writes its metrics and artifact,
and runs the reference only when its KL is used."""

import json

import pytest
import torch
from safetensors.torch import load_file

import edgerlhf as E
from edgerlhf.config import ReinforcePPConfig, load_config
from edgerlhf.models.roles import Roles
from edgerlhf.rl.algorithms import Rollout, make_algorithm
from edgerlhf.stages import online


def length_reward(prompts, responses):
    """A deterministic stand-in reward: longer, vowel-rich responses score higher."""
    return [sum(c in "aeiou" for c in r) / 10 for r in responses]


def _cfg(tmp_path, **kw):
    base = {"model": "tiny", "output_dir": str(tmp_path / "runs"), "max_steps": 2, "num_rollouts_per_step": 8,
            "num_generations": 4, "rollout_batch_size": 4, "mini_batch_size": 2, "gradient_accumulation_steps": 2,
            "response_length": 8, "gold_eval_prompts": 0, "report_to": ["none"], "progress": False,
            "learning_rate": 1e-3, "max_prompts": 20}
    base.update(kw)
    return load_config(ReinforcePPConfig, overrides=base)


def test_one_update_changes_only_the_policy_adapter(tmp_path):
    cfg = _cfg(tmp_path, beta=0.1, kl_in="reward")  # per-token returns (the run below has the KL in the loss)
    algo = make_algorithm(cfg)
    roles = Roles(cfg, dtype=torch.float32, device="cpu", values=algo.needs_values, reference=algo.needs_reference)
    assert roles.value_head is None
    before = {n: p.detach().clone() for n, p in roles.policy.named_parameters()}
    torch.manual_seed(0)
    b = online.rollout(roles, roles.tokenizer,
                       online.episodes_for_step(online.load_prompts(cfg), 0, cfg, algo.samples_per_prompt), cfg, 4)
    old = online.rollout_forwards(roles, b, cfg.temperature, 4, values=False, reference=True)
    with torch.no_grad():  # a policy that is not the reference, so the KL is not 0
        old = old._replace(ref_logprobs=old.ref_logprobs - 0.1 * b.resp_mask.float())
    adv = algo.advantages(Rollout(torch.tensor(length_reward(None, b.texts)), old.logprobs, old.ref_logprobs, None,
                                  b.resp_mask.float(), b.ended))
    assert adv.finite and adv.advantages.shape == b.resp_mask.shape
    m = adv.loss_mask.bool()
    assert adv.advantages[m].mean().abs() < 1e-5 and adv.advantages[~m].abs().sum() == 0  # whitened over the step
    holder = torch.nn.Module()
    holder.params = torch.nn.ParameterList(roles.trainable)
    from edgerlhf.stages.loop import make_optimizer

    opt, sched = make_optimizer(holder, cfg, 8)
    st = online.update(roles, algo, opt, sched, b, old, adv, cfg, online.Sizes(rollout_batch_size=4, mini_batch_size=2))
    assert st.optimizer_steps == 2 and st.skipped == 0  # 8 episodes, 4 per optimizer step, 1 pass
    assert "policy/kl" not in st.stats  # the KL is in the advantages, not in the loss
    changed = {n for n, p in roles.policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n and ".default." in n for n in changed), sorted(changed)[:3]
    assert len(roles.trainable) == sum(1 for n in before if "lora_" in n)  # no value head, no second adapter
    assert st.stats["val/ratio"] == pytest.approx(1.0, abs=0.05)


def test_run_reinforce_pp_writes_metrics_and_an_adapter_without_value_head(tmp_path):
    run = E.run_reinforce_pp(_cfg(tmp_path, beta=0.05), reward_fn=length_reward)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("objective/scores", "objective/kl", "objective/rlhf_reward", "objective/group_std", "loss/policy",
                "policy/kl", "policy/clipfrac", "policy/approxkl", "val/ratio", "train/grad_norm"):
        assert key in rows[0], key
    assert "loss/value" not in rows[0]
    assert rows[0]["objective/kl"] == 0.0  # the fresh adapter is the reference exactly
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "finished" and s["algorithm"] == "reinforce_pp" and s["samples_per_prompt"] == 4
    assert not (run / "adapter" / "value_head.safetensors").exists()
    w = load_file(run / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in w.items())  # B starts at 0: it trained
    from edgerlhf.models.adapters import load_policy

    _, _, meta = load_policy(run)
    assert meta["stage"] == "reinforce_pp" and meta["algorithm"] == "reinforce_pp"


@pytest.mark.parametrize("kl_in,beta", [("loss", 0.0), ("loss", 0.05), ("reward", 0.05)])
def test_the_reference_runs_only_when_its_kl_is_used(tmp_path, monkeypatch, kl_in, beta):
    calls = {"ref": 0}
    real_ref = Roles.ref_logprobs

    def ref(self, *a, **kw):
        calls["ref"] += 1
        return real_ref(self, *a, **kw)

    monkeypatch.setattr(Roles, "ref_logprobs", ref)
    cfg = _cfg(tmp_path, max_steps=1, beta=beta, kl_in=kl_in)
    run = online.run(cfg, reward_fn=length_reward)
    assert calls["ref"] == (8 // cfg.rollout_batch_size if beta > 0 else 0)
    s = json.loads((run / "summary.json").read_text())
    assert s["reference"] == (beta > 0)
