"""The built-in task: continue the opening of a short review (films, books, restaurants, products, ...).

Modeled on the classic PPO "IMDB positive-sentiment continuation" benchmark, but made here, offline,
from phrase banks. Every prompt gives the model the opening words of a review and asks it to continue
in one or two sentences; the gold reward (``edgerlhf.rewards.gold``) is the VADER sentiment of the
continuation, so PPO's job is to make continuations more positive.

For PPO to show a real gain the starting (SFT) policy needs headroom, so:

* the openers have mixed polarity and lean negative (negative, mixed, neutral and positive openers,
  e.g. "The service at Blue Lantern was a letdown and", "I expected little from the Vantor K3 kettle, but");
* the SFT demonstrations (``completion``) follow where the opener points, with a realistic share of
  turns (some negative openers end up positive, some positive ones turn sour), and their mean VADER
  compound is slightly below zero with a wide spread.

The split is by item: an item (restaurant, film, ...) that appears in ``eval`` never appears in
``train``, so no eval prompt is ever a training prompt.

Everything is deterministic (``random.Random(seed)``, no global RNG), takes well under 0.5 s to build,
and needs no files or downloads. Rows are in TRL's conversational prompt-completion format plus
metadata::

    {"id": "train-00001", "category": "restaurant", "item": "Blue Lantern",
     "opener": "The service at Blue Lantern was a letdown and", "polarity": "negative",
     "prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "..."}],
     "completion": [{"role": "assistant", "content": "..."}]}
"""

from __future__ import annotations

import functools
import random

from edgerlhf.data.task_phrases import (
    CATEGORIES,
    CATEGORY_BANKS,
    GEN_NEG,
    GEN_NEG_CLOSE,
    GEN_POS,
    GEN_POS_CLOSE,
    MILD_NEG,
    MILD_POS,
    NADJ,
    OPEN_NEG,
    OPEN_POS,
    OPENERS_BY_POLARITY,
    PADJ,
    POLARITIES,
    TURN_JOIN_AFTER_BUT,
    Category,
)

__all__ = [
    "SYSTEM_PROMPT",
    "INSTRUCTION",
    "CATEGORIES",
    "POLARITIES",
    "N_TRAIN",
    "N_EVAL",
    "build_task",
    "eval_prompts",
    "train_rows",
    "user_message",
]

SYSTEM_PROMPT = "You write short, honest reviews."
INSTRUCTION = "Continue in one or two sentences:"

N_TRAIN = 4000
N_EVAL = 400
_ITEMS_PER_CATEGORY = 40
_EVAL_ITEM_FRACTION = 0.2
_MIN_WORDS, _MAX_WORDS = 10, 35  # demonstrations' length in words

# Openers lean negative on purpose: a base/SFT model continuing them must not already be saturated.
_POLARITY_WEIGHTS = (0.40, 0.27, 0.15, 0.18)
# Probability that the continuation turns against where the opener points.
_TURN_PROB = {"negative": 0.22, "mixed": 0.25, "neutral": 0.15, "positive": 0.33}


def user_message(opener: str) -> str:
    """The user turn for an opener: the short instruction, a newline, then the opener."""
    return f"{INSTRUCTION}\n{opener}"


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------

def _be(cat: Category, plural: bool) -> str:
    if cat.tense == "past":
        return "were" if plural else "was"
    return "are" if plural else "is"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _item_names(cat: Category, rng: random.Random) -> list[str]:
    firsts, seconds = cat.names
    joiner = "" if cat.name == "app" else " "
    combos = [f"{a}{joiner}{b}" for a in firsts for b in seconds]
    rng.shuffle(combos)
    return combos[:_ITEMS_PER_CATEGORY]


def _clause(cat: Category, direction: int, avoid_aspects: set, rng: random.Random,
            specific: bool = False) -> tuple[str, str | None]:
    """One continuation clause in ``direction`` (+1 positive, -1 negative) and the aspect it names.

    ``specific``: only clauses about one aspect or detail (for the second half of a turn, where a
    sweeping verdict like "the whole thing felt lazy" would contradict the first half).
    """
    r = rng.random()
    if r < 0.35:
        bank = cat.pos if direction > 0 else cat.neg
    elif r < 0.85:
        bank = GEN_POS if direction > 0 else GEN_NEG
    else:
        bank = MILD_POS if direction > 0 else MILD_NEG
    if specific and bank is not (cat.pos if direction > 0 else cat.neg):
        bank = tuple(t for t in bank if "{a}" in t)
    tpl = rng.choice(bank)
    if "{a}" not in tpl:
        return tpl, None
    noun, plural = rng.choice([a for a in cat.aspects if a[0] not in avoid_aspects])
    text = tpl.format(a=noun, be=_be(cat, plural), padj=rng.choice(PADJ), nadj=rng.choice(NADJ))
    return text, noun


def _closer(cat: Category, direction: int, rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(cat.pos_close if direction > 0 else cat.neg_close)
    return rng.choice(GEN_POS_CLOSE if direction > 0 else GEN_NEG_CLOSE)


def _trigrams(text: str) -> set:
    words = text.lower().replace(",", "").replace(".", "").split()
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def _completion(cat: Category, opener: str, polarity: str, lean: int, aspect: str | None,
                rng: random.Random) -> str:
    """The demonstration: 1-2 sentences, 10-35 words, following the opener's lean unless it turns."""
    for _ in range(100):
        d1 = lean if lean != 0 else rng.choice((-1, 1))
        turn = rng.random() < _TURN_PROB[polarity]
        first, first_aspect = _clause(cat, d1, {aspect}, rng)
        final = -d1 if turn else d1
        can_close, close_prob = True, 0.6
        if not turn:
            text = first + "."
        else:
            second, _ = _clause(cat, final, {aspect, first_aspect}, rng, specific=True)
            if _trigrams(first) & _trigrams(second):  # "... from start to finish, but ... from start to finish"
                continue
            if opener.endswith("but"):  # already "X, but <first>": turn in a second sentence, no closer
                text = f"{first}. {rng.choice(TURN_JOIN_AFTER_BUT)}{second}."
                can_close = False
            else:
                text = f"{first}, but {second}."
                close_prob = 0.4
        if can_close and (rng.random() < close_prob or len(text.split()) < _MIN_WORDS):
            text = f"{text} {_closer(cat, final, rng)}"
        if _MIN_WORDS <= len(text.split()) <= _MAX_WORDS:
            return text
    raise RuntimeError(f"could not write a demonstration for {opener!r}")  # pragma: no cover


def _opener(cat: Category, item: str, polarity: str, rng: random.Random) -> tuple[str, str | None, int]:
    tpl, _, lean = rng.choice(OPENERS_BY_POLARITY[polarity])
    noun, plural = rng.choice(cat.aspects)
    ref = cat.ref.format(name=item)
    text = tpl.format(
        a=noun, be=_be(cat, plural), is_="was" if cat.tense == "past" else "is", prep=cat.prep,
        ref=ref, Ref=_cap(ref), a_noun=cat.a_noun, plural=cat.plural, verb=cat.verb, verbing=cat.verbing,
        nopen=rng.choice(OPEN_NEG), popen=rng.choice(OPEN_POS),
    )
    return _cap(text), (noun if "{a}" in tpl else None), lean


def _rows(split: str, items: list[tuple[Category, str]], n: int, rng: random.Random) -> list[dict]:
    rows: list[dict] = []
    seen: set[str] = set()
    order = list(items)
    rng.shuffle(order)
    i = 0
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 50 * n:
            raise RuntimeError(f"could not draw {n} distinct {split} prompts from {len(items)} items")
        cat, item = order[i % len(order)]
        i += 1
        polarity = rng.choices(POLARITIES, weights=_POLARITY_WEIGHTS)[0]
        opener, aspect, lean = _opener(cat, item, polarity, rng)
        if opener in seen:
            continue
        seen.add(opener)
        completion = _completion(cat, opener, polarity, lean, aspect, rng)
        rows.append({
            "category": cat.name, "item": item, "opener": opener, "polarity": polarity,
            "prompt": [{"role": "system", "content": SYSTEM_PROMPT},
                       {"role": "user", "content": user_message(opener)}],
            "completion": [{"role": "assistant", "content": completion}],
        })
    rng.shuffle(rows)  # any prefix is a representative sample
    return [{"id": f"{split}-{k + 1:05d}", **row} for k, row in enumerate(rows)]


@functools.lru_cache(maxsize=4)
def _build_cached(seed: int) -> dict[str, tuple[dict, ...]]:
    rng = random.Random(seed)
    train_items: list[tuple[Category, str]] = []
    eval_items: list[tuple[Category, str]] = []
    for cat in CATEGORY_BANKS:
        names = _item_names(cat, rng)
        n_eval = round(len(names) * _EVAL_ITEM_FRACTION)
        eval_items += [(cat, nm) for nm in names[:n_eval]]
        train_items += [(cat, nm) for nm in names[n_eval:]]
    train = _rows("train", train_items, N_TRAIN, rng)
    eval_ = _rows("eval", eval_items, N_EVAL, rng)
    return {"train": tuple(train), "eval": tuple(eval_)}


def _copy_row(row: dict) -> dict:
    out = dict(row)
    out["prompt"] = [dict(m) for m in row["prompt"]]
    out["completion"] = [dict(m) for m in row["completion"]]
    return out


def build_task(seed: int = 0) -> dict[str, list[dict]]:
    """The task's rows, ``{"train": [...], "eval": [...]}`` (N_TRAIN and N_EVAL rows).

    Built once per seed (lru_cache); each call returns fresh copies, so callers may mutate them.
    Eval items (restaurants, films, ...) never occur in train.
    """
    built = _build_cached(seed)
    return {split: [_copy_row(r) for r in rows] for split, rows in built.items()}


def _head(split: str, n: int | None, seed: int) -> list[dict]:
    rows = _build_cached(seed)[split]
    if n is not None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n > len(rows):
            raise ValueError(f"asked for {n} {split} rows, the task has {len(rows)}")
        rows = rows[:n]
    return [_copy_row(r) for r in rows]


def eval_prompts(n: int | None = None, *, seed: int = 0) -> list[dict]:
    """The first ``n`` held-out rows (all when None). Rows are full task rows: use ``row["prompt"]``;
    ``row["completion"]`` is the reference demonstration, not a target for evaluation."""
    return _head("eval", n, seed)


def train_rows(n: int | None = None, *, seed: int = 0) -> list[dict]:
    """The first ``n`` training rows (all when None), with prompt and demonstration completion."""
    return _head("train", n, seed)
