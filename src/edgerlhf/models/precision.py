"""Reward-model precision that is real in memory: fp32 / bf16 / fp16 / int8 / int4.

Floating precisions cast the merged model. Integer precisions go through bitsandbytes, the field's
standard on CUDA (LLM.int8() and NF4 with double quantisation), which runs on CPU as well; the linear
layers of the transformer blocks are stored as int8 / packed 4-bit, while the modules listed in
``HIGH_PRECISION_MODULES`` (the score head) and the token embeddings stay in floating point. Which
modules stayed high-precision is recorded with every artifact and result.

Sizes are measured from the stored tensors (:func:`stored_bytes`), not ``get_memory_footprint()``,
which is wrong for some quantisation backends.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import torch

from edgerlhf.config.refs import BACKENDS, PRECISIONS, check_precision, valid_precision_names  # noqa: F401 (the names precisions go by, defined torch-free for config checks)

FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# modules never quantised: the one-output score head (tiny, and the reward's last word)
HIGH_PRECISION_MODULES = ["score"]


def split_precision(name: str, device) -> tuple[str, str]:
    """``"int8:torchao"`` -> ("int8", "torchao"); a plain integer precision takes the device's default
    backend; floating precisions have backend "torch"."""
    check_precision(name)
    base, _, backend = name.partition(":")
    if base in FLOAT_DTYPES:
        return base, "torch"
    return base, backend or default_backend(base, device)


def default_backend(precision: str, device) -> str:
    """bitsandbytes (the field's standard) on a GPU and for int4. For int8 on a CPU, torchao's weight-only
    int8, because it measured better on every agreement metric against the fp32 RM (README precision
    table: flip rate 0.015 vs 0.030, max |d|/std 0.11 vs 0.41) with less serving memory."""
    if precision == "int8" and torch.device(device).type == "cpu":
        try:
            import torchao  # noqa: F401, PLC0415 - torchao is optional: probed only for int8 on a CPU
        except ImportError:
            return "bnb"
        return "torchao"
    return "bnb"


def parse_precisions(text: str | list[str]) -> list[str]:
    items = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    if not items:
        raise ValueError(f"no precision given; valid precisions are {valid_precision_names()}")
    for p in items:
        check_precision(p)
    return items


def default_precisions(device: torch.device | str) -> list[str]:
    """The user's three on a GPU (bf16 / int8 / int4); on a CPU fp32 replaces bf16, which is 7-20x slower
    on CPUs without bf16 units. bf16 is always available when asked for."""
    return ["bf16", "int8", "int4"] if torch.device(device).type == "cuda" else ["fp32", "int8", "int4"]


def compute_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype activations are computed in. Integer weights compute in fp32 on CPU (fast there) and in
    bf16 on a GPU."""
    if precision in FLOAT_DTYPES:
        return FLOAT_DTYPES[precision]
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def quant_config(precision: str, backend: str, device: torch.device | str):
    if backend == "torchao":
        try:
            from torchao.quantization import Int8WeightOnlyConfig  # noqa: PLC0415 - torchao is optional, only for :torchao
        except ImportError:
            raise ValueError(f"precision {precision}:torchao needs torchao: pip install torchao") from None
        from transformers import TorchAoConfig  # noqa: PLC0415 - transformers is heavy; only to load a quantised model

        return TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=list(HIGH_PRECISION_MODULES))
    return bnb_config(precision, device)


def bnb_config(precision: str, device: torch.device | str, skip: tuple[str, ...] = ()):
    """``skip``: more modules kept in floating point (a causal LM's ``lm_head``, which small models tie
    to the token embedding: quantising it would break the tie)."""
    from transformers import BitsAndBytesConfig  # noqa: PLC0415 - transformers is heavy; only to load a quantised model

    keep = list(HIGH_PRECISION_MODULES) + list(skip)
    if precision == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)
    if precision == "int4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype(precision, device),
                                  llm_int8_skip_modules=keep)
    raise ValueError(f"{precision} is not an integer precision")


@contextlib.contextmanager
def quiet_bnb():
    """bitsandbytes' int8 path on CPU warns on *every* matmul that inputs are cast to fp16; a user should
    never see that scroll by. We record the cast once in the results instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*inputs will be cast from.*")
        warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
        level = logging.getLogger("bitsandbytes").level
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("bitsandbytes").setLevel(level)


def keep_bnb_differentiable(model) -> int:
    """Keep bitsandbytes 4-bit layers on their differentiable path; returns how many layers were switched.

    On CPUs with AVX512-BF16, ``bnb.nn.Linear4bit`` repacks its weights for a fast inference kernel the first
    time it runs in eval mode without grad (a rollout, a held-out evaluation), and that kernel has no
    backward: training after it would silently lose the gradient through every quantised layer (torch only
    warns "autograd kernel was not registered"). Every model that is trained over a 4-bit body goes
    through here. The flag is what bitsandbytes' own CPU detection set at load time."""
    n = 0
    for m in model.modules():
        if getattr(m, "support_avx512bf16_for_cpu", False):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def _storage(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors that really hold ``t``'s bytes: tensor subclasses (torchao, quanto) keep them in
    inner tensors and report the logical dtype and size of the full-precision tensor they stand for."""
    if isinstance(t, torch.nn.Parameter):
        t = t.data
    if type(t) is not torch.Tensor and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return [x for n in names for x in _storage(getattr(t, n))]
    return [t]


def stored_bytes(model) -> dict:
    """Bytes of every stored tensor (parameters, buffers, and bitsandbytes' quantisation states), by dtype."""
    seen, by_dtype = set(), {}

    def add(t):
        if t is None or id(t) in seen:
            return
        seen.add(id(t))
        for x in _storage(t):
            key = str(x.dtype).removeprefix("torch.")
            by_dtype[key] = by_dtype.get(key, 0) + x.numel() * x.element_size()

    for p in model.parameters():
        add(p)
        qs = getattr(p, "quant_state", None)  # bnb 4-bit: absmax (+ nested absmax/code with double quant)
        if qs is not None:
            for t in (qs.absmax, getattr(qs, "code", None)):
                add(t)
            if getattr(qs, "state2", None) is not None:
                add(qs.state2.absmax)
                add(qs.state2.code)
        add(getattr(p, "SCB", None))  # bnb int8 row scales
    for b in model.buffers():
        add(b)
    for m in model.modules():  # bnb int8 keeps its scales on the module state as well
        st = getattr(m, "state", None)
        add(getattr(st, "SCB", None) if st is not None else None)
    return {"total": sum(by_dtype.values()), "by_dtype": by_dtype}


def linear_weight_dtypes(model) -> dict[str, int]:
    """How many block linear weights are stored in each dtype (int8 / uint8 = packed 4-bit / float)."""
    out: dict[str, int] = {}
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if hasattr(m, "base_layer"):  # a LoRA wrapper: its base layer is counted itself
            continue
        if ".layers." in name and "lora_" not in name and isinstance(w, torch.Tensor) and w.dim() == 2 and not any(
                hp in name for hp in HIGH_PRECISION_MODULES):
            k = str(_storage(w)[0].dtype).removeprefix("torch.")
            out[k] = out.get(k, 0) + 1
    return out
