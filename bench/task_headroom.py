"""How much headroom the built-in task leaves: gold (VADER) score of the default model's continuations.

Samples one response per held-out prompt (temperature 0.7, top_k 0, top_p 1.0, up to 48 new tokens,
batched with left padding, chat template with add_generation_prompt=True), scores it with GoldScorer and
prints the mean with a 95% CI next to the demonstrations' mean, generation throughput and wall time.
This measures the BASE model; the headroom bar (-0.2..+0.3) applies to the SFT policy.

    python bench/task_headroom.py            # 128 eval prompts
    python bench/task_headroom.py -n 64
    python bench/task_headroom.py --throughput   # also tokens/s at batch sizes 8, 32, 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from edgerlhf.data.task import build_task, eval_prompts
from edgerlhf.models import load_causal_lm, load_tokenizer
from edgerlhf.rewards.gold import GoldScorer, mean_ci95

MAX_NEW_TOKENS = 48


def _encode(tok, rows):
    texts = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    # The chat template already starts with its special tokens: do not add any.
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _new_token_count(new_ids: torch.Tensor, eos_id: int) -> int:
    """Generated tokens up to and including the first eos of each row (padding after it not counted)."""
    total = 0
    for row in new_ids.tolist():
        total += row.index(eos_id) + 1 if eos_id in row else len(row)
    return total


@torch.inference_mode()
def sample(model, tok, rows, batch_size: int, seed: int):
    torch.manual_seed(seed)
    responses, n_tokens, gen_s = [], 0, 0.0
    for i in range(0, len(rows), batch_size):
        enc = _encode(tok, rows[i:i + batch_size])
        t0 = time.perf_counter()
        out = model.generate(**enc, do_sample=True, temperature=0.7, top_k=0, top_p=1.0,
                             max_new_tokens=MAX_NEW_TOKENS, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
        gen_s += time.perf_counter() - t0
        new = out[:, enc["input_ids"].shape[1]:]
        n_tokens += _new_token_count(new, tok.eos_token_id)
        responses += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    return responses, n_tokens, gen_s


@torch.inference_mode()
def throughput(model, tok, batch_sizes=(8, 32, 64), new_tokens: int = MAX_NEW_TOKENS):
    """Tokens/s generating exactly ``new_tokens`` per row (min_new_tokens forces the full length)."""
    rows = eval_prompts()
    results = {}
    for bs in batch_sizes:
        enc = _encode(tok, rows[:bs])
        torch.manual_seed(0)
        t0 = time.perf_counter()
        out = model.generate(**enc, do_sample=True, temperature=0.7, top_k=0, top_p=1.0,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=tok.pad_token_id)
        dt = time.perf_counter() - t0
        n = (out.shape[1] - enc["input_ids"].shape[1]) * bs
        results[bs] = (n / dt, dt)
        print(f"throughput  batch={bs:3d}  {n} new tokens in {dt:6.1f} s  -> {n / dt:7.1f} tok/s", flush=True)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--num-prompts", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--throughput", action="store_true", help="also measure tok/s at batch sizes 8, 32, 64")
    ap.add_argument("--show", type=int, default=6, help="print this many sample continuations")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    tok = load_tokenizer(args.model)
    tok.padding_side = "left"
    model = load_causal_lm(args.model).eval()
    gold = GoldScorer()

    task = build_task()
    demo = gold.score_texts([r["completion"][0]["content"] for r in task["train"] + task["eval"]])
    d_mean, d_lo, d_hi = mean_ci95(demo)
    print(f"demonstrations ({len(demo)} rows): gold mean {d_mean:+.3f} [{d_lo:+.3f}, {d_hi:+.3f}], "
          f"std {statistics.pstdev(demo):.3f}")

    rows = eval_prompts(args.num_prompts)
    # Warm-up (not timed): on a fresh process (and in some VMs, on first-touched memory) the first
    # generate call is several times slower than the steady state we want to report.
    with torch.inference_mode():
        enc = _encode(tok, rows[:args.batch_size])
        model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                       pad_token_id=tok.pad_token_id)
    responses, n_tok, gen_s = sample(model, tok, rows, args.batch_size, args.seed)
    scores = gold([r["prompt"] for r in rows], responses)
    m, lo, hi = mean_ci95(scores)
    print(f"base model {args.model}: gold mean {m:+.3f}  95% CI [{lo:+.3f}, {hi:+.3f}]  "
          f"std {statistics.pstdev(scores):.3f}  on {len(rows)} eval prompts")
    by_pol: dict[str, list[float]] = {}
    for r, s in zip(rows, scores):
        by_pol.setdefault(r["polarity"], []).append(s)
    print("  by opener polarity: " + ", ".join(f"{k} {statistics.mean(v):+.2f} (n={len(v)})"
                                              for k, v in sorted(by_pol.items())))
    print(f"  generation: {n_tok} tokens in {gen_s:.1f} s -> {n_tok / gen_s:.1f} tok/s "
          f"(batch {args.batch_size}, mean {n_tok / len(rows):.1f} tokens/response)")
    for r, resp, s in list(zip(rows, responses, scores))[:args.show]:
        print(f"  [{s:+.2f}] {r['opener']} || {resp!r}")
    if args.throughput:
        throughput(model, tok)
    print(f"wall time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
