"""Export a trained policy as a plain Hugging Face model folder (LoRA merged), loadable by ``transformers``
with no EdgeRLHF installed: config, safetensors weights, tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path


def export_policy(policy: str | Path, out: str | Path) -> Path:
    import torch

    from edgerlhf.models.adapters import load_policy
    from edgerlhf.tracking.run import atomic_write_dir

    model, tok, meta = load_policy(policy, dtype=torch.float32, merge=True)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another folder (nothing was overwritten)")

    def fill(tmp: Path):
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)

    atomic_write_dir(out, fill)
    print(f"[export] {policy} ({meta.get('stage')}) -> {out}: merged weights, tokenizer and chat template; load it with "
          f"AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return out
