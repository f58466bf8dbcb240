"""Gold scorer (VADER on the response) and the 95% CI helper."""

import math

import pytest

from edgerlhf.rewards import GoldScorer, mean_ci95
from edgerlhf.rewards.gold import GoldScorer as GoldScorerDirect

POS = "This film is wonderful: brilliant acting, a beautiful score, and I loved every minute."
NEG = "The food was awful, the waiter was rude, and it was the worst meal of my life."


@pytest.fixture(scope="module")
def gold():
    return GoldScorer()


def test_reexport():
    assert GoldScorer is GoldScorerDirect


def test_polar_texts(gold):
    assert gold.score(POS) > 0.5
    assert gold.score(NEG) < -0.5


def test_empty_and_blank_are_zero(gold):
    assert gold.score("") == 0.0
    assert gold.score("   \n") == 0.0
    assert gold.score_texts(["", POS])[0] == 0.0


def test_neutral_text_near_zero(gold):
    assert abs(gold.score("The train leaves at nine from platform four.")) < 0.1


def test_call_scores_responses_and_ignores_prompts(gold):
    responses = [POS, NEG, ""]
    out = gold(["p1", "p2", "p3"], responses)
    assert out == gold.score_texts(responses)
    assert all(isinstance(x, float) and -1.0 <= x <= 1.0 for x in out)
    assert out[0] > 0.5 and out[1] < -0.5 and out[2] == 0.0
    # different prompts, same response: same score
    chat_prompt = [{"role": "user", "content": "I hated it."}]
    assert gold([chat_prompt], [POS]) == gold(["I loved it."], [POS]) == gold(None, [POS])


def test_call_length_mismatch(gold):
    with pytest.raises(ValueError):
        gold(["a", "b"], [POS])


def test_mean_ci95_hand_computed():
    # mean 2.5; sample variance ((1.5^2 + 0.5^2) * 2) / 3 = 5/3; half-width 1.96 * sqrt(5/3) / 2
    mean, lo, hi = mean_ci95([1, 2, 3, 4])
    half = 1.96 * math.sqrt(5 / 3) / 2
    assert mean == pytest.approx(2.5)
    assert half == pytest.approx(1.2651741, abs=1e-6)
    assert lo == pytest.approx(2.5 - half)
    assert hi == pytest.approx(2.5 + half)


def test_mean_ci95_small_n():
    assert mean_ci95([0.3]) == (0.3, 0.3, 0.3)
    assert mean_ci95(iter([0.5, 0.5])) == (0.5, 0.5, 0.5)
    assert all(math.isnan(x) for x in mean_ci95([]))
