"""GGUF files beside the model file: a policy's LoRA as a llama.cpp GGUF adapter (the layout of llama.cpp's
convert_lora_to_gguf.py), to apply to a base file of any type so that a 4-bit base does not round away a small RL
delta; and what `edgerlhf eval FILE.gguf` reads from a policy file's metadata."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgerlhf.data.formatting import encode_prompt
from edgerlhf.models.gguf_export import SOURCE_KEY, SYSTEM_KEY, GGUFExportError, llama_rows
from edgerlhf.runfolder import read_artifact_meta


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


def _reader(path: str | Path):
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # not a GGUF file at all (bad magic, truncated)
        raise GGUFExportError(f"{path} is not a readable GGUF file ({e})") from None


def _field(r, key: str):
    f = r.fields.get(key)
    return f.contents() if f is not None else ""


def read_gguf_policy_info(path: str | Path) -> dict:
    """What `edgerlhf eval FILE.gguf` needs from a file, read without loading its tensors: the architecture, the
    policy run it was exported from (``source``, "" when it records none) and the system message it carries.
    Raises GGUFExportError for a file that is not a llama-architecture policy (or is an adapter, not a model)."""
    r = _reader(path)
    arch = _field(r, "general.architecture")
    if arch != "llama":
        raise GGUFExportError(f"{path} holds a {arch or 'model of no named'} architecture; `eval` reads llama-"
                              "architecture policies, as `edgerlhf export --gguf` writes them")
    if _field(r, "general.type") == "adapter":
        raise GGUFExportError(f"{path} is a LoRA adapter file, not a model; evaluate it on its base file: "
                              f"`edgerlhf eval BASE.gguf adapter={path}`")
    return {"architecture": arch, "source": _field(r, SOURCE_KEY), "system": _field(r, SYSTEM_KEY)}


def read_gguf_adapter(path: str | Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float, str]:
    """A llama.cpp LoRA adapter file: ``({base tensor name: (A, B)}, alpha, source)`` with A (rank x in) and B
    (out x rank) as the file lays them out (float32) and the policy run it records ("" when none)."""
    r = _reader(path)
    if _field(r, "general.type") != "adapter" or _field(r, "adapter.type") != "lora":
        raise GGUFExportError(f"{path} is not a LoRA adapter file (general.type {_field(r, 'general.type')!r}); "
                              "write one with `edgerlhf export RUN --gguf-adapter OUT.gguf`")
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in r.tensors}
    factors = {}
    for name, a in tensors.items():
        if name.endswith(".lora_a"):
            b = tensors.get(name[: -len("a")] + "b")
            if b is None:
                raise GGUFExportError(f"{path}: {name} has no matching .lora_b tensor (a damaged adapter file)")
            factors[name[: -len(".lora_a")]] = (a, b)
    return factors, float(_field(r, "adapter.lora.alpha") or 0.0), _field(r, SOURCE_KEY)


@torch.no_grad()
def apply_gguf_adapter(model, path: str | Path) -> int:
    """Add a GGUF LoRA adapter's delta, alpha / rank x B A (llama.cpp's scaling), to ``model``'s weights (a model
    loaded from a GGUF base file), B's q / k rows taken back from llama.cpp's rotary layout. Returns how many
    weights changed; an adapter tensor with no counterpart in the model, or of another shape, is an error."""
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    factors, alpha, _ = read_gguf_adapter(path)
    config = model.config
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    params = dict(model.named_parameters())
    by_gguf = {name_map.get_name(hf, try_suffixes=(".weight",)): hf for hf in params if hf.endswith(".weight")}
    for gname, (a, b) in factors.items():
        hf = by_gguf.get(gname)
        if hf is None:
            raise GGUFExportError(f"{path}: the adapter changes {gname}, which the base model has no tensor for; the "
                                  "adapter was written for another model")
        w = params[hf]
        if b.shape[0] != w.shape[0] or a.shape[1] != w.shape[1] or a.shape[0] != b.shape[1]:
            raise GGUFExportError(f"{path}: {gname} is {tuple(w.shape)} in the base but the adapter's factors are "
                                  f"{b.shape} x {a.shape}; the adapter was written for another model")
        where = llama_rows(hf, np.arange(b.shape[0], dtype=np.float64)[:, None], config)[:, 0].astype(np.int64)
        b_hf = np.empty_like(b)
        b_hf[where] = b  # llama_rows put row where[i] at i: undo it
        scale = (alpha or a.shape[0]) / a.shape[0]  # llama.cpp: no alpha recorded means scale 1
        w += scale * torch.from_numpy(b_hf @ a).to(w.dtype)
    return len(factors)


def load_gguf_model(file: str | Path, adapter: str | Path | None = None):
    """A GGUF policy file as a transformers model (``gguf_file=``: its tensors dequantised to float32), with a GGUF
    LoRA adapter applied on it when one is named."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 - heavy; only for a GGUF file

    file = Path(file)
    model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
    if adapter is not None:
        apply_gguf_adapter(model, adapter)
    return model.eval()


def weights_digest(art: str | Path) -> str:
    """sha256 over an artifact folder's own weight files (``*.safetensors``, by name): two folders that hold the
    same trained weights (a run's SFT policy and the copy an RL run keeps of it) have the same digest."""
    h = hashlib.sha256()
    for f in sorted(Path(art).glob("*.safetensors")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def adapter_base_problem(base: str | Path, base_source: str, adapter: str | Path, adapter_source: str) -> str:
    """"" when the base file holds what the adapter was trained on (the RL run's SFT policy, or for an SFT run's
    adapter the bare base model), else what is wrong and the way out. Compared by the source runs' weights, so the
    SFT run folder and the copy of it inside the RL run both match."""
    if not adapter_source:
        return ""  # an adapter written by another tool: nothing recorded to compare
    meta = read_artifact_meta(adapter_source)
    want = Path(adapter_source) / meta["sft"] if meta.get("sft") else None
    fix = (f"write its base with `edgerlhf export {want} --gguf TYPE base.gguf`" if want else
           f"write its base with `edgerlhf export {meta.get('base_model')} --gguf TYPE base.gguf`")
    if want is None:  # an SFT run's adapter applies to the bare base model, which records no run
        return "" if not base_source else (f"{adapter} applies to the base model {meta.get('base_model')}, but "
                                           f"{base} was exported from the policy run {base_source}; {fix}")
    if not base_source:
        return (f"{adapter} applies to the SFT policy {want}, but {base} records no policy run (a base model or a "
                f"merged folder); {fix}")
    if Path(base_source).resolve() == Path(adapter_source).resolve():
        return (f"{base} is the policy itself (its delta already merged): {adapter} would add it twice; {fix}")
    if not Path(base_source).exists():
        return f"{base} was exported from {base_source}, which is not here to compare with {want}; {fix}"
    if weights_digest(base_source) != weights_digest(want):
        return (f"{adapter} applies to the SFT policy {want}, but {base} was exported from {base_source}, whose "
                f"weights differ; {fix}")
    return ""


def file_loader(choice: str = "auto") -> str:
    """Which program samples the exported file: ``llama.cpp`` (llama-cpp-python, when installed) or
    ``transformers`` (its GGUF loader, tensors dequantised to float32)."""
    if choice not in ("auto", "transformers", "llama.cpp"):
        raise ValueError(f"loader={choice!r}: choose auto, transformers or llama.cpp")
    have = importlib.util.find_spec("llama_cpp") is not None
    if choice == "llama.cpp" and not have:
        raise ValueError("loader=llama.cpp needs llama-cpp-python (pip install llama-cpp-python: it compiles "
                         "llama.cpp); or use loader=transformers")
    return choice if choice != "auto" else ("llama.cpp" if have else "transformers")


def llamacpp_samples(file: Path, adapter: Path | None, tok, prompts: list, *, temperature: float,
                     max_new_tokens: int, seed: int, chat: bool = True) -> list[str]:
    """One response per prompt sampled by llama.cpp itself from ``file`` (with the LoRA ``adapter`` on it), plain
    temperature sampling (top-k, top-p, min-p and the repeat penalty off, as EdgeRLHF samples), the prompt
    tokenized by the policy's tokenizer. llama.cpp's random numbers are its own: pairs with the policy by prompt,
    not by sampling seed."""
    from llama_cpp import Llama  # noqa: PLC0415 - optional: llama-cpp-python compiles llama.cpp; not a dependency

    llm = Llama(model_path=str(file), lora_path=str(adapter) if adapter else None, n_ctx=1024, seed=seed,
                verbose=False, n_threads=torch.get_num_threads())
    stop = {tok.eos_token_id, llm.token_eos()}
    out = []
    for p in prompts:
        new = []
        for t in llm.generate(encode_prompt(tok, p, chat), temp=temperature, top_k=0, top_p=1.0, min_p=0.0,
                              repeat_penalty=1.0, reset=True):
            if t in stop or len(new) == max_new_tokens:
                break
            new.append(t)
        out.append(tok.decode(new, skip_special_tokens=True).strip())
    return out
