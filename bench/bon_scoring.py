"""Benchmark: scoring best-of-n candidates with the RM, four ways side by side in one process on the same
candidates (a bon run's ``candidates.jsonl``): every candidate whole (``shared_prefix=False``, the baseline), two by
two with their prompt once (pairs, as RM scoring does), a prompt's N candidates with the prompt once, and the bon
stage's way (a prompt's candidates sorted by length, in chunks that share the prompt).

    .venv/bin/python bench/bon_scoring.py --bon STUDY/bon-<key> --rm STUDY/reward-<key> [--prompts 32]
        [--precision fp32] [--chunks 4,8,16]

Prints seconds and candidates per second for each way and the largest score difference from the baseline.
Prints measured numbers; it is not a test.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bon", required=True, help="a finished bon run folder")
    ap.add_argument("--rm", required=True, help="the reward run it ranked with")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--chunks", default="4,8,16")
    ap.add_argument("--batch-size", type=int, default=32, help="sequences per forward (the bon stage's rm_batch_size)")
    ap.add_argument("--tokens-per-batch", type=int, default=0, help="padded tokens per forward (0: the RM's default)")
    a = ap.parse_args()

    from edgerlhf.data.formatting import last_message
    from edgerlhf.data.task import eval_prompts
    from edgerlhf.rewards.learned import encode_for_rm, load_reward_model
    from edgerlhf.stages.bon import read_candidates, score_candidates

    rows = read_candidates(a.bon)[: a.prompts]
    rm = load_reward_model(a.rm, a.precision, batch_size=a.batch_size)
    rm.tokens_per_batch = a.tokens_per_batch or rm.tokens_per_batch
    N = len(rows[0]["responses"])
    # the prompt the stage scored: its message list (system prompt included); runs made before the file kept it are
    # matched to the built-in held-out prompts by their last message
    builtin = {last_message(r["prompt"]): r["prompt"] for r in eval_prompts()}
    full = [r.get("messages") or builtin.get(r["prompt"], r["prompt"]) for r in rows]
    seqs = encode_for_rm(rm.tokenizer, [p for p in full for _ in range(N)],
                         [t for r in rows for t in r["responses"]], rm.max_length)
    prompts = [seqs[i * N:(i + 1) * N] for i in range(len(rows))]

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    def pairs():
        a_, b_ = rm.score_pairs(seqs[0::2], seqs[1::2])
        return [x for ab in zip(a_, b_) for x in ab]

    rm.shared_prefix = False
    base_s, base = timed(lambda: rm.score_ids(seqs))
    rm.shared_prefix = True
    ways = [("whole, one by one (baseline)", base_s, base), ("pairs, prompt once", *timed(pairs)),
            (f"a prompt's {N}, prompt once", *timed(lambda: [x for g in rm.score_groups(prompts) for x in g]))]
    for c in map(int, a.chunks.split(",")):
        ways.append((f"sorted chunks of {c}, prompt once", *timed(lambda c=c: score_candidates(rm, seqs, N, c))))
    tok = sum(len(s) for s in seqs)
    print(f"{len(seqs)} candidates of {len(rows)} prompts ({tok} tokens whole), RM at {a.precision}, batches of "
          f"{rm.batch_size} sequences / {rm.tokens_per_batch} padded tokens")
    for name, s, out in ways:
        dev = max(abs(x - y) for x, y in zip(out, base))
        print(f"  {name:34s} {s:7.1f} s  {len(seqs) / s:6.1f} candidates/s  max |diff| {dev:.1e}")


if __name__ == "__main__":
    main()
