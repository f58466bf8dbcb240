"""Model loading (embedded default, tiny, hub id, local folder), LoRA adapters and devices."""

from edgerlhf.models.loading import (  # noqa: F401
    DEFAULT_MODEL_NAME,
    load_causal_lm,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
)
