"""Load user data for SFT and reward modelling, in TRL's standard formats.

Sources are read by :mod:`edgerlhf.data.readers` (``.jsonl``, ``.json``, ``.csv``, ``hf:<hub id>``; UTF-8;
every unreadable row reported with its location).

Formats
-------
:func:`load_sft_rows` accepts, per row (TRL's "prompt-completion" and "conversational" formats):

* ``prompt`` / ``completion`` strings -> ``{"prompt": str, "completion": str}``
* ``prompt`` / ``completion`` message lists (``[{"role": ..., "content": ...}, ...]``)
  -> ``{"prompt": [msg, ...], "completion": [msg, ...]}``; the completion ends with an assistant turn.
* ``messages``: a conversation ending with an assistant turn -> ``prompt`` = every message before the
  last one, ``completion`` = ``[last assistant message]``.

A lone ``text`` field is rejected: training uses a completion-only loss, which needs to know where the
prompt ends.

:func:`load_preference_rows` accepts (TRL's preference format):

* explicit prompt: ``prompt`` / ``chosen`` / ``rejected``, all strings or all message lists;
* implicit prompt: only ``chosen`` / ``rejected`` message lists; the messages they share from the start
  become the prompt and the differing tails (which start with an assistant turn) the responses;
* Anthropic HH-RLHF transcripts: ``chosen`` / ``rejected`` strings ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``
  become message lists (:func:`hh_messages`: Human -> user, Assistant -> assistant), so the model's own chat
  template applies: the prompt is every turn before the last, the responses the last Assistant turns. A
  transcript that does not alternate Human / Assistant, or does not end with an Assistant turn, is a row error.

Normalized rows are ``{"prompt", "chosen", "rejected"}`` (same kind for all three) plus any other
*scalar* fields of the row (str, int, float, bool, None), e.g. ``gold_chosen``, passed through as is.

Messages are normalized to ``{"role", "content"}`` (other keys are dropped); roles must be ``system``,
``user`` or ``assistant`` and contents non-empty strings.

Length check
------------
With a ``tokenizer`` and ``max_length > 0``, a row whose prompt + response is longer than ``max_length``
tokens is an error. The count is an approximation: ``len(tokenizer(text)["input_ids"])`` where ``text``
is the prompt string followed by the response string, or, for message lists, every message content
joined by newlines; the chat template's own tokens are not counted. For preference rows the longer of
prompt+chosen and prompt+rejected counts.

Errors
------
Every problem raises :class:`DataError` whose message names the file (or hub id), the row, the problem
and the fix, e.g. ``data.jsonl, line 7: field 'completion' is empty; every row needs a non-empty
completion``. With ``skip_bad_rows=True`` the loaders drop bad rows (including unreadable JSONL lines,
and non-UTF-8 JSON/CSV rows) and return how many were dropped; a source with no valid row at all is
still an error. Problems with the source as a whole (missing file, unsupported extension, a JSON file
that does not parse, hub unreachable) always raise.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from edgerlhf.data.readers import DataError, RowProblem, iter_rows, kind_of, read_rows, row_keys

__all__ = [
    "DataError",
    "ROLES",
    "load_preference_rows",
    "load_prompt_rows",
    "prompt_rows_with_locations",
    "load_sft_rows",
    "read_rows",
    "hh_messages",
    "split_hh_transcript",
]

ROLES = ("system", "user", "assistant")
HH_ASSISTANT = "\n\nAssistant:"
_SCALARS = (str, int, float, bool, type(None))


# ------------------------------------------------------------------------------------------ validation


def _field(row: dict, name: str, need: str) -> Any:
    if name not in row or row[name] is None:
        state = "missing" if name not in row else "null"
        raise RowProblem(f"field {name!r} is {state} (row has: {row_keys(row)}); {need}")
    return row[name]


def _text(value: str, name: str) -> str:
    if not value.strip():
        raise RowProblem(f"field {name!r} is empty; every row needs a non-empty {name}")
    return value


def _messages(value: list, name: str) -> list[dict]:
    if not value:
        raise RowProblem(f"field {name!r} is an empty message list; it needs at least one message")
    out = []
    for i, msg in enumerate(value, start=1):
        where = f"message {i} of {name!r}"
        if not isinstance(msg, dict):
            raise RowProblem(f"{where} is {kind_of(msg)}; messages are objects {{\"role\": ..., \"content\": ...}}")
        if "role" not in msg and "from" in msg:
            raise RowProblem(
                f"{where} uses 'from'/'value' (ShareGPT style); rename them to 'role'/'content' "
                "with roles system/user/assistant"
            )
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise RowProblem(f"{where} has role {role!r}; roles must be one of system, user, assistant")
        if not isinstance(content, str):
            raise RowProblem(f"{where} has content that is {kind_of(content)}; content must be a string")
        if not content.strip():
            raise RowProblem(f"{where} has empty content; every message needs text")
        out.append({"role": role, "content": content})
    return out


def _ends_with_assistant(msgs: list[dict], name: str) -> None:
    if msgs[-1]["role"] != "assistant":
        raise RowProblem(
            f"{name!r} ends with a {msgs[-1]['role']!r} message; it must end with an assistant turn"
        )


def _value(value: Any, name: str) -> str | list[dict]:
    """A string or message list field, validated and normalized."""
    if isinstance(value, str):
        return _text(value, name)
    if isinstance(value, list):
        return _messages(value, name)
    raise RowProblem(
        f"field {name!r} is {kind_of(value)}; it must be a string or a list of {{role, content}} messages"
    )


def _same_kind(values: dict[str, Any]) -> None:
    kinds = {name: ("a string" if isinstance(v, str) else "a message list") for name, v in values.items()}
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"{n!r} is {k}" for n, k in kinds.items())
        raise RowProblem(f"{desc}; use the same kind (all strings or all message lists)")


def _as_text(prompt: str | list[dict], response: str | list[dict]) -> str:
    """Prompt and response as one text: strings are concatenated, message contents joined by newlines."""
    if isinstance(prompt, str):
        return prompt + response
    return "\n".join(m["content"] for m in prompt + response)


def _check_length(tokenizer, max_length: int, prompt, response, what: str) -> None:
    if tokenizer is None or max_length <= 0:
        return
    n = len(tokenizer(_as_text(prompt, response))["input_ids"])
    if n > max_length:
        raise RowProblem(
            f"prompt+{what} is {n} tokens, over max_length={max_length}; shorten the row, raise max_length, "
            "or set skip_bad_rows to drop such rows"
        )


def _normalize_sft(row: dict) -> dict:
    has_pc = "prompt" in row or "completion" in row
    if has_pc and "messages" in row:
        raise RowProblem("row has both 'messages' and 'prompt'/'completion'; keep one format")
    if has_pc:
        need = "every row needs 'prompt' and 'completion' (or a 'messages' list)"
        prompt = _value(_field(row, "prompt", need), "prompt")
        completion = _value(_field(row, "completion", need), "completion")
        _same_kind({"prompt": prompt, "completion": completion})
        if isinstance(completion, list):
            _ends_with_assistant(completion, "completion")
        return {"prompt": prompt, "completion": completion}
    if "messages" in row:
        msgs = _field(row, "messages", "every row needs a 'messages' list")
        if not isinstance(msgs, list):
            raise RowProblem(f"field 'messages' is {kind_of(msgs)}; it must be a list of {{role, content}} messages")
        msgs = _messages(msgs, "messages")
        _ends_with_assistant(msgs, "messages")
        if len(msgs) < 2:
            raise RowProblem("'messages' has only the assistant turn; add the user message it answers")
        return {"prompt": msgs[:-1], "completion": [msgs[-1]]}
    if "text" in row:
        raise RowProblem(
            "plain 'text' rows are not supported: SFT uses a completion-only loss and needs to know where the "
            "prompt ends; provide 'prompt'/'completion' or 'messages' instead"
        )
    raise RowProblem(
        f"no 'prompt'/'completion' or 'messages' field (row has: {row_keys(row)}); "
        "provide 'prompt' and 'completion', or a 'messages' list"
    )


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def hh_messages(text: str, name: str = "the transcript") -> list[dict]:
    """An HH-RLHF transcript (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) as ``{"role", "content"}`` messages
    (Human -> user, Assistant -> assistant, contents stripped). It must start with a Human turn, alternate, and
    end with an Assistant turn (the response, which may be empty here: the caller decides). Raises
    :class:`ValueError` naming ``name`` and the turn otherwise."""
    parts = _HH_TURN.split(text)
    if len(parts) < 3:
        raise ValueError(f"{name} has no '\\n\\nHuman:' / '\\n\\nAssistant:' turns, so it is not an HH-RLHF transcript")
    if parts[0].strip():
        raise ValueError(f"{name} has text before its first '\\n\\nHuman:' turn")
    msgs: list[dict] = []
    for i in range(1, len(parts), 2):
        speaker, role = parts[i], "user" if parts[i] == "Human" else "assistant"
        want = "user" if len(msgs) % 2 == 0 else "assistant"
        if role != want:
            raise ValueError(f"turn {len(msgs) + 1} of {name} is a second {speaker} turn in a row: an HH transcript "
                             "alternates Human / Assistant, starting with Human")
        msgs.append({"role": role, "content": parts[i + 1].strip()})
    if msgs[-1]["role"] != "assistant":
        raise ValueError(f"{name} ends with a Human turn: its last turn must be the Assistant's response")
    for j, m in enumerate(msgs[:-1], 1):
        if not m["content"]:
            raise ValueError(f"turn {j} of {name} is empty")
    return msgs


def split_hh_transcript(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split an Anthropic HH-RLHF pair into ``(prompt, chosen_response, rejected_response)``.

    The prompt is everything up to and including the last ``"\\n\\nAssistant:"``, which must be the same
    in both transcripts; the responses are the text after it, stripped of surrounding whitespace.
    Raises :class:`ValueError` when either transcript has no assistant turn or the prompts differ.
    """
    parts = []
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        i = text.rfind(HH_ASSISTANT)
        if i < 0:
            raise ValueError(f"{name} has no '\\n\\nAssistant:' turn, so it is not an HH-RLHF transcript")
        cut = i + len(HH_ASSISTANT)
        parts.append((text[:cut], text[cut:].strip()))
    (prompt_c, resp_c), (prompt_r, resp_r) = parts
    if prompt_c != prompt_r:
        raise ValueError(
            "chosen and rejected differ before their last '\\n\\nAssistant:' turn, so they have no shared prompt"
        )
    return prompt_c, resp_c, resp_r


def _normalize_preference(row: dict) -> dict:
    need = "every row needs 'chosen' and 'rejected' (and optionally 'prompt')"
    chosen_raw = _field(row, "chosen", need)
    rejected_raw = _field(row, "rejected", need)
    if "prompt" in row:
        prompt = _value(_field(row, "prompt", need), "prompt")
        chosen = _value(chosen_raw, "chosen")
        rejected = _value(rejected_raw, "rejected")
        _same_kind({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        if isinstance(chosen, list):
            _ends_with_assistant(chosen, "chosen")
            _ends_with_assistant(rejected, "rejected")
    else:
        chosen = _value(chosen_raw, "chosen")
        rejected = _value(rejected_raw, "rejected")
        _same_kind({"chosen": chosen, "rejected": rejected})
        if isinstance(chosen, str):
            if HH_ASSISTANT not in chosen and HH_ASSISTANT not in rejected:
                raise RowProblem(
                    "'chosen'/'rejected' are plain strings and there is no 'prompt' field; add a 'prompt' field, "
                    "or give HH-RLHF transcripts ('\\n\\nHuman: ...\\n\\nAssistant: ...')"
                )
            try:
                c_msgs, r_msgs = hh_messages(chosen, "'chosen'"), hh_messages(rejected, "'rejected'")
            except ValueError as e:
                raise RowProblem(f"{e}; fix the transcripts or add an explicit 'prompt' field") from None
            if c_msgs[:-1] != r_msgs[:-1]:
                raise RowProblem("chosen and rejected differ before their last Assistant turn, so they have no "
                                  "shared prompt; fix the transcripts or add an explicit 'prompt' field")
            for name, m in (("chosen", c_msgs[-1]), ("rejected", r_msgs[-1])):
                if not m["content"]:
                    raise RowProblem(
                        f"the last assistant turn of {name!r} is empty; every row needs a non-empty {name}"
                    )
            prompt, chosen, rejected = c_msgs[:-1], [c_msgs[-1]], [r_msgs[-1]]
        else:
            prompt, chosen, rejected = _split_shared_prefix(chosen, rejected)
    if chosen == rejected or (isinstance(chosen, str) and chosen.strip() == rejected.strip()):
        raise RowProblem("chosen and rejected are identical; drop the row or fix it")
    out = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    for k, v in row.items():
        if k not in out and isinstance(k, str) and isinstance(v, _SCALARS):
            out[k] = v
    return out


def _split_shared_prefix(chosen: list[dict], rejected: list[dict]) -> tuple[list, list, list]:
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if chosen == rejected:
        raise RowProblem("chosen and rejected are identical; drop the row or fix it")
    if n == 0:
        raise RowProblem(
            "chosen and rejected differ from their first message, so there is no shared prompt; "
            "add an explicit 'prompt' field"
        )
    for name, msgs in (("chosen", chosen), ("rejected", rejected)):
        tail = msgs[n:]
        if not tail:
            raise RowProblem(
                f"{name!r} has no messages after the prompt it shares with the other response; "
                "both need an assistant response"
            )
        if tail[0]["role"] != "assistant":
            raise RowProblem(
                f"chosen and rejected first differ at message {n + 1}, a {tail[0]['role']!r} message; they "
                "must share the prompt and differ from an assistant turn on (or add an explicit 'prompt')"
            )
        _ends_with_assistant(tail, name)
    return chosen[:n], chosen[n:], rejected[n:]


# ------------------------------------------------------------------------------------------- loading


def _load(
    source: str,
    normalize: Callable[[dict], dict],
    check_length: Callable[[dict], None],
    max_rows: int,
    skip_bad_rows: bool,
    kind: str,
) -> tuple[list[dict], int]:
    if max_rows < 0:
        raise ValueError(f"max_rows must be >= 0 (0 = all rows), got {max_rows}")
    source = str(source)
    out: list[dict] = []
    skipped = 0
    first: DataError | None = None
    for item in iter_rows(source):
        if max_rows and len(out) >= max_rows:
            break
        if isinstance(item, DataError):
            err = item
        else:
            loc, row = item
            try:
                norm = normalize(row)
                check_length(norm)
            except RowProblem as e:
                err = DataError(loc, str(e))
            else:
                out.append(norm)
                continue
        if not skip_bad_rows:
            raise err from None
        skipped += 1
        first = first or err
    if not out:
        if skipped:
            raise DataError(
                source,
                f"no valid {kind} rows ({skipped} bad row{'s' if skipped != 1 else ''} skipped); "
                f"first problem: {first}",
            )
        raise DataError(source, f"has no rows; it needs at least one {kind} row")
    return out, skipped


def load_sft_rows(
    source: str,
    *,
    max_rows: int = 0,
    tokenizer=None,
    max_length: int = 0,
    skip_bad_rows: bool = False,
) -> tuple[list[dict], int]:
    """Load SFT rows as ``{"prompt", "completion"}`` dicts; returns ``(rows, number of bad rows skipped)``.

    ``max_rows`` > 0 stops after that many valid rows (later rows are not checked). See the module
    docstring for the accepted formats, the length check and the errors.
    """

    def check_length(r: dict) -> None:
        _check_length(tokenizer, max_length, r["prompt"], r["completion"], "completion")

    return _load(source, _normalize_sft, check_length, max_rows, skip_bad_rows, "SFT")


def load_preference_rows(
    source: str,
    *,
    max_rows: int = 0,
    tokenizer=None,
    max_length: int = 0,
    skip_bad_rows: bool = False,
) -> tuple[list[dict], int]:
    """Load preference rows as ``{"prompt", "chosen", "rejected", **scalar extras}``; returns ``(rows, skipped)``.

    ``max_rows`` > 0 stops after that many valid rows (later rows are not checked). See the module
    docstring for the accepted formats, the length check and the errors.
    """

    def check_length(r: dict) -> None:
        _check_length(tokenizer, max_length, r["prompt"], r["chosen"], "chosen")
        _check_length(tokenizer, max_length, r["prompt"], r["rejected"], "rejected")

    return _load(source, _normalize_preference, check_length, max_rows, skip_bad_rows, "preference")


def _normalize_prompt(row: dict) -> dict:
    """The prompt of any row the loaders read: a preference row's shared prompt (HH transcripts included), an
    SFT row's prompt (or its messages before the last assistant turn), or a prompt-only row."""
    if "chosen" in row or "rejected" in row:
        return {"prompt": _normalize_preference(row)["prompt"]}
    if "completion" in row or "messages" in row:
        return {"prompt": _normalize_sft(row)["prompt"]}
    if "prompt" in row:
        prompt = _value(row["prompt"], "prompt")
        if isinstance(prompt, list) and prompt[-1]["role"] == "assistant":
            raise RowProblem("'prompt' ends with an assistant message; a prompt must end with the user's turn")
        return {"prompt": prompt}
    raise RowProblem(f"no 'prompt' field (row has: {row_keys(row)}); give a 'prompt' (a string or chat messages), "
                      "or an SFT or preference row")


def load_prompt_rows(source: str, *, max_rows: int = 0, skip_bad_rows: bool = False) -> tuple[list, int]:
    """Prompts (strings or message lists) from any file the loaders read: prompt-only rows, SFT rows or
    preference rows (their prompt part); returns ``(prompts, skipped)``. Errors name file and row."""
    rows, skipped = _load(source, _normalize_prompt, lambda r: None, max_rows, skip_bad_rows, "prompt")
    return [r["prompt"] for r in rows], skipped


def prompt_rows_with_locations(source: str) -> list[tuple[str, object]]:
    """``(location, prompt)`` for every row of a file any loader reads (locations as in errors: file and line);
    raises DataError at the first bad row."""
    out = []
    for loc, row in read_rows(source):
        try:
            out.append((loc, _normalize_prompt(row)["prompt"]))
        except RowProblem as e:
            raise DataError(loc, str(e)) from None
    return out
