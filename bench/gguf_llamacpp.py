"""An exported GGUF file run by llama.cpp itself (through llama-cpp-python, which compiles llama.cpp: not an
EdgeRLHF dependency, so this lives in bench/ and runs in a venv of its own). Two halves, two environments:

    python bench/gguf_llamacpp.py prepare POLICY FILE.gguf ref.json     # EdgeRLHF's venv: the policy's side
    /other/venv/bin/python bench/gguf_llamacpp.py compare FILE.gguf ref.json [ADAPTER.gguf]   # with llama-cpp-python

`prepare` writes, for 8 chat prompts, the chat-formatted prompt text, its token ids (transformers' tokenizer) and
the policy's greedy continuation (24 tokens, float32). `compare` loads the file in llama.cpp and prints: whether
llama.cpp tokenizes each prompt text to the same ids (the pre-tokenizer, merges and special tokens as written),
the share of the policy's greedy next tokens llama.cpp keeps (teacher-forced on the policy's continuation), and
how many of llama.cpp's own greedy continuations are identical. Prints measured numbers (not a test).
"""
import json
import sys


def prepare(policy: str, gguf: str, out: str) -> None:
    import torch

    from edgerlhf.data.formatting import encode_prompt, prompt_text
    from edgerlhf.models.export import CHECK_PROMPTS, load_for_export

    model, tok, meta = load_for_export(policy)
    model.eval()
    chat = bool(meta.get("use_chat_template", True))
    rows = []
    with torch.no_grad():
        for p in CHECK_PROMPTS:
            ids = encode_prompt(tok, p, chat)
            new = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                                 pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
            rows.append({"prompt": p, "text": prompt_text(tok, p, chat), "ids": ids, "greedy": new})
    json.dump({"policy": policy, "gguf": gguf, "eos": tok.eos_token_id, "rows": rows}, open(out, "w"))


def compare(gguf: str, ref: str, adapter: str | None = None) -> None:
    """``adapter``: a GGUF LoRA adapter llama.cpp applies on ``gguf`` (its --lora)."""
    import numpy as np
    from llama_cpp import Llama

    data = json.load(open(ref))
    llm = Llama(model_path=gguf, lora_path=adapter, n_ctx=512, logits_all=True, verbose=False, seed=0)
    same_tok = agree = total = identical = 0
    for r in data["rows"]:
        toks = llm.tokenize(r["text"].encode(), add_bos=False, special=True)
        same_tok += toks == r["ids"]
        seq = r["ids"] + r["greedy"]
        llm.reset()
        llm.eval(seq)
        scores = np.asarray(llm.scores[: len(seq)])
        n0 = len(r["ids"]) - 1
        pred = scores[n0:len(seq) - 1].argmax(-1)
        agree += int((pred == np.asarray(r["greedy"])).sum())
        total += len(r["greedy"])
        llm.reset()
        mine = []
        for t in llm.generate(r["ids"], temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            mine.append(t)
            if t == data["eos"] or len(mine) == len(r["greedy"]):
                break
        identical += mine == r["greedy"]
    n = len(data["rows"])
    meta = llm.metadata
    print(f"llama.cpp on {gguf}{' + ' + adapter if adapter else ''}: arch {meta.get('general.architecture')}, "
          f"pre-tokenizer {meta.get('tokenizer.ggml.pre')}, "
          f"chat template {'present' if meta.get('tokenizer.chat_template') else 'absent'}")
    print(f"prompts tokenized to the same ids as transformers: {same_tok} of {n}")
    print(f"the policy's greedy next token kept by llama.cpp: {agree / total:.1%} of {total} positions")
    print(f"llama.cpp's greedy answers identical to the policy's: {identical} of {n}")


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(*sys.argv[2:5])
    else:
        compare(*sys.argv[2:5])
