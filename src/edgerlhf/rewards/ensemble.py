"""Serving a reward-model ensemble (``edgerlhf reward members=K``) at any precision, in two layouts, and WARM.

    shared base   one base at the precision, the K members' LoRA adapters and score heads on it (PEFT adapters,
                  switched per member): about one RM's memory plus K small adapters; the adapters stay in floating
                  point, so at int8 / int4 a member differs from the same member merged and then quantised
    merged        K merged RMs, each converted to the precision exactly as a single RM is: K times the memory
    warm          one RM whose weights are the members' average (Ramé et al. 2024): the merged deltas averaged,
                  i.e. mean_k(B_k A_k), and the average head; one RM's cost at every precision

Members are normalised with the mean and std of their scores on their training pairs (measured at training, in
fp32) and aggregated by ``rl.ensemble`` (mean, min = worst case, uwo = mean - lambda x variance)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from edgerlhf.models import precision as P
from edgerlhf.models.generation import length_batches, right_pad
from edgerlhf.models.parts import only_blocks
from edgerlhf.models.precision import quiet_bnb
from edgerlhf.rewards.learned import (
    RewardModel,
    encode_for_rm,
    last_scored,
    load_seq_cls,
    merged_fp32,
    to_precision,
)
from edgerlhf.rl.ensemble import AGGREGATIONS, aggregate, normalise, spread, weight_average
from edgerlhf.runfolder import read_artifact_meta
from edgerlhf.tracking.memory import release_free_memory


class EnsembleReward:
    """``rm(prompts, responses) -> list[float]``: the K members' scores, each normalised on its training pairs, then
    aggregated (``how``). After each call ``last_spread`` holds the members' disagreement (std over members of the
    normalised scores) per response: the over-optimisation signal ``objective/ensemble_std``. The scoring methods
    of a single :class:`RewardModel` (``score_ids``, ``score_pairs``, ``score_groups``) aggregate the same way;
    ``member_scores_ids`` gives the raw [K, n] scores."""

    def __init__(self, members: list, means: list[float], stds: list[float], how: str = "mean",
                 uwo_lambda: float = 0.5, meta: dict | None = None, switch=None, split: int = 0):
        self.members = members  # RewardModel each (merged), or one RewardModel K times (shared base)
        self.means, self.stds = list(means), list(stds)
        self.how, self.uwo_lambda = how, uwo_lambda
        self.meta = meta or {}
        self.switch = switch  # shared base: switch(i) activates member i's adapter and head
        self.tokenizer = members[0].tokenizer
        self.max_length = members[0].max_length
        self.last_spread: list[float] = []
        # shared base with LoRA in the top blocks only: the blocks below carry no adapter, so they compute the same
        # output for every member; run them once per batch (False: every member runs every block, the baseline)
        self.split = split
        self.share_trunk = split > 0

    def __len__(self) -> int:
        return len(self.members)

    def _each(self, fn) -> list:
        out = []
        for i, m in enumerate(self.members):
            if self.switch is not None:
                self.switch(i)
            out.append(fn(m))
        return out

    def _combine(self, raw: torch.Tensor) -> list[float]:
        z = normalise(raw, self.means, self.stds)
        self.last_spread = spread(z).tolist()
        return aggregate(z, self.how, self.uwo_lambda).tolist()

    def member_scores_ids(self, seqs: list[list[int]]) -> torch.Tensor:
        """The raw scores of every member, [K, n]."""
        if self.share_trunk and self.switch is not None:
            return self._shared_trunk_scores(seqs)
        return torch.tensor(self._each(lambda m: m.score_ids(seqs)), dtype=torch.float32)

    @torch.no_grad()
    def _shared_trunk_scores(self, seqs: list[list[int]]) -> torch.Tensor:
        """Shared base: per length-sorted batch, the adapter-free bottom ``split`` blocks once, then each member's
        top blocks and head from their output. The same numbers as K full passes, to rounding (tested); measured
        in ``bench/ensemble_serving.py``."""
        rm = self.members[0]
        model = rm.model
        base = model.get_base_model()
        body, pad = base.model, self.tokenizer.pad_token_id
        out = torch.zeros(len(self.members), len(seqs))
        with quiet_bnb():
            for idx in length_batches([len(x) for x in seqs], rm.batch_size, rm.tokens_per_batch):
                ids, mask = right_pad([seqs[j] for j in idx], pad)
                ids, mask = ids.to(rm.device), mask.to(rm.device)
                last = torch.tensor([last_scored(seqs[j], pad) for j in idx], device=rm.device)
                with only_blocks(body, 0, self.split, final_norm=False):
                    trunk = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                for i in range(len(self.members)):
                    self.switch(i)
                    with only_blocks(body, self.split, None, final_norm=True):
                        h = body(inputs_embeds=trunk, attention_mask=mask, use_cache=False).last_hidden_state
                    out[i, idx] = base.score(h[torch.arange(len(idx), device=rm.device), last]).float()[:, 0].cpu()
        return out

    def member_score_pairs(self, chosen, rejected) -> torch.Tensor:
        """The raw scores of every member, [K, 2n]: the n chosen, then the n rejected."""
        return torch.tensor([c + r for c, r in self._each(lambda m: m.score_pairs(chosen, rejected))],
                            dtype=torch.float32)

    def rankers(self, raw: torch.Tensor, uwo_lambda: float | None = None) -> dict[str, list[float]]:
        """From the members' raw scores [K, n]: each member alone (``m<i>``) and every aggregation."""
        z = normalise(raw, self.means, self.stds)
        lam = self.uwo_lambda if uwo_lambda is None else uwo_lambda
        return {**{f"m{i}": raw[i].tolist() for i in range(len(raw))},
                **{how: aggregate(z, how, lam).tolist() for how in AGGREGATIONS}}

    def stored_bytes(self) -> dict:
        """Bytes of every stored tensor of the ensemble: the shared base once with its K adapters and heads, or the
        K merged models (``models.precision.stored_bytes``)."""
        total, by = 0, {}
        for m in {id(r.model): r.model for r in self.members}.values():
            b = P.stored_bytes(m)
            total += b["total"]
            for k, v in b["by_dtype"].items():
                by[k] = by.get(k, 0) + v
        return {"total": total, "by_dtype": by}

    def score_ids(self, seqs: list[list[int]]) -> list[float]:
        return self._combine(self.member_scores_ids(seqs))

    def score_pairs(self, chosen, rejected) -> tuple[list[float], list[float]]:
        out = self._combine(self.member_score_pairs(chosen, rejected))
        return out[:len(chosen)], out[len(chosen):]

    def score_groups(self, groups) -> list[list[float]]:
        got = self._each(lambda m: [s for g in m.score_groups(groups) for s in g])
        flat = self._combine(torch.tensor(got, dtype=torch.float32))
        out, k = [], 0
        for g in groups:
            out.append(flat[k:k + len(g)])
            k += len(g)
        return out

    def __call__(self, prompts, responses) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_ids(encode_for_rm(self.tokenizer, prompts, responses, self.max_length,
                                            self.meta.get("use_chat_template", True)))


def member_dirs(art: Path, meta: dict) -> list[Path]:
    return [Path(art) / m["name"] for m in meta["members"]]


def _info(precision: str, device, backend: str, layout: str, how: str, k: int) -> dict:
    base = precision.partition(":")[0]
    return {"precision": precision, "backend": backend, "ensemble_layout": layout, "ensemble": how,
            "ensemble_members": k,
            "compute_dtype": str(P.compute_dtype(base, device)).removeprefix("torch.")}


def load_shared(art: Path, meta: dict, precision: str = "fp32", *, device="cpu", batch_size: int = 32,
                how: str = "mean", uwo_lambda: float = 0.5) -> EnsembleReward:
    """One base at ``precision`` with every member's LoRA adapter and score head on it (PEFT's named adapters)."""
    from peft import PeftModel  # noqa: PLC0415 - peft: loaded where an adapter is read

    base, tok = load_seq_cls(meta["base_model"], seed=meta.get("seed", 0),
                             chat_template=meta.get("use_chat_template", True), base_seed=meta.get("seed", 0))
    base, info = to_precision(base, tok, precision, device)
    dirs = member_dirs(art, meta)
    with quiet_bnb():
        model = PeftModel.from_pretrained(base, dirs[0], adapter_name=meta["members"][0]["name"])
        for d, m in zip(dirs[1:], meta["members"][1:]):
            model.load_adapter(d, adapter_name=m["name"])
    model = model.eval().requires_grad_(False)  # the adapters sit on the base's device (placed by to_precision)
    release_free_memory()
    names = [m["name"] for m in meta["members"]]
    rm = RewardModel(model, tok, meta, device, batch_size)

    def switch(i: int) -> None:
        model.set_adapter(names[i])
        model.requires_grad_(False)  # set_adapter marks the active adapter trainable

    full = {**meta, **_info(precision, device, info["backend"] + " + LoRA adapters (fp32)", "shared", how, len(names)),
            "high_precision_modules": info["high_precision_modules"] + ["lora"]}
    return EnsembleReward([rm] * len(names), [m["norm_mean"] for m in meta["members"]],
                          [m["norm_std"] for m in meta["members"]], how, uwo_lambda, full, switch,
                          split=_adapter_free_blocks(dirs, base))


def _adapter_free_blocks(dirs: list[Path], model) -> int:
    """How many bottom blocks no member's LoRA touches (0: some member adapts them all, or the model has no block
    stack to split)."""
    firsts = []
    for d in dirs:
        layers = json.loads((Path(d) / "adapter_config.json").read_text()).get("layers_to_transform")
        if not layers:
            return 0
        firsts.append(min(layers))
    body = getattr(model, "model", None)
    return min(firsts) if hasattr(body, "layers") and hasattr(body, "norm") else 0


def load_merged(art: Path, meta: dict, precision: str = "fp32", *, device="cpu", batch_size: int = 32,
                how: str = "mean", uwo_lambda: float = 0.5) -> EnsembleReward:
    """K merged RMs, each at ``precision`` (converted exactly as a single RM)."""
    rms = []
    for d in member_dirs(art, meta):
        model, tok = merged_fp32(d, read_artifact_meta(d))
        model, info = to_precision(model, tok, precision, device)
        rms.append(RewardModel(model.requires_grad_(False), tok, meta, device, batch_size))
        release_free_memory()
    full = {**meta, **_info(precision, device, info["backend"], "merged", how, len(rms)),
            "high_precision_modules": info["high_precision_modules"]}
    return EnsembleReward(rms, [m["norm_mean"] for m in meta["members"]], [m["norm_std"] for m in meta["members"]],
                          how, uwo_lambda, full)


def warm_model(art: Path, meta: dict):
    """The WARM RM in fp32: the parameter-wise average of the merged members (one merged member and an fp32 running
    sum in memory at a time). Returns (model, tokenizer)."""
    held = {}

    def states():
        for d in member_dirs(art, meta):
            model, tok = merged_fp32(d, read_artifact_meta(d))
            held["model"], held["tok"] = model, tok  # the last one receives the average
            yield model.state_dict()

    avg = weight_average(states())
    model = held["model"]
    model.load_state_dict(avg)
    return model, held["tok"]


def load_warm(art: Path, meta: dict, precision: str = "fp32", *, device="cpu", batch_size: int = 32) -> RewardModel:
    model, tok = warm_model(art, meta)
    model, info = to_precision(model, tok, precision, device)
    release_free_memory()
    k = len(meta["members"])
    full = {**meta, **info, "ensemble": "warm", "ensemble_members": k, "ensemble_layout": "warm",
            "backend": info["backend"] + f" (WARM: {k} members' weights averaged)"}
    return RewardModel(model.requires_grad_(False), tok, full, device, batch_size)
