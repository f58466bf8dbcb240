"""The online-RL engine: one loop for every algorithm (PPO, GRPO, RLOO; ``rl/algorithms/``), written for
small memory: one base model serves policy, reference and (PPO's) value (``models/roles.py``); the reward
model is separate, at the precision chosen, or any callable.

Why our own loop: TRL's PPOTrainer left the library in 2026; TRL 1.16's GRPO/RLOO trainers put the reward
model on the policy's device at its own dtype, keep no shared-base layout, and copy each other method by
method. Here an algorithm is only ``advantages()`` and ``loss()`` (and what it needs: values, a reference, its
group size ``samples_per_prompt`` and passes ``update_epochs``); this package is everything else. One step:

    # 1 rollout    prompts (k samples each) -> sampled responses (stop at EOS; a finished row leaves the
    #              batch: models/generation.sample), padded to one rectangle
    # 2 score      learned RM (or callable) and gold scorer on the decoded responses
    # 3 forward    old log-probs, entropy; values and reference log-probs only if the algorithm needs them;
    #              the frozen bottom blocks' output, once, for every later forward of the step
    # 4 advantage  algorithm.advantages(...)
    # 5 update     epochs over shuffled micro-batches, algorithm.loss(...), grad accumulation, NaN guard
    # 6 stats      namespaced metrics and one decoded sample

and around the steps: checkpoints every ``save_steps`` and on Ctrl-C / SIGTERM, exact resume, a stop after
``max_bad_steps`` NaN/inf steps in a row, CUDA OOM halving, the artifact and the summary. Every phase hands the
memory it freed back to the system (``malloc_trim``), so the update's peak does not stack on the rollout's.

    data.py      the prompts; the step's episodes (a function of the step alone)
    rollout.py   1 sampling -> Batch; 3 the no-grad forwards -> Forwards
    update.py    5 the update; the batch sizes CUDA OOM halving adjusts (Sizes)
    step.py      one step, phases 1-6 -> StepResult
    session.py   the typed records a run hands from phase to phase (Inputs, Counters, Session)
    resume.py    checkpoints, exact resume, the Ctrl-C / SIGTERM stop
    finish.py    the held-out gold, the artifact, the summary
    engine.py    run(): set-up, then the run's numbered phases and the step loop
"""

from edgerlhf.stages.online.data import episodes_for_step, load_prompts, prompts_for_step
from edgerlhf.stages.online.engine import run
from edgerlhf.stages.online.resume import resume_base
from edgerlhf.stages.online.rollout import Batch, Forwards, Recorded, rollout, rollout_forwards, widen
from edgerlhf.stages.online.session import Counters, Inputs, Session
from edgerlhf.stages.online.step import RewardFn, StepResult, online_step
from edgerlhf.stages.online.update import Sizes, UpdateStats, update

__all__ = ["Batch", "Counters", "Forwards", "Inputs", "Recorded", "RewardFn", "Session", "Sizes", "StepResult",
           "UpdateStats", "episodes_for_step", "load_prompts", "online_step", "prompts_for_step", "resume_base",
           "rollout", "rollout_forwards", "run", "update", "widen"]
