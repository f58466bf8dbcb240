"""Supervised fine-tuning (stage 1): teach the base model the task's format, loss on completion tokens only.

Why not TRL's SFTTrainer: see ``stages/loop.py`` (one loop shared with the reward model, same metrics,
NaN guard and memory probe, and our own dtype choice). LoRA, schedules and saving come from
peft/transformers.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from edgerlhf.config import SFTConfig
from edgerlhf.data.formatting import encode_pair, last_message, shared_system
from edgerlhf.data.loaders import DataError, load_preference_rows, load_sft_rows
from edgerlhf.data.task import build_task
from edgerlhf.data.taskfile import held_out_prompts
from edgerlhf.models.adapters import apply_lora, count_params, enable_gradient_checkpointing, write_artifact_meta
from edgerlhf.models.generation import generate, right_pad
from edgerlhf.models.loading import load_causal_lm, load_tokenizer
from edgerlhf.rewards.gold import gold_eval, make_gold
from edgerlhf.stages.loop import fit, fit_stats, make_optimizer, total_steps_for
from edgerlhf.stages.skeleton import Context, Setup, run_stage
from edgerlhf.tracking.run import main_write_dir, say

# -- data ------------------------------------------------------------------------------------------------

def load_rows(cfg: SFTConfig, tok) -> tuple[list[dict], list[dict], int]:
    """Training and held-out rows (validated before any run folder exists)."""
    def load(source: str):
        if cfg.sft_from == "chosen":  # a preference file: prompt -> chosen response
            rows, bad = load_preference_rows(source, tokenizer=tok, max_length=cfg.max_length)
            return [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows], bad
        return load_sft_rows(source, tokenizer=tok, max_length=cfg.max_length)

    if cfg.dataset == "builtin":
        task = build_task()  # the task is fixed; cfg.seed only shuffles the training order
        train, held_out, skipped = task["train"], task["eval"], 0
    else:
        train, skipped = load(cfg.dataset)
        held_out = []
    if cfg.eval_dataset:
        held_out, _ = load(cfg.eval_dataset)
    elif not held_out:  # hold out 5% (at least 1 row) of a user file, by row
        rng = random.Random(cfg.seed)
        train = list(train)
        rng.shuffle(train)
        n = max(1, len(train) // 20) if len(train) > 1 else 0
        held_out, train = train[:n], train[n:]
    if cfg.max_train_samples:
        train = train[: cfg.max_train_samples]
    if cfg.max_eval_samples:
        held_out = held_out[: cfg.max_eval_samples]
    return list(train), list(held_out), skipped


def _encode(tok, rows: list[dict], max_length: int, source: str) -> list[tuple[list[int], list[int]]]:
    """Token ids with completion-only labels; a prompt that leaves no room for its completion under the
    chat template is a data error naming the row (the loader's length check does not see the template)."""
    out = []
    for r in rows:
        try:
            out.append(encode_pair(tok, r["prompt"], r["completion"], max_length))
        except ValueError as e:
            start = last_message(r["prompt"])
            raise DataError(f"{source}, the row whose prompt starts {start[:40]!r}",
                            f"{e} with the chat template; shorten the prompt or raise max_length") from None
    return out


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    ids, mask = right_pad([x for x, _ in batch], pad_id)
    labels, _ = right_pad([y for _, y in batch], -100)  # padding is never a target
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# -- training --------------------------------------------------------------------------------------------

@torch.no_grad()
def eval_loss(model, encoded, batch_size: int, pad_id: int, device) -> float:
    """Token-weighted mean cross-entropy over completion tokens."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(encoded), batch_size):
        b = {k: v.to(device) for k, v in collate(encoded[i:i + batch_size], pad_id).items()}
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].float()
        labels = b["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        total += loss.item()
        count += int((labels != -100).sum())
    model.train()
    return total / max(count, 1)


def _samples(model, tok, prompts, cfg: SFTConfig) -> list[str]:
    texts, _ = generate(model, tok, prompts, max_new_tokens=cfg.sample_max_new_tokens, temperature=0.0)
    return texts


def _prepare(setup: Setup):
    """The data, read, checked and encoded before the run folder exists."""
    cfg = setup.cfg
    tok = load_tokenizer(cfg.model, cfg.chat_template)
    train_rows, held_rows, skipped = load_rows(cfg, tok)
    encoded = _encode(tok, train_rows, cfg.max_length, cfg.dataset)
    held_enc = _encode(tok, held_rows, cfg.max_length, cfg.eval_dataset or cfg.dataset)
    return tok, held_rows, skipped, encoded, held_enc, shared_system([r["prompt"] for r in train_rows])


def _train(ctx: Context, data) -> dict:
    cfg, device, dtype, run_dir, mem = ctx.cfg, ctx.device, ctx.dtype, ctx.run_dir, ctx.mem
    tok, held_rows, skipped, encoded, held_enc, system = data
    total_steps = total_steps_for(cfg, len(encoded))
    model = load_causal_lm(cfg.model, dtype=dtype, device=device, seed=cfg.seed)
    model.config.use_cache = False
    if cfg.lora:
        model = apply_lora(model, cfg, "CAUSAL_LM")
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    trainable, total = count_params(model)
    say(f"[sft] {cfg.model} on {device} ({str(dtype).removeprefix('torch.')}), "
        f"{trainable:,} trainable / {total:,} parameters, {len(encoded)} train rows, {total_steps} steps")
    sample_prompts = [r["prompt"] for r in held_rows[: cfg.sample_prompts]]
    before = _samples(model, tok, sample_prompts, cfg)
    loss_before = (eval_loss(model, held_enc, cfg.per_device_train_batch_size, tok.pad_token_id, device) if held_enc
                   else float("nan"))
    run_dir.log({"eval/loss": loss_before}, step=0)
    for text in before:
        run_dir.log_text("sample/before", text, 0)

    def targets(b):  # completion tokens that are predicted (a label at position t is predicted at t - 1)
        return int((b["labels"][:, 1:] != -100).sum())

    def loss_fn(m, b, n):  # summed over the completion tokens, divided by the step's (every process's) count
        b = {k: v.to(device) for k, v in b.items()}
        return m(**b, num_items_in_batch=n).loss, int(b["attention_mask"].sum()), {}

    def on_eval(step):
        run_dir.log({"eval/loss": eval_loss(model, held_enc, cfg.per_device_train_batch_size, tok.pad_token_id,
                                            device)}, step=step)
        if sample_prompts:
            run_dir.log_text("sample/eval", _samples(model, tok, sample_prompts[:1], cfg)[0], step)

    optimizer, scheduler = make_optimizer(model, cfg, total_steps)
    history = fit(model, optimizer, scheduler, encoded, lambda b: collate(b, tok.pad_token_id), loss_fn, cfg,
                  total_steps, run_dir, mem, "sft", on_eval, count=targets)

    loss_after = (eval_loss(model, held_enc, cfg.per_device_train_batch_size, tok.pad_token_id, device) if held_enc
                  else float("nan"))
    after = _samples(model, tok, sample_prompts, cfg)
    gold = {}
    source = cfg.gold_eval_source(trains_on_builtin=cfg.dataset == "builtin")
    if source:
        gold = gold_eval(model, tok, held_out_prompts(source, cfg.gold_eval_prompts), seed=cfg.seed,
                         max_new_tokens=cfg.sample_max_new_tokens, progress=cfg.progress,
                         gold=make_gold(cfg.gold))
        for text, g in list(zip(gold.pop("responses"), gold.pop("gold")))[:8]:
            run_dir.log_text("sample/gold_eval", f"[gold {g:+.2f}] {text}", total_steps)
    run_dir.log({"eval/loss": loss_after, **gold, **mem.as_metrics()}, step=total_steps)
    for s in after:
        run_dir.log_text("sample/after", s, total_steps)

    # save: PEFT's standard layout (adapter_config.json + adapter_model.safetensors), written atomically
    kind = "lora" if cfg.lora else "full"

    def fill(tmp: Path):
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_artifact_meta(tmp, stage="sft", kind=kind, base_model=cfg.model, seed=cfg.seed,
                            use_chat_template=cfg.chat_template, system_prompt=system)

    artifact = main_write_dir(run_dir.path / ("adapter" if cfg.lora else "model"), fill)
    stats = {
        "artifact": str(artifact), "trainable_params": trainable, "total_params": total, "train_rows": len(encoded),
        "eval_rows": len(held_enc), "skipped_rows": skipped, **fit_stats(history, total_steps),
        "eval/loss_before": loss_before, "eval/loss_after": loss_after, **gold, **mem.stop().as_metrics(),
        "samples": [{"prompt": last_message(p), "before": b, "after": a}
                    for p, b, a in zip(sample_prompts, before, after)],
    }
    for p, b, a in zip(sample_prompts, before, after):
        say(f"\n[sft] prompt: {last_message(p)}\n  before: {b}\n  after:  {a}")
    if gold:
        say(f"\n[sft] gold ({cfg.gold}) on {gold['eval/gold_n']} held-out prompts: {gold['eval/gold_mean']:+.3f} "
            f"(95% CI {gold['eval/gold_ci95_low']:+.3f} .. {gold['eval/gold_ci95_high']:+.3f})")
    say(f"\n[sft] eval loss {loss_before:.3f} -> {loss_after:.3f}; {total_steps} steps in "
        f"{history['train_s']:.0f}s; peak memory {stats['memory/peak_mb']:.0f} MB; adapter: {artifact}")
    return stats


def run(cfg: SFTConfig) -> Path:
    """Train, save the adapter, and return the run folder."""
    return run_stage(cfg, _prepare, _train)

