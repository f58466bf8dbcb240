"""GPU paths exercised on the CPU: every training stage runs on the tiny model in fp32 and in bf16, the dtype
``dtype=auto`` picks on a GPU (the bf16 + cached-trunk crash of an earlier round shipped because no test ran
the GPU's default dtype). The online stages also take the paths the GPU defaults take: the frozen-trunk cache
(``cache_trunk=auto`` with LoRA in the top blocks only, as the presets' ``lora_layers=10``), both samplers, and
the decode's own log-probs (``rollout_logprobs``).

Each run goes through the stage's public ``run`` for two steps and checks behaviour, not only that it ran: the
summary's ``compute_dtype`` is the dtype asked and the frozen base is stored in it, the trainable parameters
moved and are finite, nothing else moved, the logged losses and metrics are finite.

What cannot run on a CPU is named in ``CUDA_ONLY`` with why; a test keeps it in sync with every place in
``src/`` that mentions CUDA."""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from edgerlhf.config import DPOConfig, GRPOConfig, PPOConfig, RewardConfig, RLOOConfig, SFTConfig, load_config

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# -- the CUDA-only list ----------------------------------------------------------------------------------
# Every function in src/edgerlhf that mentions CUDA (``torch.cuda``, ``.cuda``, the strings "cuda" / "nccl",
# mixed-precision ``autocast`` / ``GradScaler``) is in exactly one of the two tables below, keyed by its qualified
# name without leading underscores (not by its file, nor by whether it is private: moving a function to another
# module or making it public keeps the tables valid); test_cuda_sites_are_named_with_why keeps them in sync, and a
# test named in them (``test_...``) must exist.

# branches that cannot run on a CPU, and why (with what of them the CPU tests do cover)
CUDA_ONLY: dict[str, str] = {
    "resolve_device": "device=auto picks cuda when torch.cuda.is_available(), never true here (device=cuda without "
                      "a GPU is a clear error: test_asking_for_cuda_without_a_gpu_is_a_clear_error)",
    "resolve_dtype": "dtype=auto on a GPU: bf16 when torch.cuda.is_bf16_supported(), else fp16; only a GPU can be "
                     "asked. The dtype it picks, bf16, is the one this file runs every training stage in",
    "compute_dtype": "int8 / int4 (bitsandbytes) weights compute in bf16 on a GPU, fp32 on a CPU: bitsandbytes' "
                     "CUDA kernels cannot run here. Its GPU answer is forced on the CPU's kernels by "
                     "test_online_on_a_quantized_base_computing_in_bf16 and "
                     "test_reward_on_an_int4_body_computing_in_bf16",
    "default_precisions": "the precisions a study sweeps on a GPU (bf16 first); the list is checked on the CPU by "
                          "test_default_precisions_are_device_aware, running them is tests/test_gpu.py",
    "init_from_env": "an NCCL process group and torch.cuda.set_device(LOCAL_RANK) for GPU processes; the CPU runs "
                     "the gloo group (tests/stages/test_data_parallel.py)",
    "local_device": "under a launcher each process takes cuda:LOCAL_RANK: needs visible GPUs",
    "comm_device": "NCCL reduces only tensors on the GPU (gloo reduces them where they are)",
    "rng_state": "the CUDA generators' state saved in a checkpoint; the CPU generator's is, and resume is bitwise "
                 "on the CPU (test_resume_from_a_mid_epoch_checkpoint_is_exact)",
    "set_rng_state": "restoring the CUDA generators' state on resume (see rng_state)",
    "PeakMemory.start": "torch.cuda.reset_peak_memory_stats(): CUDA's allocator only (the CPU's resident-set probe "
                        "runs in every stage test)",
    "PeakMemory.cuda_mb": "torch.cuda.max_memory_allocated(): CUDA's allocator only",
    "PeakMemory.as_metrics": "memory/cuda_max_allocated_mb, and the peak read from it on a GPU: CUDA's allocator "
                             "only (tests/test_gpu.py checks it on a GPU)",
}

# functions that mention CUDA but run the same on a CPU, each with the test that runs it here
RUNS_ON_CPU: dict[str, str] = {
    "stage_resources": "the Ray executor's resources per stage: a GPU asked for only on cuda, the planner's memory on "
                       "a CPU (test_the_same_study_from_both_executors)",
    "stage_resources.resources": "one stage's Ray resources, the CPU branch run by "
                                 "test_the_same_study_from_both_executors",
    "BaseConfig.check": "device=cuda / cuda:N is validated as text (test_each_value_rule)",
    "plan": "`edgerlhf plan --vram` plans for a GPU on any machine (test_cli_plan_budget_and_bad_keys)",
    "plan_stage": "a GPU's memory plan is arithmetic (test_stage_plans_follow_the_settings)",
    "plan_study": "a study's plan for a GPU is arithmetic (test_what_fits_does_fit_and_one_more_does_not)",
    "validate": "a run folder's measured peak against the plan for its device, arithmetic "
                "(test_validate_predicts_a_run_folder_from_its_config)",
    "oom_retry": "torch.cuda.OutOfMemoryError halves the update's micro-batch and retries: a fake OOM on the CPU "
                 "(test_fake_cuda_oom_halves_the_micro_batch_and_retries); only its torch.cuda.empty_cache(), "
                 "guarded by is_available(), never runs here",
}

SRC = Path(__file__).resolve().parents[2] / "src" / "edgerlhf"


def _cuda_sites() -> dict[str, list[str]]:
    """{qualified function name, leading underscores dropped: ["file:line", ...]} of every mention of CUDA in
    src/edgerlhf: an attribute ``.cuda`` (``torch.cuda.*``, ``torch.backends.cuda``, ``tensor.cuda()``),
    ``autocast`` / ``GradScaler`` (mixed precision), or a string "cuda" / "cuda:N" / "nccl" (``device.type ==
    "cuda"``, a backend's name)."""
    sites: dict[str, list[str]] = {}

    def hit(node) -> bool:
        if isinstance(node, ast.Attribute):
            return node.attr in ("cuda", "autocast", "GradScaler")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            v = node.value.lower()
            return v in ("cuda", "nccl") or v.startswith("cuda:")
        return False

    def visit(node, stack, where):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, stack + [child.name], where)
                continue
            if hit(child):
                name = ".".join(part.lstrip("_") for part in stack) or "<module>"
                sites.setdefault(name, []).append(f"{where}:{child.lineno}")
            visit(child, stack, where)

    for f in sorted(SRC.rglob("*.py")):
        visit(ast.parse(f.read_text(), str(f)), [], f.relative_to(SRC).as_posix())
    return sites


def test_cuda_sites_are_named_with_why():
    sites = _cuda_sites()
    assert "resolve_dtype" in sites and "oom_retry" in sites  # the scan sees what it is meant to see
    both = set(CUDA_ONLY) & set(RUNS_ON_CPU)
    assert not both, f"named in both tables: {sorted(both)}"
    named = set(CUDA_ONLY) | set(RUNS_ON_CPU)
    new = {k: v for k, v in sites.items() if k not in named}
    assert not new, ("code that mentions CUDA and is in neither table of tests/stages/test_dtypes.py: add it to "
                     f"CUDA_ONLY (with why it cannot run on a CPU) or RUNS_ON_CPU (with the test): {new}")
    gone = sorted(named - set(sites))
    assert not gone, f"named in tests/stages/test_dtypes.py but no longer mention CUDA (renamed or removed?): {gone}"
    assert all(len(why) > 20 for why in {**CUDA_ONLY, **RUNS_ON_CPU}.values())


def test_the_tests_named_in_the_tables_exist():
    tests = Path(__file__).resolve().parents[1]
    defined = {m for f in tests.rglob("test_*.py") for m in re.findall(r"^def (test_\w+)\(", f.read_text(), re.M)}
    for key, why in {**CUDA_ONLY, **RUNS_ON_CPU}.items():
        for name in re.findall(r"\b(test_\w+)\b(?!\.py)", why):
            assert name in defined, f"{key!r} names {name}, which no test file defines"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error():
    from edgerlhf.models.loading import resolve_device

    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA device is visible; use device=cpu or auto"):
        resolve_device("cuda")


# -- a watch on what a stage trains ----------------------------------------------------------------------


class Watch:
    """The models a stage builds (every PEFT model, and an online run's Roles with its value head) and the
    optimizer's parameters, with a copy of every parameter taken when the optimizer is made: after set-up,
    before the first step."""

    def __init__(self):
        self.models, self.roles, self.optimizers = [], [], []
        self.before: dict[int, tuple[str, torch.nn.Parameter, torch.Tensor]] = {}

    def named(self) -> dict[int, tuple[str, torch.nn.Parameter]]:
        out = {}
        for r in self.roles:
            for prefix, m in (("policy.", r.policy), ("value_trunk.", r.value_trunk), ("value_head.", r.value_head)):
                if m is not None:
                    for n, p in m.named_parameters():
                        out.setdefault(id(p), (prefix + n, p))
        for m in self.models:
            for n, p in m.named_parameters():
                out.setdefault(id(p), (n, p))
        return out

    def optimizer_made(self, opt):
        self.optimizers.append(opt)
        self.before = {i: (n, p, p.detach().clone()) for i, (n, p) in self.named().items()}

    def result(self):
        """(trained, moved, frozen_moved, frozen): {name: parameter} of the optimizer's parameters, those of them
        that moved, the frozen ones that moved (should be none), and all frozen ones."""
        assert len(self.optimizers) == 1, f"{len(self.optimizers)} optimizers made"
        owned = {id(p) for g in self.optimizers[0].param_groups for p in g["params"]}
        unnamed = owned - set(self.before)
        assert not unnamed, f"{len(unnamed)} optimized parameters belong to no model the watch saw"
        trained = {n: p for i, (n, p, _) in self.before.items() if i in owned}
        frozen = {n: p for i, (n, p, _) in self.before.items() if i not in owned}
        moved = {n for i, (n, p, b) in self.before.items() if i in owned and not torch.equal(p.detach(), b)}
        frozen_moved = {n for i, (n, p, b) in self.before.items() if i not in owned and not torch.equal(p.detach(), b)}
        return trained, moved, frozen_moved, frozen


@pytest.fixture
def watch(monkeypatch):
    import peft

    from edgerlhf.models.roles import Roles

    w = Watch()
    real_peft, real_init = peft.get_peft_model, Roles.__init__

    def get_peft_model(*a, **kw):
        m = real_peft(*a, **kw)
        w.models.append(m)
        return m

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        w.roles.append(self)

    class AdamW(torch.optim.AdamW):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            w.optimizer_made(self)

    monkeypatch.setattr(peft, "get_peft_model", get_peft_model)
    monkeypatch.setattr(Roles, "__init__", init)
    monkeypatch.setattr(torch.optim, "AdamW", AdamW)
    return w


@pytest.fixture(scope="module")
def tiny_sft_module(tmp_path_factory):
    """The tiny SFT policy (a non-zero adapter) the DPO and online runs start from, made once for the file."""
    from conftest import make_tiny_sft

    return make_tiny_sft(tmp_path_factory.mktemp("sft"))


def _finite_metrics(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows
    bad = {(r.get("step"), k): v for r in rows for k, v in r.items()
           if isinstance(v, float) and not math.isfinite(v)}
    assert not bad, f"non-finite metrics: {bad}"
    return rows


def _check_run(run: Path, dtype: str, watch: Watch, *, only: tuple[str, ...], top_block_only: bool = False,
               float_base: bool = True):
    """The checks every stage shares: finished in the dtype asked (summary and the frozen weights), the trained
    parameters moved and are finite and are all of the kinds in ``only``, nothing frozen moved, the losses and
    metrics are finite, the saved adapter is finite. ``float_base=False``: a quantized body, whose floating
    parameters (norms, embeddings) peft's ``prepare_model_for_kbit_training`` may keep in fp32, as QLoRA does."""
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "finished" and (run / "status").read_text().strip() == "finished"
    assert s["compute_dtype"] == str(DTYPES[dtype]).removeprefix("torch.")
    trained, moved, frozen_moved, frozen = watch.result()
    assert trained and moved, "nothing trained"
    assert all(torch.isfinite(p).all() for p in trained.values()), "a trained parameter is not finite"
    assert not frozen_moved, f"frozen weights changed: {sorted(frozen_moved)[:4]}"
    assert all(any(k in n for k in only) for n in moved), f"other weights than {only} trained: {sorted(moved)[:4]}"
    # every adapter matrix B (initialised to 0) moved: the gradient reached every block the adapter covers
    still = sorted(n for n in trained if "lora_B" in n and n not in moved)
    assert any("lora_B" in n for n in moved) and not still, f"adapter weights that did not move: {still[:4]}"
    if top_block_only:
        assert all(".layers.1." in n for n in moved if "lora_" in n), sorted(moved)[:4]
    # the frozen base is stored in the dtype asked: the stage really computed in it
    if float_base:
        base = {p.dtype for n, p in frozen.items() if ".layers." in n and p.is_floating_point()}
        assert base == {DTYPES[dtype]}, base
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    assert weights and all(torch.isfinite(v.float()).all() for v in weights.values())
    for k, v in s.items():
        if k.startswith(("train/loss", "eval/loss", "loss/")) and isinstance(v, float):
            assert math.isfinite(v), (k, v)
    _finite_metrics(run)
    return s, moved


# -- the offline stages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_sft(tmp_path, sft_file, watch, dtype):
    from edgerlhf.stages import sft

    cfg = load_config(SFTConfig, overrides={
        "model": "tiny", "dataset": str(sft_file), "output_dir": str(tmp_path / "runs"), "max_steps": 2,
        "per_device_train_batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1, "report_to": ["none"],
        "sample_prompts": 1, "sample_max_new_tokens": 4, "max_eval_samples": 4, "progress": False,
        "warmup_ratio": 0.0, "dtype": dtype})
    s, _ = _check_run(sft.run(cfg), dtype, watch, only=("lora_",))
    assert math.isfinite(s["eval/loss_before"]) and math.isfinite(s["eval/loss_after"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_reward(tmp_path, watch, dtype):
    from conftest import write_toy_prefs
    from edgerlhf.stages import reward

    cfg = load_config(RewardConfig, overrides={
        "model": "tiny", "prefs": str(write_toy_prefs(tmp_path / "train.jsonl", 16, 1)),
        "eval_prefs": str(write_toy_prefs(tmp_path / "eval.jsonl", 8, 2)), "output_dir": str(tmp_path / "runs"),
        "max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 5e-3, "logging_steps": 1,
        "report_to": ["none"], "progress": False, "warmup_ratio": 0.0, "dtype": dtype})
    run = reward.run(cfg)
    s, moved = _check_run(run, dtype, watch, only=("lora_", "score"))
    assert any("score" in n for n in moved), "the score head did not train"
    assert math.isfinite(s["eval/accuracy"])
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    assert any("score" in k for k in weights)


@pytest.mark.parametrize("shared_prefix", [True, False], ids=["shared-prefix", "whole"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dpo(tmp_path, tiny_sft_module, watch, dtype, shared_prefix):
    from conftest import write_toy_prefs
    from edgerlhf.stages import dpo

    cfg = load_config(DPOConfig, overrides={
        "model": "tiny", "policy": str(tiny_sft_module),
        "prefs": str(write_toy_prefs(tmp_path / "train.jsonl", 8, 1, gold=False)),
        "eval_prefs": str(write_toy_prefs(tmp_path / "eval.jsonl", 4, 2, gold=False)),
        "output_dir": str(tmp_path / "runs"), "max_steps": 2, "per_device_train_batch_size": 4,
        "learning_rate": 5e-3, "logging_steps": 1, "report_to": ["none"], "progress": False, "warmup_ratio": 0.0,
        "lora_layers": 1, "beta": 0.5, "shared_prefix": shared_prefix, "dtype": dtype})
    s, _ = _check_run(dpo.run(cfg), dtype, watch, only=("lora_",), top_block_only=True)
    assert math.isfinite(s["eval/margin"]) and math.isfinite(s["eval/loss"])


# -- the online stages -------------------------------------------------------------------------------------


def length_reward(prompts, responses):
    """test_online's vowel count, plus a small term that sets apart two different responses of the same count: a
    group of 2 whose rewards tie has advantage 0 and trains nothing, and the runs here are 2 groups a step."""
    return [sum(c in "aeiou" for c in r) / 10 + sum(map(ord, r)) % 97 / 1000 for r in responses]


ALGOS = {  # name: (config class, its own overrides)
    "ppo-head": (PPOConfig, {"value_model": "head"}),
    "ppo-adapter": (PPOConfig, {"value_model": "adapter"}),
    "grpo": (GRPOConfig, {"num_generations": 2, "beta": 0.05}),  # beta > 0: the reference pass runs too
    "rloo": (RLOOConfig, {"num_generations": 2}),
}
PATHS = {  # name: overrides; tiny has 2 blocks, so lora_layers=1 leaves block 0 frozen and cached
    "all-blocks": {"lora_layers": 0},
    "cached-trunk": {"lora_layers": 1},  # the GPU default: presets' lora_layers=10 of SmolLM2's 30 blocks
    "cached-trunk-generate": {"lora_layers": 1, "sampler": "generate"},
    "rollout-logprobs": {"lora_layers": 1, "rollout_logprobs": True},
}
# every algorithm on the GPU default's path; the other paths where an algorithm runs them its own way: PPO's
# values come from the policy's hidden states (head) or a pass of their own (adapter), GRPO samples groups of
# identical prompts (prefilled once). RLOO differs from GRPO only in its advantages, computed in fp32.
ONLINE = ([("ppo-head", p) for p in PATHS]
          + [("ppo-adapter", p) for p in ("all-blocks", "cached-trunk", "rollout-logprobs")]
          + [("grpo", p) for p in PATHS] + [("rloo", "cached-trunk")])


def _online_cfg(tmp_path, policy, dtype, algo, **kw):
    cls, own = ALGOS[algo]
    return load_config(cls, overrides={
        "model": "tiny", "policy": str(policy), "output_dir": str(tmp_path / "runs"), "max_steps": 2,
        "num_rollouts_per_step": 4, "rollout_batch_size": 4, "mini_batch_size": 2, "gradient_accumulation_steps": 1,
        "response_length": 6, "gold_eval_prompts": 0, "report_to": ["none"], "progress": False,
        "learning_rate": 1e-3, "max_prompts": 8, "dtype": dtype, **own, **kw})


def _check_online(run: Path, dtype: str, watch: Watch, algo: str, cached: bool):
    (roles,) = watch.roles
    assert roles.split == (1 if cached else 0)  # the frozen-trunk cache is (or is not) the path taken
    only = ("lora_", "value_head.") if algo.startswith("ppo") else ("lora_",)
    s, moved = _check_run(run, dtype, watch, only=only, top_block_only=cached)
    assert any(".default." in n for n in moved)  # the policy adapter
    assert any(n.startswith("value_head.") for n in moved) == algo.startswith("ppo")
    assert any(".value." in n for n in moved) == (algo == "ppo-adapter")  # the value adapter
    assert s["skipped_updates"] == 0 and s["bad_steps"] == 0
    rows = [r for r in _finite_metrics(run) if "loss/policy" in r]
    assert [r["step"] for r in rows] == [1, 2]
    return rows


@pytest.mark.parametrize("algo,path", ONLINE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_online(tmp_path, tiny_sft_module, watch, monkeypatch, dtype, algo, path):
    from edgerlhf.models.roles import Roles
    from edgerlhf.stages import online

    calls = {"sample_rollout": [], "generate": 0}
    real_rollout, real_generate = Roles.sample_rollout, Roles.generate

    def sample_rollout(self, *a, logprobs=False, **kw):
        out = real_rollout(self, *a, logprobs=logprobs, **kw)
        calls["sample_rollout"].append(logprobs)
        return out

    def generate(self, *a, **kw):
        calls["generate"] += 1
        return real_generate(self, *a, **kw)

    monkeypatch.setattr(Roles, "sample_rollout", sample_rollout)
    monkeypatch.setattr(Roles, "generate", generate)
    cfg = _online_cfg(tmp_path, tiny_sft_module, dtype, algo, **PATHS[path])
    run = online.run(cfg, reward_fn=length_reward)
    if cfg.sampler == "generate":
        assert calls["generate"] and not calls["sample_rollout"]
    else:
        assert calls["sample_rollout"] and not calls["generate"]
        assert set(calls["sample_rollout"]) == {cfg.rollout_logprobs}
    rows = _check_online(run, dtype, watch, algo, cached=PATHS[path]["lora_layers"] > 0)
    # the fresh adapter adds an exact 0 in either dtype, so the policy is its reference: KL 0 at the first step,
    # exactly when both sides are forward passes, to rounding when the policy's side is the decode's own
    if cfg.rollout_logprobs:
        assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-2)
    else:
        assert rows[0]["objective/kl"] == 0.0


# -- a quantized base at the GPU's compute dtype ------------------------------------------------------------


@pytest.fixture
def gpu_compute_dtype(monkeypatch):
    """``precision.compute_dtype`` answers as on a GPU (int8 / int4 weights compute in bf16; fp32 on a CPU): the
    QLoRA path ``dtype=auto`` takes there, bitsandbytes' CPU kernels standing in for its CUDA ones."""
    from edgerlhf.models import precision as P

    real = P.compute_dtype
    monkeypatch.setattr(P, "compute_dtype", lambda precision, device: real(precision, "cuda"))
    assert P.compute_dtype("int4", "cpu") == torch.bfloat16


def _assert_quantized(watch: Watch, precision: str):
    """The body's linear layers hold int8 / packed 4-bit weights, and 4-bit ones compute in bf16."""
    import bitsandbytes as bnb

    layers = [m for m in watch.models[0].modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))]
    assert layers
    assert {m.weight.dtype for m in layers} == {torch.uint8 if precision == "int4" else torch.int8}
    if precision == "int4":
        assert {m.compute_dtype for m in layers} == {torch.bfloat16}


def test_reward_on_an_int4_body_computing_in_bf16(tmp_path, watch, gpu_compute_dtype):
    from conftest import write_toy_prefs
    from edgerlhf.stages import reward

    cfg = load_config(RewardConfig, overrides={
        "model": "tiny", "prefs": str(write_toy_prefs(tmp_path / "train.jsonl", 8, 1)),
        "eval_prefs": str(write_toy_prefs(tmp_path / "eval.jsonl", 4, 2)), "eval_steps": 1,
        "output_dir": str(tmp_path / "runs"), "max_steps": 2, "per_device_train_batch_size": 4,
        "learning_rate": 5e-3, "logging_steps": 1, "report_to": ["none"], "progress": False, "warmup_ratio": 0.0,
        "dtype": "bf16", "base_precision": "int4"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = reward.run(cfg)  # a held-out evaluation (no grad) between the two steps, as in test_reward
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
    s, moved = _check_run(run, "bf16", watch, only=("lora_", "score"), float_base=False)
    assert any("score" in n for n in moved)
    _assert_quantized(watch, "int4")


@pytest.mark.parametrize("base_precision", ["int8", "int4"])
def test_online_on_a_quantized_base_computing_in_bf16(tmp_path, tiny_sft_module, watch, gpu_compute_dtype,
                                                      base_precision):
    """tests/test_gpu.py's run (a quantized base, dtype auto = bf16) with the CPU's kernels, on the cached trunk."""
    from edgerlhf.stages import online

    cfg = _online_cfg(tmp_path, tiny_sft_module, "bf16", "ppo-head", lora_layers=1, base_precision=base_precision)
    _check_online(online.run(cfg, reward_fn=length_reward), "bf16", watch, "ppo-head", cached=True)
    _assert_quantized(watch, base_precision)
