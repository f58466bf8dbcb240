"""LoRA adapters (PEFT) shared by every trainable stage, and reading a stage's artifact back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from edgerlhf.models.loading import load_causal_lm, load_tokenizer
from edgerlhf.runfolder import ARTIFACT_META, find_artifact, read_artifact_meta  # noqa: F401 (re-exported: artifacts are read here too)


def _block_linear_names(model) -> list[str]:
    """Names of the linear layers inside the transformer blocks ('all-linear' spelled out)."""
    names = set()
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in name:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def lora_config(cfg, task_type: str, model=None):
    from peft import LoraConfig  # noqa: PLC0415 - peft loads only where an adapter is built

    target = "all-linear" if list(cfg.target_modules) == ["all-linear"] else list(cfg.target_modules)
    extra = {}
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if getattr(cfg, "lora_layers", 0) and n_layers:
        k = min(cfg.lora_layers, n_layers)
        extra = {"layers_to_transform": list(range(n_layers - k, n_layers)), "layers_pattern": "layers"}
        if target == "all-linear":  # peft wants explicit names with layers_to_transform
            target = _block_linear_names(model)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=target, task_type=task_type, bias="none", **extra)


def apply_lora(model, cfg, task_type: str = "CAUSAL_LM"):
    """Wrap ``model`` with a fresh LoRA adapter; only adapter weights (and, for SEQ_CLS, the score head)
    stay trainable."""
    from peft import get_peft_model  # noqa: PLC0415 - peft loads only where an adapter is built

    return get_peft_model(model, lora_config(cfg, task_type, model))


def enable_gradient_checkpointing(model, input_grads: bool = True) -> None:
    """Checkpointing that works with frozen base weights.

    The classic failure: reentrant checkpointing over a frozen embedding output has no input that
    requires grad, so the LoRA weights inside get no gradient and are saved untrained. Non-reentrant
    checkpointing does not have this problem; ``enable_input_require_grads`` makes the reentrant
    variant safe too, should a model force it. ``input_grads=False`` skips that: a caller that feeds the
    blocks from cached hidden states (frozen-trunk caching) would otherwise pull the embedding into the graph.
    """
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name warns)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if input_grads and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    if hasattr(model, "config"):
        model.config.use_cache = False


def count_params(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def write_artifact_meta(path: Path, **meta) -> None:
    (Path(path) / ARTIFACT_META).write_text(json.dumps(meta, indent=2) + "\n")


def fill_policy_artifact(folder: Path, model, tok, *, stage: str, seed: int, model_name: str, sft_policy: str = "",
                         **meta) -> None:
    """Write a policy trained as a LoRA adapter on a (possibly SFT-merged) base, self-contained: the adapter
    "default" at the folder's root (PEFT's layout), the tokenizer, the SFT adapter it started from under
    ``sft/`` (so :func:`load_policy` can rebuild the base), and the metadata. Online RL and DPO both write
    their policies with it; ``edgerlhf eval``, export and chat read them alike."""
    model.save_pretrained(folder, selected_adapters=["default"], safe_serialization=True)
    tok.save_pretrained(folder)
    sft = None
    if sft_policy:
        src = find_artifact(sft_policy)
        shutil.copytree(src, Path(folder) / "sft")
        sft = read_artifact_meta(src)
    write_artifact_meta(folder, stage=stage, kind="lora", base_model=(sft or {}).get("base_model", model_name),
                        seed=seed, sft="sft" if sft_policy else None, **{"use_chat_template": True, **meta})


def load_policy(path: str | Path, *, dtype: torch.dtype = torch.float32, device="cpu", merge: bool = True):
    """A trained SFT/PPO policy: base model + adapter (merged by default: faster, and it becomes the new
    base that later stages add their own adapter to). Returns (model, tokenizer, meta)."""
    from peft import PeftModel  # noqa: PLC0415 - peft loads only where a trained adapter is read

    art = find_artifact(path)
    meta = read_artifact_meta(art)
    tok = load_tokenizer(meta["base_model"], meta.get("use_chat_template", True))  # formatted as it was trained
    if meta.get("kind") == "full":
        from transformers import AutoModelForCausalLM  # noqa: PLC0415 - transformers is heavy; only a full-weights artifact

        model = AutoModelForCausalLM.from_pretrained(art, dtype=dtype)
    elif meta.get("sft"):  # a PPO adapter on top of the SFT policy it started from (merged first)
        base, _, _ = load_policy(art / meta["sft"], dtype=dtype)
        model = PeftModel.from_pretrained(base, art)
        if merge:
            model = model.merge_and_unload()
    else:
        base = load_causal_lm(meta["base_model"], dtype=dtype, seed=meta.get("seed", 0))
        model = PeftModel.from_pretrained(base, art)
        if merge:
            model = model.merge_and_unload()
    return model.to(device), tok, meta
