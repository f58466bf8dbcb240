"""Reward-model ensembles, pure math: per-member normalisation, the aggregations of Coste et al. 2023 (mean, worst
case, uncertainty-weighted), the members' disagreement, and the weight average of WARM (Ramé et al. 2024).

Scores come as a ``[K, n]`` tensor: K members' scores of the same n responses."""

from __future__ import annotations

import torch

AGGREGATIONS = ("mean", "min", "uwo")


def normalise(scores: torch.Tensor, means, stds) -> torch.Tensor:
    """Each member's scores minus its mean, over its standard deviation (both measured on its training pairs, as
    Coste et al. normalise members before aggregating): members of different scale then weigh the same."""
    m = torch.as_tensor(means, dtype=scores.dtype).reshape(-1, 1)
    s = torch.as_tensor(stds, dtype=scores.dtype).reshape(-1, 1)
    if (s <= 0).any():
        raise ValueError(f"member standard deviations must be positive, got {s.flatten().tolist()}")
    return (scores - m) / s


def aggregate(z: torch.Tensor, how: str = "mean", uwo_lambda: float = 0.5) -> torch.Tensor:
    """One score per response from K normalised members ``z`` [K, n]: ``mean``; ``min`` (worst-case optimisation,
    WCO); ``uwo`` (uncertainty-weighted optimisation: mean - lambda x the members' variance, population variance as
    in Coste et al.)."""
    if z.dim() != 2 or z.shape[0] < 1:
        raise ValueError(f"scores must be [members, responses], got shape {tuple(z.shape)}")
    if how == "mean":
        return z.mean(0)
    if how == "min":
        return z.min(0).values
    if how == "uwo":
        if uwo_lambda < 0:
            raise ValueError(f"uwo_lambda={uwo_lambda} must be >= 0")
        return z.mean(0) - uwo_lambda * z.var(0, unbiased=False)
    raise ValueError(f"ensemble aggregation {how!r}: use one of {', '.join(AGGREGATIONS)}")


def spread(z: torch.Tensor) -> torch.Tensor:
    """The members' disagreement on each response: the standard deviation over members (population), [n]."""
    return z.std(0, unbiased=False)


def agreement(scores: torch.Tensor) -> torch.Tensor:
    """[K, K] share of response pairs (i, j), i < j, that two members order the same way (ties count half):
    pairwise ranking agreement of the members on common responses."""
    k, n = scores.shape
    if n < 2:
        return torch.ones(k, k)
    iu = torch.triu_indices(n, n, offset=1)
    d = torch.sign(scores[:, iu[0]] - scores[:, iu[1]])  # [K, pairs]
    same = (d.unsqueeze(1) * d.unsqueeze(0))  # [K, K, pairs]: 1 same order, -1 opposite, 0 a tie
    return ((same + 1) / 2).mean(-1)


def weight_average(states) -> dict[str, torch.Tensor]:
    """The parameter-wise mean of K state dicts with the same keys and shapes (an iterable, consumed one at a time:
    one model plus an fp32 running sum in memory). For merged LoRA members on one base, W + mean_k(B_k A_k x
    scaling): the average of the deltas as products, which no single rank-r LoRA holds, and the average score head:
    WARM. Non-float tensors (buffers of integers) must agree and are kept."""
    acc: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] = {}
    k = 0
    for i, s in enumerate(states):
        if i == 0:
            first = {n: (t.new_empty(t.shape, device="meta") if t.is_floating_point() else t.clone())
                     for n, t in s.items()}  # shapes and dtypes only: member 0's weights are not kept
            acc = {n: t.detach().float().clone() for n, t in s.items() if t.is_floating_point()}
        else:
            if set(s) != set(first):
                raise ValueError(f"member {i} has different parameters than member 0 "
                                 f"({sorted(set(first) ^ set(s))[:3]}): members must share one architecture")
            for n, t in s.items():
                if t.shape != first[n].shape:
                    raise ValueError(f"member {i}: {n} has shape {tuple(t.shape)}, member 0 {tuple(first[n].shape)}")
                if n in acc:
                    acc[n] += t.detach().float()
                elif not torch.equal(t, first[n]):
                    raise ValueError(f"member {i}: the non-float tensor {n} differs from member 0's")
        k = i + 1
    if k == 0:
        raise ValueError("weight average of no models")
    return {n: (acc[n] / k).to(first[n].dtype) if n in acc else first[n] for n in first}
