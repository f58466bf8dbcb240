"""Best-of-n on shared candidates (``edgerlhf bon``), and best-of-n at serving time (:func:`best_of`).

    1 candidates  N responses per held-out prompt sampled once from the policy with the engine's sampler (a
                  prompt's N copies share one prefill), scored by the gold; or reused from an earlier bon run
    2 rank        the RM scores every candidate at each precision (a prompt's N candidates share one pass over the
                  prompt, as a pair's do in RM scoring), one precision loaded at a time
    3 curves      per prompt and n: the expected gold (and proxy) of best-of-n over all n-subsets of the N, no
                  resampling (``rl.best_of_n``); KL(best-of-n) = log n - (n-1)/n; the Gao et al. fit per precision
    4 certificate how each precision ranks the policy's own samples against the reference (the first precision):
                  Kendall tau within a prompt's N, top-1 agreement, the within-prompt reward spread ratio

``candidates.jsonl`` (one row per prompt: the candidates, their word counts, gold and every precision's scores) is
the one file the study's report reads; its equivalence verdicts (TOST) and Holm-corrected differences are the
study's (``study.bon_report``).
"""

from __future__ import annotations

import filecmp
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from edgerlhf.config.refs import ensemble_meta
from edgerlhf.data.formatting import last_message
from edgerlhf.data.taskfile import held_out_prompts
from edgerlhf.models.adapters import find_artifact, load_policy, read_artifact_meta
from edgerlhf.models.generation import generate
from edgerlhf.models.precision import default_precisions, parse_precisions
from edgerlhf.rewards import mean_ci95
from edgerlhf.rewards.gold import make_gold
from edgerlhf.rewards.learned import encode_for_rm, load_reward_model, stores_own_precision
from edgerlhf.rewards.serving import load_reward
from edgerlhf.rl.best_of_n import bon_curves, bon_kl, bon_ns, bootstrap_gao, kendall_tau, top1_agreement
from edgerlhf.rl.ensemble import aggregate, normalise
from edgerlhf.runfolder import RunFolder
from edgerlhf.stages.skeleton import Context, Setup, run_stage
from edgerlhf.tracking import atomic_write_text
from edgerlhf.tracking.memory import release_free_memory

__all__ = ["best_of", "certificate", "read_candidates", "run", "score_candidates"]

# what must match for an earlier bon run's candidates to be reused
_SAMPLING_KEYS = ("num_candidates", "num_prompts", "prompts", "temperature", "max_new_tokens", "seed", "gold",
                  "chat_template")


def run(cfg) -> Path:
    """Best-of-n curves of ``cfg.policy`` ranked by ``cfg.rm`` at each precision; returns the run folder
    (``candidates.jsonl``, ``summary.json``, ``table.md``)."""
    return run_stage(cfg, _prepare, _execute)


def read_candidates(path: str | Path) -> list[dict]:
    """The rows of a bon run's ``candidates.jsonl`` (a run folder or the file)."""
    f = Path(path)
    f = f / "candidates.jsonl" if f.is_dir() else f
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()]


def _prepare(setup: Setup):
    """Policy, prompts, precisions, the n of the curve and reused candidates: checked before anything is written."""
    cfg = setup.cfg
    art = find_artifact(cfg.policy)
    prompts = held_out_prompts(cfg.prompts, cfg.num_prompts)
    precisions = parse_precisions(cfg.precisions) if cfg.precisions else default_precisions(setup.device)
    ns = sorted(set(cfg.ns)) if cfg.ns else bon_ns(cfg.num_candidates)
    rm_meta = read_artifact_meta(find_artifact(cfg.rm))
    if rm_meta.get("stage") != "reward":
        raise ValueError(f"rm={cfg.rm}: a {rm_meta.get('stage')!r} run, not a reward model")
    if stores_own_precision(rm_meta):
        own = rm_meta.get("precision") or rm_meta.get("base_precision")
        if any(p != own for p in precisions):
            raise ValueError(f"rm={cfg.rm} is stored at {own} (a quantized or QLoRA-trained RM): it ranks only at that "
                             f"precision, not {', '.join(p for p in precisions if p != own)}; pass precisions=[{own}] "
                             "or the fp32-trained reward run")
    reused = None
    if cfg.candidates:
        src = RunFolder(cfg.candidates)
        diff = [k for k in _SAMPLING_KEYS if src.config.get(k) != getattr(cfg, k)]
        if src.config.get("policy") and not _same_policy(src.config["policy"], cfg.policy):
            diff.insert(0, "policy")
        reused = read_candidates(src.path)
        if diff or [r["prompt"] for r in reused] != [last_message(p) for p in prompts]:
            raise ValueError(f"candidates={src.path} were sampled differently ({', '.join(diff) or 'other prompts'}); "
                             "leave candidates empty to sample anew, or use this run's settings")
    return art, prompts, precisions, ns, reused


def _same_policy(a: str, b: str) -> bool:
    """One policy: the same folder, or (a study moved or copied elsewhere) artifacts with identical weights."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        fa, fb = (find_artifact(x) / "adapter_model.safetensors" for x in (a, b))
        return fa.is_file() and fb.is_file() and filecmp.cmp(fa, fb, shallow=False)
    except FileNotFoundError:
        return False


def _execute(ctx: Context, data) -> dict:
    cfg, run_dir = ctx.cfg, ctx.run_dir
    art, prompts, precisions, ns, rows = data
    out: dict = {"policy": str(art), "rm": str(cfg.rm), "prompts": len(prompts), "N": cfg.num_candidates, "ns": ns,
                 "precisions": {}, "reference": precisions[0], "gold": cfg.gold}
    # 1 candidates (sampled once, or reused)
    if rows is None:
        rows, stats = _sample(ctx, prompts)
        out.update(stats)
    else:
        out["candidates_from"] = str(cfg.candidates)
    _save(run_dir.path, rows)
    # 2 rank: every precision not already scored, one RM in memory at a time (an ensemble: each member once per
    # precision, every aggregation computed from those scores, and WARM)
    ens = ensemble_meta(cfg.rm)
    arms = precisions if ens is None else ensemble_arms(cfg, precisions, len(ens["members"]))
    for p in dict.fromkeys(a.partition("/")[0] for a in arms):
        need = [p] if ens is None else _ensemble_keys(arms, p, len(ens["members"]))
        need = [k for k in need if k not in rows[0].get("rm", {})]
        if not need:
            continue
        t0 = time.perf_counter()
        for key, scores in _score(cfg, prompts, rows, p, ctx.device, need).items():
            for r, s in zip(rows, scores):
                r.setdefault("rm", {})[key] = s
        out[f"timing/rm_{p}_s"] = time.perf_counter() - t0
        _save(run_dir.path, rows)  # a crash after this keeps the precisions already scored
    if ens is not None:
        _aggregate_arms(rows, arms, ens, cfg.uwo_lambda)
        _save(run_dir.path, rows)
        out.update({"ensemble_members": len(ens["members"]), "ensemble_layout": cfg.ensemble_layout,
                    "uwo_lambda": cfg.uwo_lambda, "arms": arms, "reference": arms[0]})
    # 3 curves and 4 the certificate
    out.update(analyse(rows, arms, ns, gold=cfg.gold != "none", n_boot=cfg.bootstrap, seed=cfg.seed))
    out["samples"] = [{"prompt": r["prompt"], "candidates": r["responses"][:4], "gold": r.get("gold", [])[:4]}
                      for r in rows[: cfg.num_samples]]
    text = table(out)
    atomic_write_text(run_dir.path / "table.md", text)
    run_dir.log({k: v for k, v in out.items() if isinstance(v, (int, float))}, step=0)
    print("\n[bon] " + text)
    return out


def _sample(ctx: Context, prompts: list) -> tuple[list[dict], dict]:
    cfg = ctx.cfg
    policy, tok, _ = load_policy(find_artifact(cfg.policy), dtype=ctx.dtype, device=ctx.device)
    N = cfg.num_candidates
    flat = [p for p in prompts for _ in range(N)]
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    texts, n_tokens = generate(policy, tok, flat, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                               batch_size=cfg.batch_size, progress=cfg.progress, desc=f"candidates {N}x{len(prompts)}")
    sample_s = time.perf_counter() - t0
    del policy
    release_free_memory()
    gold = make_gold(cfg.gold, device=str(ctx.device))
    t1 = time.perf_counter()
    g = gold(flat, texts) if gold is not None else None
    rows = []
    for i, p in enumerate(prompts):
        resp = texts[i * N:(i + 1) * N]
        row = {"prompt": last_message(p), "responses": resp, "words": [len(t.split()) for t in resp]}
        if not isinstance(p, str):  # a message list (system prompt, turns): what the RM scored, for re-scoring
            row["messages"] = p
        if g is not None:
            row["gold"] = g[i * N:(i + 1) * N]
        rows.append(row)
    stats = {"timing/sample_s": sample_s, "bon/tokens_per_s": n_tokens / sample_s,
             "bon/mean_tokens": n_tokens / len(flat)}
    if g is not None:
        stats["timing/gold_s"] = time.perf_counter() - t1
    return rows, stats


def ensemble_arms(cfg, precisions: list[str], k: int) -> list[str]:
    """The rankers of an ensemble RM (``PRECISION/WHO``): ``cfg.ensemble_arms``, or member 0 alone and every
    aggregation and WARM at each precision."""
    return list(cfg.ensemble_arms) or [f"{p}/{w}" for p in precisions for w in ("m0", "mean", "min", "uwo", "warm")]


def _ensemble_keys(arms: list[str], precision: str, k: int) -> list[str]:
    """The scores ``arms`` need at ``precision``: the members an arm reads (every member for an aggregation), WARM."""
    need = []
    for a in arms:
        p, _, who = a.partition("/")
        if p != precision:
            continue
        if who in ("mean", "min", "uwo"):
            need += [f"{p}/m{i}" for i in range(k)]
        else:
            need.append(a)
    return list(dict.fromkeys(need))


def _aggregate_arms(rows: list[dict], arms: list[str], meta: dict, uwo_lambda: float) -> None:
    """Each prompt's aggregated scores, from its members' scores normalised on their training pairs."""
    means = [m["norm_mean"] for m in meta["members"]]
    stds = [m["norm_std"] for m in meta["members"]]
    for a in arms:
        p, _, who = a.partition("/")
        if who not in ("mean", "min", "uwo"):
            continue
        for r in rows:
            raw = torch.tensor([r["rm"][f"{p}/m{i}"] for i in range(len(means))], dtype=torch.float32)
            r["rm"][a] = aggregate(normalise(raw, means, stds), who, uwo_lambda).tolist()


def _score(cfg, prompts: list, rows: list[dict], precision: str, device, keys: list[str] | None = None,
           chunk: int = 16) -> dict[str, list[list[float]]]:
    """Every candidate's score at ``precision`` under each of ``keys`` (the precision itself for a single RM;
    ``P/m<i>`` and ``P/warm`` for an ensemble), a prompt's candidates sharing one pass over the prompt
    (:func:`score_candidates`). An ensemble's members load once per precision in the shared layout (one base, K
    adapters) or one at a time in the merged one."""
    keys = keys or [precision]
    N = cfg.num_candidates
    flat_p = [p for p in prompts for _ in range(N)]
    out, shared = {}, None
    for key in keys:
        who = key.partition("/")[2]
        if not who:
            rm = load_reward_model(cfg.rm, precision, device=str(device), batch_size=cfg.rm_batch_size)
        elif who == "warm":
            rm = load_reward(cfg.rm, precision, device=str(device), batch_size=cfg.rm_batch_size, ensemble="warm")
        elif cfg.ensemble_layout == "shared":
            if shared is None:
                shared = load_reward(cfg.rm, precision, device=str(device), batch_size=cfg.rm_batch_size,
                                     ensemble="mean", layout="shared")
            shared.switch(int(who[1:]))
            rm = shared.members[int(who[1:])]
        else:
            rm = load_reward(cfg.rm, precision, device=str(device), batch_size=cfg.rm_batch_size,
                             ensemble=f"member-{who[1:]}")
        seqs = encode_for_rm(rm.tokenizer, flat_p, [t for r in rows for t in r["responses"]], rm.max_length,
                             rm.meta.get("use_chat_template", True))
        flat = score_candidates(rm, seqs, N, chunk)
        bad = [i for i, v in enumerate(flat) if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"the RM ({key}) scored {len(bad)} candidates non-finite (first: prompt "
                                     f"{bad[0] // N}, candidate {bad[0] % N}); nothing is ranked by it")
        out[key] = [flat[i * N:(i + 1) * N] for i in range(len(rows))]
        del rm
        if who in ("", "warm") or cfg.ensemble_layout != "shared":
            release_free_memory()
    del shared
    release_free_memory()
    return out


def score_candidates(rm, seqs: list[list[int]], N: int, chunk: int = 16) -> list[float]:
    """Scores of ``seqs``, consecutive runs of ``N`` candidates sharing a prompt, in their order. A prompt's
    candidates are sorted by length and scored in chunks that share the prompt (``RewardModel.score_groups``): a
    chunk pads to its own longest candidate, not to the prompt's longest (sampled lengths run from 2 to 48 tokens).
    ``bench/bon_scoring.py``, default model, 768 candidates, fp32, 2-core AVX512: whole 10.1 candidates/s, pairs
    11.5, a prompt's 32 at once 16.8, sorted chunks of 8 20.1, of 16 22.3."""
    chunks = []
    for i in range(len(seqs) // N):
        order = sorted(range(i * N, (i + 1) * N), key=lambda j: len(seqs[j]))
        chunks += [order[k:k + chunk] for k in range(0, N, chunk)]
    out = [0.0] * len(seqs)
    for idx, scores in zip(chunks, rm.score_groups([[seqs[j] for j in c] for c in chunks])):
        for j, v in zip(idx, scores):
            out[j] = v
    return out


def certificate(rows: list[dict], precision: str, reference: str) -> dict:
    """How ``precision`` ranks the policy's own candidates against ``reference``, per prompt then averaged: Kendall
    tau-b within a prompt's N, top-1 agreement (the same best candidate), and the ratio of the mean within-prompt
    standard deviation of the scores (a low-variance RM slows RL even when accurate: Razin et al. 2025)."""
    taus = [kendall_tau(r["rm"][precision], r["rm"][reference]) for r in rows]
    taus = [t for t in taus if math.isfinite(t)]
    top1 = [top1_agreement(r["rm"][precision], r["rm"][reference]) for r in rows]
    sd = float(np.mean([np.std(r["rm"][precision]) for r in rows]))
    sd_ref = float(np.mean([np.std(r["rm"][reference]) for r in rows]))
    tau, tau_lo, tau_hi = mean_ci95(taus)
    t1, t1_lo, t1_hi = mean_ci95(top1)
    return {"kendall_tau": tau, "kendall_tau_ci95": [tau_lo, tau_hi], "top1_agreement": t1,
            "top1_agreement_ci95": [t1_lo, t1_hi], "reward_std": sd,
            "std_ratio": sd / sd_ref if sd_ref > 0 else math.nan}


def analyse(rows: list[dict], precisions: list[str], ns: list[int], *, gold: bool = True, n_boot: int = 1000,
            seed: int = 0) -> dict:
    """Per precision: best-of-n gold and proxy means with 95% intervals over prompts, the paired gold difference
    against the reference precision at each n, the Gao et al. fit, and the certificate."""
    kl = [bon_kl(n) for n in ns]
    d = [math.sqrt(k) for k in kl]
    out: dict = {"kl": kl, "sqrt_kl": d, "precisions": {}}
    ref = precisions[0]
    ref_gold = bon_curves([r["gold"] for r in rows], [r["rm"][ref] for r in rows], ns) if gold else None
    for p in precisions:
        rank = [r["rm"][p] for r in rows]
        proxy = bon_curves(rank, rank, ns)
        res: dict = {"proxy": proxy.mean(0).tolist(),
                     "proxy_ci95": [list(mean_ci95(proxy[:, k])[1:]) for k in range(len(ns))]}
        if gold:
            g = ref_gold if p == ref else bon_curves([r["gold"] for r in rows], rank, ns)
            res.update({"gold": g.mean(0).tolist(),
                        "gold_ci95": [list(mean_ci95(g[:, k])[1:]) for k in range(len(ns))]})
            if len([x for x in d if x > 0]) >= 2:
                res.update(bootstrap_gao(g, d, n_boot, seed))
            if p != ref:
                diff = g - ref_gold
                res["gold_vs_ref"] = diff.mean(0).tolist()
                res["gold_vs_ref_ci95"] = [list(mean_ci95(diff[:, k])[1:]) for k in range(len(ns))]
        if p != ref:
            res.update(certificate(rows, p, ref))
        out["precisions"][p] = res
    if gold:
        g_ref = out["precisions"][ref]["gold"]
        out["bon/ref_gold_gain_at_N"] = g_ref[-1] - g_ref[0]
    return out


def table(s: dict) -> str:
    """The summary as a markdown table: gold (or proxy) at each n per precision, alpha / beta, the certificate."""
    ns, gold = s["ns"], any("gold" in v for v in s["precisions"].values())
    what = "gold" if gold else "proxy"
    head = (f"best-of-n from N={s['N']} candidates on {s['prompts']} prompts ({what}; reference precision "
            f"{s['reference']})\n\n")
    cols = [f"n={n}" for n in ns] + (["alpha", "beta"] if gold else []) + ["Kendall tau", "top-1", "std ratio"]
    lines = ["| precision | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for p, v in s["precisions"].items():
        cells = [f"{x:+.3f}" for x in v[what]]
        if gold:
            cells += [f"{v[k]:+.3f}" if k in v else "–" for k in ("alpha", "beta")]
        cells += [f"{v[k]:.3f}" if k in v and math.isfinite(v[k]) else "–"
                  for k in ("kendall_tau", "top1_agreement", "std_ratio")]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def _save(folder: Path, rows: list[dict]) -> None:
    atomic_write_text(folder / "candidates.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def best_of(model, tok, prompts: list, n: int, reward, *, temperature: float = 0.7, max_new_tokens: int = 96,
            batch_size: int = 32, seed: int = 0) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """Best-of-n at serving time: ``n`` samples per prompt (sharing one prefill), scored by ``reward(prompts,
    responses)``; per prompt (the highest-scored response, its score, every (response, score)). Ties go to the
    first sampled."""
    if n < 1:
        raise ValueError(f"best-of-{n}: n must be at least 1")
    flat = [p for p in prompts for _ in range(n)]
    torch.manual_seed(seed)
    texts, _ = generate(model, tok, flat, max_new_tokens=max_new_tokens, temperature=temperature,
                        batch_size=max(batch_size, n))
    scores = [float(x) for x in reward(flat, texts)]
    out = []
    for i in range(len(prompts)):
        cand = list(zip(texts[i * n:(i + 1) * n], scores[i * n:(i + 1) * n]))
        best = max(range(n), key=lambda j: (cand[j][1], -j))
        out.append((cand[best][0], cand[best][1], cand))
    return out
