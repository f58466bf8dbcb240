"""The one rule every consumer of a stored reward model follows (online RL, best-of-n, eval, rm-eval, the gold,
serving): a single RM at the precision asked (as stored when it has a precision of its own), or an ensemble served
by its aggregation (``rewards.ensemble``)."""

from __future__ import annotations

from pathlib import Path

from edgerlhf.config.refs import check_ensemble, parse_reward_spec
from edgerlhf.rewards.ensemble import EnsembleReward, load_merged, load_shared, load_warm, member_dirs
from edgerlhf.rewards.learned import RewardModel, load_reward_model, stores_own_precision
from edgerlhf.runfolder import find_artifact, read_artifact_meta

__all__ = ["load_reward", "load_reward_as_stored", "load_reward_spec"]


def load_reward(path: str | Path, precision: str | None = None, *, device: str = "cpu", batch_size: int = 32,
                ensemble: str = "auto", uwo_lambda: float = 0.5, layout: str = "shared"
                ) -> RewardModel | EnsembleReward:
    """A stored RM as a scorer ``rm(prompts, responses) -> list[float]``. A single RM: at ``precision`` (see
    :func:`edgerlhf.rewards.learned.load_reward_model`). An ensemble: ``ensemble`` mean | min | uwo (the members in
    ``layout`` shared | merged, at ``precision``), warm (one weight-averaged RM), member-N; auto = mean. Bad
    settings fail before any model loads."""
    art = find_artifact(path)
    errs = check_ensemble("reward", str(path), ensemble, uwo_lambda, layout, [precision] if precision else [])
    if errs:
        raise ValueError("; ".join(errs))
    meta = read_artifact_meta(art)
    if meta.get("kind") != "ensemble":
        return load_reward_model(path, precision, device=device, batch_size=batch_size)
    how = "mean" if ensemble == "auto" else ensemble
    prec = precision or "fp32"
    if how == "warm":
        return load_warm(art, meta, prec, device=device, batch_size=batch_size)
    if how.startswith("member-"):
        rm = load_reward_model(member_dirs(art, meta)[int(how[7:])], prec, device=device, batch_size=batch_size)
        rm.meta = {**rm.meta, "ensemble": how, "ensemble_members": len(meta["members"])}
        return rm
    loader = load_shared if layout == "shared" else load_merged
    return loader(art, meta, prec, device=device, batch_size=batch_size, how=how, uwo_lambda=uwo_lambda)


def load_reward_as_stored(path: str | Path, precision: str | None = None, *, device: str = "cpu",
                          batch_size: int = 32, **ensemble) -> RewardModel | EnsembleReward:
    """At ``precision`` (fp32 when None) when it is a trained fp32 RM or ensemble, as stored when it has a precision
    of its own (:func:`stores_own_precision`); ``ensemble``: :func:`load_reward`'s ensemble settings."""
    own = stores_own_precision(read_artifact_meta(find_artifact(path)))
    return load_reward(path, None if own else precision, device=device, batch_size=batch_size, **ensemble)


def load_reward_spec(spec: str, *, device: str = "cpu", **ensemble) -> RewardModel | EnsembleReward:
    """``RM[:precision]`` (best-of-n at serving time) as a scorer: the spec checked (``config.refs.parse_reward_spec``:
    a clear error before any model loads), then the one stored-RM rule (:func:`load_reward_as_stored`)."""
    path, precision = parse_reward_spec(spec)
    return load_reward_as_stored(path, precision, device=device, **ensemble)
