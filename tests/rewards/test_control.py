"""The control reward (reward=random) and the length control: values by hand, determinism, bad input."""

import math
import statistics

import pytest

from edgerlhf.rewards.control import RandomReward
from edgerlhf.rewards.metrics import length_controlled_gains, length_slope, words


def test_random_reward_is_a_fixed_function_of_seed_prompt_and_response():
    r = RandomReward(seed=3)
    prompts, responses = ["a", "a", "b"], ["x", "y", "x"]
    s = r(prompts, responses)
    assert s == RandomReward(seed=3)(prompts, responses)  # reproducible
    assert len(set(s)) == 3  # another response, or the same to another prompt: another score
    assert RandomReward(seed=4)(prompts, responses) != s
    many = RandomReward(0)(["p"] * 4000, [f"response {i}" for i in range(4000)])
    assert abs(statistics.fmean(many)) < 0.1 and abs(statistics.pstdev(many) - 1) < 0.1  # standard normal
    assert all(math.isfinite(v) for v in many)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        r(["a", "b"], ["x"])


def test_length_slope_and_controlled_gain_by_hand():
    # baseline: gold = 0.1 + 0.05 x words exactly
    lb = [2, 4, 6, 8]
    gb = [0.1 + 0.05 * x for x in lb]
    slope = length_slope(gb, lb)
    assert slope == pytest.approx(0.05)
    # a policy that only got longer by 4 words: its whole gain is length
    la = [x + 4 for x in lb]
    ga = [0.1 + 0.05 * x for x in la]
    assert length_controlled_gains(ga, la, gb, lb, slope) == pytest.approx([0.0] * 4)
    # one that is better at the same length keeps its gain
    assert length_controlled_gains([g + 0.3 for g in gb], lb, gb, lb, slope) == pytest.approx([0.3] * 4)
    assert length_slope([0.1, 0.5], [3, 3]) == 0.0  # one length: nothing to control for
    assert words("  two  words ") == 2
    with pytest.raises(ValueError, match="at least two"):
        length_slope([0.1], [3])
    with pytest.raises(ValueError, match="one score and length"):
        length_controlled_gains([1.0], [1, 2], [1.0], [1], 0.0)
