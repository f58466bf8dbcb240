"""Pipeline stages: one module per stage, each ``run(cfg) -> run folder`` on one skeleton (``skeleton.py``:
launch, seed, device, dtype, run folder, memory probe, failure). The online-RL stages (ppo, grpo, rloo, ...) are one
engine, the package ``online/``, running the algorithm their config names. Which module runs which stage is
:mod:`edgerlhf.registry`'s table."""
