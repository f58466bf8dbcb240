"""The learned reward model: a one-output sequence-classification head on the base model.

The score head is trained *and saved* with the LoRA adapter (PEFT's ``modules_to_save``); a known
failure in this field is an RM saved without its head, which then reloads with a fresh random head and
scores noise — :func:`load_reward_model` refuses such an artifact.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgerlhf.data.formatting import encode_pair


def load_seq_cls(model: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    """The base model with a fresh one-output score head (``tiny`` is built from ``seed``)."""
    from transformers import AutoModelForSequenceClassification

    from edgerlhf.models.loading import load_tokenizer, resolve_model_path, tiny_config

    tok = load_tokenizer(model)
    if model == "tiny":
        torch.manual_seed(seed)
        cfg = tiny_config(len(tok), num_labels=1)
        m = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype)
    else:
        torch.manual_seed(seed)  # the fresh score head's init
        m = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(model), num_labels=1, dtype=dtype)
    # the head pools the last non-pad token; the pad id must be known to find it
    m.config.pad_token_id = tok.pad_token_id
    return m, tok


def encode_for_rm(tok, prompts, responses, max_length: int, use_chat_template: bool = True) -> list[list[int]]:
    return [encode_pair(tok, p, r, max_length, use_chat_template)[0] for p, r in zip(prompts, responses)]


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def rewards_of(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask).logits[:, 0].float()


class RewardModel:
    """``rm(prompts, responses) -> list[float]``, with the same template used in training."""

    def __init__(self, model, tokenizer, meta: dict, device="cpu", batch_size: int = 32):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = int(meta.get("max_length", 512))

    @torch.no_grad()
    def score_ids(self, seqs: list[list[int]]) -> list[float]:
        was_training = self.model.training
        self.model.eval()  # no dropout while scoring, also when called mid-training
        out = []
        for i in range(0, len(seqs), self.batch_size):
            ids, mask = right_pad(seqs[i:i + self.batch_size], self.tokenizer.pad_token_id)
            out += rewards_of(self.model, ids.to(self.device), mask.to(self.device)).tolist()
        self.model.train(was_training)
        return out

    def __call__(self, prompts, responses) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_ids(encode_for_rm(self.tokenizer, prompts, responses, self.max_length))


def load_reward_model(path: str | Path, precision: str | None = None, *, device: str = "cpu",
                      batch_size: int = 32) -> RewardModel:
    """Load a trained RM (a reward run folder or its ``adapter/``) as a scorer. ``precision`` is reserved
    for the precision study (fp32 is what is trained)."""
    from peft import PeftModel
    from safetensors import safe_open

    from edgerlhf.models.adapters import find_artifact, read_artifact_meta

    if precision not in (None, "fp32"):
        raise ValueError(f"precision={precision!r}: only fp32 is available in this version")
    art = find_artifact(path)
    meta = read_artifact_meta(art)
    if meta.get("stage") != "reward":
        raise ValueError(f"{art} is a {meta.get('stage')!r} artifact, not a reward model")
    with safe_open(str(art / "adapter_model.safetensors"), "pt") as f:
        if not any(".score." in k or k.endswith("score.weight") for k in f.keys()):
            raise ValueError(f"{art} holds no trained score head (it would reload with a random head and score "
                             "noise); retrain the reward model with this version of EdgeRLHF")
    base, tok = load_seq_cls(meta["base_model"], seed=meta.get("seed", 0))
    model = PeftModel.from_pretrained(base, art).merge_and_unload()
    return RewardModel(model.to(device), tok, meta, device, batch_size)
