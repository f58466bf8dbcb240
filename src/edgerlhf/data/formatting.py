"""Turning rows into token ids the same way in every stage (SFT, reward model, PPO, evaluation).

A *prompt* is either a string or a list of chat messages. Chat models (a tokenizer with a chat template)
get the template: a string prompt is wrapped as one user turn, so a string-format file and a
message-format file train the same thing. Without a template (or with ``use_chat_template=False``)
text is concatenated as is and the completion ends with EOS.
"""

from __future__ import annotations

from typing import Any

Prompt = Any  # str | list[dict[str, str]]


def _as_messages(x: Prompt, role: str) -> list[dict]:
    return [{"role": role, "content": x}] if isinstance(x, str) else list(x)


def _chat(tok, use_chat_template: bool) -> bool:
    return use_chat_template and getattr(tok, "chat_template", None) is not None


def prompt_text(tok, prompt: Prompt, use_chat_template: bool = True) -> str:
    """The text the model sees before it starts answering."""
    if _chat(tok, use_chat_template):
        return tok.apply_chat_template(_as_messages(prompt, "user"), tokenize=False, add_generation_prompt=True)
    if not isinstance(prompt, str):
        return "\n".join(m["content"] for m in prompt) + "\n"
    return prompt


def completion_text(tok, prompt: Prompt, completion: Prompt, use_chat_template: bool = True) -> str:
    """The text that follows :func:`prompt_text` for a given answer (end-of-turn marker included)."""
    if _chat(tok, use_chat_template):
        p = prompt_text(tok, prompt, True)
        full = tok.apply_chat_template(_as_messages(prompt, "user") + _as_messages(completion, "assistant"),
                                       tokenize=False)
        if full.startswith(p):
            return full[len(p):]
        # templates that rewrite earlier turns: fall back to the bare answer plus end of turn
    return response_str(completion) + (tok.eos_token or "")


def shared_system(prompts) -> str | None:
    """The system message a policy was trained with, for its export: the one every prompt opens with, ``""`` when
    no prompt has one (string prompts included), ``None`` when they differ (no single one to carry)."""
    seen = {p[0]["content"] if not isinstance(p, str) and p and p[0].get("role") == "system" else ""
            for p in prompts}
    return seen.pop() if len(seen) == 1 else (None if seen else "")


def response_str(completion: Prompt) -> str:
    """The plain answer text (what the gold scorer reads)."""
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


def last_message(prompt: Prompt) -> str:
    """A prompt as one line for logs and reports: the string itself, or its last message's text."""
    return prompt if isinstance(prompt, str) else response_str(prompt[-1:])


def encode_prompt(tok, prompt: Prompt, use_chat_template: bool = True) -> list[int]:
    return tok(prompt_text(tok, prompt, use_chat_template), add_special_tokens=False)["input_ids"]


def encode_pair(tok, prompt: Prompt, completion: Prompt, max_length: int, use_chat_template: bool = True
                ) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)``: labels are -100 on the prompt, so the loss covers the completion only.
    Over-long pairs keep the whole prompt and lose the completion's tail."""
    p = encode_prompt(tok, prompt, use_chat_template)
    c = tok(completion_text(tok, prompt, completion, use_chat_template), add_special_tokens=False)["input_ids"]
    if len(p) >= max_length:
        raise ValueError(f"prompt is {len(p)} tokens, not shorter than max_length={max_length}")
    c = c[: max_length - len(p)]
    return p + c, [-100] * len(p) + c
