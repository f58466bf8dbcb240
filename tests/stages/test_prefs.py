import json
import random

import pytest

from edgerlhf.config import ConfigError, PrefsConfig, load_config
from edgerlhf.stages import prefs


def _rows(n):
    return [{"id": f"p{i}", "prompt": [{"role": "user", "content": f"prompt {i}"}]} for i in range(n)]


def test_make_pairs_labels_by_gold_and_drops_duplicates():
    pairs, counts = prefs.make_pairs(_rows(1), [["good", "bad", "bad ", "meh"]], [[0.9, -0.5, -0.5, 0.05]],
                                     tie_threshold=0.1, label_noise=0.0, rng=random.Random(0))
    assert counts["pairs_total"] == 6 and counts["duplicates"] == 1  # "bad" vs "bad "
    kept = [p for p in pairs if not p["near_tie"]]
    for p in kept:
        assert p["gold_chosen"] > p["gold_rejected"] and not p["label_flipped"]
        assert p["chosen"] == [{"role": "assistant", "content": p["chosen"][0]["content"]}]
    assert len(pairs) == 5 and all(not p["near_tie"] for p in pairs)  # no |diff| <= 0.1 here


def test_make_pairs_near_ties_and_noise_rate():
    rng = random.Random(1)
    n = 400
    resp = [[f"a{i}", f"b{i}"] for i in range(n)]
    gold = [[0.5, -0.5] if i % 4 else [0.5, 0.45] for i in range(n)]
    pairs, counts = prefs.make_pairs(_rows(n), resp, gold, tie_threshold=0.1, label_noise=0.25, rng=rng)
    assert counts["near_ties"] == n // 4
    ties = [p for p in pairs if p["near_tie"]]
    assert all(not p["label_flipped"] for p in ties)
    kept = [p for p in pairs if not p["near_tie"]]
    flipped = [p for p in kept if p["label_flipped"]]
    assert all(p["gold_chosen"] < p["gold_rejected"] for p in flipped)
    assert 0.18 < len(flipped) / len(kept) < 0.32


def test_split_by_prompt_has_no_overlap():
    rows = [{"prompt": f"p{i % 20}", "chosen": "a", "rejected": "b"} for i in range(100)]
    train, held = prefs.split_by_prompt(rows, 0.2, seed=0)
    assert len(train) + len(held) == 100 and held
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}


def test_generate_on_tiny_writes_pairs(tmp_path):
    cfg = load_config(PrefsConfig, overrides={"model": "tiny", "num_prompts": 12, "max_new_tokens": 6,
                                              "output_dir": str(tmp_path), "report_to": ["none"], "progress": False,
                                              "eval_fraction": 0.25})
    run = prefs.run(cfg)
    train = [json.loads(x) for x in (run / "pairs" / "train.jsonl").read_text().splitlines()]
    held = [json.loads(x) for x in (run / "pairs" / "eval.jsonl").read_text().splitlines()]
    assert train and held
    assert not {r["prompt_id"] for r in train} & {r["prompt_id"] for r in held}
    assert all(not r["near_tie"] for r in train)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["prompts_eval"] == 3 and summary["pairs_train"] == len(train)
    assert len((run / "responses.jsonl").read_text().splitlines()) == 12 * 4


def test_prefs_config_rules():
    with pytest.raises(ConfigError) as e:
        load_config(PrefsConfig, overrides=["samples_per_prompt=1", "label_noise=0.5", "eval_fraction=0"])
    assert len(e.value.problems) == 3
