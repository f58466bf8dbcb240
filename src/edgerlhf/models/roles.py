"""The model roles of online RL — policy, reference, value (PPO only) — over one base model in memory.

    base weights (SFT merged in) ──┬── + PPO LoRA adapter "default" ........ policy
                                   ├── adapters disabled ................... reference (still includes SFT)
                                   └── value head on the policy trunk, or
                                       + LoRA adapter "value" + head ....... value

The SFT adapter is *merged* into the base before the PPO adapter is added. That is what keeps the
reference right: PEFT's ``disable_adapter()`` switches off every adapter it knows of, so a setup that
stacks a live SFT adapter under the PPO one measures KL against the bare base model instead of the SFT
policy (a known failure in this field). Merged weights cannot be switched off.

``layout="separate"`` holds a copy of the base per role (the classic layout), with the same trainable
parameters, optimizer, dtypes and batches, so the memory saving is measured rather than claimed.

Frozen-trunk caching (``cache_trunk=auto``): with LoRA in the top ``lora_layers`` blocks only, the blocks below
carry no adapter, so for a step's sequences they compute the same output for the old log-probs, the values, the
reference and every update epoch. :meth:`Roles.trunk` runs them once per step; every later forward starts from
that output (:class:`Trunk`) and runs only the top blocks, forward and backward. No RLHF toolkit has this (trlX
shares the frozen blocks' weights but recomputes them; TRL issue #848 asked for it and was closed).

Why not TRL: its PPOTrainer (and ``AutoModelForCausalLMWithValueHead``) left the library in 2026, and it
kept four full models in memory. The forward passes here run the decoder once and apply the LM head only
to the response positions, a chunk at a time (``rl.logprobs``), which keeps the vocabulary-sized logits small.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from edgerlhf.models import precision as P
from edgerlhf.models.adapters import enable_gradient_checkpointing, load_policy, lora_config
from edgerlhf.models.generation import sample, sample_rollout
from edgerlhf.models.loading import load_causal_lm, load_tokenizer, reload_through_disk
from edgerlhf.models.parts import decoder_parts, only_blocks, position_ids
from edgerlhf.rl.logprobs import token_logprobs

__all__ = ["Forward", "Roles", "Trunk", "ValueHead", "frozen_bottom_blocks", "load_base", "no_dropout",
           "position_ids", "trim_response_padding"]


class ValueHead(nn.Module):
    """A scalar per position from the trunk's last hidden state; starts at exactly 0 for every state."""

    def __init__(self, hidden: int):
        super().__init__()
        self.summary = nn.Linear(hidden, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.summary(h.to(self.summary.weight.dtype)).squeeze(-1).float()


class Forward(NamedTuple):
    logprobs: torch.Tensor        # (B, R) log-prob of each response token (at the sampling temperature)
    values: torch.Tensor | None   # (B, R)
    entropy: torch.Tensor | None  # (B, R)


def _hidden(model, ids, mask, n_prompt: int, trunk: "Trunk | None" = None) -> torch.Tensor:
    """Last hidden states at the positions that predict each response token; with ``trunk`` only the blocks
    above the cached frozen ones run, from their cached output."""
    body, _ = decoder_parts(model)
    kw = dict(attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
    if trunk is None:
        h = body(input_ids=ids, **kw).last_hidden_state
    else:
        with only_blocks(body, trunk.split, None, final_norm=True):
            h = body(inputs_embeds=trunk.hidden, **kw).last_hidden_state
    return h[:, n_prompt - 1:-1]


def _token_logprobs(model, h, targets, temperature: float, entropy: bool, real: torch.Tensor | None = None):
    """Log-prob of each target token (and the entropy) from hidden states. The vocabulary-sized logits (49k
    wide for SmolLM2) are the largest tensors in online RL: ``rl.logprobs.token_logprobs`` makes them a chunk
    of positions at a time and recomputes them in the backward instead of keeping them. With ``real`` (a
    (B, R) bool mask) the head runs on the real tokens only and padding gets 0: a step's responses are padded
    to its longest, and the head is the largest matmul of the pass (measured: 45% of an update's time)."""
    _, head = decoder_parts(model)
    if real is None or bool(real.all()):
        return token_logprobs(h, head.weight, targets, temperature, bias=head.bias, entropy=entropy)
    lp, ent = token_logprobs(h[real], head.weight, targets[real], temperature, bias=head.bias, entropy=entropy)
    full = lambda x: None if x is None else h.new_zeros(real.shape, dtype=x.dtype).masked_scatter(real, x)  # noqa: E731
    return full(lp), full(ent)


def trim_response_padding(ids: torch.Tensor, mask: torch.Tensor, n_prompt: int, trunk: "Trunk | None" = None):
    """Drop the trailing columns that are padding in every row (a batch's responses are padded to the step's
    longest): (ids, mask, trunk, R) with R the full response width to pad results back to. Exact: the real
    tokens see the same keys at the same positions, and the dropped keys were masked (their weight was an
    exact 0, so the sums over keys add the same numbers in the same order)."""
    R = ids.shape[1] - n_prompt
    used = mask[:, n_prompt:].bool().any(0)
    keep = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
    if keep == R:
        return ids, mask, trunk, R
    end = n_prompt + keep
    return ids[:, :end], mask[:, :end], None if trunk is None else Trunk(trunk.hidden[:, :end], trunk.split), R


def _pad_back(x: torch.Tensor | None, R: int) -> torch.Tensor | None:
    """A (B, R') per-response-token result back to the full response width (0 in the dropped columns)."""
    return x if x is None or x.shape[1] == R else torch.nn.functional.pad(x, (0, R - x.shape[1]))


class Trunk(NamedTuple):
    """The output of the frozen bottom blocks for one batch of sequences: the same for the policy, the
    reference (adapters off) and the value adapter, because no adapter lives down there."""
    hidden: torch.Tensor   # (B, T, H) hidden states after block ``split - 1``
    split: int             # how many bottom blocks it stands for


def frozen_bottom_blocks(model, lora_layers: int) -> int:
    """How many bottom blocks of ``model`` carry no adapter when LoRA covers the top ``lora_layers`` blocks
    (0 when LoRA covers all, or the architecture has no ``.layers`` / ``.norm`` stack to split)."""
    body, _ = decoder_parts(model)
    n = getattr(model.config, "num_hidden_layers", 0)
    if not (lora_layers and hasattr(body, "layers") and hasattr(body, "norm") and len(body.layers) == n):
        return 0
    return max(0, n - lora_layers)


def load_base(policy: str, model: str, *, dtype: torch.dtype, device, seed: int, base_precision: str = "fp32",
              chat_template: bool = True):
    """The frozen base every role shares: the SFT policy merged (or ``model`` itself), optionally
    re-loaded through bitsandbytes in int8 / int4. Returns (model, tokenizer, sft_meta or {})."""
    if policy:
        m, tok, meta = load_policy(policy, dtype=torch.float32 if base_precision != "fp32" else dtype, device="cpu")
    else:
        m, tok, meta = load_causal_lm(model, dtype=dtype, seed=seed), load_tokenizer(model, chat_template), {}
    if base_precision != "fp32":
        from transformers import AutoModelForCausalLM  # noqa: PLC0415 - transformers: only for a quantised base

        name = m.name_or_path
        with P.quiet_bnb(), _quiet_io():
            m = reload_through_disk(m, AutoModelForCausalLM, "edgerlhf-base-",
                                    quantization_config=P.bnb_config(base_precision, device, skip=("lm_head",)),
                                    dtype=P.compute_dtype(base_precision, device), device_map={"": str(device)})
        m.name_or_path = m.config._name_or_path = name  # not the temporary folder
        P.keep_bnb_differentiable(m)  # rollouts run without grad; the update after them needs the backward
    else:
        m = m.to(device)
    m.config.pad_token_id = tok.pad_token_id
    for p in m.parameters():
        p.requires_grad_(False)
    return m, tok, meta


@contextlib.contextmanager
def _quiet_io():
    """No save/load progress bars for the temporary round trip through disk."""
    from transformers.utils import logging as hf_logging  # noqa: PLC0415 - transformers: heavy, this path only

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def no_dropout(model) -> None:
    """PPO's first update must see ratio 1: dropout (LoRA's included) off, as TRL does."""
    for mod in model.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0


def _block_index(name: str) -> int:
    """The block number in a parameter name like ``...layers.12.self_attn...`` (-1 outside the blocks)."""
    parts = name.split(".")
    for a, b in zip(parts, parts[1:]):
        if a == "layers" and b.isdigit():
            return int(b)
    return -1


class Roles:
    """Policy, reference and value over shared (or, for comparison, separate) weights.

    ``forward(ids, mask, n_prompt, ...)`` gives the policy's token log-probs and the values; ``ref_logprobs``
    the reference's. ``trainable`` lists every parameter the optimizer owns (policy adapter, and for an
    algorithm with a value function the value head and the value adapter when there is one).
    ``values=False`` builds no value head (GRPO, RLOO); ``reference=False`` (``beta=0``) loads no reference
    copy in the separate layout, and ``ref_logprobs`` refuses to run."""

    def __init__(self, cfg, *, dtype: torch.dtype, device, values: bool = True, reference: bool = True):
        from peft import get_peft_model  # noqa: PLC0415 - peft loads where an adapter is built (tests patch it)

        self.cfg, self.device = cfg, torch.device(device)
        self.layout, self.has_reference = cfg.layout, reference
        self.value_mode = getattr(cfg, "value_model", "head") if values else None
        load = lambda: load_base(cfg.policy, cfg.model, dtype=dtype, device=self.device, seed=cfg.seed,  # noqa: E731
                                 base_precision=cfg.base_precision, chat_template=cfg.chat_template)
        base, self.tokenizer, self.sft_meta = load()
        self.policy = get_peft_model(base, lora_config(cfg, "CAUSAL_LM", base))  # adapter "default"
        self.ref = self.value_trunk = self.value_head = None
        if self.layout == "separate":
            if reference:
                self.ref = load()[0].eval()
            if values:
                vbase = load()[0]
                self.value_trunk = get_peft_model(vbase, lora_config(cfg, "CAUSAL_LM", vbase)) \
                    if self.value_mode == "adapter" else vbase
        elif self.value_mode == "adapter":
            self.policy.add_adapter("value", lora_config(cfg, "CAUSAL_LM", base))
            self.policy.set_adapter("default")
        if values:
            self.value_head = ValueHead(base.config.hidden_size).to(self.device)
        for m in (self.policy, self.ref, self.value_trunk):
            if m is not None:
                no_dropout(m)
        self.trainable = [p for n, p in self.policy.named_parameters() if "lora_" in n]
        if self.value_trunk is not None and self.value_mode == "adapter":
            self.trainable += [p for n, p in self.value_trunk.named_parameters() if "lora_" in n]
        if self.value_head is not None:
            self.trainable += list(self.value_head.parameters())
        for p in self.trainable:
            p.requires_grad_(True)
        # the frozen bottom blocks whose output is computed once per batch and reused (cache_trunk=auto)
        self.split = 0
        if getattr(cfg, "cache_trunk", "off") == "auto" and self.layout == "shared":
            self.split = frozen_bottom_blocks(self.policy, getattr(cfg, "lora_layers", 0))
            below = [n for n, _ in self.policy.named_parameters() if "lora_" in n and _block_index(n) < self.split]
            if below:  # never cache what an adapter changes
                raise RuntimeError(f"cache_trunk: an adapter sits in a cached block ({below[0]}); report this")
        if cfg.gradient_checkpointing:
            for m in (self.policy, self.value_trunk):
                if m is not None and m is not self.ref:
                    # with a cached trunk the update starts from plain tensors above the frozen blocks:
                    # no input needs to require grad, so the frozen blocks stay out of the autograd graph
                    enable_gradient_checkpointing(m, input_grads=self.split == 0)

    # -- modes ---------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> None:
        for m in (self.policy, self.value_trunk, self.value_head):
            if m is not None:
                m.train(mode)

    def _keep_trainable(self) -> None:
        """PEFT's set_adapter (also run when disable_adapter() ends) freezes every inactive adapter; the
        optimizer owns both adapters, so both stay trainable."""
        for p in self.trainable:
            p.requires_grad_(True)

    @contextlib.contextmanager
    def _adapter(self, name: str):
        """Switch the shared model's active adapter, and back to the policy's."""
        self.policy.set_adapter(name)
        try:
            yield
        finally:
            self.policy.set_adapter("default")
            self._keep_trainable()

    # -- forwards ------------------------------------------------------------------------------------
    @torch.no_grad()
    def trunk(self, ids, mask) -> Trunk | None:
        """The frozen bottom blocks' output for these sequences (None when nothing is cached)."""
        if not self.split:
            return None
        body, _ = decoder_parts(self.policy)
        with only_blocks(body, 0, self.split, final_norm=False):
            out = body(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
            h = out.last_hidden_state
        return Trunk(h, self.split)

    def forward(self, ids, mask, n_prompt: int, temperature: float, *, values: bool = True,
                entropy: bool = False, trunk: Trunk | None = None) -> Forward:
        """Policy log-probs of the response tokens (and values, entropy). ``trunk``: the cached output of the
        frozen bottom blocks for these sequences (:meth:`trunk`); only the blocks above it run."""
        ids, mask, trunk, R = trim_response_padding(ids, mask, n_prompt, trunk)
        targets = ids[:, n_prompt:]
        h = _hidden(self.policy, ids, mask, n_prompt, trunk)
        lp, ent = _token_logprobs(self.policy, h, targets, temperature, entropy, mask[:, n_prompt:].bool())
        v = None
        if values:
            if self.value_head is None:
                raise RuntimeError("values were asked for, but these roles were built without a value function")
            if self.layout == "shared" and self.value_mode == "head":
                v = self.value_head(h)  # one trunk pass for both
            elif self.layout == "shared":
                with self._adapter("value"):
                    v = self.value_head(_hidden(self.policy, ids, mask, n_prompt, trunk))
            else:
                v = self.value_head(_hidden(self.value_trunk, ids, mask, n_prompt))
        return Forward(_pad_back(lp, R), _pad_back(v, R), _pad_back(ent, R))

    @torch.no_grad()
    def ref_logprobs(self, ids, mask, n_prompt: int, temperature: float, trunk: Trunk | None = None) -> torch.Tensor:
        if not self.has_reference:
            raise RuntimeError("the reference was asked for, but these roles were built without one (beta=0)")
        model = self.ref if self.ref is not None else self.policy
        ctx = self.policy.disable_adapter() if self.ref is None else contextlib.nullcontext()
        ids, mask, trunk, R = trim_response_padding(ids, mask, n_prompt, trunk)
        with ctx:
            h = _hidden(model, ids, mask, n_prompt, trunk)
            lp = _token_logprobs(model, h, ids[:, n_prompt:], temperature, False, mask[:, n_prompt:].bool())[0]
        self._keep_trainable()
        return _pad_back(lp, R)

    @torch.no_grad()
    def generate(self, ids, mask, **kw) -> torch.Tensor:
        return self.policy.generate(input_ids=ids, attention_mask=mask, use_cache=True, **kw)

    @torch.no_grad()
    def sample(self, ids, mask, **kw) -> torch.Tensor:
        """New tokens only, through ``models.generation.sample`` (rows that ended leave the batch)."""
        return sample(self.policy, ids, mask, **kw)

    @torch.no_grad()
    def sample_rollout(self, ids, mask, *, logprobs: bool = False, **kw):
        """New tokens and what their decode computed anyway (``models.generation.sample_rollout``): the frozen
        trunk's output at every position (when a trunk is cached) and, with ``logprobs``, each token's log-prob
        and entropy and the last hidden state that predicted it."""
        return sample_rollout(self.policy, ids, mask, record=logprobs, split=self.split, **kw)

    @torch.no_grad()
    def values_from_hidden(self, h: torch.Tensor) -> torch.Tensor | None:
        """Values from the policy's own last hidden states where the value function is a head on them (shared
        layout, ``value_model=head``); None where values need a pass of their own (value adapter, separate)."""
        if self.value_head is not None and self.layout == "shared" and self.value_mode == "head":
            return self.value_head(h)
        return None

    # -- state ---------------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor by a stable name (checkpoints)."""
        out = {f"policy.{n}": p for n, p in self.policy.named_parameters() if p in set(self.trainable)}
        if self.value_trunk is not None and self.value_mode == "adapter":
            out.update({f"value_trunk.{n}": p for n, p in self.value_trunk.named_parameters() if "lora_" in n})
        if self.value_head is not None:
            out.update({f"value_head.{n}": p for n, p in self.value_head.named_parameters()})
        return out

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        own = self.trainable_state()
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} trainable tensors (e.g. {missing[0]}); was it written "
                             "with another layout / value_model / LoRA setting?")
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(state[k].to(p.device, p.dtype))

    def save_policy(self, path: Path) -> None:
        """The policy adapter alone, in PEFT's layout (adapter "default" saves at the folder's root)."""
        self.policy.save_pretrained(path, selected_adapters=["default"], safe_serialization=True)
