"""The end of a run: the held-out gold evaluation, the artifact (``adapter/``, self-contained) and the summary."""

from __future__ import annotations

import math
from pathlib import Path

from safetensors.torch import save_file

from edgerlhf.data.formatting import shared_system
from edgerlhf.data.taskfile import held_out_prompts
from edgerlhf.models.adapters import fill_policy_artifact
from edgerlhf.rewards.gold import gold_eval as run_gold_eval
from edgerlhf.stages.online.session import Session
from edgerlhf.tracking.run import main_write_dir, say


def _avg(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return sum(vals) / len(vals) if vals else math.nan


def _gold_eval(s: Session) -> dict:
    """The policy's gold score on held-out prompts (empty when the config asks for none)."""
    cfg = s.cfg
    source = cfg.gold_eval_source(trains_on_builtin=cfg.prompts == "builtin")
    if not source:
        return {}
    s.roles.train(False)
    ev = run_gold_eval(s.roles.policy, s.tok, held_out_prompts(source, cfg.gold_eval_prompts), seed=cfg.seed,
                       max_new_tokens=cfg.response_length, progress=cfg.progress, gold=s.inputs.gold)
    for text, g in list(zip(ev.pop("responses"), ev.pop("gold")))[:8]:
        s.run_dir.log_text("sample/gold_eval", f"[gold {g:+.2f}] {text}", len(s.history))
    s.run_dir.log(ev, step=cfg.steps)
    return ev


def _write_artifact(s: Session) -> Path:
    def fill(tmp: Path):
        cfg = s.cfg
        # the SFT adapter travels with the policy adapter: the artifact is self-contained
        fill_policy_artifact(tmp, s.roles.policy, s.tok, stage=cfg.stage, seed=cfg.seed, model_name=cfg.model,
                             sft_policy=cfg.policy, base_precision=cfg.base_precision, algorithm=s.algo.name,
                             use_chat_template=cfg.chat_template, system_prompt=shared_system(s.inputs.prompts),
                             **s.inputs.reward_info)
        if s.roles.value_head is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in s.roles.value_head.state_dict().items()},
                      str(tmp / "value_head.safetensors"))

    return main_write_dir(s.run_dir.path / "adapter", fill)


def finish(s: Session) -> dict:
    """Gold evaluation, artifact and the closing lines; returns the summary (the stage skeleton writes it)."""
    cfg, algo, history, gold = s.cfg, s.algo, s.history, s.inputs.gold
    gold_eval = _gold_eval(s)
    artifact = _write_artifact(s)
    last = history[-1] if history else {}
    k = max(1, len(history) // 5)  # first / last fifth of the run, for a less noisy before/after
    head, tail = history[:k], history[-k:]
    step_times = sorted(r["timing/step_s"] for r in history)
    stats = {
        "artifact": str(artifact), "device": str(s.device), "compute_dtype": str(s.dtype).removeprefix("torch."),
        "algorithm": algo.name, "layout": cfg.layout, "base_precision": cfg.base_precision, **s.inputs.reward_info,
        "reference": algo.needs_reference, "samples_per_prompt": algo.samples_per_prompt,
        "trainable_params": s.n_trainable, "steps": cfg.steps, "episodes": s.counters.episodes,
        "bad_steps": s.counters.bad_steps, "skipped_updates": s.counters.skipped_updates,
        "objective/scores_first": _avg(head, "objective/scores"),
        "objective/scores_last": _avg(tail, "objective/scores"),
        "objective/kl_last": _avg(tail, "objective/kl"), "val/mean_length_last": _avg(tail, "val/mean_length"),
        "val/distinct_2_last": _avg(tail, "val/distinct_2"),
        "timing/step_s_median": step_times[len(step_times) // 2] if step_times else math.nan,
        "timing/train_s": sum(r["timing/step_s"] for r in history), "timing/load_s": s.t_load,
        "timing/generate_s": sum(r["timing/generate"] for r in history),
        "timing/update_s": sum(r["timing/update"] for r in history),
        "batch/final_rollout_batch_size": last.get("batch/rollout_batch_size"),
        "batch/final_mini_batch_size": last.get("batch/mini_batch_size"),
        **gold_eval, **s.mem.stop().as_metrics(), "memory/rm_shared_mb": round(s.shared_mb, 1),
        "steps_run": len(history), **s.overopt,
    }
    if any("objective/ensemble_std" in r for r in history):
        stats.update({"objective/ensemble_std_first": _avg(head, "objective/ensemble_std"),
                      "objective/ensemble_std_last": _avg(tail, "objective/ensemble_std")})
    if gold is not None:
        stats.update({"gold": cfg.gold, "objective/gold_first": _avg(head, "objective/gold"),
                      "objective/gold_last": _avg(tail, "objective/gold")})
    if algo.needs_values:
        stats["value_model"] = cfg.value_model
    kl_txt = f", KL {stats['objective/kl_last']:.2f} nats" if math.isfinite(stats["objective/kl_last"]) else ""
    gold_txt = (f", gold {stats['objective/gold_first']:+.3f} -> {stats['objective/gold_last']:+.3f}"
                if gold is not None else ", no gold (the learned RM is a proxy)")
    say(f"\n[{cfg.stage}] {len(history)} steps: learned-RM score {stats['objective/scores_first']:+.3f} -> "
        f"{stats['objective/scores_last']:+.3f}{gold_txt}{kl_txt}; median step {stats['timing/step_s_median']:.1f}s; "
        f"peak memory {stats['memory/peak_mb']:.0f} MB; adapter: {artifact}")
    if s.overopt.get("overopt/stopped"):
        say(f"[{cfg.stage}] stopped at step {s.overopt['overopt/step']} of {cfg.steps} by the over-optimisation "
            "warning (stop_on_overopt=true): the adapter is the policy at that step")
    if gold_eval:
        say(f"[{cfg.stage}] gold ({cfg.gold}) on {gold_eval['eval/gold_n']} held-out prompts: "
            f"{gold_eval['eval/gold_mean']:+.3f} "
            f"(95% CI {gold_eval['eval/gold_ci95_low']:+.3f} .. {gold_eval['eval/gold_ci95_high']:+.3f})")
    return stats
