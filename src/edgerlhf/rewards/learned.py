"""The learned reward model: a one-output sequence-classification head on the base model.

The score head is trained *and saved* with the LoRA adapter (PEFT's ``modules_to_save``); a known
failure in this field is an RM saved without its head, which then reloads with a fresh random head and
scores noise — :func:`load_reward_model` refuses such an artifact.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from edgerlhf.data.formatting import encode_pair
from edgerlhf.models import precision as P
from edgerlhf.models.generation import length_batches, right_pad
from edgerlhf.models.loading import load_tokenizer, reload_through_disk, resolve_model_path, tiny_config
from edgerlhf.models.logprobs import common_prefix, shared_prefix_group_hidden
from edgerlhf.models.precision import quiet_bnb
from edgerlhf.runfolder import find_artifact, read_artifact_meta
from edgerlhf.tracking.memory import release_free_memory


def load_seq_cls(model: str, dtype: torch.dtype = torch.float32, seed: int = 0, base_precision: str = "fp32",
                 device="cpu", chat_template: bool = True, base_seed: int | None = None):
    """The base model with a fresh one-output score head drawn from ``seed`` (``tiny``'s random body is built from
    ``base_seed``, default ``seed``: an ensemble's members share the body of its first seed, as they share a
    pretrained one).

    ``base_precision`` int8 / int4 loads the body quantised through bitsandbytes (QLoRA-style training:
    the LoRA adapter and the score head stay in floating point)."""
    from transformers import AutoModelForSequenceClassification  # noqa: PLC0415 - transformers: imported on the first model load, so the CLI starts fast
    from transformers.utils import logging as hf_logging  # noqa: PLC0415 - as above

    tok = load_tokenizer(model, chat_template)
    torch.manual_seed(seed if base_seed is None or model != "tiny" else base_seed)  # the fresh score head's init
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists score.weight as "newly initialized": by design
    try:
        if model == "tiny":
            m = AutoModelForSequenceClassification.from_config(tiny_config(len(tok), num_labels=1), dtype=dtype)
        else:
            m = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(model), num_labels=1, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    if model == "tiny" and base_seed is not None and base_seed != seed:  # the body from base_seed, the head from seed
        torch.manual_seed(seed)
        with torch.no_grad():
            torch.nn.init.normal_(m.score.weight, std=m.config.initializer_range)
    # the head pools the last non-pad token; the pad id must be known to find it
    m.config.pad_token_id = tok.pad_token_id
    if base_precision != "fp32":
        score = m.score.weight.detach().clone()
        m, _ = to_precision(m, tok, f"{base_precision}:bnb", device)  # QLoRA: bitsandbytes has the backward
        with torch.no_grad():  # keep the seeded head exactly (it stays in high precision)
            m.score.weight.copy_(score.to(m.score.weight.dtype))
    return m, tok


def encode_for_rm(tok, prompts, responses, max_length: int, use_chat_template: bool = True) -> list[list[int]]:
    return [encode_pair(tok, p, r, max_length, use_chat_template)[0] for p, r in zip(prompts, responses)]


def rewards_of(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask).logits[:, 0].float()


def last_scored(seq: list[int], pad_id: int) -> int:
    """The position whose score the head reports: transformers' sequence-classification models pool the last
    token that is not the pad id (so with pad = EOS a trailing EOS is not it)."""
    for j in range(len(seq) - 1, -1, -1):
        if seq[j] != pad_id:
            return j
    return 0


def pair_rewards(model, chosen: list[list[int]], rejected: list[list[int]], pad_id: int,
                 device=None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rewards of each (chosen, rejected) pair with their shared prefix (the prompt, usually most of the
    tokens) run once (:func:`group_rewards` with groups of two). Exact for a causal model (the same attention over
    the same keys, up to rounding), and differentiable (training). None when a pair shares no token (nothing to
    save; score them apart). Measured in ``bench/shared_prefix.py``."""
    r = group_rewards(model, [[a, b] for a, b in zip(chosen, rejected)], pad_id, device)
    return None if r is None else (r[0::2], r[1::2])


def group_rewards(model, groups: list[list[list[int]]], pad_id: int, device=None) -> torch.Tensor | None:
    """Rewards of every member of each group (a prompt's candidates), flattened in the groups' order, with the
    tokens a group's members share (the prompt) run once per group: one pass over the prefixes keeps its KV
    cache, copied for each member, then the continuations. The prefix stops before any member's scored token, so
    every scored token is in a continuation. None when a group shares no token (score its members apart)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = base.model, base.score
    last = [last_scored(s, pad_id) for g in groups for s in g]
    cut, i = [], 0
    for g in groups:
        cut.append(min(min(common_prefix(g[0], s) for s in g), *last[i:i + len(g)]))
        i += len(g)
    if min(cut) < 1:
        return None
    device = device or next(model.parameters()).device
    h = shared_prefix_group_hidden(body, base.config, groups, cut, pad_id, device)
    if h is None:  # e.g. gradient checkpointing in training turns the cache off
        raise RuntimeError("shared-prefix scoring needs the KV cache, which the model turned off "
                           "(gradient checkpointing?): score the sequences apart")
    at = torch.tensor([j - k for j, k in zip(last, (k for g, k in zip(groups, cut) for _ in g))], device=device)
    return head(h[torch.arange(len(last), device=device), at]).float()[:, 0]


class RewardModel:
    """``rm(prompts, responses) -> list[float]``, with the same template used in training."""

    def __init__(self, model, tokenizer, meta: dict, device="cpu", batch_size: int = 32):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = int(meta.get("max_length", 512))
        # padded tokens per forward: on a CPU small length-sorted batches waste little on padding and keep the
        # matmuls large enough (measured, 32 rollouts of the built-in task, fp32 RM, 2-core AVX2: 7.0 s in one
        # batch of 32, 4.5-5.0 s sorted in batches of 8); a GPU wants large batches
        self.tokens_per_batch = 512 if self.device.type == "cpu" else 16384
        self.shared_prefix = True  # score_pairs: a pair's shared prompt once (False: the baseline, apart)

    @torch.no_grad()
    def score_ids(self, seqs: list[list[int]]) -> list[float]:
        was_training = self.model.training
        self.model.eval()  # no dropout while scoring, also when called mid-training
        out = [0.0] * len(seqs)
        with quiet_bnb():
            for idx in length_batches([len(s) for s in seqs], self.batch_size, self.tokens_per_batch):
                ids, mask = right_pad([seqs[j] for j in idx], self.tokenizer.pad_token_id)
                for j, r in zip(idx, rewards_of(self.model, ids.to(self.device), mask.to(self.device)).tolist()):
                    out[j] = r
        self.model.train(was_training)
        return out

    @torch.no_grad()
    def score_pairs(self, chosen: list[list[int]], rejected: list[list[int]]) -> tuple[list[float], list[float]]:
        """Scores of each (chosen, rejected) pair of token lists, the prompt they share computed once per pair
        (:func:`pair_rewards`) in length-sorted batches; ``shared_prefix=False`` scores all sequences apart."""
        if not self.shared_prefix:
            s = self.score_ids(list(chosen) + list(rejected))
            return s[:len(chosen)], s[len(chosen):]
        was_training = self.model.training
        self.model.eval()
        rc, rr = [0.0] * len(chosen), [0.0] * len(chosen)
        lengths = [len(a) + len(b) for a, b in zip(chosen, rejected)]
        with quiet_bnb():
            for idx in length_batches(lengths, self.batch_size, 2 * self.tokens_per_batch):
                got = pair_rewards(self.model, [chosen[j] for j in idx], [rejected[j] for j in idx],
                                   self.tokenizer.pad_token_id, self.device)
                if got is None:
                    s = self.score_ids([chosen[j] for j in idx] + [rejected[j] for j in idx])
                    got = (s[:len(idx)], s[len(idx):])
                for j, c, r in zip(idx, *(x.tolist() if torch.is_tensor(x) else x for x in got)):
                    rc[j], rr[j] = c, r
        self.model.train(was_training)
        return rc, rr

    @torch.no_grad()
    def score_groups(self, groups: list[list[list[int]]]) -> list[list[float]]:
        """Scores of each group's token lists (a prompt's candidates), the prefix they share computed once per
        group (:func:`group_rewards`) in length-sorted batches of whole groups; ``shared_prefix=False`` scores every
        sequence apart."""
        flat = [s for g in groups for s in g]
        starts = [0]
        for g in groups:
            starts.append(starts[-1] + len(g))
        if not self.shared_prefix:
            s = self.score_ids(flat)
            return [s[a:b] for a, b in zip(starts, starts[1:])]
        was_training = self.model.training
        self.model.eval()
        out = [0.0] * len(flat)
        per_batch = max(1, self.batch_size // max(len(g) for g in groups))
        lengths = [sum(len(s) for s in g) for g in groups]
        with quiet_bnb():
            for idx in length_batches(lengths, per_batch, 2 * self.tokens_per_batch):
                got = group_rewards(self.model, [groups[j] for j in idx], self.tokenizer.pad_token_id, self.device)
                got = got.tolist() if got is not None else self.score_ids([s for j in idx for s in groups[j]])
                k = 0
                for j in idx:
                    for m in range(starts[j], starts[j + 1]):
                        out[m] = got[k]
                        k += 1
        self.model.train(was_training)
        return [out[a:b] for a, b in zip(starts, starts[1:])]

    def __call__(self, prompts, responses) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_ids(encode_for_rm(self.tokenizer, prompts, responses, self.max_length))


def merged_fp32(art: Path, meta: dict):
    from peft import PeftModel  # noqa: PLC0415 - peft: loaded where an adapter is read

    base, tok = load_seq_cls(meta["base_model"], seed=meta.get("seed", 0),
                             chat_template=meta.get("use_chat_template", True), base_seed=meta.get("base_seed"))
    return PeftModel.from_pretrained(base, art).merge_and_unload(), tok


def _qlora(art: Path, meta: dict, device):
    """An RM whose LoRA was trained on a quantised body: the same body, adapter kept unmerged."""
    from peft import PeftModel  # noqa: PLC0415 - peft: loaded where an adapter is read

    base, tok = load_seq_cls(meta["base_model"], seed=meta.get("seed", 0), base_precision=meta["base_precision"],
                             device=device, chat_template=meta.get("use_chat_template", True))
    return PeftModel.from_pretrained(base, art).eval(), tok


def to_precision(model, tok, precision: str, device="cpu"):
    """A merged fp32 RM at ``precision``, re-loaded from a temporary copy exactly as a saved quantized RM
    reloads (so a live and a reloaded RM score identically; ``model.to(bf16)`` would also cast the rotary
    ``inv_freq`` buffer, which ``from_pretrained`` keeps in fp32). int8/int4 go through bitsandbytes, which
    quantises at load time. Returns (model, info).

    For any precision but fp32 the given model is consumed: its weights are freed once the copy is on disk,
    so the fp32 RM and the converted one are never in memory together."""
    from transformers import AutoModelForSequenceClassification  # noqa: PLC0415 - transformers: imported on the first model load, so the CLI starts fast

    base, backend = P.split_precision(precision, device)
    info = {"precision": precision, "compute_dtype": str(P.compute_dtype(base, device)).removeprefix("torch."),
            "high_precision_modules": list(P.HIGH_PRECISION_MODULES) + ["embed_tokens"]}
    if base == "fp32":
        return model.to(device), {**info, "backend": "torch"}
    quant = None if base in P.FLOAT_DTYPES else P.quant_config(base, backend, device)
    with P.quiet_bnb():
        q = reload_through_disk(model, AutoModelForSequenceClassification, "edgerlhf-rm-", quantization_config=quant,
                                dtype=P.compute_dtype(base, device), device_map={"": str(device)})
    q.config.pad_token_id = tok.pad_token_id
    if base in P.FLOAT_DTYPES:
        return q, {**info, "backend": "torch", "high_precision_modules": []}
    names = {"bnb": "bitsandbytes LLM.int8()" if base == "int8" else "bitsandbytes NF4 (double quant)",
             "torchao": "torchao int8 weight-only"}
    label = names[backend]
    if base == "int8" and backend == "bnb" and torch.device(device).type == "cpu":
        label += ", inputs cast to fp16 on CPU"
    return q, {**info, "backend": label}


def load_reward_model(path: str | Path, precision: str | None = None, *, device: str = "cpu",
                      batch_size: int = 32) -> RewardModel:
    """Load a trained RM (a reward run folder, its ``adapter/``, or a quantized RM folder) as a scorer.

    ``precision`` (fp32 | bf16 | fp16 | int8 | int4) converts a trained fp32 RM after merging its LoRA;
    a quantized artifact already has one and loads as stored."""
    if precision is not None:
        P.check_precision(precision)
    art = find_artifact(path)
    meta = read_artifact_meta(art)
    if meta.get("stage") != "reward":
        raise ValueError(f"{art} is a {meta.get('stage')!r} artifact, not a reward model")
    if meta.get("kind") == "ensemble":
        raise ValueError(f"{art} is an ensemble of {len(meta.get('members', []))} reward models: load it with "
                         "edgerlhf.load_reward_model(path, precision, ensemble=mean|min|uwo|warm)")
    if meta.get("kind") == "quantized":
        if precision not in (None, meta["precision"]):
            raise ValueError(f"{art} is stored at {meta['precision']}; load it without precision, or quantize the "
                             f"original RM at {precision}")
        from transformers import AutoModelForSequenceClassification  # noqa: PLC0415 - transformers: imported on the first model load, so the CLI starts fast

        with P.quiet_bnb():
            model = AutoModelForSequenceClassification.from_pretrained(
                art, dtype=P.compute_dtype(meta["precision"].partition(":")[0], device), device_map={"": str(device)})
        tok = load_tokenizer(meta["base_model"], meta.get("use_chat_template", True))
        return RewardModel(model.requires_grad_(False), tok, meta, device, batch_size)
    with safe_open(str(art / "adapter_model.safetensors"), "pt") as f:
        if not any(".score." in k or k.endswith("score.weight") for k in f.keys()):
            raise ValueError(f"{art} holds no trained score head (it would reload with a random head and score "
                             "noise); retrain the reward model with this version of EdgeRLHF")
    if meta.get("base_precision", "fp32") != "fp32":  # way (b): trained through a quantised body
        if precision not in (None, meta["base_precision"]):
            raise ValueError(f"{art} was trained on a {meta['base_precision']} body (QLoRA); load it at that "
                             f"precision (or without precision), not {precision}")
        model, tok = _qlora(art, meta, device)
        kernel = "bitsandbytes LLM.int8()" if meta["base_precision"] == "int8" else "bitsandbytes NF4 (double quant)"
        info = {"precision": meta["base_precision"], "backend": "QLoRA: " + kernel,
                "compute_dtype": str(P.compute_dtype(meta["base_precision"], device)).removeprefix("torch."),
                "high_precision_modules": list(P.HIGH_PRECISION_MODULES) + ["embed_tokens", "lora"]}
        return RewardModel(model.requires_grad_(False), tok, {**meta, **info}, device, batch_size)
    model, tok = merged_fp32(art, meta)
    model, info = to_precision(model, tok, precision or "fp32", device)
    release_free_memory()  # loading and merging left freed blocks in the C heap
    return RewardModel(model.requires_grad_(False), tok, {**meta, **info}, device, batch_size)  # scoring only


def stores_own_precision(meta: dict) -> bool:
    """An RM artifact that has a precision of its own (a quantized RM folder, or one trained on a quantised body,
    QLoRA-style) loads as stored: a precision asked of it would be a second, different conversion."""
    return meta.get("kind") == "quantized" or meta.get("base_precision", "fp32") != "fp32"
