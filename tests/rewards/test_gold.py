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


# ------------------------------------------------------------------------------ pluggable gold (make_gold)

def test_make_gold_vader_and_none():
    from edgerlhf.rewards.gold import make_gold

    assert isinstance(make_gold("vader"), GoldScorer)
    assert make_gold("none") is None


def _user_module(tmp_path, body):
    f = tmp_path / "my_gold.py"
    f.write_text(body)
    return f


def test_make_gold_from_a_file_and_a_module(tmp_path, monkeypatch):
    from edgerlhf.rewards.gold import make_gold

    f = _user_module(tmp_path, "def length(prompts, responses):\n    return [len(r) / 10 for r in responses]\n")
    for spec in (f"{f}:length", "my_gold:length"):
        monkeypatch.syspath_prepend(str(tmp_path))
        gold = make_gold(spec)
        assert gold(["p", "q"], ["abc", "abcdefghij"]) == [0.3, 1.0]


@pytest.mark.parametrize("body,call,problem", [
    ("def g(p, r):\n    return [1.0]\n", True, "returned 1 scores for 2 responses"),
    ("def g(p, r):\n    return [float('nan'), 1.0]\n", True, "non-finite score for response 0"),
    ("def g(p, r):\n    return None\n", True, "must return a list of numbers"),
    ("def other(p, r):\n    return []\n", False, "has no function 'g' \\(it has: other\\)"),
    ("raise RuntimeError('boom')\n", False, "importing .* failed: RuntimeError: boom"),
])
def test_a_bad_gold_callable_is_named(tmp_path, body, call, problem):
    from edgerlhf.rewards.gold import check_gold, make_gold

    spec = f"{_user_module(tmp_path, body)}:g"
    if call:
        with pytest.raises(ValueError, match=problem):
            make_gold(spec)(["a", "b"], ["x", "y"])
    else:
        assert check_gold(spec) and problem.split(" ")[0] in check_gold(spec)[0]
        with pytest.raises(ValueError, match=problem):
            make_gold(spec)


def test_unknown_gold_and_missing_module_list_the_choices(tmp_path):
    from edgerlhf.rewards.gold import check_gold

    assert "use vader, none, module:function" in check_gold("sentiment")[0]
    assert "cannot import 'no_such_module_xyz'" in check_gold("no_such_module_xyz:f")[0]
    assert "no such file" in check_gold(str(tmp_path / "missing.py") + ":f")[0]
    assert "not a trained reward model" in check_gold(str(tmp_path))[0]  # a folder without an artifact


def test_a_reward_model_folder_is_a_gold(tmp_path):
    """Gao et al.'s setup: an independently trained RM as the gold."""
    from conftest import write_toy_prefs
    from edgerlhf.config import RewardConfig, load_config
    from edgerlhf.rewards.gold import check_gold, make_gold
    from edgerlhf.rewards.learned import load_reward_model
    from edgerlhf.stages import reward

    run = reward.run(load_config(RewardConfig, overrides={
        "model": "tiny", "prefs": str(write_toy_prefs(tmp_path / "p.jsonl", 16, 1)), "output_dir": str(tmp_path),
        "max_steps": 1, "per_device_train_batch_size": 4, "report_to": ["none"], "progress": False}))
    assert check_gold(str(run)) == []
    gold = make_gold(str(run))
    prompts, responses = ["Review the kettle.", "Review the lamp."], ["Great kettle.", "Bad lamp."]
    assert gold(prompts, responses) == pytest.approx(load_reward_model(run, "fp32")(prompts, responses))
