"""Export a trained policy: as a plain Hugging Face model folder (LoRA merged), loadable by ``transformers`` with
no EdgeRLHF installed, or as one GGUF file for llama.cpp / Ollama / LM Studio (:mod:`edgerlhf.models.gguf_export`)
with an Ollama Modelfile beside it."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from edgerlhf.models.adapters import load_policy
from edgerlhf.models.gguf_export import (
    ExportSizes,
    _ftype,
    check_gguf,
    expected_tensor_bytes,
    gguf_shapes,
    ollama_modelfile,
    write_gguf,
)
from edgerlhf.models.loading import load_causal_lm, load_tokenizer
from edgerlhf.runfolder import ARTIFACT_META, find_artifact
from edgerlhf.tracking.run import atomic_write_dir, atomic_write_text

# what `export --gguf` checks the file on after writing it: everyday chat prompts, short
CHECK_PROMPTS = [
    "How do I boil an egg?", "Write one sentence about the sea.", "What is 12 times 7?",
    "Give me a tip for sleeping better.", "Name three colours.", "Why is the sky blue?",
    "Say hello in French.", "What should I pack for a day hike?",
]


def load_for_export(src: str | Path):
    """(merged model in float32, tokenizer, meta) for a policy run / artifact folder, a folder written by
    ``export --merge``, or a base model name (``default``, ``tiny``, a hub id): the base exported unchanged."""
    p = Path(src).expanduser()
    try:
        find_artifact(p)  # a run folder or its artifact folder
    except FileNotFoundError:
        pass
    else:  # (load_policy's own errors, e.g. a missing SFT adapter, stay its own)
        return load_policy(p, dtype=torch.float32, merge=True)
    if (p / "config.json").is_file():  # an exported (merged) folder
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - heavy: only for an exported folder

        return (AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32), AutoTokenizer.from_pretrained(p),
                {"stage": "merged", "base_model": str(p)})
    if p.exists():
        raise FileNotFoundError(f"{p} is neither a policy run folder (no {ARTIFACT_META}) nor a model folder (no "
                                "config.json)")
    return load_causal_lm(str(src)), load_tokenizer(str(src)), {"stage": "base", "base_model": str(src)}


def export_policy(policy: str | Path, out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another folder (nothing was overwritten)")
    model, tok, meta = load_for_export(policy)

    def fill(tmp: Path):
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)

    atomic_write_dir(out, fill)
    print(f"[export] {policy} ({meta.get('stage')}) -> {out}: merged weights, tokenizer and chat template; load it "
          "with "
          f"AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return out


def export_gguf(policy: str | Path, kind: str, out: str | Path, *, check: bool = True, progress: bool = True) -> dict:
    """Write ``policy`` (LoRA merged) as a GGUF file of ``kind`` and an Ollama Modelfile beside it
    (``<name>.Modelfile``); with ``check``, reload the file with transformers and measure it against the policy
    (:func:`~edgerlhf.models.gguf_export.check_gguf`). Returns what it measured."""
    _ftype(kind)  # a bad type fails before anything is loaded
    out = Path(out)
    modelfile = out.with_suffix(".Modelfile")
    for f in (out, modelfile):
        if f.exists():
            raise FileExistsError(f"{f} exists; choose another file name (nothing was overwritten)")
    model, tok, meta = load_for_export(policy)
    chat = bool(meta.get("use_chat_template", True)) and tok.chat_template is not None
    name = f"{Path(str(meta.get('base_model', 'model'))).name} EdgeRLHF {meta.get('stage', 'policy')}"
    write_gguf(model, tok, out, kind, name=name, chat_template=chat, progress=progress)
    atomic_write_text(modelfile, ollama_modelfile(tok, out.name, chat_template=chat))
    tensor_bytes = expected_tensor_bytes(gguf_shapes(model), kind)
    sizes = ExportSizes(os.path.getsize(out), tensor_bytes)
    result = {"gguf": str(out), "modelfile": str(modelfile), "type": kind, "file_bytes": sizes.file_bytes,
              "tensor_bytes": sizes.tensor_bytes}
    print(f"[export] {policy} ({meta.get('stage')}) -> {out}: {kind}, {sizes.file_bytes / 2**20:.1f} MiB "
          f"({sizes.tensor_bytes / 2**20:.1f} MiB of tensors, the rest metadata and tokenizer); Ollama: {modelfile}")
    if check:
        c = check_gguf(out, model, tok, CHECK_PROMPTS, chat_template=chat)
        result.update(c._asdict())
        print(f"[export] reloaded with transformers: max |logit difference| {c.max_abs_logit_diff:.4f} (logits up to "
              f"{c.logit_scale:.1f}); the policy's greedy next token kept at {c.top1_agreement:.1%} of "
              f"{c.n_tokens} positions; greedy answers identical for {c.greedy_identical:.0%} of {c.n_prompts} "
              "prompts")
    return result
