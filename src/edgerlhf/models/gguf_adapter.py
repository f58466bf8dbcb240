"""GGUF files beside the model file: a policy's LoRA as a llama.cpp GGUF adapter (the layout of llama.cpp's
convert_lora_to_gguf.py), to apply to a base file of any type so that a 4-bit base does not round away a small RL
delta; and what `edgerlhf eval FILE.gguf` reads from a policy file's metadata."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgerlhf.models.gguf_export import SOURCE_KEY, SYSTEM_KEY, GGUFExportError, llama_rows


def lora_gguf_tensors(lora: dict[str, torch.Tensor], config) -> list[tuple[str, np.ndarray]]:
    """A PEFT LoRA adapter's factors as llama.cpp names and lays them out (its convert_lora_to_gguf.py):
    ``<base tensor>.lora_a`` = A (rank x in) and ``.lora_b`` = B (out x rank), B's rows of q_proj / k_proj permuted
    to llama.cpp's rotary layout as the base weight's are (A is untouched: the permutation acts on output rows)."""
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    out = []
    for key in sorted(lora):
        if ".lora_A." not in key:
            if ".lora_B." not in key:
                raise GGUFExportError(f"{key!r} is not a LoRA factor (lora_A / lora_B); only LoRA adapters are "
                                      "written as GGUF adapters")
            continue
        hf = key.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight")
        name = name_map.get_name(hf, try_suffixes=(".weight",))
        if name is None:
            raise GGUFExportError(f"no GGUF name for the adapted tensor {hf!r}")
        a = lora[key].detach().to(torch.float32).numpy()
        b = llama_rows(hf, lora[key.replace(".lora_A.", ".lora_B.")].detach().to(torch.float32).numpy(), config)
        out += [(f"{name}.lora_a", a), (f"{name}.lora_b", b)]
    return out


def write_gguf_adapter(lora: dict[str, torch.Tensor], alpha: float, config, out: str | Path, *, name: str = "",
                       source: str = "") -> Path:
    """Write a LoRA adapter as a llama.cpp GGUF adapter file (``general.type`` adapter, ``adapter.type`` lora,
    ``adapter.lora.alpha``; factors at F16), atomically. llama.cpp scales it by alpha / rank, as PEFT does."""
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    out = Path(out)
    if out.suffix != ".gguf":
        raise GGUFExportError(f"the GGUF adapter output {out} should end in .gguf")
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another file name (nothing was overwritten)")
    tensors = lora_gguf_tensors(lora, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, "llama")
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        writer.add_name(name or "EdgeRLHF LoRA adapter")
        if source:
            writer.add_string(SOURCE_KEY, source)
        for tname, data in tensors:
            writer.add_tensor(tname, np.ascontiguousarray(data, dtype=np.float16),
                              raw_dtype=gguf.GGMLQuantizationType.F16)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def read_gguf_policy_info(path: str | Path) -> dict:
    """What `edgerlhf eval FILE.gguf` needs from a file, read without loading its tensors: the architecture, the
    policy run it was exported from (``source``, "" when it records none) and the system message it carries.
    Raises GGUFExportError for a file that is not a llama-architecture policy."""
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    try:
        r = gguf.GGUFReader(path)
    except Exception as e:  # not a GGUF file at all (bad magic, truncated)
        raise GGUFExportError(f"{path} is not a readable GGUF file ({e})") from None

    def field(key: str) -> str:
        f = r.fields.get(key)
        return f.contents() if f is not None else ""

    arch = field("general.architecture")
    if arch != "llama":
        raise GGUFExportError(f"{path} holds a {arch or 'model of no named'} architecture; `eval` reads llama-"
                              "architecture policies, as `edgerlhf export --gguf` writes them")
    return {"architecture": arch, "source": field(SOURCE_KEY), "system": field(SYSTEM_KEY)}
