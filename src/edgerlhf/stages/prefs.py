"""Preference pairs (stage 2): sampled from the SFT policy and labelled by the gold scorer, or read from a file.

Generated pairs follow the synthetic-labeller set-up of Gao et al. 2022 ("Scaling Laws for Reward Model
Overoptimization"): k responses per prompt, every pair of them a candidate (k=4 gives 6 pairs for the
price of 4 samples — sampling is the slow part on a CPU), the gold scorer's preferred side is "chosen",
near-ties are dropped from training, and a fraction of labels is flipped on purpose so that the learned
reward model is an imperfect proxy of the gold one, as a human-labelled RM would be.

Output, in TRL's standard preference format (plus gold scores):

    pairs/train.jsonl   {"prompt", "chosen", "rejected", "gold_chosen", "gold_rejected", "label_flipped", "prompt_id"}
    pairs/eval.jsonl    the same for held-out prompts, near-ties included with "near_tie": true
    responses.jsonl     every sampled response with its gold score
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path

from edgerlhf.config import ConfigError, PrefsConfig
from edgerlhf.data.formatting import response_str
from edgerlhf.data.loaders import load_preference_rows, load_prompt_rows
from edgerlhf.data.pairs import split_by_prompt
from edgerlhf.data.task import train_rows
from edgerlhf.models.adapters import load_policy
from edgerlhf.models.generation import generate
from edgerlhf.models.loading import load_causal_lm, load_tokenizer
from edgerlhf.rewards.gold import make_gold
from edgerlhf.stages.skeleton import Context, Setup, run_stage
from edgerlhf.tracking import atomic_write_text

__all__ = ["make_pairs", "run", "split_by_prompt"]


def make_pairs(prompt_rows: list[dict], responses: list[list[str]], golds: list[list[float]], *,
               tie_threshold: float, label_noise: float, rng: random.Random, max_pairs_per_prompt: int = 0
               ) -> tuple[list[dict], dict]:
    """All pairs of distinct responses per prompt, chosen = higher gold, labels flipped with probability
    ``label_noise``. Near-ties (|gold difference| <= ``tie_threshold``) are returned with ``near_tie=True``
    and never flipped. Pure: no I/O, randomness only from ``rng``."""
    chat = not isinstance(prompt_rows[0]["prompt"], str) if prompt_rows else False

    def as_turn(text):  # TRL's conversational preference format when the prompt is a message list
        return [{"role": "assistant", "content": text}] if chat else text

    pairs, counts = [], {"pairs_total": 0, "near_ties": 0, "duplicates": 0, "flipped": 0}
    for row, resp, gold in zip(prompt_rows, responses, golds):
        mine = []
        for i, j in itertools.combinations(range(len(resp)), 2):
            counts["pairs_total"] += 1
            if resp[i].strip() == resp[j].strip() or not resp[i].strip() or not resp[j].strip():
                counts["duplicates"] += 1  # identical or empty sides carry no preference
                continue
            hi, lo = (i, j) if gold[i] >= gold[j] else (j, i)
            near_tie = abs(gold[i] - gold[j]) <= tie_threshold
            flipped = (not near_tie) and rng.random() < label_noise
            if flipped:
                hi, lo = lo, hi
            counts["near_ties"] += near_tie
            counts["flipped"] += flipped
            mine.append({"prompt": row["prompt"], "chosen": as_turn(resp[hi]), "rejected": as_turn(resp[lo]),
                         "gold_chosen": gold[hi], "gold_rejected": gold[lo], "label_flipped": flipped,
                         "near_tie": near_tie, "prompt_id": row.get("id", "")})
        if max_pairs_per_prompt:
            rng.shuffle(mine)
            mine = mine[:max_pairs_per_prompt]
        pairs += mine
    return pairs, counts


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _sample(ctx: Context, prompt_rows: list[dict], gold) -> tuple[list, list, dict]:
    """k samples per prompt from the policy, scored by the gold scorer."""
    cfg, device, dtype = ctx.cfg, ctx.device, ctx.dtype
    if cfg.policy:
        model, tok, _ = load_policy(cfg.policy, dtype=dtype, device=device)
    else:
        model = load_causal_lm(cfg.model, dtype=dtype, device=device, seed=cfg.seed)
        tok = load_tokenizer(cfg.model, cfg.chat_template)
    k = cfg.samples_per_prompt
    flat = [r["prompt"] for r in prompt_rows for _ in range(k)]
    t0 = time.perf_counter()
    texts, n_tokens = generate(model, tok, flat, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                               top_k=cfg.top_k, top_p=cfg.top_p, batch_size=cfg.rollout_batch_size,
                               progress=cfg.progress, desc=f"sampling {k}x{len(prompt_rows)}")
    gen_s = time.perf_counter() - t0
    gold = gold(flat, texts)
    ctx.run_dir.log({"timing/generate_s": gen_s, "prefs/tokens_per_s": n_tokens / gen_s, **ctx.mem.as_metrics()},
                    step=0)
    responses = [texts[i * k:(i + 1) * k] for i in range(len(prompt_rows))]
    golds = [gold[i * k:(i + 1) * k] for i in range(len(prompt_rows))]
    stats = {"timing/generate_s": gen_s, "prefs/generated_tokens": n_tokens, "prefs/tokens_per_s": n_tokens / gen_s,
             "prefs/gold_mean": sum(gold) / len(gold)}
    return responses, golds, stats


def _gold_of(cfg: PrefsConfig):
    spec = cfg.gold if cfg.gold != "auto" else ("vader" if cfg.dataset == "generate" else "none")
    return make_gold(spec)


def _pairs_from_file(ctx: Context, data) -> dict:
    """Pairs from a preference file, split by prompt; with a gold, each pair's gold scores beside it (so the
    reward model's agreement with the gold is measured downstream)."""
    cfg, (rows, skipped, gold) = ctx.cfg, data
    stats = {}
    if gold is not None:
        prompts = [r["prompt"] for r in rows]
        gc = gold(prompts, [response_str(r["chosen"]) for r in rows])
        gr = gold(prompts, [response_str(r["rejected"]) for r in rows])
        for r, c, j in zip(rows, gc, gr):
            r.update(gold_chosen=c, gold_rejected=j)
        stats = {"gold": cfg.gold, "gold_agrees_with_labels": sum(c > j for c, j in zip(gc, gr)) / len(rows)}
    train, evals = split_by_prompt(rows, cfg.eval_fraction, cfg.seed)
    _write_jsonl(ctx.run_dir.path / "pairs" / "train.jsonl", train)
    _write_jsonl(ctx.run_dir.path / "pairs" / "eval.jsonl", evals)
    print(f"[prefs] {len(rows)} pairs from {cfg.dataset} ({skipped} bad rows skipped): "
          f"{len(train)} train / {len(evals)} held out, split by prompt"
          + (f"; the gold prefers the chosen side in {stats['gold_agrees_with_labels']:.1%}" if stats else ""))
    return {"source": cfg.dataset, "pairs_train": len(train), "pairs_eval": len(evals), "skipped_rows": skipped,
            **stats}


def _prompt_rows(cfg: PrefsConfig) -> list[dict]:
    """The prompts to sample pairs for: the built-in task's first ``num_prompts`` training prompts, or at most
    ``num_prompts`` of a prompts file."""
    if cfg.prompts == "builtin":
        rows = train_rows(cfg.num_prompts)
        if len(rows) < cfg.num_prompts:
            raise ConfigError([f"num_prompts={cfg.num_prompts}: the built-in task has {len(rows)} training prompts"])
        return rows
    prompts, _ = load_prompt_rows(cfg.prompts, max_rows=cfg.num_prompts)
    if len(prompts) < 2:
        raise ConfigError([f"prompts={cfg.prompts!r}: {len(prompts)} prompt; pairs need at least 2 prompts "
                           "(one is held out)"])
    return [{"id": f"prompt-{i:05d}", "prompt": p} for i, p in enumerate(prompts)]


def _prepare(setup: Setup):
    """The prompts (or the file's pairs) and the gold, checked and loaded before any folder exists."""
    cfg = setup.cfg
    if cfg.dataset != "generate":
        rows, skipped = load_preference_rows(cfg.dataset, tokenizer=load_tokenizer(cfg.model, cfg.chat_template),
                                             max_length=cfg.max_length, skip_bad_rows=cfg.skip_bad_rows)
        return rows, skipped, _gold_of(cfg)
    return _prompt_rows(cfg), _gold_of(cfg)


def _generate_pairs(ctx: Context, data) -> dict:
    cfg, (prompt_rows, gold) = ctx.cfg, data
    rng = random.Random(cfg.seed)
    # 1 sample k responses per prompt   2 gold-score them
    responses, golds, stats = _sample(ctx, prompt_rows, gold)
    # 3 split by prompt, then pair and label (noise drawn per pair)
    ids = [r["id"] for r in prompt_rows]
    order = list(range(len(prompt_rows)))
    rng.shuffle(order)
    n_eval = max(1, round(len(order) * cfg.eval_fraction))
    held = set(order[:n_eval])
    tr = [i for i in range(len(prompt_rows)) if i not in held]
    ev = [i for i in range(len(prompt_rows)) if i in held]
    train_pairs, c_tr = make_pairs([prompt_rows[i] for i in tr], [responses[i] for i in tr], [golds[i] for i in tr],
                                   tie_threshold=cfg.tie_threshold, label_noise=cfg.label_noise, rng=rng,
                                   max_pairs_per_prompt=cfg.max_pairs_per_prompt)
    eval_pairs, c_ev = make_pairs([prompt_rows[i] for i in ev], [responses[i] for i in ev], [golds[i] for i in ev],
                                  tie_threshold=cfg.tie_threshold, label_noise=cfg.label_noise, rng=rng)
    train_pairs = [p for p in train_pairs if not p["near_tie"]]
    # 4 write
    out = ctx.run_dir.path
    _write_jsonl(out / "pairs" / "train.jsonl", train_pairs)
    _write_jsonl(out / "pairs" / "eval.jsonl", eval_pairs)
    _write_jsonl(out / "responses.jsonl",
                 [{"prompt_id": ids[i], "prompt": prompt_rows[i]["prompt"], "response": t, "gold": g}
                  for i in range(len(prompt_rows)) for t, g in zip(responses[i], golds[i])])
    n_ev_kept = sum(not p["near_tie"] for p in eval_pairs)
    stats.update({"source": "generate", "prompts_train": len(tr), "prompts_eval": len(ev),
                  "pairs_train": len(train_pairs), "pairs_eval_kept": n_ev_kept, "pairs_eval_all": len(eval_pairs),
                  "near_ties_dropped": c_tr["near_ties"], "duplicates_dropped": c_tr["duplicates"] + c_ev["duplicates"],
                  "label_flips_train": c_tr["flipped"],
                  "label_noise_measured": c_tr["flipped"] / max(len(train_pairs), 1)})
    print(f"[prefs] {len(train_pairs)} train pairs from {len(tr)} prompts, {n_ev_kept} held-out pairs "
          f"(+{len(eval_pairs) - n_ev_kept} near-ties) from {len(ev)} prompts; "
          f"{stats['prefs/tokens_per_s']:.0f} tokens/s sampling; gold mean of samples {stats['prefs/gold_mean']:+.3f}")
    return stats


def run(cfg: PrefsConfig) -> Path:
    """Write the preference pairs; returns the run folder."""
    return run_stage(cfg, _prepare, _generate_pairs if cfg.dataset == "generate" else _pairs_from_file)
