"""DPO (stage 4, offline; Rafailov et al. 2023): the policy learns from the preference pairs directly, with no
reward model and no sampling.

The SFT policy is merged into the base; the policy is a LoRA adapter on it (in the top ``lora_layers`` blocks,
as the online presets), and the reference is that same base with the adapter disabled, so it includes the SFT
change, as in PPO. The reference's log-probs of every pair are computed once, before training, and kept. Each
pair's prompt runs once for both responses (``models.logprobs.pair_logprobs``), in training and evaluation.

Why not TRL's ``DPOTrainer``: it would bring its own run folders, logging, dtype defaults (``bf16=True``) and
checkpoint layout, where every EdgeRLHF stage shares one loop (``stages/loop.py``: NaN guard, logging, peak
memory, atomic artifacts) and one artifact format that ``edgerlhf eval``, export and chat read. The part that
is DPO is a free function, ``rl.losses.dpo_loss``, checked against hand-derived values.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from edgerlhf.config import DPOConfig
from edgerlhf.data.formatting import encode_pair, shared_system
from edgerlhf.data.pairs import load_pairs
from edgerlhf.distributed import gather_rows, world
from edgerlhf.models.adapters import count_params, enable_gradient_checkpointing, fill_policy_artifact, lora_config
from edgerlhf.models.loading import load_tokenizer
from edgerlhf.models.logprobs import batch_logprobs, pair_logprobs
from edgerlhf.models.roles import load_base, no_dropout
from edgerlhf.rl.losses import dpo_loss
from edgerlhf.stages.loop import fit, fit_stats, held_out_line, make_optimizer, total_steps_for
from edgerlhf.stages.skeleton import Context, Setup, run_stage
from edgerlhf.tracking.run import main_write_dir, say


def _encode(tok, pairs: list[dict], max_length: int) -> list[tuple[tuple, tuple]]:
    return [(encode_pair(tok, p["prompt"], p["chosen"], max_length),
             encode_pair(tok, p["prompt"], p["rejected"], max_length))
            for p in pairs]


def _logprobs(model, rows, pad_id: int, average: bool, shared: bool):
    """(chosen, rejected) sequence log-probs of a batch of encoded pairs."""
    chosen, rejected = [c for c, _ in rows], [r for _, r in rows]
    if shared:
        return pair_logprobs(model, chosen, rejected, pad_id, average=average)
    both = batch_logprobs(model, chosen + rejected, pad_id, average=average)
    return both[:len(rows)], both[len(rows):]


@torch.no_grad()
def _all_logprobs(model, rows, pad_id: int, batch: int, average: bool, shared: bool, desc: str = "") -> torch.Tensor:
    """(N, 2) log-probs (chosen, rejected) of every pair, in batches, without grad (a progress bar when
    ``desc`` names the pass)."""
    out = []
    for i in tqdm(range(0, len(rows), batch), desc=desc, disable=not desc, unit="batch", dynamic_ncols=True,
                  leave=False):
        c, r = _logprobs(model, rows[i:i + batch], pad_id, average, shared)
        out.append(torch.stack([c, r], 1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 2)


def _shared_pass(model, rows, pad_id: int, batch: int, average: bool, shared: bool, desc: str = "") -> torch.Tensor:
    """:func:`_all_logprobs` of every pair, each process computing its contiguous share (padded to equal shares)
    and every process getting the whole (N, 2) result; one process computes them all."""
    rank, ws = world()
    if ws == 1:
        return _all_logprobs(model, rows, pad_id, batch, average, shared, desc)
    k = -(-len(rows) // ws)
    mine = _all_logprobs(model, rows[rank * k:(rank + 1) * k], pad_id, batch, average, shared, desc)
    mine = torch.nn.functional.pad(mine, (0, 0, 0, k - len(mine)))
    return gather_rows(mine)[:len(rows)]


def _accuracy(rc: torch.Tensor, rr: torch.Tensor) -> float:
    """How often the implicit reward prefers the chosen side; a tie (a fresh adapter: both margins 0) counts 1/2."""
    return ((rc > rr).float() + 0.5 * (rc == rr).float()).mean().item()


def evaluate(model, rows, ref: torch.Tensor, cfg: DPOConfig, pad_id: int, shared: bool) -> dict[str, float]:
    """Held-out pairs: how often the implicit reward beta * (log pi - log ref) prefers the chosen side, the
    mean margin, and the loss."""
    if not rows:
        return {}
    was = model.training
    model.eval()
    pol = _all_logprobs(model, rows, pad_id, max(1, cfg.eval_batch_size // 2), cfg.loss_type == "ipo", shared)
    model.train(was)
    return held_out_stats(pol, ref, cfg)


def held_out_stats(pol: torch.Tensor, ref: torch.Tensor, cfg: DPOConfig) -> dict[str, float]:
    """Held-out metrics from (N, 2) policy and reference log-probs (chosen, rejected). Before training the
    adapter is fresh (B = 0), the policy is the reference, and these are known without a pass: ``pol = ref``."""
    loss, rc, rr = dpo_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], cfg.beta, cfg.loss_type, cfg.label_smoothing)
    return {"eval/loss": loss.mean().item(), "eval/accuracy": _accuracy(rc, rr),
            "eval/margin": (rc - rr).mean().item(), "eval/chosen_reward": rc.mean().item(),
            "eval/rejected_reward": rr.mean().item(), "eval/pairs": len(pol)}


def run(cfg: DPOConfig) -> Path:
    """Train the DPO policy; returns the run folder (``adapter/``: the policy, self-contained)."""
    return run_stage(cfg, _prepare, _train)


def _prepare(setup: Setup):
    """The pairs, read and checked before the run folder exists."""
    return load_pairs(setup.cfg, load_tokenizer(setup.cfg.model, setup.cfg.chat_template))


def _train(ctx: Context, data) -> dict:
    from peft import get_peft_model  # noqa: PLC0415 - peft: loaded only by the stages that build an adapter

    cfg, device, dtype, run_dir, mem = ctx.cfg, ctx.device, ctx.dtype, ctx.run_dir, ctx.mem
    train, held, skipped = data
    base, tok, _ = load_base(cfg.policy, cfg.model, dtype=dtype, device=device, seed=cfg.seed)
    train_rows, held_rows = _encode(tok, train, cfg.max_length), _encode(tok, held, cfg.max_length)
    model = get_peft_model(base, lora_config(cfg, "CAUSAL_LM", base))
    no_dropout(model)  # the policy and its reference must see the same network
    model.config.use_cache = False
    shared = cfg.shared_prefix and not cfg.gradient_checkpointing  # checkpointing turns the KV cache off
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    trainable, total = count_params(model)
    total_steps = total_steps_for(cfg, len(train_rows))
    pad, avg = tok.pad_token_id, cfg.loss_type == "ipo"
    say(f"[dpo] {cfg.policy or cfg.model} on {device} ({str(dtype).removeprefix('torch.')}), {cfg.loss_type}, "
        f"beta={cfg.beta}; {trainable:,} trainable / {total:,} parameters, {len(train_rows)} train pairs, "
        f"{len(held_rows)} held-out pairs, {total_steps} steps")
    # 1 the reference's log-probs, once: the same network with the adapter off (each process its share)
    with model.disable_adapter():
        desc = "reference log-probs" if cfg.progress else ""
        ref_train = _shared_pass(model, train_rows, pad, max(1, cfg.eval_batch_size // 2), avg, shared, desc)
        ref_held = _shared_pass(model, held_rows, pad, max(1, cfg.eval_batch_size // 2), avg, shared, desc)
    # 2 held-out before (the fresh adapter is the reference: accuracy of a zero margin)
    # (a fresh LoRA adapter adds exactly 0, so the policy is its reference: no pass needed)
    before = held_out_stats(ref_held, ref_held, cfg) if held_rows else {}
    run_dir.log(before, step=0)
    rows = [(i, *r) for i, r in enumerate(train_rows)]

    def collate(batch):
        return torch.tensor([i for i, _, _ in batch]), [(c, r) for _, c, r in batch]

    def loss_fn(m, b):
        idx, pairs = b
        pc, pr = _logprobs(m, pairs, pad, avg, shared)
        ref = ref_train[idx].to(pc.device)
        loss, rc, rr = dpo_loss(pc, pr, ref[:, 0], ref[:, 1], cfg.beta, cfg.loss_type, cfg.label_smoothing)
        n_tok = sum(len(c[0]) + len(r[0]) for c, r in pairs)
        return loss.mean(), n_tok, {"train/accuracy": _accuracy(rc, rr),
                                    "train/margin": (rc - rr).mean().item(),
                                    "train/chosen_reward": rc.mean().item(), "train/rejected_reward": rr.mean().item()}

    optimizer, scheduler = make_optimizer(model, cfg, total_steps)
    history = fit(model, optimizer, scheduler, rows, collate, loss_fn, cfg, total_steps, run_dir, mem, "dpo",
                  on_eval=(lambda step: run_dir.log(evaluate(model, held_rows, ref_held, cfg, pad, shared), step=step))
                  if held_rows else None)
    after = evaluate(model, held_rows, ref_held, cfg, pad, shared)
    run_dir.log({**after, **mem.as_metrics()}, step=total_steps)

    def fill(tmp: Path):
        fill_policy_artifact(tmp, model, tok, stage="dpo", seed=cfg.seed, model_name=cfg.model, sft_policy=cfg.policy,
                             base_precision="fp32", algorithm="dpo", beta=cfg.beta, loss_type=cfg.loss_type,
                             use_chat_template=cfg.chat_template,
                             system_prompt=shared_system([r["prompt"] for r in train]),
                             prefs=str(Path(cfg.prefs).resolve()) if Path(cfg.prefs).is_dir() else cfg.prefs)

    artifact = main_write_dir(run_dir.path / "adapter", fill)
    stats = {"artifact": str(artifact), "algorithm": "dpo", "trainable_params": trainable, "total_params": total,
             "pairs_train": len(train_rows), "pairs_eval": len(held_rows), "skipped_rows": skipped,
             **fit_stats(history, total_steps), **{f"before/{k}": v for k, v in before.items()}, **after,
             **mem.stop().as_metrics()}
    keys = ("eval/loss", "eval/accuracy", "eval/margin")
    say(held_out_line("dpo", before, after, keys, history, total_steps, stats["memory/peak_mb"], artifact))
    return stats
