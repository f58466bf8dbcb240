"""An HH-RLHF-style task made offline: everyday questions, a helpful answer (chosen) and an unhelpful one
(rejected: curt, dismissive, vague or off-topic), as Anthropic HH transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...").
Some dialogues open with a short exchange first, so prompts are multi-turn.

    python tests/data/hh_style.py OUT_DIR [--pairs 700] [--gold-pairs 600] [--eval 160] [--seed 0]

writes, with disjoint questions in each file:

    prefs.jsonl        training pairs (SFT learns their chosen side; the RM learns from them; RL samples their prompts)
    gold_prefs.jsonl   held-out pairs to train an independent reward model used as the gold (Gao et al. 2022)
    eval_prompts.jsonl held-out prompts (chat messages) for evaluation
    task.yaml          a task file over them with ``gold: none`` (edit ``gold`` to a callable or a reward folder)

``helpfulness(prompts, responses)`` is a rule-based gold for the same task (a callable gold:
``gold: tests/data/hh_style.py:helpfulness``): it rewards answers that address the question's topic with concrete
advice and penalises dismissive or empty ones. Deterministic: ``random.Random(seed)`` only.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

# (question template, slot values, topic words an on-topic answer uses, helpful advice sentences)
_TOPICS = [
    ("How do I get a {x} stain out of my shirt?", ["coffee", "wine", "grass", "ink", "tomato sauce", "chocolate"],
     ["stain", "fabric", "water", "soap"],
     ["Rinse the back of the stain with cold water as soon as you can.", "Rub a little dish soap into the fabric and "
                                                                         "let it sit for ten minutes.",
      "Wash it on the warmest setting the label allows, and check before drying.", "Dab, do not scrub, so the stain "
                                                                                   "does not spread."]),
    ("What is a good way to start running if I am {x}?",
     ["out of shape", "over forty", "very busy", "a complete beginner", "carrying extra weight"],
     ["run", "walk", "minutes", "week"],
     ["Start with intervals: one minute of easy running, two minutes of walking, for twenty minutes.",
      "Go three times a week and rest in between.",
      "Add a little time each week rather than speed.",
      "Good shoes and a slow pace matter more than distance at first."]),
    ("How can I keep my {x} alive while I am on holiday?",
     ["basil plant", "tomato plants", "houseplants", "fern", "orchid"],
     ["water", "plant", "soil", "light"],
     ["Water the soil well the day before you leave.", "Move the plant out of direct sun so it dries more slowly.",
      "A bottle of water turned upside down in the soil releases it slowly.", "Ask a neighbour to check it once if you "
                                                                              "are gone more than a week."]),
    ("What should I cook for dinner with {x}?",
     ["rice and eggs", "pasta and spinach", "potatoes and cheese", "chickpeas and tomatoes", "leftover chicken"],
     ["cook", "minutes", "pan", "add"],
     ["Fry some garlic and onion in a pan, then add what you have and season well.", "A quick stir fry takes about "
                                                                                     "fifteen minutes.",
      "Add a squeeze of lemon or a spoon of yoghurt at the end for freshness.", "Cook extra and keep the rest for "
                                                                                "lunch tomorrow."]),
    ("How do I fall asleep faster when I am {x}?",
     ["stressed", "jet lagged", "too warm", "thinking about work", "drinking coffee late"],
     ["sleep", "bed", "light", "hour"],
     ["Keep the same wake-up time every day, even at weekends.", "Put screens away an hour before bed and dim the "
                                                                 "lights.",
      "If you are awake after twenty minutes, get up and read until you feel sleepy.", "A cool, dark room helps most "
                                                                                       "people sleep."]),
    ("How can I save money on {x}?", ["groceries", "my phone bill", "heating", "commuting", "eating out"],
     ["save", "money", "month", "budget"],
     ["Write down what you spend for one month to see where the money goes.", "Set a weekly budget and plan around it.",
      "Compare providers once a year; switching often saves money.", "Buy store brands and cook in batches."]),
    ("What is the best way to learn {x}?", ["Spanish", "the guitar", "to code in Python", "to draw", "to touch type"],
     ["practice", "day", "minutes", "learn"],
     ["Practice a little every day; twenty minutes daily beats three hours once a week.", "Pick one good beginner "
                                                                                          "course and finish it.",
      "Set a small goal for each week so you can see progress.", "Find a friend or a group to learn with, it keeps you "
                                                                 "going."]),
    ("How do I clean a {x}?", ["cast iron pan", "microwave", "kettle with limescale", "greasy oven", "shower head"],
     ["clean", "water", "vinegar", "minutes"],
     ["Soak it in a mix of water and white vinegar for thirty minutes.", "Scrub gently with a soft brush, then rinse "
                                                                         "with clean water.",
      "For grease, a paste of baking soda and water works well.",
      "Dry it fully afterwards so nothing rusts or smells."]),
    ("How can I be more productive when I am {x}?",
     ["working from home", "tired in the afternoon", "easily distracted", "juggling many tasks"],
     ["task", "focus", "minutes", "list"],
     ["Write a short list of the three tasks that matter most today.", "Work in blocks of twenty five minutes with "
                                                                       "short breaks.",
      "Turn off notifications while you focus.", "Do the hardest task first, when your energy is highest."]),
    ("What can I do about a {x}?",
     ["sore back from sitting", "stiff neck", "headache from screens", "cold that will not go away"],
     ["rest", "doctor", "stretch", "water"],
     ["Gentle stretching and a short walk every hour often help.",
      "Drink enough water and rest your eyes from screens.",
      "A warm compress can ease stiff muscles.", "If it lasts more than a week or gets worse, see a doctor."]),
    ("How should I prepare for a {x}?",
     ["job interview", "first day at a new job", "long flight", "driving test", "presentation at work"],
     ["prepare", "practice", "time", "plan"],
     ["Make a short plan of what you need and check it the day before.", "Practice out loud once or twice; it makes a "
                                                                         "real difference.",
      "Arrive or be ready fifteen minutes early so you are not rushed.", "Get a good night's sleep and eat something "
                                                                         "beforehand."]),
    ("How do I make my {x} last longer?", ["phone battery", "running shoes", "bread", "laptop", "bike chain"],
     ["keep", "clean", "store", "last"],
     ["Keep it clean and store it somewhere cool and dry.", "Small regular care beats one big repair later.",
      "Follow the maker's advice on charging or washing.", "Check it every few weeks so small problems do not grow."]),
]

_OPENERS = [("Hi, can you help me with something?", "Of course, what do you need?"),
            ("Hello there.", "Hi! How can I help today?"),
            ("I have a quick question.", "Sure, go ahead."),
            ("Are you any good at everyday advice?", "I can try. What is on your mind?")]

_CURT = ["No idea.", "Just look it up.", "Figure it out yourself.", "Why would I know that?", "Who cares.", "Not my "
                                                                                                            "problem.",
         "That is a boring question.", "Do whatever you want.", "Ask someone else.", "Whatever works, I guess."]
_VAGUE = ["It depends on a lot of things.", "There are many ways to do it.", "Some people do it one way, some another.",
          "It is hard to say really.", "You could try something, maybe."]
_OFF = ["I like the weather today.", "Cats are nicer than dogs.", "My favourite colour is blue.", "Music is nice.",
        "Trains are faster than buses."]

_DISMISSIVE = {"no idea", "look it up", "yourself", "why would i", "who cares", "not my problem", "boring", "whatever",
               "someone else", "depends on a lot", "hard to say", "maybe"}


def _question(topic, x) -> str:
    return topic[0].format(x=x)


def _helpful(topic, rng: random.Random) -> str:
    advice = rng.sample(topic[3], 2)
    lead = rng.choice(["Sure! ", "Good question. ", "Here is what usually works. ", "", "Happy to help. "])
    return lead + " ".join(advice)


def _unhelpful(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.55:
        return rng.choice(_CURT)
    if kind < 0.85:
        return rng.choice(_VAGUE)
    return rng.choice(_OFF)


def _transcript(turns: list[tuple[str, str]], final_human: str, answer: str) -> str:
    text = "".join(f"\n\nHuman: {h}\n\nAssistant: {a}" for h, a in turns)
    return text + f"\n\nHuman: {final_human}\n\nAssistant: {answer}"


def _messages(turns: list[tuple[str, str]], final_human: str) -> list[dict]:
    msgs = []
    for h, a in turns:
        msgs += [{"role": "user", "content": h}, {"role": "assistant", "content": a}]
    return msgs + [{"role": "user", "content": final_human}]


def _questions(rng: random.Random) -> list[tuple[int, str]]:
    """Every (topic, question) with light paraphrases, shuffled; each question appears once."""
    out = []
    for i, t in enumerate(_TOPICS):
        for x in t[1]:
            q = _question(t, x)
            for pre in ("", "Quick question: ", "Any tips? ", "Please help. ", "I was wondering, "):
                for post in ("", " Thanks.", " I have tried a few things already.", " Keep it short please."):
                    out.append((i, pre + (q[0].lower() + q[1:] if pre else q) + post))
    rng.shuffle(out)
    return out


def build(seed: int = 0, pairs: int = 700, gold_pairs: int = 600, n_eval: int = 160) -> dict[str, list[dict]]:
    """{"prefs", "gold_prefs", "eval_prompts"} rows; questions never shared between the three."""
    rng = random.Random(seed)
    qs = _questions(rng)
    n_q = len(qs)
    e = min(n_eval, n_q // 5)
    g = (n_q - e) // 2
    parts = {"eval_prompts": qs[:e], "gold_prefs": qs[e:e + g], "prefs": qs[e + g:]}
    out: dict[str, list[dict]] = {"eval_prompts": []}
    for _topic, q in parts["eval_prompts"]:
        turns = [rng.choice(_OPENERS)] if rng.random() < 0.3 else []
        out["eval_prompts"].append({"prompt": _messages(turns, q)})
    for name, want in (("prefs", pairs), ("gold_prefs", gold_pairs)):
        rows, pool = [], parts[name]
        for k in range(want):  # each question several times, with different answers (pairs per prompt)
            topic_i, q = pool[k % len(pool)]
            turns = [rng.choice(_OPENERS)] if rng.random() < 0.3 else []
            rows.append({"chosen": _transcript(turns, q, _helpful(_TOPICS[topic_i], rng)),
                         "rejected": _transcript(turns, q, _unhelpful(rng))})
        out[name] = rows
    return out


def _text(prompt) -> str:
    return prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt if m["role"] == "user")


def helpfulness(prompts: list, responses: list[str]) -> list[float]:
    """A rule-based gold in about [-1, 1]: + for advice on the question's topic (its topic words, concrete numbers
    and imperative steps), - for dismissive phrases, empty or very short answers."""
    out = []
    for p, r in zip(prompts, responses):
        q, low = _text(p).lower(), r.lower()
        words = re.findall(r"[a-z']+", low)
        topic = next((t for t in _TOPICS if any(x.lower() in q for x in t[1])), None)
        on_topic = sum(w in low for w in topic[2]) / len(topic[2]) if topic else 0.0
        concrete = min(1.0, len(re.findall(r"\b(?:one|two|three|ten|fifteen|twenty|thirty"
                                           r"|minutes?|hours?|weeks?|days?)\b", low)) / 2)
        length = min(1.0, len(words) / 20)
        dismissive = any(d in low for d in _DISMISSIVE)
        out.append(round(0.45 * on_topic + 0.25 * concrete + 0.3 * length - (0.8 if dismissive else 0.0)
                         - (0.5 if len(words) < 4 else 0.0), 4))
    return out


TASK_YAML = """# An HH-RLHF-style task (tests/data/hh_style.py): helpful vs unhelpful answers to everyday questions.
name: {name}
sft_from: chosen          # SFT on the chosen side of prefs.jsonl
prefs: prefs.jsonl
prompts: prefs.jsonl      # RL samples the training pairs' prompts
eval_prompts: eval_prompts.jsonl
gold: {gold}
response_length: {response_length}
max_length: {max_length}
"""


def write(out: str | Path, *, seed: int = 0, pairs: int = 700, gold_pairs: int = 600, n_eval: int = 160,
          gold: str = "none", name: str = "helpful-answers", response_length: int = 48, max_length: int = 192) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for key, rows in build(seed, pairs, gold_pairs, n_eval).items():
        (out / f"{key}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = out / "task.yaml"
    task.write_text(TASK_YAML.format(name=name, gold=gold, response_length=response_length, max_length=max_length))
    return task


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--pairs", type=int, default=700)
    ap.add_argument("--gold-pairs", type=int, default=600)
    ap.add_argument("--eval", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gold", default="none")
    a = ap.parse_args()
    print(write(a.out, seed=a.seed, pairs=a.pairs, gold_pairs=a.gold_pairs, n_eval=a.eval, gold=a.gold))
