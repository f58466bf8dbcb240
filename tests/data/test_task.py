"""The built-in review-continuation task: sizes, determinism, split hygiene, schema, sentiment, lengths."""

import random
import statistics

import pytest

from edgerlhf.data import SYSTEM_PROMPT, build_task, eval_prompts, train_rows
from edgerlhf.data import task as task_mod
from edgerlhf.rewards import GoldScorer

ROW_KEYS = {"id", "category", "item", "opener", "polarity", "prompt", "completion"}


@pytest.fixture(scope="module")
def task():
    return build_task()


@pytest.fixture(scope="module")
def all_rows(task):
    return task["train"] + task["eval"]


@pytest.fixture(scope="module")
def gold():
    return GoldScorer()


def _text(row):
    return row["completion"][0]["content"]


def test_sizes(task):
    assert len(task["train"]) == task_mod.N_TRAIN >= 1000
    assert len(task["eval"]) == task_mod.N_EVAL >= 200
    # a later stage draws 2,000+ preference pairs from distinct train prompts
    assert len({r["prompt"][1]["content"] for r in task["train"]}) >= 2000


def test_uncached_build_matches_the_cached_one():
    # (how long the build takes is a benchmark figure, not a test: bench/smoke_study.py)
    fresh = task_mod._build_cached.__wrapped__(0)
    cached = task_mod._build_cached(0)
    assert fresh == cached


def test_deterministic_and_seeded(task):
    assert build_task(0) == task
    other = build_task(1)
    assert other["train"] != task["train"]
    assert {r["item"] for r in other["eval"]} != {r["item"] for r in task["eval"]}


def test_no_global_rng_side_effects():
    random.seed(1234)
    expected = random.random()
    random.seed(1234)
    task_mod._build_cached.__wrapped__(7)
    assert random.random() == expected


def test_returned_rows_are_copies():
    rows = eval_prompts(3)
    rows[0]["prompt"][1]["content"] = "tampered"
    rows[0]["opener"] = "tampered"
    fresh = build_task()["eval"][0]
    assert fresh["opener"] != "tampered"
    assert fresh["prompt"][1]["content"] != "tampered"


def test_prefix_helpers(task):
    assert eval_prompts() == task["eval"]
    assert train_rows() == task["train"]
    assert eval_prompts(5) == task["eval"][:5]
    assert train_rows(7) == task["train"][:7]
    assert eval_prompts(0) == []
    with pytest.raises(ValueError):
        eval_prompts(len(task["eval"]) + 1)
    with pytest.raises(ValueError):
        train_rows(-1)


def test_prompts_distinct_and_split_by_item(task):
    for split in ("train", "eval"):
        users = [r["prompt"][1]["content"] for r in task[split]]
        assert len(set(users)) == len(users), f"duplicate prompts in {split}"
        ids = [r["id"] for r in task[split]]
        assert ids == [f"{split}-{i:05d}" for i in range(1, len(ids) + 1)]
    train_users = {r["prompt"][1]["content"] for r in task["train"]}
    assert not train_users & {r["prompt"][1]["content"] for r in task["eval"]}
    train_items = {(r["category"], r["item"]) for r in task["train"]}
    eval_items = {(r["category"], r["item"]) for r in task["eval"]}
    assert not train_items & eval_items
    assert not {i for _, i in train_items} & {i for _, i in eval_items}, "an item name appears in both splits"
    assert len(eval_items) >= 50 and len(train_items) >= 200


def test_row_schema(all_rows):
    for r in all_rows:
        assert set(r) == ROW_KEYS
        assert r["category"] in task_mod.CATEGORIES
        assert r["polarity"] in task_mod.POLARITIES
        assert r["item"] and r["item"] in r["opener"]
        system, user = r["prompt"]
        assert system == {"role": "system", "content": SYSTEM_PROMPT}
        assert user["role"] == "user"
        assert user["content"] == task_mod.user_message(r["opener"])
        assert user["content"].endswith(r["opener"])
        (asst,) = r["completion"]
        assert asst["role"] == "assistant"
        n_words = len(asst["content"].split())
        assert 10 <= n_words <= 35, (n_words, asst["content"])
        assert asst["content"][-1] in ".!", asst["content"]
        assert "{" not in asst["content"] + r["opener"], "unfilled template slot"


def test_mix_of_categories_and_polarities(task):
    for split in ("train", "eval"):
        rows = task[split]
        cats = {r["category"] for r in rows}
        assert cats == set(task_mod.CATEGORIES) and len(cats) >= 8
        for pol in task_mod.POLARITIES:
            share = sum(r["polarity"] == pol for r in rows) / len(rows)
            assert share >= 0.05, (split, pol, share)
        # openers lean negative so the starting policy keeps headroom
        neg = sum(r["polarity"] == "negative" for r in rows)
        pos = sum(r["polarity"] == "positive" for r in rows)
        assert neg > pos


def test_demonstration_sentiment(all_rows, gold):
    scores = gold.score_texts([_text(r) for r in all_rows])
    mean, std = statistics.mean(scores), statistics.pstdev(scores)
    assert -0.15 <= mean <= 0.10, mean
    assert std > 0.4, std
    by_pol = {p: statistics.mean(s for r, s in zip(all_rows, scores) if r["polarity"] == p)
              for p in task_mod.POLARITIES}
    # demonstrations follow where the opener points, with turns
    assert by_pol["negative"] < -0.2 < 0.2 < by_pol["positive"], by_pol
    assert by_pol["negative"] < by_pol["mixed"] < by_pol["positive"], by_pol
    # turns exist both ways: some negative openers end positive, some positive ones turn sour
    neg_turned = sum(s > 0.3 for r, s in zip(all_rows, scores) if r["polarity"] == "negative")
    pos_turned = sum(s < -0.3 for r, s in zip(all_rows, scores) if r["polarity"] == "positive")
    assert neg_turned >= 50 and pos_turned >= 50, (neg_turned, pos_turned)


def test_item_names_are_sentiment_neutral(all_rows, gold):
    # responses often repeat the item's name; it must not move the gold score
    items = sorted({r["item"] for r in all_rows})
    assert all(s == 0.0 for s in gold.score_texts(items)), [i for i in items if gold.score(i) != 0.0]


def test_token_lengths(all_rows):
    from edgerlhf.models import load_tokenizer

    tok = load_tokenizer("default")
    prompt_texts = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False)
                    for r in all_rows]
    prompt_lens = [len(ids) for ids in tok(prompt_texts, add_special_tokens=False)["input_ids"]]
    completion_lens = [len(ids) for ids in tok([_text(r) for r in all_rows], add_special_tokens=False)["input_ids"]]
    # whole templated prompt, special tokens and generation prompt included
    assert max(prompt_lens) <= 45, max(prompt_lens)
    assert max(completion_lens) <= 48, max(completion_lens)
    assert min(completion_lens) >= 8
