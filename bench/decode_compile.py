"""One decode step of the default model at batch 32: eager with a DynamicCache against torch.compile (inductor)
with a StaticCache, each after a prefill of 44 tokens, 24 steps, median step time. Run each mode in its own
process, one after the other; prints measured numbers (not a test).

    python bench/decode_compile.py eager
    python bench/decode_compile.py compiled      # the first step includes the compilation
"""
import sys
import time

import torch
from transformers import DynamicCache, StaticCache

from edgerlhf.config import PPOConfig
from edgerlhf.models.parts import decoder_parts as _parts
from edgerlhf.models.roles import Roles

cfg = PPOConfig(model="default", lora_layers=10, report_to=["none"])
roles = Roles(cfg, dtype=torch.float32, device="cpu", values=False, reference=False)
roles.train(False)
body, head = _parts(roles.policy)
B, P, N = 32, 44, 24
mode = sys.argv[1] if len(sys.argv) > 1 else "eager"
ids = torch.randint(100, 4000, (B, P))
mask = torch.ones_like(ids)
def run(fn, cache):
    with torch.no_grad():
        fn(input_ids=ids, attention_mask=mask, position_ids=torch.arange(P)[None].expand(B, P), cache=cache,
           use_cache=True)
        times = []
        for t in range(N):
            tok = torch.randint(100, 4000, (B, 1))
            attn = (torch.ones(B, P + t + 1, dtype=torch.long) if isinstance(cache, DynamicCache)
                    else torch.ones(B, P + N + 1, dtype=torch.long))
            t0 = time.perf_counter()
            fn(input_ids=tok, attention_mask=attn, position_ids=torch.full((B, 1), P + t), cache=cache, use_cache=True,
               **({} if isinstance(cache, DynamicCache) else {"cache_position": torch.tensor([P + t])}))
            times.append(time.perf_counter() - t0)
    return times
if mode == "eager":
    ts = run(body, DynamicCache(config=roles.policy.config))
    print("eager dynamic: first", round(ts[0]*1000), "ms; median", round(sorted(ts)[len(ts)//2]*1000), "ms")
else:
    cache = StaticCache(config=roles.policy.config, max_cache_len=P + N + 1)
    t0 = time.perf_counter()
    comp = torch.compile(body, dynamic=False)
    ts = run(comp, cache)
    print(f"compiled static: total {time.perf_counter()-t0:.0f}s incl. compile; first {ts[0]:.1f}s; median "
          f"{sorted(ts)[len(ts)//2]*1000:.0f} ms; last5", [round(x*1000) for x in ts[-5:]])
