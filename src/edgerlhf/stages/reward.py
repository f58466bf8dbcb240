"""Reward model (stage 3): Bradley-Terry training of a one-output head with LoRA on the body.

Why not TRL's RewardTrainer: same reasons as SFT (``stages/loop.py``); the loss itself is
``edgerlhf.rl.bradley_terry_loss``. The score head is trained and saved with the adapter through PEFT's
``modules_to_save`` (task type SEQ_CLS), and the saved artifact is checked for it.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch

from edgerlhf.config import RewardConfig
from edgerlhf.data.pairs import load_pairs
from edgerlhf.models.adapters import apply_lora, count_params, enable_gradient_checkpointing, write_artifact_meta
from edgerlhf.models.generation import right_pad
from edgerlhf.models.loading import load_tokenizer
from edgerlhf.models.precision import keep_bnb_differentiable
from edgerlhf.rewards.learned import (
    RewardModel,
    encode_for_rm,
    load_reward_model,
    load_seq_cls,
    pair_rewards,
    rewards_of,
)
from edgerlhf.rewards.metrics import agreement_with_labels, mean_std, pairwise_accuracy, spearman
from edgerlhf.rl.ensemble import AGGREGATIONS, aggregate, agreement, normalise
from edgerlhf.rl.losses import bradley_terry_loss
from edgerlhf.runfolder import find_artifact, read_artifact_meta
from edgerlhf.stages.loop import fit, fit_stats, held_out_line, make_optimizer, seed_everything, total_steps_for
from edgerlhf.stages.skeleton import Context, Setup, run_stage
from edgerlhf.tracking.memory import release_free_memory
from edgerlhf.tracking.run import main_write_dir, say


def held_scores(rm: RewardModel, pairs: list[dict]) -> tuple[list[float], list[float]]:
    """The RM's scores of each pair's chosen and rejected response."""
    prompts = [p["prompt"] for p in pairs]
    return rm.score_pairs(encode_for_rm(rm.tokenizer, prompts, [p["chosen"] for p in pairs], rm.max_length),
                          encode_for_rm(rm.tokenizer, prompts, [p["rejected"] for p in pairs], rm.max_length))


def evaluate(rm: RewardModel | None, pairs: list[dict], scores: tuple[list[float], list[float]] | None = None
             ) -> dict[str, float]:
    """Held-out numbers: accuracy vs the (noisy) labels on kept pairs, vs gold on kept pairs and on all
    pairs (near-ties included), reward mean/std, Spearman with gold on the distinct responses. ``scores``: the
    (chosen, rejected) scores already computed (an ensemble's aggregate), instead of scoring with ``rm``."""
    rc, rr = scores if scores is not None else held_scores(rm, pairs)
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


class Member(NamedTuple):
    """One trained RM (the single RM, or one member of an ensemble) still in memory."""
    model: object
    rm: RewardModel
    before: dict
    after: dict
    history: dict
    trainable: int
    total: int
    total_steps: int


def _fit_one(ctx: Context, cfg: RewardConfig, tok, train: list[dict], held: list[dict], enc: list, log,
             tag: str = "reward", base_seed: int | None = None) -> Member:
    """Train one RM with ``cfg.seed`` (its LoRA and head initialisation, dropout and data order) on ``enc``; ``log``
    is the run folder's (or a member's view of it); ``base_seed``: an ensemble's (the tiny model's random body)."""
    device, dtype, mem = ctx.device, ctx.dtype, ctx.mem
    seed_everything(cfg.seed)  # a member trains exactly as a single RM with its seed would
    total_steps = total_steps_for(cfg, len(enc))
    model, _ = load_seq_cls(cfg.model, dtype=dtype, seed=cfg.seed, base_precision=cfg.base_precision, device=device,
                            chat_template=cfg.chat_template, base_seed=base_seed)
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
    say(f"[{tag}] {cfg.model} on {device} ({str(dtype).removeprefix('torch.')}), {trainable:,} trainable / "
        f"{total:,} parameters, {len(train)} train pairs, {len(held)} held-out pairs, {total_steps} steps, "
        f"seed {cfg.seed}")
    before = evaluate(rm, held) if held else {}
    log.log(before, step=0)

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
    history = fit(model, optimizer, scheduler, enc, collate, loss_fn, cfg, total_steps, log, mem, tag,
                  on_eval=(lambda step: log.log(evaluate(rm, held), step=step)) if held else None)
    after = evaluate(rm, held) if held else {}
    log.log({**after, **mem.as_metrics()}, step=total_steps)
    return Member(model, rm, before, after, history, trainable, total, total_steps)


def _fill(cfg: RewardConfig, m: Member, tok, **extra):
    def fill(tmp: Path):
        m.model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_artifact_meta(tmp, stage="reward", kind="lora" if cfg.lora else "full", base_model=cfg.model,
                            seed=cfg.seed, max_length=cfg.max_length, base_precision=cfg.base_precision,
                            precision=cfg.base_precision, prefs=_prefs_ref(cfg),
                            high_precision_modules=["score"], use_chat_template=cfg.chat_template, **extra)
    return fill


def _prefs_ref(cfg: RewardConfig) -> str:
    return str(Path(cfg.prefs).resolve()) if Path(cfg.prefs).is_dir() else cfg.prefs


def _train(ctx: Context, data) -> dict:
    if ctx.cfg.members_from:
        return _assemble(ctx, data)
    if ctx.cfg.members > 1:
        return _train_ensemble(ctx, data)
    cfg, run_dir = ctx.cfg, ctx.run_dir
    tok, train, held, skipped, enc = data
    m = _fit_one(ctx, cfg, tok, train, held, enc, run_dir)
    artifact = main_write_dir(run_dir.path / "adapter", _fill(cfg, m, tok))
    stats = {"artifact": str(artifact), "trainable_params": m.trainable, "total_params": m.total,
             "pairs_train": len(train), "pairs_eval": len(held), "skipped_rows": skipped,
             **fit_stats(m.history, m.total_steps), **{f"before/{k}": v for k, v in m.before.items()}, **m.after,
             **ctx.mem.stop().as_metrics()}
    say(held_out_line("reward", m.before, m.after, _KEYS, m.history, m.total_steps, stats["memory/peak_mb"], artifact))
    return stats


_KEYS = ("eval/accuracy", "eval/accuracy_gold", "eval/spearman_gold", "eval/reward_std")


class _MemberLog:
    """A member's view of the run's log: its rows carry ``member`` and follow the previous members' steps."""

    def __init__(self, run_dir, member: int, offset: int):
        self.run_dir, self.member, self.offset = run_dir, member, offset

    def log(self, metrics: dict, step: int) -> None:
        self.run_dir.log({**metrics, "member": self.member}, step=self.offset + step)


def _train_ensemble(ctx: Context, data) -> dict:
    """K members, each trained and saved as a single RM with seed + i (optionally on a bootstrap of the pairs), its
    normalisation measured on the first ``norm_pairs`` training pairs; then the members' held-out agreement and the
    aggregations' held-out accuracy. A finished member is kept on disk (``members/``) before the next starts."""
    cfg, run_dir = ctx.cfg, ctx.run_dir
    tok, train, held, skipped, enc = data
    staging, infos, offset = run_dir.path / "members", [], 0
    for i in range(cfg.members):
        mcfg = replace(cfg, seed=cfg.seed + i, members=1)
        rows, menc = train, enc
        if cfg.member_data == "bootstrap":
            rng = random.Random(mcfg.seed)
            pick = [rng.randrange(len(train)) for _ in train]
            rows, menc = [train[j] for j in pick], [enc[j] for j in pick]
        m = _fit_one(ctx, mcfg, tok, rows, held, menc, _MemberLog(run_dir, i, offset), tag=f"reward member {i}",
                     base_seed=cfg.seed)
        offset += m.total_steps + 1
        info = _member_info(m.rm, train[: cfg.norm_pairs], held, i, mcfg.seed, m.total_steps)
        main_write_dir(staging / info["name"], _fill(mcfg, m, tok, member=i, base_seed=cfg.seed,
                                                     norm_mean=info["norm_mean"], norm_std=info["norm_std"],
                                                     member_data=cfg.member_data))
        infos.append(info)
        counts = (m.trainable, m.total)
        del m
        release_free_memory()
    return _finish_ensemble(ctx, data, infos, staging, counts)


def _assemble(ctx: Context, data) -> dict:
    """An ensemble of reward runs trained apart (``members_from``): each copied as it is, its normalisation and
    held-out scores measured as a trained member's."""
    cfg, run_dir = ctx.cfg, ctx.run_dir
    tok, train, held, skipped, enc = data
    staging, infos = run_dir.path / "members", []
    for i, path in enumerate(cfg.members_from):
        art = find_artifact(path)
        meta = read_artifact_meta(art)
        rm = load_reward_model(art, "fp32", device=str(ctx.device), batch_size=cfg.eval_batch_size)
        say(f"[reward member {i}] {art} (seed {meta.get('seed')})")
        info = _member_info(rm, train[: cfg.norm_pairs], held, i, meta.get("seed", 0), 0)
        info.update({"steps": 0, "source": str(art)})

        def fill(tmp: Path, art=art, meta=meta, info=info, i=i):
            shutil.copytree(art, tmp, dirs_exist_ok=True)
            write_artifact_meta(tmp, **{**meta, "member": i, "norm_mean": info["norm_mean"],
                                        "norm_std": info["norm_std"], "source": str(art)})

        main_write_dir(staging / info["name"], fill)
        infos.append(info)
        counts = (0, sum(p.numel() for p in rm.model.parameters()))
        del rm
        release_free_memory()
    return _finish_ensemble(ctx, data, infos, staging, counts)


def _member_info(rm, norm_set: list[dict], held: list[dict], i: int, seed: int, steps: int) -> dict:
    """A member's normalisation (mean and std of its scores of both responses of ``norm_set``) and held-out
    numbers, with its held-out scores (for the members' agreement)."""
    nc, nr = held_scores(rm, norm_set)
    mean, std = mean_std(nc + nr)
    hc, hr = held_scores(rm, held) if held else ([], [])
    return {"name": f"member-{i}", "seed": seed, "norm_mean": mean, "norm_std": max(std, 1e-6), "steps": steps,
            **(evaluate(None, held, (hc, hr)) if held else {}), "_held": (hc, hr)}


def _finish_ensemble(ctx: Context, data, infos: list[dict], staging: Path, counts: tuple[int, int]) -> dict:
    """The members' agreement and each aggregation's held-out accuracy; the ensemble artifact (the members moved
    in, the tokenizer, one metadata file); the summary."""
    cfg, run_dir = ctx.cfg, ctx.run_dir
    tok, train, held, skipped, _ = data
    agg: dict = {}
    if held:
        c = torch.tensor([x["_held"][0] for x in infos])
        r = torch.tensor([x["_held"][1] for x in infos])
        means, stds = [x["norm_mean"] for x in infos], [x["norm_std"] for x in infos]
        zc, zr = normalise(c, means, stds), normalise(r, means, stds)
        agree = agreement(torch.cat([c, r], 1))
        k = len(infos)
        off = [agree[a, b].item() for a in range(k) for b in range(k) if a != b]
        agg["ensemble/agreement"] = sum(off) / len(off)
        for x, row in zip(infos, agree.tolist()):
            x["agreement"] = (sum(row) - 1) / (k - 1)
        for how in AGGREGATIONS:
            e = evaluate(None, held, (aggregate(zc, how, 0.5).tolist(), aggregate(zr, how, 0.5).tolist()))
            agg.update({f"ensemble/{how}/{key.removeprefix('eval/')}": v for key, v in e.items()
                        if key in ("eval/accuracy", "eval/accuracy_gold", "eval/accuracy_gold_all")})
    for x in infos:
        x.pop("_held", None)

    def fill(tmp: Path):
        for x in infos:
            (staging / x["name"]).rename(tmp / x["name"])
        tok.save_pretrained(tmp)
        write_artifact_meta(tmp, stage="reward", kind="ensemble", base_model=cfg.model, seed=infos[0]["seed"],
                            max_length=cfg.max_length, base_precision="fp32", precision="fp32", prefs=_prefs_ref(cfg),
                            use_chat_template=cfg.chat_template,
                            member_data="separate runs" if cfg.members_from else cfg.member_data,
                            members=[{k: x[k] for k in ("name", "seed", "norm_mean", "norm_std")} for x in infos])

    artifact = main_write_dir(run_dir.path / "adapter", fill)
    shutil.rmtree(staging, ignore_errors=True)
    acc = [x.get("eval/accuracy", math.nan) for x in infos]
    stats = {"artifact": str(artifact), "members": infos, "trainable_params": counts[0], "total_params": counts[1],
             "pairs_train": len(train), "pairs_eval": len(held), "skipped_rows": skipped,
             "steps": sum(x["steps"] for x in infos), **agg, **ctx.mem.stop().as_metrics()}
    if held:  # the run's headline numbers are the mean aggregation's (what `ensemble=mean` serves)
        stats.update({"eval/accuracy": agg["ensemble/mean/accuracy"], "ensemble/member_accuracy": acc})
        if "ensemble/mean/accuracy_gold" in agg:
            stats["eval/accuracy_gold"] = agg["ensemble/mean/accuracy_gold"]
    say(f"[reward] ensemble of {len(infos)} ({'separate runs' if cfg.members_from else cfg.member_data + ' pairs'}): "
        "member held-out accuracy " + ", ".join(f"{a:.3f}" for a in acc)
        + (f"; mean {agg['ensemble/mean/accuracy']:.3f}, min {agg['ensemble/min/accuracy']:.3f}, uwo "
           f"{agg['ensemble/uwo/accuracy']:.3f}; members agree on {agg['ensemble/agreement']:.3f} of response pairs"
           if held else "") + f"; peak memory {stats['memory/peak_mb']:.0f} MB; artifact: {artifact}")
    return stats


def run(cfg: RewardConfig) -> Path:
    """Train the reward model; returns the run folder (``adapter/``: LoRA + score head)."""
    return run_stage(cfg, _prepare, _train)
