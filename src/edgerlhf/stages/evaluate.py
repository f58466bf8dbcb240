"""Policy evaluation on held-out prompts (``edgerlhf eval``): gold and learned-RM scores with confidence
intervals, KL to the baseline, win rate against it with a paired interval, and text diversity (distinct-n,
length, repetition) to see degenerate reward hacking."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from edgerlhf.data.formatting import encode_pair, last_message
from edgerlhf.data.taskfile import held_out_prompts
from edgerlhf.models.adapters import find_artifact, load_policy, read_artifact_meta
from edgerlhf.models.generation import length_batches
from edgerlhf.models.gguf_adapter import (
    adapter_base_problem,
    file_loader,
    llamacpp_samples,
    load_gguf_model,
    read_gguf_adapter,
    read_gguf_policy_info,
)
from edgerlhf.models.loading import load_causal_lm, load_tokenizer
from edgerlhf.models.logprobs import batch_logprobs
from edgerlhf.rewards import mean_ci95
from edgerlhf.rewards.gold import gold_eval, gold_scores, make_gold
from edgerlhf.rewards.metrics import (
    distinct_n,
    gain_kept,
    length_controlled_gains,
    length_slope,
    repetition_rate,
    words,
)
from edgerlhf.rewards.serving import load_reward_as_stored
from edgerlhf.runfolder import RunFolder
from edgerlhf.stages.skeleton import Context, Setup, run_stage

__all__ = ["gold_eval", "response_logprobs", "run"]


@torch.no_grad()
def response_logprobs(model, tok, prompts: list, responses: list[str], *, temperature: float = 1.0,
                      max_length: int = 256, batch_size: int = 16) -> list[float]:
    """Sum of the log-probs of each response (its tokens after the prompt, end-of-turn included), under
    ``model`` at the sampling temperature: ``policy - reference`` of these is the k1 estimate of the KL
    between them on the policy's own samples. Length-sorted batches; the LM head runs on the response tokens
    only (``models.logprobs``)."""
    model.eval()
    rows = [encode_pair(tok, p, r, max_length) for p, r in zip(prompts, responses)]
    out = [0.0] * len(rows)
    for idx in length_batches([len(x) for x, _ in rows], batch_size, 1 << 30):
        sums = batch_logprobs(model, [rows[j] for j in idx], tok.pad_token_id, temperature=temperature)
        for j, v in zip(idx, sums.tolist()):
            out[j] = v
    return out


def _text_stats(texts: list[str], tok) -> dict:
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
            "mean_tokens": sum(lengths) / max(len(lengths), 1), "repetition_rate": repetition_rate(texts, 3)}


def _baseline_of(cfg, art: Path, meta: dict) -> tuple[str | Path | None, str]:
    if cfg.baseline == "none":
        return None, "none"
    if cfg.baseline not in ("auto", ""):
        return cfg.baseline, ("base model" if cfg.baseline == "base" else str(cfg.baseline))
    if meta.get("sft"):  # an RL or DPO policy (ppo / grpo / rloo / dpo) carries the SFT policy it started from
        return art / meta["sft"], f"SFT policy (the {meta.get('stage', 'RL')} run's starting point)"
    return "base", f"base model ({meta.get('base_model')})"


def _reward_of(cfg, meta: dict):
    auto = cfg.reward in ("auto", "")
    no_rm = not meta.get("reward") or meta.get("reward_precision") in ("callable", "null")  # a reward_fn, or random
    if cfg.reward == "none" or (auto and no_rm):
        return None, ""
    path = meta["reward"] if auto else cfg.reward
    precision = cfg.reward_precision or (meta.get("reward_precision") if auto else None) or None
    # an ensemble: served as set here, else (reward=auto) as the RL run served it
    how = cfg.ensemble if cfg.ensemble != "auto" or not auto else meta.get("ensemble", "auto")
    layout = meta.get("ensemble_layout", cfg.ensemble_layout) if auto and cfg.ensemble == "auto" else \
        cfg.ensemble_layout
    lam = meta.get("uwo_lambda", cfg.uwo_lambda) if auto and cfg.ensemble == "auto" else cfg.uwo_lambda
    rm = load_reward_as_stored(path, precision, ensemble=how, uwo_lambda=lam,
                               layout=layout if layout in ("shared", "merged") else "shared")
    what = f", {rm.meta['ensemble']} of {rm.meta['ensemble_members']}" if "ensemble" in rm.meta else ""
    return rm, f"{path} ({rm.meta.get('precision', precision or 'fp32')}{what})"


def _reuse(cfg, prompts) -> tuple[list[str], list[float], dict]:
    """The baseline's responses from its own eval run, after checking it sampled the same way."""
    src = RunFolder(cfg.baseline_eval)
    theirs = src.config
    defaults = {"prompts": "", "gold": "vader"}  # eval runs from before these settings existed
    diff = [k for k in ("num_prompts", "prompts", "gold", "temperature", "max_new_tokens", "seed")
            if theirs.get(k, defaults.get(k)) != getattr(cfg, k)]
    rows = [json.loads(x) for x in src.file("responses.jsonl").read_text().splitlines() if x.strip()]
    want = [last_message(p) for p in prompts]
    if diff or [r["prompt"] for r in rows] != want:
        raise ValueError(f"baseline_eval={src.path} sampled differently ({', '.join(diff) or 'other prompts'}); rerun "
                         "it with "
                         "this evaluation's settings or leave baseline_eval empty")
    summary = src.summary
    keep = {k: v for k, v in summary.items() if k.startswith(("eval/gold", "eval/mean_tokens", "eval/gen_tokens"))}
    return [r["response"] for r in rows], ([r["gold"] for r in rows] if rows and "gold" in rows[0] else None), keep


def run(cfg) -> Path:
    """Evaluate ``cfg.policy`` against its baseline; returns the run folder (summary.json, responses.jsonl)."""
    return run_stage(cfg, _prepare, _evaluate)


def _prepare(setup: Setup):
    """The policy, its baseline, the prompts and a reused baseline evaluation, checked before anything is written."""
    cfg = setup.cfg
    file = adapter = None
    if cfg.policy.endswith(".gguf"):  # an exported file: evaluated beside the policy run it came from
        file = Path(cfg.policy).expanduser()
        src = cfg.source or read_gguf_policy_info(file)["source"]
        if cfg.adapter:  # an adapter on a base file: the adapter names the policy; the base must be what it fits
            adapter = Path(cfg.adapter).expanduser()
            src = cfg.source or read_gguf_adapter(adapter)[2]
            problem = adapter_base_problem(file, read_gguf_policy_info(file)["source"], adapter, src)
            if problem:
                raise ValueError(problem)
        if not src:
            raise ValueError(f"{file} records no policy run it was exported from (exported by another tool or from a "
                             "merged folder); pass source=RUN, the policy run folder it was made from")
        if not Path(src).exists():
            raise ValueError(f"{file} was exported from {src}, which is not here; pass source=RUN with where that "
                             "run is now")
        art = find_artifact(src)
    else:
        art = find_artifact(cfg.policy)
    meta = read_artifact_meta(art)
    base_path, base_label = _baseline_of(cfg, art, meta)
    prompts = held_out_prompts(cfg.prompts, cfg.num_prompts)
    reused = _reuse(cfg, prompts) if cfg.baseline_eval and base_path is not None else None
    return art, meta, base_path, base_label, prompts, reused, (file, adapter)


def _evaluate(ctx: Context, data) -> dict:
    cfg, run_dir, mem = ctx.cfg, ctx.run_dir, ctx.mem
    art, meta, base_path, base_label, prompts, reused, (file, adapter) = data
    gold = make_gold(cfg.gold)
    sample = dict(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                  batch_size=cfg.batch_size, progress=cfg.progress, gold=gold)
    policy, tok, _ = load_policy(art)
    src = loader = None
    if file is not None:  # the policy itself first, same prompts and sampling seed: the file is paired with it
        loader = file_loader(cfg.loader)
        src = gold_eval(policy, tok, prompts, **sample)
        del policy
        policy = load_gguf_model(file, adapter)  # formatted with the policy's own tokenizer, as it was trained
    if loader == "llama.cpp":  # sampled by llama.cpp itself; its log-probs (KL) still from the dequantised weights
        res = _scored(llamacpp_samples(file, adapter, tok, prompts, temperature=cfg.temperature,
                                       max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                                       chat=bool(meta.get("use_chat_template", True))), prompts, gold, tok)
    else:
        res = gold_eval(policy, tok, prompts, **sample)
    texts, g = res.pop("responses"), res.pop("gold")
    out = {**res, **{f"eval/{k}": v for k, v in _text_stats(texts, tok).items()},
           "policy": (f"{file} + {adapter}" if adapter else str(file)) if file is not None else str(art),
           "baseline": base_label, "prompts": len(prompts), "gold": cfg.gold,
           "prompts_source": cfg.prompts or "built-in held-out prompts",
           "device": "cpu", "compute_dtype": "float32"}  # policies load on the CPU in fp32 (load_policy's defaults)
    base_texts = base_g = None
    if base_path is not None:
        if base_path == "base":
            bmodel, btok = (load_causal_lm(meta["base_model"], seed=meta.get("seed", 0)),
                            load_tokenizer(meta["base_model"], meta.get("use_chat_template", True)))
        else:
            bmodel, btok, _ = load_policy(base_path)
        if reused is not None:
            base_texts, base_g, bres = reused
        else:
            bres = gold_eval(bmodel, btok, prompts, **sample)
            base_texts, base_g = bres.pop("responses"), bres.pop("gold")
        out.update({k.replace("eval/", "baseline/"): v for k, v in bres.items()})
        out.update({f"baseline/{k}": v for k, v in _text_stats(base_texts, btok).items()})
        if g is not None:
            out.update(_paired(g, base_g, "gold"))
            out.update(_length_controlled(g, base_g, texts, base_texts, "gold"))
            bm = out["baseline/gold_mean"]
            out["eval/gold_gain_pct"] = 100 * out["eval/gold_gain"] / abs(bm) if bm else math.nan
        t0 = time.perf_counter()
        kl = [a - b for a, b in zip(response_logprobs(policy, tok, prompts, texts, temperature=cfg.temperature),
                                    response_logprobs(bmodel, btok, prompts, texts, temperature=cfg.temperature))]
        m, lo, hi = mean_ci95(kl)
        out.update({"eval/kl": m, "eval/kl_ci95_low": lo, "eval/kl_ci95_high": hi,
                    "timing/kl_s": time.perf_counter() - t0})
        del bmodel
    rm, rm_label = _reward_of(cfg, meta)
    rm_scores = base_rm = None
    if rm is not None:
        rm_scores = rm(prompts, texts)
        m, lo, hi = mean_ci95(rm_scores)
        out.update({"eval/rm_mean": m, "eval/rm_ci95_low": lo, "eval/rm_ci95_high": hi, "reward": rm_label})
        if base_texts is not None:
            base_rm = rm(prompts, base_texts)
            out["baseline/rm_mean"] = mean_ci95(base_rm)[0]
            if g is None:  # no gold: gain and win rate by the learned RM, named as such (a proxy)
                out.update(_paired(rm_scores, base_rm, "rm"))
                out.update(_length_controlled(rm_scores, base_rm, texts, base_texts, "rm"))
    if src is not None:
        out.update(file_vs_policy(src, texts, g, base_g, f"{file} + {adapter}" if adapter else file, art))
        if loader == "llama.cpp":
            out["file_loader"] = ("llama.cpp (llama-cpp-python: its own sampling, paired with the policy by prompt, "
                                  "not by sampling seed; KL from the dequantised weights)")
    records = []
    for i, p in enumerate(prompts):
        rec = {"prompt": last_message(p), "response": texts[i]}
        if src is not None:
            rec["source_response"] = src["responses"][i]
            if src["gold"] is not None:
                rec["source_gold"] = src["gold"][i]
        if g is not None:
            rec["gold"] = g[i]
        if base_texts is not None:
            rec["baseline_response"] = base_texts[i]
            if g is not None:
                rec["baseline_gold"] = base_g[i]
        if rm_scores is not None:
            rec["rm"] = rm_scores[i]
            if base_rm is not None:
                rec["baseline_rm"] = base_rm[i]
        records.append(rec)
    (run_dir.path / "responses.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    out["samples"] = records[: cfg.num_samples]
    run_dir.log({k: v for k, v in out.items() if isinstance(v, (int, float))}, step=0)
    out.update(mem.stop().as_metrics())
    _print(out)
    return out


def _scored(texts: list[str], prompts: list, gold, tok) -> dict:
    """What :func:`gold_eval` returns, for responses sampled elsewhere (llama.cpp)."""
    return {"eval/mean_tokens": sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
            / max(len(texts), 1), "responses": texts, "gold": None, **gold_scores(gold, prompts, texts)}


def file_vs_policy(src: dict, texts: list[str], g, base_g, file, art: Path) -> dict:
    """The exported file against the policy it came from: the share of the policy's gain over the baseline the file
    keeps (paired by prompt and sampling seed, 95% bootstrap over prompts) and the share of identical responses."""
    out = {"file": str(file), "source": str(art), "file_loader": "transformers (gguf_file=, dequantised to float32"
           + (", the adapter's delta added)" if " + " in str(file) else ")"),
           "eval/same_responses": sum(a == b for a, b in zip(src["responses"], texts)) / max(len(texts), 1),
           **{k.replace("eval/", "source/"): v for k, v in src.items() if k.startswith("eval/")}}
    if g is not None and base_g is not None:
        out.update({k.replace("eval/", "source/"): v for k, v in _paired(src["gold"], base_g, "gold").items()})
        share, lo, hi = gain_kept(g, src["gold"], base_g)
        out.update({"eval/gain_kept": share, "eval/gain_kept_ci95_low": lo, "eval/gain_kept_ci95_high": hi})
    return out


def _paired(a: list[float], b: list[float], name: str) -> dict:
    """Gain of ``a`` over ``b`` and win rate (a tie counts 1/2), each with a paired 95% CI over prompts."""
    out = {}
    diff = [x - y for x, y in zip(a, b)]
    win = [1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b)]
    for key, vals in ((f"{name}_gain", diff), ("win_rate" if name == "gold" else f"{name}_win_rate", win)):
        m, lo, hi = mean_ci95(vals)
        out.update({f"eval/{key}": m, f"eval/{key}_ci95_low": lo, f"eval/{key}_ci95_high": hi})
    return out


def _length_controlled(a: list[float], b: list[float], texts: list[str], base_texts: list[str], name: str) -> dict:
    """The gain with length's share removed: the slope of score on length (words) fitted on the baseline's
    responses, and each prompt's gain minus slope x its length change, with a 95% CI over prompts."""
    la, lb = [words(t) for t in texts], [words(t) for t in base_texts]
    slope = length_slope(b, lb)
    m, lo, hi = mean_ci95(length_controlled_gains(a, la, b, lb, slope))
    return {f"eval/{name}_gain_lc": m, f"eval/{name}_gain_lc_ci95_low": lo, f"eval/{name}_gain_lc_ci95_high": hi,
            f"eval/{name}_length_slope": slope, "eval/mean_words": sum(la) / len(la),
            "baseline/mean_words": sum(lb) / len(lb)}


def _print(o: dict) -> None:
    print(f"\n[eval] {o['policy']} on {o['prompts']} held-out prompts ({o.get('prompts_source', 'built-in')})")
    if "eval/gold_mean" in o:
        print(f"  gold mean      {o['eval/gold_mean']:+.3f}  (95% CI {o['eval/gold_ci95_low']:+.3f} .. "
              f"{o['eval/gold_ci95_high']:+.3f}; gold: {o.get('gold', 'vader')})")
    else:
        print("  no gold (gold=none): the learned RM below is a proxy, not ground truth")
    if "eval/rm_mean" in o:
        print(f"  learned RM     {o['eval/rm_mean']:+.3f}  ({o['reward']})")
    if "eval/rm_gain" in o:
        print(f"  RM gain        {o['eval/rm_gain']:+.3f}  (paired 95% CI {o['eval/rm_gain_ci95_low']:+.3f} .. "
              f"{o['eval/rm_gain_ci95_high']:+.3f}); RM win rate {o['eval/rm_win_rate']:.3f}")
    if "eval/kl" in o and "eval/gold_gain" not in o:
        print(f"  KL to baseline {o['eval/kl']:.2f} nats per response")
    if "eval/gold_gain" in o:
        print(f"  baseline       {o['baseline']}: gold {o['baseline/gold_mean']:+.3f}")
        print(f"  gold gain      {o['eval/gold_gain']:+.3f}  (paired 95% CI {o['eval/gold_gain_ci95_low']:+.3f} .. "
              f"{o['eval/gold_gain_ci95_high']:+.3f}; {o['eval/gold_gain_pct']:+.0f}%)")
        print(f"  length-controlled gain {o['eval/gold_gain_lc']:+.3f}  (95% CI {o['eval/gold_gain_lc_ci95_low']:+.3f} "
              f".. {o['eval/gold_gain_lc_ci95_high']:+.3f}; gold slope {o['eval/gold_length_slope']:+.4f} per word "
              f"on the baseline's responses; {o['baseline/mean_words']:.1f} -> {o['eval/mean_words']:.1f} words)")
        print(f"  win rate       {o['eval/win_rate']:.3f}  (95% CI {o['eval/win_rate_ci95_low']:.3f} .. "
              f"{o['eval/win_rate_ci95_high']:.3f})")
        print(f"  KL to baseline {o['eval/kl']:.2f} nats per response")
    if "file" in o:
        print(f"  the file       {o['file']} ({o['file_loader']}), exported from {o['source']}: same responses as "
              f"the policy for {o['eval/same_responses']:.0%} of prompts")
        if "eval/gain_kept" in o:
            print(f"  gain kept      {o['eval/gain_kept']:.1%} of the policy's gold gain {o['source/gold_gain']:+.3f} "
                  f"(95% CI {o['eval/gain_kept_ci95_low']:.1%} .. {o['eval/gain_kept_ci95_high']:.1%} over prompts)")
    print(f"  distinct-2 {o['eval/distinct_2']:.3f}, mean length {o['eval/mean_tokens']:.1f} tokens, repetition "
          f"{o['eval/repetition_rate']:.3f}" + (f" (baseline {o['baseline/distinct_2']:.3f}, "
                                                f"{o['baseline/mean_tokens']:.1f}, "
                                                f"{o['baseline/repetition_rate']:.3f})"
                                                if "baseline/distinct_2" in o else ""))
