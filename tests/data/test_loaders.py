"""Tests for edgerlhf.data.loaders: formats, normalization, and errors that name file and row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgerlhf.data.loaders import (
    DataError,
    load_preference_rows,
    load_sft_rows,
    read_rows,
    split_hh_transcript,
)

FIX = Path(__file__).parent / "fixtures"

GOOD_SFT = {"prompt": "Review the film Arrival.", "completion": "A quiet, moving film."}
GOOD_PREF = {"prompt": "Review the film Arrival.", "chosen": "A quiet, moving film.", "rejected": "Film."}


def fx(name: str) -> str:
    return str(FIX / name)


def at(name: str, where: str) -> str:
    """Regex for the start of an error message: '<...name>, <where>: '."""
    return re.escape(f"{name}, {where}: ")


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


class WordTokenizer:
    """Stand-in tokenizer: one token per whitespace-separated word."""

    def __call__(self, text: str):
        return {"input_ids": list(range(len(text.split())))}


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


# ------------------------------------------------------------------------------------------ read_rows


def test_read_rows_jsonl_labels_are_physical_lines():
    rows = read_rows(fx("sft_prompt_completion.jsonl"))
    assert [loc.rsplit(", ", 1)[1] for loc, _ in rows] == ["line 1", "line 2", "line 4"]  # line 3 is blank
    assert rows[0][0] == f"{fx('sft_prompt_completion.jsonl')}, line 1"
    assert rows[2][1]["source"] == "hand-written"


def test_read_rows_json_labels_rows_and_indexes():
    rows = read_rows(fx("sft_messages.json"))
    assert [loc.rsplit(", ", 1)[1] for loc, _ in rows] == ["row 1 (index 0)", "row 2 (index 1)"]


def test_read_rows_json_object_with_train_list():
    rows = read_rows(fx("pref_implicit.json"))
    assert len(rows) == 2 and rows[1][1]["id"] == 7


def test_read_rows_json_object_without_list(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('{"rows": []}')
    with pytest.raises(DataError, match="d.json: top-level object has no 'data' or 'train' list"):
        read_rows(str(p))


def test_read_rows_json_row_not_object(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[{"prompt": "a", "completion": "b"}, "oops"]')
    with pytest.raises(DataError, match=at("d.json", "row 2 (index 1)") + "expected a JSON object"):
        read_rows(str(p))


def test_read_rows_csv_counts_header_as_line_1_and_records_as_rows():
    rows = read_rows(fx("sft.csv"))
    assert [loc.rsplit(", ", 1)[1] for loc, _ in rows] == ["line 2", "line 3", "line 4"]
    assert rows[1][1]["prompt"] == "Review: the pasta place\non Main Street."


def test_invalid_json_line():
    with pytest.raises(DataError, match=at("sft_bad.jsonl", "line 9") + "invalid JSON"):
        read_rows(fx("sft_bad.jsonl"))


def test_invalid_json_file_names_line():
    with pytest.raises(DataError, match=at("bad_json.json", "line 3") + "invalid JSON at column"):
        read_rows(fx("bad_json.json"))


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD_SFT, "[1, 2]"])
    with pytest.raises(DataError, match=at("data.jsonl", "line 2") + "expected a JSON object"):
        read_rows(path)


def test_non_utf8_jsonl_line(tmp_path):
    p = tmp_path / "data.jsonl"
    good = json.dumps(GOOD_SFT).encode()
    p.write_bytes(good + b"\n" + good + b'\n{"prompt": "caf\xff\xfe", "completion": "x"}\n' + good + b"\n")
    with pytest.raises(DataError, match=at("data.jsonl", "line 3") + r"not valid UTF-8 \(byte 0xff at column 16\)"):
        read_rows(str(p))
    rows, skipped = load_sft_rows(str(p), skip_bad_rows=True)
    assert len(rows) == 3 and skipped == 1


def test_non_utf8_csv_row(tmp_path):
    p = tmp_path / "data.csv"
    p.write_bytes(b"prompt,completion\nReview a cafe.,Good.\nReview a bar.,Lou\xff\xfed.\n")
    with pytest.raises(DataError, match=at("data.csv", "line 3") + "contains bytes that are not valid UTF-8"):
        read_rows(str(p))


def test_non_utf8_json_row(tmp_path):
    p = tmp_path / "data.json"
    p.write_bytes(b'[{"prompt": "a", "completion": "b"}, {"prompt": "\xff", "completion": "b"}]')
    with pytest.raises(DataError, match=at("data.json", "row 2 (index 1)") + "contains bytes that are not valid"):
        read_rows(str(p))


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_SFT).encode() + b"\n")
    assert read_rows(str(p))[0][1] == GOOD_SFT


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=re.escape(str(missing)) + ".*file not found"):
        read_rows(str(missing))


def test_unsupported_extension(tmp_path):
    p = tmp_path / "data.txt"
    p.write_text("hello")
    with pytest.raises(DataError, match=r"data.txt: unsupported file type '.txt'; use a .jsonl, .json or .csv"):
        read_rows(str(p))


def test_csv_row_with_too_many_cells():
    with pytest.raises(DataError, match=at("pref_bad.csv", "line 6") + "has 4 cells but the header has 3"):
        read_rows(fx("pref_bad.csv"))


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_hf_source_offline(monkeypatch, var):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv(var, "1")
    with pytest.raises(DataError, match=r"hf:Anthropic/hh-rlhf:test: .*unreachable.*offline.*local .jsonl"):
        read_rows("hf:Anthropic/hh-rlhf:test")
    with pytest.raises(DataError, match=r"hf:org/name:train: .*offline"):
        load_preference_rows("hf:org/name")


def test_hf_source_without_id():
    with pytest.raises(DataError, match="no dataset id"):
        read_rows("hf:")


# -------------------------------------------------------------------------------------------- SFT


def test_sft_prompt_completion_strings():
    rows, skipped = load_sft_rows(fx("sft_prompt_completion.jsonl"))
    assert skipped == 0 and len(rows) == 3
    assert rows[0] == {
        "prompt": "Write a short review of the film Arrival.",
        "completion": "A quiet, moving film about language and time.",
    }
    assert set(rows[2]) == {"prompt", "completion"}  # extra fields are not kept for SFT


def test_sft_conversational_prompt_completion():
    rows, _ = load_sft_rows(fx("sft_conversational.jsonl"))
    assert rows[0]["prompt"] == [msg("system", "You write short reviews."), msg("user", "Review the film Arrival.")]
    assert rows[0]["completion"] == [msg("assistant", "A quiet, moving film about language and time.")]
    assert rows[1]["completion"] == [msg("assistant", "Fresh noodles, friendly staff, slow service.")]  # 'name' dropped


def test_sft_messages_split_at_last_assistant_turn():
    rows, _ = load_sft_rows(fx("sft_messages.json"))
    assert rows[0] == {
        "prompt": [msg("user", "Review the film Arrival.")],
        "completion": [msg("assistant", "A quiet, moving film.")],
    }
    assert len(rows[1]["prompt"]) == 4 and rows[1]["prompt"][-1] == msg("user", "The one on Main Street.")
    assert rows[1]["completion"] == [msg("assistant", "Great coffee, hard chairs.")]


def test_sft_csv():
    rows, skipped = load_sft_rows(fx("sft.csv"))
    assert skipped == 0 and len(rows) == 3
    assert rows[2] == {"prompt": "Describe Dune in one sentence.", "completion": "Politics and prophecy on a desert "
                                                                                 "planet."}


def test_sft_max_rows():
    rows, _ = load_sft_rows(fx("sft_prompt_completion.jsonl"), max_rows=2)
    assert len(rows) == 2
    # rows after the cut are not checked: the first bad row of sft_bad.jsonl is line 2
    rows, _ = load_sft_rows(fx("sft_bad.jsonl"), max_rows=1)
    assert len(rows) == 1
    with pytest.raises(ValueError, match="max_rows"):
        load_sft_rows(fx("sft.csv"), max_rows=-1)


def test_sft_fixture_first_bad_row():
    with pytest.raises(DataError, match=at("sft_bad.jsonl", "line 2") + "field 'completion' is empty; every row "
                       "needs a non-empty completion"):
        load_sft_rows(fx("sft_bad.jsonl"))


def test_sft_skip_bad_rows_drops_and_counts():
    rows, skipped = load_sft_rows(fx("sft_bad.jsonl"), skip_bad_rows=True)
    assert skipped == 8  # lines 2-9 (line 9 is invalid JSON)
    assert [r["prompt"] for r in rows] == ["Review the film Arrival.", "Review a museum."]


SFT_BAD = [
    ({"prompt": "Review a cafe.", "completion": ""}, "field 'completion' is empty; every row needs a non-empty "
                                                     "completion"),
    ({"prompt": "  ", "completion": "Good."}, "field 'prompt' is empty"),
    ({"prompt": "Review a cafe."}, "field 'completion' is missing"),
    ({"completion": "Good."}, "field 'prompt' is missing"),
    ({"prompt": "Review a cafe.", "completion": None}, "field 'completion' is null"),
    ({"text": "Review: a cafe. Good."}, "plain 'text' rows are not supported.*provide 'prompt'/'completion' or "
                                        "'messages'"),
    ({"question": "q", "answer": "a"}, "no 'prompt'/'completion' or 'messages' field"),
    ({"prompt": 42, "completion": "Forty-two."}, "field 'prompt' is a number; it must be a string or a list"),
    ({"prompt": "Review a bar.", "completion": [msg("assistant", "Loud.")]},
     "'prompt' is a string, 'completion' is a message list; use the same kind"),
    ({"messages": [msg("user", "Review a bakery.")]}, "'messages' ends with a 'user' message; it must end with an "
                                                      "assistant"),
    ({"messages": [msg("assistant", "Good bread.")]}, "'messages' has only the assistant turn"),
    ({"messages": [msg("user", "Review a bakery."), msg("bot", "Good bread.")]},
     "message 2 of 'messages' has role 'bot'; roles must be one of system, user, assistant"),
    ({"messages": [msg("user", "Review a bakery."), msg("assistant", "")]},
     "message 2 of 'messages' has empty content"),
    ({"messages": [{"from": "human", "value": "Hi"}]}, "ShareGPT"),
    ({"messages": "Hello"}, "field 'messages' is a string; it must be a list"),
    ({"messages": [msg("user", "Hi"), {"role": "assistant", "content": ["a"]}]}, "content must be a string"),
    ({"messages": [], }, "'messages' is an empty message list"),
    ({"prompt": [msg("user", "Hi")], "completion": [msg("user", "Hello")]}, "'completion' ends with a 'user' message"),
    ({"prompt": [], "completion": [msg("assistant", "Hello")]}, "'prompt' is an empty message list"),
    ({"messages": [msg("user", "Hi"), msg("assistant", "Hello")], "prompt": "Hi"}, "both 'messages' and 'prompt'"),
]


@pytest.mark.parametrize("line", [1, 4])
@pytest.mark.parametrize("bad,problem", SFT_BAD)
def test_sft_bad_row_names_file_and_line(tmp_path, bad, problem, line):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD_SFT] * (line - 1) + [bad, GOOD_SFT])
    with pytest.raises(DataError, match=at("data.jsonl", f"line {line}") + ".*" + problem):
        load_sft_rows(path)
    rows, skipped = load_sft_rows(path, skip_bad_rows=True)
    assert (len(rows), skipped) == (line, 1)


def test_sft_bad_row_in_json_and_csv(tmp_path):
    p = tmp_path / "data.json"
    p.write_text(json.dumps({"data": [GOOD_SFT, GOOD_SFT, {"prompt": "x", "completion": ""}]}))
    with pytest.raises(DataError, match=at("data.json", "row 3 (index 2)") + "field 'completion' is empty"):
        load_sft_rows(str(p))
    p = tmp_path / "data.csv"
    p.write_text("prompt,completion\nReview a cafe.,Good.\nReview a bar.,\n")
    with pytest.raises(DataError, match=at("data.csv", "line 3") + "field 'completion' is empty"):
        load_sft_rows(str(p))
    p.write_text("prompt,answer\nReview a cafe.,Good.\n")
    with pytest.raises(DataError, match=at("data.csv", "line 2") + "field 'completion' is missing"):
        load_sft_rows(str(p))


def test_sft_no_valid_rows(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"text": "a"}, {"text": "b"}])
    with pytest.raises(DataError, match=r"data.jsonl: no valid SFT rows \(2 bad rows skipped\); first problem: "
                       r".*data.jsonl, line 1: plain 'text' rows"):
        load_sft_rows(path, skip_bad_rows=True)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty.jsonl: has no rows"):
        load_sft_rows(str(empty))
    header_only = tmp_path / "empty.csv"
    header_only.write_text("prompt,completion\n")
    with pytest.raises(DataError, match="empty.csv: has no rows"):
        load_sft_rows(str(header_only))


def test_sft_max_length(tmp_path):
    short = {"prompt": "one ", "completion": "two"}
    long = {"prompt": "one two three ", "completion": "four five six seven"}  # strings are concatenated as is
    path = write_jsonl(tmp_path / "data.jsonl", [short, long])
    tok = WordTokenizer()
    rows, _ = load_sft_rows(path, tokenizer=tok, max_length=7)
    assert len(rows) == 2
    with pytest.raises(DataError, match=at("data.jsonl", "line 2") + r"prompt\+completion is 7 tokens, over "
                                                                     r"max_length=6"):
        load_sft_rows(path, tokenizer=tok, max_length=6)
    rows, skipped = load_sft_rows(path, tokenizer=tok, max_length=6, skip_bad_rows=True)
    assert (len(rows), skipped) == (1, 1)
    # without a tokenizer, or with max_length=0, nothing is checked
    assert len(load_sft_rows(path, max_length=1)[0]) == 2
    assert len(load_sft_rows(path, tokenizer=tok, max_length=0)[0]) == 2


def test_sft_max_length_counts_message_contents(tmp_path):
    row = {"messages": [msg("system", "be brief"), msg("user", "one two"), msg("assistant", "three four five")]}
    path = write_jsonl(tmp_path / "data.jsonl", [row])
    assert load_sft_rows(path, tokenizer=WordTokenizer(), max_length=7)[1] == 0
    with pytest.raises(DataError, match="is 7 tokens, over max_length=6"):
        load_sft_rows(path, tokenizer=WordTokenizer(), max_length=6)


@pytest.mark.slow
def test_sft_max_length_with_real_tokenizer(tmp_path):
    from edgerlhf.models import load_tokenizer

    tok = load_tokenizer("default")
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD_SFT, {"prompt": "word " * 50, "completion": "more " * 50}])
    with pytest.raises(DataError, match=at("data.jsonl", "line 2") + r"prompt\+completion is \d+ tokens, over "
                                                                     r"max_length=64"):
        load_sft_rows(path, tokenizer=tok, max_length=64)


# ------------------------------------------------------------------------------------- preferences


def test_preference_explicit_prompt_with_extras():
    rows, skipped = load_preference_rows(fx("pref_explicit.jsonl"))
    assert skipped == 0
    assert rows[0] == {
        "prompt": "Review the film Arrival.",
        "chosen": "A quiet, moving film about language.",
        "rejected": "Film.",
        "gold_chosen": 0.91,
        "gold_rejected": 0.12,
    }  # non-scalar "meta" is dropped
    assert rows[1] == {
        "prompt": [msg("user", "Review a cafe.")],
        "chosen": [msg("assistant", "Great coffee, hard chairs.")],
        "rejected": [msg("assistant", "Cafe.")],
    }


def test_preference_implicit_prompt():
    rows, _ = load_preference_rows(fx("pref_implicit.json"))
    assert rows[0] == {
        "prompt": [msg("user", "Review a cafe.")],
        "chosen": [msg("assistant", "Great coffee, hard chairs.")],
        "rejected": [msg("assistant", "Cafe.")],
    }
    assert rows[1]["prompt"] == [msg("system", "Be kind."), msg("user", "Review a bar.")]
    assert rows[1]["chosen"] == [msg("assistant", "Loud but fun.")] and rows[1]["id"] == 7


def test_preference_hh_transcripts():
    """HH-RLHF transcripts become message lists, so the model's own chat template applies."""
    rows, _ = load_preference_rows(fx("pref_hh.jsonl"))
    assert rows[0] == {
        "prompt": [msg("user", "What is a good film about language?")],
        "chosen": [msg("assistant", "Arrival is a thoughtful choice.")],
        "rejected": [msg("assistant", "Films are long.")],
    }
    assert rows[1]["prompt"] == [msg("user", "Recommend a cafe."), msg("assistant", "Which city?"),
                                 msg("user", "Lisbon.")]
    assert rows[1]["chosen"] == [msg("assistant", "Try a pastelaria near the river.")]
    assert rows[1]["rejected"] == [msg("assistant", "No.")]


def test_preference_csv():
    rows, _ = load_preference_rows(fx("pref.csv"))
    assert rows[0] == {
        "prompt": "Review the film Arrival.",
        "chosen": "A quiet, moving film about language.",
        "rejected": "Film.",
        "gold_chosen": "0.9",  # CSV cells are strings
    }


def test_preference_csv_bad_rows():
    with pytest.raises(DataError, match=at("pref_bad.csv", "line 3") + "chosen and rejected are identical; drop the "
                                                                       "row or fix it"):
        load_preference_rows(fx("pref_bad.csv"))
    rows, skipped = load_preference_rows(fx("pref_bad.csv"), skip_bad_rows=True)
    assert skipped == 3  # line 3 identical, line 4 empty chosen, line 6 too many cells
    assert [r["prompt"] for r in rows] == ["Review the film Arrival.", "Review a museum."]


def test_preference_csv_empty_cell_is_empty_not_missing(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("prompt,chosen,rejected\nReview a bar.,,Awful.\n")
    with pytest.raises(DataError, match=at("p.csv", "line 2") + "field 'chosen' is empty; every row needs a non-empty "
                                                                "chosen"):
        load_preference_rows(str(p))


HH_Q = "\n\nHuman: Recommend a cafe.\n\nAssistant:"

PREF_BAD = [
    ({"prompt": "p", "chosen": "Good."}, "field 'rejected' is missing"),
    ({"prompt": "p", "rejected": "Bad."}, "field 'chosen' is missing"),
    ({"prompt": "p", "chosen": "", "rejected": "Bad."}, "field 'chosen' is empty; every row needs a non-empty chosen"),
    ({"prompt": "", "chosen": "Good.", "rejected": "Bad."}, "field 'prompt' is empty"),
    ({"prompt": "p", "chosen": "Same.", "rejected": "Same."}, "chosen and rejected are identical; drop the row or fix "
                                                              "it"),
    ({"prompt": "p", "chosen": "Same. ", "rejected": "Same."}, "chosen and rejected are identical"),
    ({"prompt": "p", "chosen": 1, "rejected": "Bad."}, "field 'chosen' is a number"),
    ({"prompt": "p", "chosen": [msg("assistant", "Good.")], "rejected": "Bad."}, "use the same kind"),
    ({"prompt": [msg("user", "p")], "chosen": [msg("assistant", "A")], "rejected": [msg("robot", "B")]},
     "message 1 of 'rejected' has role 'robot'"),
    ({"prompt": [msg("user", "p")], "chosen": [msg("assistant", "A")], "rejected": [msg("user", "B")]},
     "'rejected' ends with a 'user' message"),
    ({"chosen": "Good.", "rejected": "Bad."}, "plain strings and there is no 'prompt' field"),
    ({"chosen": HH_Q + " Try Lisbon.", "rejected": "Bad."}, "'rejected' has no '\\\\n\\\\nHuman:' / "
                                                            "'\\\\n\\\\nAssistant:' turns"),
    ({"chosen": HH_Q + " Try Lisbon.", "rejected": "Hi." + HH_Q + " No."}, "'rejected' has text before its first"),
    ({"chosen": "\n\nHuman: A?\n\nHuman: B?\n\nAssistant: C.",
      "rejected": "\n\nHuman: A?\n\nHuman: B?\n\nAssistant: D."},
     "turn 2 of 'chosen' is a second Human turn in a row"),
    ({"chosen": HH_Q + " Lisbon.\n\nHuman: Thanks", "rejected": HH_Q + " No.\n\nHuman: Thanks"},
     "'chosen' ends with a Human turn"),
    ({"chosen": HH_Q + " Try Lisbon.", "rejected": "\n\nHuman: Recommend a bar.\n\nAssistant: No."},
     "differ before their last"),
    ({"chosen": HH_Q + " Try Lisbon.", "rejected": HH_Q + "  "}, "the last assistant turn of 'rejected' is empty"),
    ({"chosen": HH_Q + " Same.", "rejected": HH_Q + "Same."}, "chosen and rejected are identical"),
    ({"chosen": [msg("user", "Hi"), msg("assistant", "Hello")],
      "rejected": [msg("user", "Hi"), msg("assistant", "Hello")]},
     "chosen and rejected are identical"),
    ({"chosen": [msg("user", "Hi"), msg("assistant", "A")], "rejected": [msg("user", "Hey"), msg("assistant", "B")]},
     "differ from their first message, so there is no shared prompt"),
    ({"chosen": [msg("user", "Hi"), msg("assistant", "A")], "rejected": [msg("user", "Hi")]},
     "'rejected' has no messages after the prompt"),
    ({"chosen": [msg("user", "Hi"), msg("assistant", "A"), msg("user", "X"), msg("assistant", "C")],
      "rejected": [msg("user", "Hi"), msg("assistant", "A"), msg("user", "Y"), msg("assistant", "C")]},
     "first differ at message 3, a 'user' message"),
]


@pytest.mark.parametrize("line", [1, 3])
@pytest.mark.parametrize("bad,problem", PREF_BAD)
def test_preference_bad_row_names_file_and_line(tmp_path, bad, problem, line):
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD_PREF] * (line - 1) + [bad, GOOD_PREF])
    with pytest.raises(DataError, match=at("prefs.jsonl", f"line {line}") + ".*" + problem):
        load_preference_rows(path)
    rows, skipped = load_preference_rows(path, skip_bad_rows=True)
    assert (len(rows), skipped) == (line, 1)


def test_preference_max_length(tmp_path):
    row = {"prompt": "one two ", "chosen": "three", "rejected": "three four five six"}
    path = write_jsonl(tmp_path / "prefs.jsonl", [row])
    assert len(load_preference_rows(path, tokenizer=WordTokenizer(), max_length=6)[0]) == 1
    with pytest.raises(DataError,
                       match=at("prefs.jsonl", "line 1") + r"prompt\+rejected is 6 tokens, over max_length=5"):
        load_preference_rows(path, tokenizer=WordTokenizer(), max_length=5)


def test_preference_max_rows_and_no_valid_rows(tmp_path):
    assert len(load_preference_rows(fx("pref_hh.jsonl"), max_rows=1)[0]) == 1
    path = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "p", "chosen": "x", "rejected": "x"}])
    with pytest.raises(DataError, match=r"prefs.jsonl: no valid preference rows \(1 bad row skipped\)"):
        load_preference_rows(path, skip_bad_rows=True)


# ---------------------------------------------------------------------------------- split_hh_transcript


def test_split_hh_single_turn():
    assert split_hh_transcript("\n\nHuman: Hi?\n\nAssistant: Hello there.",
                               "\n\nHuman: Hi?\n\nAssistant: Go away.") == (
        "\n\nHuman: Hi?\n\nAssistant:",
        "Hello there.",
        "Go away.",
    )


def test_split_hh_multi_turn_uses_last_assistant_turn():
    head = "\n\nHuman: Recommend a cafe.\n\nAssistant: Which city?\n\nHuman: Lisbon."
    prompt, chosen, rejected = split_hh_transcript(head + "\n\nAssistant: Try the river.\n", head + "\n\nAssistant:No.")
    assert prompt == head + "\n\nAssistant:"
    assert (chosen, rejected) == ("Try the river.", "No.")


def test_split_hh_empty_response_is_returned_empty():
    assert split_hh_transcript("\n\nHuman: Hi\n\nAssistant:", "\n\nHuman: Hi\n\nAssistant: Hey")[1] == ""


@pytest.mark.parametrize(
    "chosen,rejected,problem",
    [
        ("\n\nHuman: Hi\n\nAssistant: A", "\n\nHuman: Hello\n\nAssistant: B", "differ before their last"),
        ("\n\nHuman: Hi\n\nAssistant: A\n\nHuman: More\n\nAssistant: B", "\n\nHuman: Hi\n\nAssistant: C", "differ"),
        ("Human: Hi Assistant: A", "\n\nHuman: Hi\n\nAssistant: B", "chosen has no"),
        ("\n\nHuman: Hi\n\nAssistant: A", "\n\nHuman: Hi", "rejected has no"),
    ],
)
def test_split_hh_raises(chosen, rejected, problem):
    with pytest.raises(ValueError, match=problem):
        split_hh_transcript(chosen, rejected)


# ---------------------------------------------------------------------------------- load_prompt_rows


def test_prompts_from_any_row_kind(tmp_path):
    from edgerlhf.data.loaders import load_prompt_rows

    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"prompt": "Plain prompt."},
        {"prompt": [msg("system", "Be kind."), msg("user", "Chat prompt.")]},
        {"prompt": "SFT prompt.", "completion": "Done."},
        {"messages": [msg("user", "Messages prompt."), msg("assistant", "Answer.")]},
        {"chosen": "\n\nHuman: HH prompt.\n\nAssistant: Yes.", "rejected": "\n\nHuman: HH prompt.\n\nAssistant: No."},
    ])
    prompts, skipped = load_prompt_rows(path)
    assert skipped == 0 and prompts == [
        "Plain prompt.", [msg("system", "Be kind."), msg("user", "Chat prompt.")], "SFT prompt.",
        [msg("user", "Messages prompt.")], [msg("user", "HH prompt.")]]
    assert load_prompt_rows(path, max_rows=2)[0] == prompts[:2]


@pytest.mark.parametrize("bad,problem", [
    ({"question": "Where?"}, "no 'prompt' field \\(row has: 'question'\\)"),
    ({"prompt": ""}, "field 'prompt' is empty"),
    ({"prompt": [msg("user", "Hi"), msg("assistant", "Hello")]}, "'prompt' ends with an assistant message"),
])
def test_bad_prompt_rows_name_file_and_line(tmp_path, bad, problem):
    from edgerlhf.data.loaders import load_prompt_rows

    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Fine."}, bad])
    with pytest.raises(DataError, match=at("p.jsonl", "line 2") + ".*" + problem):
        load_prompt_rows(path)
    assert load_prompt_rows(path, skip_bad_rows=True) == (["Fine."], 1)
