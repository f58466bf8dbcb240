"""The planner's memory model: a stage's peak as a sum of named terms, pure functions of the model's shape and
the stage's settings (``study/plan.py`` applies them per stage and checks them against measured peaks).

A prediction is a sum of named terms, each a count of bytes of tensors that live at the same time at the stage's
peak (the stage's code decides which; the docstring of each ``_stage`` function says what it follows):

- weights at their precision (fp32 4 bytes, bf16 / fp16 2, int8 1, int4 0.53 per parameter of the quantised
  linears; embeddings stay at the compute dtype), a tied output matrix once, the RM's embedding shared with the
  policy's when both hold the same bytes (``share_identical_weights``);
- LoRA and optimizer state: 16 bytes per trainable parameter (fp32 weight, gradient, AdamW's two moments);
- activations saved for the backward, per token per block in the graph (blocks with LoRA: the frozen trunk below
  ``lora_layers`` keeps nothing): the inputs of the norms, projections, attention and MLP, LoRA's dropout copies
  (counted from the block's shape below); with gradient checkpointing only each block's input, plus one block's
  activations while it is recomputed;
- logits: full (batch x length x vocabulary, five fp32 copies at the loss's backward: logits, log-softmax, their
  gradients, the softmax) where a stage lets transformers compute the loss (SFT), one chunk of 128 positions
  (four copies) where the chunked log-probs run (RM, DPO, online RL);
- the KV cache of generation (2 x blocks x batch x tokens x kv heads x head dim) and the decoding step's logits;
- on the CPU, what glibc keeps of a training forward's freed transients: 0.6 x the activations, measured
  (``GLIBC_KEPT``; none with ``lean_update`` in online RL, whose update fixes the mmap threshold);
- the runtime: on the CPU the resident size of Python with torch, transformers and peft imported, **measured** in
  the planning process itself (it is this machine's, not a constant); on a GPU the CUDA context is outside
  ``max_memory_allocated`` and is shown as a separate estimate.

Pure functions of (shape, settings) except :func:`runtime_bytes` and :func:`model_shape`; validated against the
measured peaks of a study's stages by :func:`validate` (``edgerlhf plan --validate STUDY``).
"""

from __future__ import annotations

from typing import NamedTuple

MiB = 2**20
GiB = 2**30
CHUNK = 128  # positions per logits chunk in rl/logprobs.py (token_logprobs)
CUDA_CONTEXT = 500 * MiB  # the CUDA context and kernels: outside max_memory_allocated, seen by nvidia-smi
PRECISION_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "int4": 0.53}  # per quantised-linear weight
# glibc keeps freed memory of a training forward's transients in its heaps (its mmap threshold rises to the
# largest block freed, up to 32 MiB, so later blocks come from the heap and stay): measured on the default model,
# one LoRA forward of 8 or 16 x 93 tokens with LoRA in 30 / 20 / 10 blocks raises the high-water mark 1.58-1.62x
# the saved activations, and 1.03-1.08x with MALLOC_MMAP_THRESHOLD_=1048576 (README, "Will it fit?").
GLIBC_KEPT = 0.6


class Shape(NamedTuple):
    """What memory depends on in a decoder-only model."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    params: int  # all parameters, a tied output matrix once
    embed_params: int
    tied: bool

    @property
    def linear_params(self) -> int:
        """Parameters of the quantisable linears (everything but embeddings, norms and an untied head)."""
        head = 0 if self.tied else self.embed_params
        return self.params - self.embed_params - head - (2 * self.layers + 1) * self.hidden


def shape_from_config(c) -> Shape:
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    H, FF, L, V = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    attn = H * c.num_attention_heads * head_dim * 2 + H * kv * head_dim * 2
    block = attn + 3 * H * FF + 2 * H
    tied = bool(getattr(c, "tie_word_embeddings", False))
    params = V * H + L * block + H + (0 if tied else V * H)
    return Shape(L, H, FF, c.num_attention_heads, kv, head_dim, V, params, V * H, tied)


def weight_bytes(s: Shape, precision: str, compute_bytes: float) -> float:
    """A model's weights: quantised linears at ``precision``, embeddings and norms at the compute dtype."""
    p = precision.split(":")[0]
    if p in ("fp32", "bf16", "fp16"):
        return s.params * PRECISION_BYTES[p]
    return s.linear_params * PRECISION_BYTES[p] + (s.params - s.linear_params) * compute_bytes


def lora_params(s: Shape, r: int, layers: int) -> int:
    """LoRA on every linear of ``layers`` blocks (0: all): r x (in + out) per linear."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    per_block = r * ((s.hidden + q) * 2 + (s.hidden + kv) * 2 + (s.hidden + s.intermediate) * 3)
    return per_block * (layers or s.layers)


def act_per_token_block(s: Shape, wbytes: float, lora_dropout: float) -> float:
    """Bytes autograd saves per token in one LLaMA block with LoRA on its linears (eager PyTorch, SDPA): the two
    norms' inputs and outputs (4 H), the rotated q (H), k and v (2 x kv), the attention output before and after the
    head reshape (2 H), the MLP's gate, up, SiLU and product (4 I); with LoRA dropout each adapted linear's input is
    copied and masked (6 H + I values, fp32 plus a bool mask). tests/study/test_plan.py counts what autograd saves
    in the tiny model against this (the default model's count: 67.7 KB per token per block, this: 66.6)."""
    n = (7 * s.hidden + 2 * s.kv_heads * s.head_dim + 4 * s.intermediate) * wbytes
    drop = (6 * s.hidden + s.intermediate) * (4.0 + 1.0) if lora_dropout > 0 else 0.0
    return n + drop


def activation_bytes(s: Shape, rows: int, tokens: int, graph_blocks: int, wbytes: float, lora_dropout: float,
                     checkpointing: bool) -> float:
    per = act_per_token_block(s, wbytes, lora_dropout)
    if checkpointing:  # block inputs kept, one block's activations alive while it is recomputed
        return rows * tokens * (graph_blocks * s.hidden * wbytes + per)
    return rows * tokens * graph_blocks * per


def kv_bytes(s: Shape, rows: int, tokens: int, wbytes: float) -> float:
    return 2 * s.layers * rows * tokens * s.kv_heads * s.head_dim * wbytes


def full_logits_bytes(s: Shape, rows: int, tokens: int) -> float:
    """transformers' causal-LM loss at its backward: the logits, the saved log-softmax, the gradients of both and
    the softmax the log-softmax backward makes (five fp32 copies)."""
    return 5 * rows * tokens * s.vocab * 4.0


def chunk_logits_bytes(s: Shape) -> float:
    return 4 * CHUNK * s.vocab * 4.0


def decode_logits_bytes(s: Shape, rows: int) -> float:
    return 4 * rows * s.vocab * 4.0  # logits, warped, softmax, cdf (fp32) of one step


class Term(NamedTuple):
    name: str
    nbytes: float


class StagePlan(NamedTuple):
    stage: str
    device: str
    terms: tuple[Term, ...]  # the peak phase's terms, runtime first
    phase: str  # which phase of the stage peaks

    @property
    def peak(self) -> float:
        return sum(t.nbytes for t in self.terms)

    def term(self, name: str) -> float:
        return sum(t.nbytes for t in self.terms if t.name == name)


def phase_max(phases: dict[str, list[Term]]) -> tuple[str, list[Term]]:
    name = max(phases, key=lambda k: sum(t.nbytes for t in phases[k]))
    return name, phases[name]


def train_terms(s, cfg, rows, tokens, wbytes, graph_blocks, trainable) -> list[Term]:
    return [Term("LoRA + AdamW state", trainable * 16.0),
            Term("activations", activation_bytes(s, rows, tokens, graph_blocks, wbytes, cfg.lora_dropout,
                                                 cfg.gradient_checkpointing))]


def base_weights(s: Shape, base_precision: str, cdt: float) -> float:
    """A trained model's frozen base: quantised (int8 / int4) or at the compute dtype ('fp32' means unquantised)."""
    bp = base_precision.split(":")[0]
    return weight_bytes(s, bp if bp in ("int8", "int4") else ("fp32" if cdt == 4.0 else "bf16"), cdt)


def prompt_answer(cfg, P: int, R: int) -> tuple[int, int]:
    """Prompt and answer tokens of a preference pair, the pair capped at ``max_length``."""
    T = min(cfg.max_length, P + R)
    return min(P, T - 1), T - min(P, T - 1)


def pair_terms(s, cfg, pairs, Lp, Lc, wbytes, blocks) -> list[Term]:
    """A pair step with the prompt shared (the RM's and DPO's default): the prompt's pass over ``pairs`` rows,
    the answers' over 2 x ``pairs``; the graph holds both in the top ``blocks``, the KV cache of every block."""
    trainable = lora_params(s, cfg.lora_r, cfg.lora_layers)
    if getattr(cfg, "gradient_checkpointing", False):  # the shared prompt is off: both sequences in full
        acts = activation_bytes(s, 2 * pairs, Lp + Lc, blocks, wbytes, cfg.lora_dropout, True)
    else:
        per = act_per_token_block(s, wbytes, cfg.lora_dropout)
        acts = (pairs * Lp + 2 * pairs * Lc) * blocks * per
    return [Term("LoRA + AdamW state", trainable * 16.0), Term("activations", acts),
            Term("KV cache (shared prompt)", kv_bytes(s, 2 * pairs, Lp, wbytes)),
            Term("logits (chunk)", chunk_logits_bytes(s))]


def with_kept(terms: list[Term], off: bool) -> list[Term]:
    """``terms`` plus what glibc keeps on the CPU (none on a GPU, none with a fixed mmap threshold)."""
    acts = sum(t.nbytes for t in terms if t.name == "activations")
    return terms if off or not acts else terms + [Term("freed, kept by glibc (CPU)", GLIBC_KEPT * acts)]
