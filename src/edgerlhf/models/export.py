"""Export a trained policy: as a plain Hugging Face model folder (LoRA merged), loadable by ``transformers`` with
no EdgeRLHF installed, or as one GGUF file for llama.cpp / Ollama / LM Studio (:mod:`edgerlhf.models.gguf_export`)
with an Ollama Modelfile beside it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from edgerlhf.data.formatting import prompt_text
from edgerlhf.models.adapters import load_policy
from edgerlhf.models.gguf_adapter import write_gguf_adapter
from edgerlhf.models.gguf_export import (
    ExportSizes,
    _ftype,
    check_gguf,
    expected_tensor_bytes,
    gguf_shapes,
    ollama_modelfile,
    set_default_system,
    write_gguf,
)
from edgerlhf.models.gguf_mixed import choose_kept, kind_sensitivity
from edgerlhf.models.loading import load_causal_lm, load_model_config, load_tokenizer
from edgerlhf.runfolder import ARTIFACT_META, find_artifact, read_artifact_meta
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


def carry_system(tok, meta: dict, system: str | None = None) -> str | None:
    """The system message an export carries: ``system`` when given, else the one the policy was trained with (its
    artifact's ``system_prompt``: ``""`` for none, so the template's own default, which training saw). Where the
    chat template inserts a default system message, it is made this one (:func:`set_default_system`), so the GGUF
    file's and the merged folder's template ask what training asked; the Modelfile's SYSTEM line carries it too."""
    if system is None:
        if "system_prompt" not in meta:
            if meta.get("stage") not in (None, "base", "merged"):
                print("[export] note: this run records no system prompt (trained before EdgeRLHF recorded it); the "
                      "export keeps the chat template's default. Pass --system TEXT (API: system=) with the one "
                      "its prompts had")
            return None
        system = meta["system_prompt"]
        if system is None:
            print("[export] note: the policy's training prompts have different system messages, so none is carried; "
                  "pass --system TEXT (API: system=) to set one")
            return None
    if system and bool(meta.get("use_chat_template", True)) and tok.chat_template is not None:
        where = "as the chat template's default system message and " if set_default_system(tok, system) else ""
        print(f"[export] system prompt it was trained with, carried {where}in the Modelfile: {system!r}")
    return system


def _summary(policy: str | Path) -> dict:
    """The training run's summary (its measured numbers), when ``policy`` is a run folder or its artifact."""
    try:
        run = find_artifact(Path(policy).expanduser()).parent
    except FileNotFoundError:
        return {}
    f = run / "summary.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def model_card(meta: dict, system: str | None, prompt_example: str, summary: dict) -> str:
    """The merged folder's README.md: what the policy is, how it was trained, the prompt format it was trained
    with, and what training measured."""
    keys = ("stage", "algorithm", "base_model", "seed", "reward", "reward_precision", "ensemble", "beta")
    rows = [f"| {k} | {meta[k]} |" for k in keys if meta.get(k) not in (None, "")]
    measured = [f"| {k} | {v:+.4g} |" for k, v in summary.items()
                if isinstance(v, float) and k.split("/")[0] in ("objective", "eval", "before") and
                any(w in k for w in ("gold", "kl", "accuracy", "score", "win"))]
    lines = ["---", "library_name: transformers", "tags: [edgerlhf, rlhf]", "---", "",
             f"# {Path(str(meta.get('base_model', 'model'))).name}, aligned with EdgeRLHF", "",
             "Merged weights (the LoRA adapters folded in): load with `AutoModelForCausalLM.from_pretrained` on "
             "this folder; no EdgeRLHF needed.", "", "## Training", "", "| setting | value |", "|---|---|", *rows, "",
             "## Prompt format", ""]
    if system:
        lines += [f"Trained with the system message `{system}`; the chat template in this folder inserts it when a "
                  "conversation has none of its own.", ""]
    lines += ["A user message is formatted as (what the policy saw in training):", "", "```text", prompt_example,
              "```", ""]
    if measured:
        lines += ["## Measured in training", "", "| metric | value |", "|---|---|", *measured, ""]
    return "\n".join(lines)


def export_policy(policy: str | Path, out: str | Path, *, system: str | None = None) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another folder (nothing was overwritten)")
    model, tok, meta = load_for_export(policy)
    system = carry_system(tok, meta, system)
    chat = bool(meta.get("use_chat_template", True))
    example = prompt_text(tok, [{"role": "user", "content": "<your message>"}], chat)

    def fill(tmp: Path):
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(meta, system, example, _summary(policy)))

    atomic_write_dir(out, fill)
    print(f"[export] {policy} ({meta.get('stage')}) -> {out}: merged weights, tokenizer and chat template; load it "
          "with "
          f"AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return out


def export_gguf(policy: str | Path, kind: str, out: str | Path, *, check: bool = True, progress: bool = True,
                system: str | None = None, mixed_keep: int = 2) -> dict:
    """Write ``policy`` (LoRA merged) as a GGUF file of ``kind`` and an Ollama Modelfile beside it
    (``<name>.Modelfile``); with ``check``, reload the file with transformers and measure it against the policy
    (:func:`~edgerlhf.models.gguf_export.check_gguf`). ``q4_mixed``: Q4_1 with the ``mixed_keep`` tensor kinds the
    policy is most sensitive to (:func:`~edgerlhf.models.gguf_export.kind_sensitivity`) at Q8_0. Returns what it
    measured."""
    _ftype(kind)  # a bad type fails before anything is loaded
    choose_kept({}, mixed_keep)  # and a bad count
    out = Path(out)
    modelfile = out.with_suffix(".Modelfile")
    for f in (out, modelfile):
        if f.exists():
            raise FileExistsError(f"{f} exists; choose another file name (nothing was overwritten)")
    model, tok, meta = load_for_export(policy)
    chat = bool(meta.get("use_chat_template", True)) and tok.chat_template is not None
    system = carry_system(tok, meta, system) if chat else None
    name = f"{Path(str(meta.get('base_model', 'model'))).name} EdgeRLHF {meta.get('stage', 'policy')}"
    keep, sens = None, {}
    if kind == "q4_mixed":
        sens = kind_sensitivity(model, tok, CHECK_PROMPTS, chat_template=chat, progress=progress)
        keep = choose_kept(sens, mixed_keep)
        print("[export] sensitivity of the policy to each tensor kind alone at Q4_1 (KL nats per position on the "
              "check prompts): " + ", ".join(f"{k} {v:.4f}" + (" -> Q8_0" if k in keep else "")
                                            for k, v in sorted(sens.items(), key=lambda kv: -kv[1])))
    source = ""
    if meta.get("stage") not in (None, "base", "merged"):  # a policy run: recorded so `eval FILE.gguf` finds it
        source = str(find_artifact(Path(policy).expanduser()).resolve())
    write_gguf(model, tok, out, kind, name=name, chat_template=chat, progress=progress, system=system, keep=keep,
               source=source)
    atomic_write_text(modelfile, ollama_modelfile(tok, out.name, chat_template=chat, system=system))
    tensor_bytes = expected_tensor_bytes(gguf_shapes(model), kind, keep)
    sizes = ExportSizes(os.path.getsize(out), tensor_bytes)
    result = {"gguf": str(out), "modelfile": str(modelfile), "type": kind, "file_bytes": sizes.file_bytes,
              "tensor_bytes": sizes.tensor_bytes}
    if kind == "q4_mixed":
        result.update({"mixed_kept": keep, "mixed_sensitivity": sens})
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


def export_gguf_adapter(policy: str | Path, out: str | Path, *, base_file: str = "", base_type: str = "q4_1") -> dict:
    """Write the policy's own LoRA adapter (its RL or DPO delta, not merged) as a llama.cpp GGUF adapter file, to use
    on a base file of any type that holds what the adapter was trained on: the run's SFT policy (``edgerlhf export
    RUN/adapter/sft --gguf TYPE base.gguf``), or the base model for an SFT run. An Ollama Modelfile beside it
    names both (``FROM`` the base file, ``base_file`` or ``base-<SFT folder>.gguf``, of ``base_type``; ``ADAPTER``
    this one). Returns what it wrote."""
    from safetensors.torch import load_file  # noqa: PLC0415 - only where an adapter file is read

    out = Path(out)
    modelfile = out.with_suffix(".Modelfile")
    for f in (out, modelfile):
        if f.exists():
            raise FileExistsError(f"{f} exists; choose another file name (nothing was overwritten)")
    art = find_artifact(Path(policy).expanduser())
    meta = read_artifact_meta(art)
    if meta.get("kind") != "lora" or not (art / "adapter_config.json").is_file():
        raise ValueError(f"{policy} holds no LoRA adapter (kind {meta.get('kind')!r}); --gguf-adapter writes a "
                         "policy trained with LoRA; export a full model with --gguf")
    lcfg = json.loads((art / "adapter_config.json").read_text())
    r, alpha = int(lcfg["r"]), float(lcfg["lora_alpha"])
    if lcfg.get("use_rslora"):  # PEFT scales by alpha / sqrt(r); llama.cpp by alpha / r
        alpha *= r ** 0.5
    lora = load_file(str(art / "adapter_model.safetensors"))
    config = load_model_config(meta["base_model"])
    base_src = art / meta["sft"] if meta.get("sft") else meta["base_model"]
    write_gguf_adapter(lora, alpha, config, out, name=f"EdgeRLHF {meta.get('stage', 'policy')} LoRA",
                       source=str(art.resolve()))
    base_file = base_file or f"base-{Path(str(base_src)).name}.gguf"
    atomic_write_text(modelfile, f"# the base: edgerlhf export {base_src} --gguf {base_type} {base_file} (any type)\n"
                                 f"FROM ./{base_file}\nADAPTER ./{out.name}\n")
    res = {"gguf_adapter": str(out), "modelfile": str(modelfile), "rank": r, "alpha": alpha,
           "tensors": len(lora), "file_bytes": os.path.getsize(out), "base": str(base_src)}
    print(f"[export] {policy} ({meta.get('stage')}): its LoRA (rank {r}, alpha {alpha:g}) -> {out} (F16, "
          f"{res['file_bytes'] / 2**20:.1f} MiB). It applies to {base_src}: write that as a base file of any type "
          f"(edgerlhf export {base_src} --gguf {base_type} {base_file}); llama.cpp: llama-cli -m {base_file} --lora "
          f"{out.name}; Ollama: {modelfile} (FROM the base, ADAPTER this file)")
    return res
