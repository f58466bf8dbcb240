"""Data-parallel pieces of online RL whose results must not depend on the world size (issue 16): each rank's
share of a step's episodes, each rank's seed, and the statistics that span ranks (whitening, token counts) computed
from sums all-reduced over the process group. Pure functions of tensors and (rank, world size); the only
collective is :func:`global_sum`, a no-op in one process, so every function here runs unchanged on one device.

Why the statistics are rebuilt from sums rather than gathered: whitening needs the mean and the variance over every
episode of the step; the sums (count, sum, sum of squares) are three numbers per rank, the same arithmetic as
:func:`edgerlhf.rl.ppo_math.whiten` on the concatenated batch, without moving the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# a large prime stride: ranks' seeds never collide with the next run seeds users pick (0, 1, 2, 42, ...)
_SEED_STRIDE = 1_000_003


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when none is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``'s sampling: rank 0 keeps the run seed (one process is exactly the single-device run),
    the others are spread by a prime stride."""
    return seed + _SEED_STRIDE * rank


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """``rank``'s contiguous share of one step's items. The step's items are decided by the step alone (the data
    position), so the union over ranks is the same batch at any world size and a resume is exact at any world
    size. The count must divide by the world size (an error naming the fix otherwise)."""
    n = len(items)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    if n % world_size:
        raise ValueError(f"{n} items per step do not divide among {world_size} processes; make the per-step count "
                         f"(num_rollouts_per_step) a multiple of {world_size}")
    k = n // world_size
    return list(items[rank * k:(rank + 1) * k])


def global_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over every rank (a copy; ``t`` itself is left alone); ``t`` in one process."""
    import torch.distributed as dist

    out = t.detach().clone()
    if world()[1] > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def global_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
                  reduce=global_sum) -> torch.Tensor:
    """:func:`~edgerlhf.rl.ppo_math.whiten` over the masked positions of every rank's ``x``: the mean and the
    unbiased variance from the all-reduced count, sum and sum of squares (so each rank's result equals its rows of
    the single-process whitening of the concatenated batch). Masked positions come back as 0."""
    m = mask.to(x.dtype)
    stats = reduce(torch.stack([m.sum(), (x * m).sum(), (x * x * m).sum()]).double())
    n, s1, s2 = stats[0], stats[1], stats[2]
    if n < 2:
        raise ValueError("global_whiten: need at least 2 unmasked values over all ranks for an unbiased variance")
    mean = s1 / n
    var = (s2 - n * mean * mean).clamp(min=0) / (n - 1)
    mean, var = mean.to(x.dtype), var.to(x.dtype)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def global_count(mask: torch.Tensor, reduce=global_sum) -> torch.Tensor:
    """The number of unmasked positions over every rank (e.g. the tokens of an optimizer step, which the DAPO loss
    divides by): each rank divides its own sum by it, and the all-reduced gradient equals one process's."""
    return reduce(mask.sum().double().reshape(1))[0]
