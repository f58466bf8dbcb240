"""Export one policy as GGUF in every type and measure each file against the policy: size, export time, and what
`edgerlhf export --gguf` checks (reloaded by transformers: max |logit difference|, teacher-forced greedy agreement,
identical greedy answers on 8 chat prompts), plus the same agreement with the quantisation applied to the weights
in PyTorch, which separates the type's own loss from the writer's. Prints measured numbers (not a test).

    python bench/gguf_export.py POLICY_RUN [OUT_DIR]
"""
import sys
import tempfile
import time
from pathlib import Path

import torch

from edgerlhf.data.formatting import encode_prompt
from edgerlhf.models.export import CHECK_PROMPTS, export_gguf, load_for_export
from edgerlhf.models.gguf_export import GGUF_TYPES, check_gguf, quantised_in_torch


def torch_agreement(model, q, tok):
    agree = total = 0
    with torch.no_grad():
        for p in CHECK_PROMPTS:
            ids = torch.tensor([encode_prompt(tok, p)])
            ref = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
            a, b = model(ref).logits[0], q(ref).logits[0]
            n0 = ids.shape[1] - 1
            agree += (a[n0:-1].argmax(-1) == b[n0:-1].argmax(-1)).sum().item()
            total += a[n0:-1].shape[0]
    return agree / total


policy = sys.argv[1]
out = Path(sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="gguf-bench-"))
model, tok, _ = load_for_export(policy)
model.eval()
print(f"policy {policy}; files in {out}")
print("| type | file MiB | export s | check s | max abs logit diff | greedy next token kept (GGUF) | same, quantised "
      "in "
      "PyTorch | greedy answers identical |")
print("|---|---|---|---|---|---|---|---|")
for kind in GGUF_TYPES:
    t0 = time.time()
    r = export_gguf(policy, kind, out / f"policy-{kind}.gguf", check=False, progress=False)
    t1 = time.time()
    c = check_gguf(out / f"policy-{kind}.gguf", model, tok, CHECK_PROMPTS)
    t2 = time.time()
    sim = torch_agreement(model, quantised_in_torch(model, kind).eval(), tok)
    print(f"| {kind} | {r['file_bytes'] / 2**20:.1f} | {t1 - t0:.1f} | {t2 - t1:.1f} | {c.max_abs_logit_diff:.3f} "
          f"(logits up to {c.logit_scale:.1f}) | {c.top1_agreement:.1%} of {c.n_tokens} | {sim:.1%} | "
          f"{c.greedy_identical:.0%} of {c.n_prompts} |", flush=True)
