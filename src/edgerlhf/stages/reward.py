"""Reward model (stage 3): Bradley-Terry training of a one-output head with LoRA on the body.

Why not TRL's RewardTrainer: same reasons as SFT (``stages/loop.py``); the loss itself is
``edgerlhf.rl.bradley_terry_loss``. The score head is trained and saved with the adapter through PEFT's
``modules_to_save`` (task type SEQ_CLS), and the saved artifact is checked for it.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgerlhf.config import RewardConfig
from edgerlhf.data.pairs import load_pairs
from edgerlhf.models.adapters import apply_lora, count_params, enable_gradient_checkpointing, write_artifact_meta
from edgerlhf.models.generation import right_pad
from edgerlhf.models.loading import load_tokenizer
from edgerlhf.models.precision import keep_bnb_differentiable
from edgerlhf.rewards.learned import RewardModel, encode_for_rm, load_seq_cls, pair_rewards, rewards_of
from edgerlhf.rewards.metrics import agreement_with_labels, mean_std, pairwise_accuracy, spearman
from edgerlhf.rl.losses import bradley_terry_loss
from edgerlhf.stages.loop import fit, fit_stats, held_out_line, make_optimizer, total_steps_for
from edgerlhf.stages.skeleton import Context, Setup, run_stage
from edgerlhf.tracking.run import main_write_dir, say


def evaluate(rm: RewardModel, pairs: list[dict]) -> dict[str, float]:
    """Held-out numbers: accuracy vs the (noisy) labels on kept pairs, vs gold on kept pairs and on all
    pairs (near-ties included), reward mean/std, Spearman with gold on the distinct responses."""
    prompts = [p["prompt"] for p in pairs]
    rc, rr = rm.score_pairs(encode_for_rm(rm.tokenizer, prompts, [p["chosen"] for p in pairs], rm.max_length),
                            encode_for_rm(rm.tokenizer, prompts, [p["rejected"] for p in pairs], rm.max_length))
    kept = [i for i, p in enumerate(pairs) if not p.get("near_tie", False)]
    out = {"eval/accuracy": pairwise_accuracy([rc[i] for i in kept], [rr[i] for i in kept]),
           "eval/pairs": len(kept)}
    by_text = {}
    for p, c, r in zip(pairs, rc, rr):
        by_text[json.dumps([p["prompt"], p["chosen"]])] = (c, p.get("gold_chosen"))
        by_text[json.dumps([p["prompt"], p["rejected"]])] = (r, p.get("gold_rejected"))
    out["eval/reward_mean"], out["eval/reward_std"] = mean_std([v[0] for v in by_text.values()])
    if all("gold_chosen" in p and "gold_rejected" in p for p in pairs):
        gc, gr = [p["gold_chosen"] for p in pairs], [p["gold_rejected"] for p in pairs]
        out["eval/accuracy_gold"] = agreement_with_labels([rc[i] for i in kept], [rr[i] for i in kept],
                                                          [gc[i] for i in kept], [gr[i] for i in kept])
        out["eval/accuracy_gold_all"] = agreement_with_labels(rc, rr, gc, gr)
        out["eval/pairs_all"] = len(pairs)
        out["eval/spearman_gold"] = spearman([v[0] for v in by_text.values()], [v[1] for v in by_text.values()])
    return out


def _prepare(setup: Setup):
    """The pairs, read, checked and encoded before the run folder exists."""
    cfg = setup.cfg
    tok = load_tokenizer(cfg.model, cfg.chat_template)
    train, held, skipped = load_pairs(cfg, tok)
    prompts = [p["prompt"] for p in train]
    enc = list(zip(encode_for_rm(tok, prompts, [p["chosen"] for p in train], cfg.max_length),
                   encode_for_rm(tok, prompts, [p["rejected"] for p in train], cfg.max_length)))
    return tok, train, held, skipped, enc


def _train(ctx: Context, data) -> dict:
    cfg, device, dtype, run_dir, mem = ctx.cfg, ctx.device, ctx.dtype, ctx.run_dir, ctx.mem
    tok, train, held, skipped, enc = data
    total_steps = total_steps_for(cfg, len(enc))
    model, _ = load_seq_cls(cfg.model, dtype=dtype, seed=cfg.seed, base_precision=cfg.base_precision, device=device,
                            chat_template=cfg.chat_template)
    model.config.use_cache = False
    if cfg.base_precision != "fp32":
        from peft import prepare_model_for_kbit_training  # noqa: PLC0415 - peft's helper, only for a quantised body

        keep_bnb_differentiable(model)  # the held-out evaluation runs without grad, training after it
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if cfg.lora:
        model = apply_lora(model, cfg, "SEQ_CLS")  # PEFT keeps the score head trainable and saves it
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.base_precision == "fp32":
        model.to(device)  # bitsandbytes models are placed at load time
    trainable, total = count_params(model)
    rm = RewardModel(model, tok, {"max_length": cfg.max_length}, device, cfg.eval_batch_size)
    say(f"[reward] {cfg.model} on {device} ({str(dtype).removeprefix('torch.')}), {trainable:,} trainable / "
        f"{total:,} parameters, {len(train)} train pairs, {len(held)} held-out pairs, {total_steps} steps")
    before = evaluate(rm, held) if held else {}
    run_dir.log(before, step=0)

    shared = cfg.shared_prefix and not cfg.gradient_checkpointing  # checkpointing turns the KV cache off
    rm.shared_prefix = shared

    def collate(batch):
        return [c for c, _ in batch], [r for _, r in batch]

    def loss_fn(m, b):
        chosen, rejected = b
        got = pair_rewards(m, chosen, rejected, tok.pad_token_id, device) if shared else None
        if got is None:  # apart: both sides of every pair in one right-padded batch
            ids, mask = (t.to(device) for t in right_pad(chosen + rejected, tok.pad_token_id))
            got = rewards_of(m, ids, mask).chunk(2)
        rc, rr = got
        loss = bradley_terry_loss(rc, rr, cfg.margin, cfg.center_rewards_coef)
        return loss, sum(map(len, chosen + rejected)), {"train/accuracy": (rc > rr).float().mean().item(),
                                                        "train/reward_margin": (rc - rr).mean().item()}

    optimizer, scheduler = make_optimizer(model, cfg, total_steps)
    history = fit(model, optimizer, scheduler, enc, collate, loss_fn, cfg, total_steps, run_dir, mem, "reward",
                  on_eval=(lambda step: run_dir.log(evaluate(rm, held), step=step)) if held else None)

    after = evaluate(rm, held) if held else {}
    run_dir.log({**after, **mem.as_metrics()}, step=total_steps)

    def fill(tmp: Path):
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_artifact_meta(tmp, stage="reward", kind="lora" if cfg.lora else "full", base_model=cfg.model,
                            seed=cfg.seed, max_length=cfg.max_length, base_precision=cfg.base_precision,
                            precision=cfg.base_precision,
                            prefs=str(Path(cfg.prefs).resolve()) if Path(cfg.prefs).is_dir() else cfg.prefs,
                            high_precision_modules=["score"], use_chat_template=cfg.chat_template)

    artifact = main_write_dir(run_dir.path / "adapter", fill)
    stats = {"artifact": str(artifact), "trainable_params": trainable, "total_params": total, "pairs_train": len(train),
             "pairs_eval": len(held), "skipped_rows": skipped,
             **fit_stats(history, total_steps), **{f"before/{k}": v for k, v in before.items()}, **after,
             **mem.stop().as_metrics()}
    keys = ("eval/accuracy", "eval/accuracy_gold", "eval/spearman_gold", "eval/reward_std")
    say(held_out_line("reward", before, after, keys, history, total_steps, stats["memory/peak_mb"], artifact))
    return stats


def run(cfg: RewardConfig) -> Path:
    """Train the reward model; returns the run folder (``adapter/``: LoRA + score head)."""
    return run_stage(cfg, _prepare, _train)
