"""Padding, and batched sampling with left padding (decoder-only models must be padded on the left to
generate; training and scoring pad on the right)."""

from __future__ import annotations

import torch

from edgerlhf.data.formatting import Prompt, encode_prompt


def _pad(seqs: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        at = slice(n - len(s), n) if left else slice(0, len(s))
        ids[i, at] = torch.tensor(s, dtype=torch.long)
        mask[i, at] = 1
    return ids, mask


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), padded on the left."""
    return _pad(seqs, pad_id, left=True)


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), padded on the right."""
    return _pad(seqs, pad_id, left=False)


@torch.no_grad()
def generate(model, tok, prompts: list[Prompt], *, max_new_tokens: int = 48, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, batch_size: int = 32, use_chat_template: bool = True,
             progress: bool = False, desc: str = "generate") -> tuple[list[str], int]:
    """Decode ``prompts``; ``temperature=0`` is greedy. Returns (texts, number of new tokens made)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts, n_tokens = [], 0
    eos = tok.eos_token_id
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False, unit="prompt")
    for i in range(0, len(prompts), batch_size):
        chunk = [encode_prompt(tok, p, use_chat_template) for p in prompts[i:i + batch_size]]
        ids, mask = left_pad(chunk, tok.pad_token_id)
        kw = dict(do_sample=temperature > 0, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                  eos_token_id=eos, use_cache=True)  # also when training turned the cache off
        if temperature > 0:
            kw.update(temperature=temperature, top_k=top_k or None, top_p=top_p)
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)
        new = out[:, ids.shape[1]:]
        for row in new:
            row = row.tolist()
            if eos in row:
                row = row[: row.index(eos)]
            n_tokens += len(row) + 1
            texts.append(tok.decode(row, skip_special_tokens=True).strip())
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    return texts, n_tokens
