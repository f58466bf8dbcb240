"""GSPO's math against hand-derived values, and the algorithm on the engine (tiny model)."""

import json
import math

import pytest
import torch

import edgerlhf as E
from edgerlhf.config import GSPOConfig, load_config
from edgerlhf.rl.algorithms import MicroBatch, Rollout, make_algorithm
from edgerlhf.rl.algorithms.gspo import GSPO, gspo_loss, sequence_log_ratio
from edgerlhf.rl.group_math import aggregate, clipped_surrogate

# two responses: 2 tokens and 1 token (the third column is padding)
L = [[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]]
OLD = torch.tensor([[-1.2, -1.6, 0.0], [-0.7, 0.0, 0.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_sequence_ratio_is_the_geometric_mean_of_the_token_ratios():
    # token log-ratios: response 0: +0.2, -0.4 -> mean -0.1; response 1: +0.2 -> 0.2 (padding ignored)
    got = sequence_log_ratio(torch.tensor(L), OLD, MASK)
    assert torch.allclose(got, torch.tensor([-0.1, 0.2]), atol=1e-6)
    assert sequence_log_ratio(torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3)).item() == 0.0  # no token


def test_loss_and_its_gradient_by_hand():
    """s = exp(-0.1) = 0.904837 and exp(0.2) = 1.221403; A = [1, 1]; clip [0.8, 1.2].
    Response 0: min(0.904837, 0.904837) -> loss -0.904837. Response 1: min(1.221403, 1.2) = 1.2 (clipped high):
    loss -1.2, no gradient. Mean over 2 responses: -1.0524185. d loss / d logprob of each of response 0's two
    tokens: -(A s0 / |y0|) / 2 = -0.904837 / 4 = -0.22620925; response 1's: 0."""
    lp = torch.tensor(L, requires_grad=True)
    loss, s = gspo_loss(lp, OLD, torch.tensor([1.0, 1.0]), MASK, 0.2, 0.2)
    assert loss.item() == pytest.approx(-(math.exp(-0.1) + 1.2) / 2, abs=1e-6)
    assert s.clipped_high.tolist() == [0.0, 1.0] and s.clipped_low.tolist() == [0.0, 0.0]
    loss.backward()
    g = -math.exp(-0.1) / 4
    assert torch.allclose(lp.grad, torch.tensor([[g, g, 0.0], [0.0, 0.0, 0.0]]), atol=1e-6)


def test_a_negative_advantage_takes_the_unclipped_larger_ratio():
    """A = [1, -1]: response 1's min(1.221403 x -1, 1.2 x -1) = -1.221403 (the ratio itself, not the clip):
    loss (-0.904837 + 1.221403) / 2 = 0.158283, and neither clip is active."""
    loss, s = gspo_loss(torch.tensor(L), OLD, torch.tensor([1.0, -1.0]), MASK, 0.2, 0.2)
    assert loss.item() == pytest.approx((-math.exp(-0.1) + math.exp(0.2)) / 2, abs=1e-6)
    assert (s.clipped_low + s.clipped_high).sum() == 0


def test_one_token_responses_are_grpo_with_per_sequence_means():
    """With one token per response the sequence ratio is the token ratio: GSPO is GRPO (loss_type grpo)."""
    torch.manual_seed(0)
    lp, old, adv = torch.randn(6, 1), torch.randn(6, 1), torch.randn(6)
    mask = torch.ones(6, 1)
    got, _ = gspo_loss(lp, old, adv, mask, 0.2, 0.28)
    want = aggregate(clipped_surrogate(lp - old, adv[:, None], 0.2, 0.28).loss, mask, "grpo")
    assert got.item() == pytest.approx(want.item(), abs=1e-6)


def test_a_masked_response_adds_nothing_but_counts_in_the_mean():
    """DAPO's overlong filter zeroes a truncated response's mask: it adds 0 and still counts among the responses
    (TRL's loss_type="grpo" does the same)."""
    mask = MASK.clone()
    mask[1] = 0.0
    loss, _ = gspo_loss(torch.tensor(L), OLD, torch.tensor([1.0, 1.0]), mask, 0.2, 0.2)
    assert loss.item() == pytest.approx(-math.exp(-0.1) / 2, abs=1e-6)


def _cfg(tmp_path=None, **kw):
    over = {"model": "tiny", "num_generations": 2, "num_rollouts_per_step": 4, "mini_batch_size": 2,
            "gradient_accumulation_steps": 1, "rollout_batch_size": 4, "response_length": 8, "max_steps": 2,
            "gold_eval_prompts": 0, "report_to": ["none"], "progress": False, "learning_rate": 1e-3, "max_prompts": 20}
    if tmp_path is not None:
        over["output_dir"] = str(tmp_path)
    return load_config(GSPOConfig, overrides={**over, **kw})


def test_the_registry_makes_it_and_its_defaults_are_the_papers():
    cfg = _cfg()
    algo = make_algorithm(cfg)
    assert isinstance(algo, GSPO) and algo.samples_per_prompt == 2 and algo.update_epochs == cfg.num_iterations
    assert (cfg.epsilon, cfg.epsilon_high, cfg.beta) == (3e-4, 4e-4, 0.0) and not algo.needs_reference
    # advantages: GRPO's group normalisation, one per response: scores [1, 3 | 2, 2] -> [-0.7071, 0.7071 | 0, 0]
    r = Rollout(torch.tensor([1.0, 3.0, 2.0, 2.0]), torch.zeros(4, 3), None, None, torch.ones(4, 3),
                torch.ones(4, dtype=torch.bool))
    adv = algo.advantages(r)
    assert torch.allclose(adv.advantages, torch.tensor([-1, 1, 0, 0]) / (math.sqrt(2) + 1e-4), atol=1e-6)
    out = algo.loss(MicroBatch(torch.zeros(4, 3), None, None, torch.zeros(4, 3), None, None, adv.advantages, None,
                               torch.ones(4, 3), 4, 4, 12.0))
    assert out.loss.item() == pytest.approx(-adv.advantages.mean().item(), abs=1e-6)  # ratio 1: -mean(A) = 0
    assert out.stats["val/sequence_ratio"].item() == pytest.approx(1.0)


def length_reward(prompts, responses):
    return [sum(c in "aeiou" for c in r) / 10 for r in responses]


def test_it_trains_the_adapter_on_the_engine(tmp_path):
    run = E.run_gspo(_cfg(tmp_path, run_name="g", epsilon=0.2, epsilon_high=0.2), reward_fn=length_reward)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "objective/scores" in r]
    assert [r["step"] for r in steps] == [1, 2] and all("val/sequence_ratio" in r for r in steps)
    assert "objective/kl" not in steps[0]  # beta = 0: no reference forward, no KL
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["algorithm"] == "gspo"
    from safetensors.torch import load_file

    w = load_file(run / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in w.items())  # the adapter moved
    assert not (run / "adapter" / "value_head.safetensors").exists()
