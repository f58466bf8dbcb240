"""The run: set-up, then numbered phases (load, seed, resume, header, the steps, finish). One step's phases
are ``step.py``'s; checkpoints and resume ``resume.py``'s; the artifact and summary ``finish.py``'s."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from edgerlhf.config import ConfigError, OnlineRLConfig, user_callable
from edgerlhf.data.formatting import encode_prompt
from edgerlhf.distributed import any_process, broadcast_params, divisible, is_main, shard, world
from edgerlhf.models.loading import share_identical_weights
from edgerlhf.models.roles import Roles
from edgerlhf.rewards.control import RANDOM_REWARD, RandomReward
from edgerlhf.rewards.gold import make_gold
from edgerlhf.rewards.serving import load_reward_as_stored
from edgerlhf.rl.algorithms import Algorithm, make_algorithm
from edgerlhf.rl.overopt import overopt_warning
from edgerlhf.stages.loop import make_optimizer, seed_everything
from edgerlhf.stages.online.data import episodes_for_step, load_prompts
from edgerlhf.stages.online.finish import finish
from edgerlhf.stages.online.resume import Interrupt, checkpoint, restore, resume_config
from edgerlhf.stages.online.session import Inputs, Session
from edgerlhf.stages.online.step import RewardFn, StepResult, online_step
from edgerlhf.stages.online.update import Sizes
from edgerlhf.stages.skeleton import Context, Prepared, Setup, run_stage
from edgerlhf.tracking import PeakMemory, RunDir
from edgerlhf.tracking.memory import release_free_memory
from edgerlhf.tracking.run import say


def run(cfg: OnlineRLConfig, reward_fn: RewardFn | None = None, algorithm: Algorithm | None = None) -> Path:
    """Align the policy with the config's online algorithm; returns the run folder (``adapter/`` is the
    aligned policy). ``reward_fn(prompts, responses) -> rewards`` replaces the learned RM (Python API)."""

    def prepare(setup: Setup) -> Prepared:  # bad input fails here, before any folder is written
        cfg, run_path, ckpt = _check(setup.cfg)
        algo = algorithm or make_algorithm(cfg)
        return Prepared((algo, _read_inputs(cfg, reward_fn, setup.device), ckpt), cfg=cfg, reopen=run_path)

    def execute(ctx: Context, data) -> dict:
        algo, inputs, ckpt = data
        return _train(ctx.cfg, algo, inputs, ckpt, ctx.device, ctx.dtype, ctx.run_dir, ctx.mem)

    return run_stage(cfg, prepare, execute)


def _train(cfg: OnlineRLConfig, algo: Algorithm, inputs: Inputs, ckpt: Path | None, device, dtype, run_dir: RunDir,
           mem: PeakMemory) -> dict:
    """The run in its folder, phase by phase; returns the summary."""
    s = _load(cfg, algo, inputs, device, dtype, run_dir, mem)  # 1 the roles on one base, the optimizer, the sizes
    seed_everything(cfg.seed)  # 2 rollouts start from the seed whatever loading drew (layouts compare 1:1)
    if ckpt is not None:  # 3 resume: weights, optimizer, RNG, counters, sizes and the steps logged so far
        restore(s, ckpt)
    say(_header(s))  # 4 what runs, on what
    _steps(s)  # 5 the steps, with checkpoints and the Ctrl-C / SIGTERM stop
    return finish(s)  # 6 the held-out gold, the artifact, the summary


# -- 0 prepare ------------------------------------------------------------------------------------------

def _per_optimizer_step(cfg: OnlineRLConfig) -> int:
    """Episodes per optimizer step, over all processes."""
    return cfg.mini_batch_size * cfg.gradient_accumulation_steps


def _check(cfg: OnlineRLConfig) -> tuple[OnlineRLConfig, Path | None, Path | None]:
    """(config to run, run folder to continue, checkpoint): the counts the launch's processes must divide, and with
    ``resume=`` the run to continue (its stored config must agree)."""
    ws = world()[1]
    errs = divisible({"num_rollouts_per_step": cfg.num_rollouts_per_step,
                      "mini_batch_size x gradient_accumulation_steps": _per_optimizer_step(cfg)}, ws)
    if errs:
        raise ConfigError(errs, f"the launch of {ws} processes (these counts are over all processes; "
                                "each takes its share)")
    if cfg.resume:
        return resume_config(cfg)
    return cfg, None, None


def _read_inputs(cfg: OnlineRLConfig, reward_fn: RewardFn | None, device) -> Inputs:
    prompts = load_prompts(cfg)
    reward, reward_info = _make_reward(cfg, reward_fn, device)
    monitor = None
    if cfg.overopt_monitor:  # an ensemble that watches the rollouts, not the reward
        prec = cfg.reward_precision if cfg.reward not in ("", RANDOM_REWARD) and reward_fn is None else "fp32"
        monitor = load_reward_as_stored(cfg.overopt_monitor, prec, device=str(device),
                                        batch_size=cfg.rollout_batch_size, ensemble="mean", layout="shared")
        reward_info = {**reward_info, "overopt_monitor": str(cfg.overopt_monitor), "overopt_monitor_precision": prec}
    return Inputs(prompts, reward, reward_info, make_gold(cfg.gold, device=str(device)),  # gold: None for gold=none
                  monitor)


def _make_reward(cfg: OnlineRLConfig, reward_fn: RewardFn | None, device) -> tuple[RewardFn, dict]:
    """The reward: the caller's callable, or the learned RM of ``cfg.reward`` loaded by the one stored-RM rule
    (at ``reward_precision``, or as stored when it has a precision of its own)."""
    if reward_fn is not None:
        name = getattr(reward_fn, "__name__", type(reward_fn).__name__)
        return user_callable(reward_fn, f"reward_fn {name}"), {"reward": name, "reward_precision": "callable"}
    if cfg.reward == RANDOM_REWARD:  # the control arm: what the training dynamics give alone
        return RandomReward(cfg.seed), {"reward": RANDOM_REWARD, "reward_precision": "null",
                                        "reward_backend": RandomReward(cfg.seed).meta["backend"]}
    if not cfg.reward:
        raise ConfigError(["reward is required: a reward run folder (edgerlhf reward ...), a quantized RM folder, "
                           "or (Python API) reward_fn=callable"])
    rm = load_reward_as_stored(cfg.reward, cfg.reward_precision, device=str(device), batch_size=cfg.rollout_batch_size,
                               ensemble=cfg.ensemble, uwo_lambda=cfg.uwo_lambda, layout=cfg.ensemble_layout)
    info = {"reward": str(cfg.reward), "reward_precision": rm.meta.get("precision", cfg.reward_precision),
            "reward_backend": rm.meta.get("backend", "")}
    if "ensemble" in rm.meta:  # an ensemble's members, how they were combined and laid out
        info.update({k: rm.meta[k] for k in ("ensemble", "ensemble_members", "ensemble_layout") if k in rm.meta})
        if rm.meta["ensemble"] == "uwo":
            info["uwo_lambda"] = cfg.uwo_lambda
    return rm, info


# -- 1 load ---------------------------------------------------------------------------------------------

def _load(cfg: OnlineRLConfig, algo: Algorithm, inputs: Inputs, device, dtype, run_dir: RunDir,
          mem: PeakMemory) -> Session:
    """The roles on one base (the learned RM sharing its untouched weights), the optimizer and schedule over the
    run's optimizer steps, the starting batch sizes."""
    t_load = time.perf_counter()
    roles = Roles(cfg, dtype=dtype, device=device, values=algo.needs_values, reference=algo.needs_reference)
    shared_mb = 0.0
    if hasattr(inputs.reward, "model"):  # a learned RM: its untouched base weights (the embedding) are the policy's
        shared_mb = share_identical_weights(inputs.reward.model, roles.policy) / 2**20
    release_free_memory()
    t_load = time.perf_counter() - t_load
    per_opt, ws = _per_optimizer_step(cfg), world()[1]
    broadcast_params(roles.trainable)  # every process starts from rank 0's values
    holder = torch.nn.Module()
    holder.params = torch.nn.ParameterList(roles.trainable)
    opt_steps = cfg.steps * algo.update_epochs * (cfg.num_rollouts_per_step // per_opt)
    optimizer, scheduler = make_optimizer(holder, cfg, opt_steps)
    # per process: the generate / forward chunk, and the update's micro-batch (at most its share of a step)
    sizes = Sizes(rollout_batch_size=cfg.rollout_batch_size, mini_batch_size=min(cfg.mini_batch_size, per_opt // ws))
    return Session(cfg, algo, inputs, roles, optimizer, scheduler, sizes, run_dir, mem, device, dtype, t_load,
                   n_trainable=sum(p.numel() for p in roles.trainable), shared_mb=shared_mb)


# -- 4 header -------------------------------------------------------------------------------------------

def _header(s: Session) -> str:
    cfg, algo, info = s.cfg, s.algo, s.inputs.reward_info
    value_txt = f"value={cfg.value_model}, " if algo.needs_values else ""
    group_txt = f" ({algo.samples_per_prompt} per prompt)" if algo.samples_per_prompt > 1 else ""
    return (f"[{s.name}] {cfg.policy or cfg.model} on {s.device} ({str(s.dtype).removeprefix('torch.')}), "
            f"layout={cfg.layout}, {value_txt}base={cfg.base_precision}, "
            f"reference={'on' if algo.needs_reference else 'off'}; {s.n_trainable:,} trainable parameters; "
            f"reward: {info['reward']} ({info['reward_precision']}"
            + (f", {info['ensemble']} of {info['ensemble_members']} members" if "ensemble" in info else "") + "); "
            f"{cfg.steps} steps x {cfg.num_rollouts_per_step} episodes{group_txt}")


# -- 5 the steps ----------------------------------------------------------------------------------------

def _steps(s: Session) -> None:
    """Steps ``s.start ..``: a checkpoint every ``save_steps`` and on Ctrl-C / SIGTERM (every process stops at the
    same step), a stop after ``max_bad_steps`` NaN/inf steps in a row."""
    cfg, name = s.cfg, s.name
    bar = tqdm(range(s.start, cfg.steps), desc=name, disable=not cfg.progress, unit="step", dynamic_ncols=True,
               initial=s.start, total=cfg.steps)
    with Interrupt(name) as interrupt:
        for step in bar:
            st = _one_step(s, step)
            bar.set_postfix(**_postfix(_record(s, st, step)))
            if s.counters.bad_in_row >= cfg.max_bad_steps:
                raise FloatingPointError(
                    f"NaN/inf in rewards, loss or gradients for {s.counters.bad_in_row} steps in a row "
                    f"(step {step + 1}); "
                    "each update was skipped, so no weight was ever updated with them and the last checkpoint is "
                    "intact. Lower learning_rate, or check the reward model / reward_fn outputs.")
            if cfg.save_steps and (step + 1) % cfg.save_steps == 0 and not st.bad:
                checkpoint(s, step + 1)
            if cfg.overopt_warning > 0 and _overopt(s, step) and cfg.stop_on_overopt:
                break
            if any_process(interrupt.requested):  # all stop at the same step
                path = checkpoint(s, step + 1)
                say(f"[{name}] checkpoint written: {path}; continue with: edgerlhf {name} resume={s.run_dir.path}")
                raise KeyboardInterrupt
    bar.close()


def _overopt(s: Session, step: int) -> bool:
    """The over-optimisation warning (``rl.overopt``) over the members' disagreement logged so far: when it fires at
    this step, a checkpoint kept apart (``overopt/step-N``, never rotated away; resumable), the event logged and the
    run flagged. True when it fired at this step."""
    cfg = s.cfg
    w = overopt_warning([r.get("objective/ensemble_std", math.nan) for r in s.history], cfg.overopt_warning,
                        cfg.overopt_window, cfg.overopt_patience)
    if w is None or w.step != step + 1:
        return False
    path = checkpoint(s, step + 1)
    kept = s.run_dir.path / "overopt" / path.name
    if is_main():
        kept.parent.mkdir(exist_ok=True)
        shutil.copytree(path, kept, dirs_exist_ok=True)
    last = s.history[-1]
    s.overopt = {"overopt/step": w.step, "overopt/ratio": w.ratio, "overopt/baseline": w.baseline,
                 "overopt/smoothed": w.smoothed, "overopt/kl": last.get("objective/kl", math.nan),
                 "overopt/mean_length": last.get("val/mean_length", math.nan),
                 "overopt/mean_length_first": s.history[0].get("val/mean_length", math.nan),
                 "overopt/stopped": bool(cfg.stop_on_overopt), "overopt/checkpoint": str(kept)}
    s.run_dir.log({k: v for k, v in s.overopt.items() if isinstance(v, (int, float))}, step=step + 1)
    say(f"\n[{s.name}] over-optimisation warning at step {w.step}: the members' disagreement "
        f"(objective/ensemble_std, mean of {cfg.overopt_window} steps) is {w.ratio:.2f}x its first "
        f"{cfg.overopt_window} steps' ({w.smoothed:.3f} vs {w.baseline:.3f}); KL {s.overopt['overopt/kl']:.2f}, "
        f"mean length {s.overopt['overopt/mean_length']:.1f} tokens. Checkpoint kept: {kept}"
        + ("; stopping (stop_on_overopt=true)" if cfg.stop_on_overopt else "; going on (stop_on_overopt=false)"))
    return True


def _one_step(s: Session, step: int) -> StepResult:
    """Step ``step`` on this process's share of the step's episodes (the group size is the algorithm's)."""
    rank, ws = world()
    episodes = episodes_for_step(s.inputs.prompts, step, s.cfg, s.algo.samples_per_prompt)  # the whole step's
    share = len(episodes) // ws
    return online_step(s.roles, s.tok, s.algo, s.inputs.reward, s.inputs.gold, shard(episodes, rank, ws), s.cfg,
                       s.optimizer, s.scheduler, s.sizes, step=step, offset=rank * share,
                       prompt_len=max(len(encode_prompt(s.tok, p)) for p in episodes) if ws > 1 else 0,
                       monitor=s.inputs.monitor)


def _record(s: Session, st: StepResult, step: int) -> dict:
    """Count the step, log its metrics (and every ``sample_every`` steps its sample); returns the metrics."""
    c = s.counters
    c.bad_in_row = c.bad_in_row + 1 if st.bad else 0
    c.bad_steps += int(st.bad)
    c.skipped_updates += st.skipped
    c.episodes += s.cfg.num_rollouts_per_step
    metrics = {**st.metrics, "train/skipped_updates": c.skipped_updates, "train/episodes": c.episodes,
               **s.mem.as_metrics()}
    s.run_dir.log(metrics, step=step + 1)
    s.history.append(metrics)
    if (step % s.cfg.sample_every) == 0:
        s.run_dir.log_text("sample/rollout", st.sample, step + 1)
    return metrics


def _postfix(metrics: dict) -> dict:
    """The progress bar's few numbers."""
    post = {"score": f"{metrics['objective/scores']:+.3f}"}
    if "objective/gold" in metrics:
        post["gold"] = f"{metrics['objective/gold']:+.3f}"
    if "objective/kl" in metrics:
        post["kl"] = f"{metrics['objective/kl']:.2f}"
    return post
