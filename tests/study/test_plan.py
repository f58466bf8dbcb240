"""The memory planner: its terms against hand-derived byte counts, its activation formula against what autograd
really saves in the tiny model, what-fits advice that does fit, validation of a run folder, and the CLI."""

import json

import pytest
import torch
import yaml

from edgerlhf.study import memory_model, plan
from edgerlhf.study.plan import Shape

# SmolLM2-135M's shape, written out (config.json of the default model)
SMOL = Shape(layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, head_dim=64, vocab=49152,
             params=134_515_008, embed_params=28_311_552, tied=True)


def test_shape_counts_the_default_models_parameters():
    from transformers import LlamaConfig

    c = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
    s = plan.shape_from_config(c)
    assert s == SMOL
    from transformers import AutoModelForCausalLM

    tiny = plan.model_shape("tiny")
    model = AutoModelForCausalLM.from_config(
        __import__("edgerlhf.models.loading", fromlist=["x"]).tiny_config(tiny.vocab))
    assert tiny.params == sum(p.numel() for p in model.parameters())  # tied head counted once


def test_terms_by_hand():
    # weights: 134.5 M x 4 bytes; int8: the 106.2 M linear weights 1 byte, embedding + norms fp32
    assert plan.weight_bytes(SMOL, "fp32", 4.0) == 134_515_008 * 4
    linear = 134_515_008 - 28_311_552 - (2 * 30 + 1) * 576
    assert SMOL.linear_params == linear == 30 * (576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536)
    assert plan.weight_bytes(SMOL, "int8", 4.0) == linear * 1 + (134_515_008 - linear) * 4
    # LoRA r=16 on every linear of one block: r x (in + out) = 16 x 10,176 (q, o: 1152; k, v: 768; MLP 3 x 2112)
    assert plan.lora_params(SMOL, 16, 1) == 16 * 10_176
    assert plan.lora_params(SMOL, 16, 0) == 30 * 16 * 10_176  # 0: all blocks
    # KV cache: 2 x 30 blocks x 3 kv heads x 64 x 4 bytes = 46,080 bytes per token
    assert plan.kv_bytes(SMOL, 1, 1, 4.0) == 46_080
    assert plan.chunk_logits_bytes(SMOL) == 4 * 128 * 49152 * 4
    assert plan.parse_size("8GB") == plan.parse_size("8GiB") == 8 * 2**30
    assert plan.parse_size("800MB") == 800 * 2**20
    with pytest.raises(ValueError, match="write e.g. 8GB"):
        plan.parse_size("eight")


def test_activation_formula_matches_what_autograd_saves():
    """Count the bytes autograd saves for one LoRA training forward of the tiny model (unique storages, weights
    and logits excluded) and compare with the planner's per-token-per-block formula."""
    from edgerlhf.config import PPOConfig, load_config
    from edgerlhf.models.adapters import apply_lora
    from edgerlhf.models.loading import load_causal_lm

    shape = plan.model_shape("tiny")
    for dropout in (0.05, 0.0):
        cfg = load_config(PPOConfig, overrides={"model": "tiny", "lora_dropout": dropout})
        model = apply_lora(load_causal_lm("tiny"), cfg).train()
        B, T = 4, 32
        saved: dict[int, int] = {}

        def pack(t, saved=saved):
            st = t.untyped_storage()
            saved[st.data_ptr()] = max(saved.get(st.data_ptr(), 0), st.nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=torch.randint(5, 1000, (B, T)))
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        acts = sum(v for k, v in saved.items() if k not in weights)  # no loss: the logits are not saved
        per = acts / (B * T * shape.layers)
        want = memory_model.act_per_token_block(shape, 4.0, dropout)
        assert want == pytest.approx(per, rel=0.10), (dropout, per, want)


def test_stage_plans_follow_the_settings():
    kw = dict(runtime=400 * 2**20, prompt_tokens=45, response_tokens=48)
    sft = plan.stage_settings("sft")
    a = plan.plan_stage("sft", sft, SMOL, **kw)
    assert a.terms[0].name == "runtime (measured)" and a.term("runtime (measured)") == 400 * 2**20
    # twice the micro-batch: the batch-proportional terms double, the rest stays
    b = plan.plan_stage("sft", plan.stage_settings("sft", overrides={"per_device_train_batch_size": 16}), SMOL, **kw)
    for name in ("activations", "logits (full)"):
        assert b.term(name) == pytest.approx(2 * a.term(name))
    assert b.term("policy weights") == a.term("policy weights")
    # gradient checkpointing keeps block inputs only: far less than the full activations
    c = plan.plan_stage("sft", plan.stage_settings("sft", overrides={"gradient_checkpointing": True}), SMOL, **kw)
    assert c.term("activations") < a.term("activations") / 5
    # online RL: the int4 RM is smaller than the fp32 one; a GPU plans bf16 weights and shows the CUDA context
    ppo32 = plan.plan_stage("ppo", plan.stage_settings("ppo"), SMOL, **kw)
    ppo4 = plan.plan_stage("ppo", plan.stage_settings("ppo", overrides={"reward_precision": "int4"}), SMOL, **kw)
    assert ppo4.term("RM weights") < ppo32.term("RM weights") / 2
    gpu = plan.plan_stage("ppo", plan.stage_settings("ppo"), SMOL, device="cuda", **kw)
    assert gpu.term("policy / reference weights") == SMOL.params * 2 and gpu.term("CUDA context (outside allocated)")
    # reward=none is a callable reward: no RM at all
    assert plan.plan_stage("ppo", plan.stage_settings("ppo", overrides={"reward": "none"}), SMOL, **kw).term(
        "RM weights") == 0
    # an RM as the gold adds its weights
    gold = plan.plan_stage("ppo", plan.stage_settings("ppo", overrides={"gold": "/runs/gold-rm"}), SMOL, **kw)
    assert gold.term("gold RM weights") == SMOL.params * 4
    # on the CPU glibc keeps part of a training forward's freed memory (measured 0.6 x the activations); not on a
    # GPU, not with lean_update's fixed mmap threshold
    assert a.term("freed, kept by glibc (CPU)") == pytest.approx(memory_model.GLIBC_KEPT * a.term("activations"))
    assert not plan.plan_stage("sft", sft, SMOL, device="cuda", **kw).term("freed, kept by glibc (CPU)")
    lean = plan.plan_stage("ppo", plan.stage_settings("ppo", overrides={"lean_update": True}), SMOL, **kw)
    assert not lean.term("freed, kept by glibc (CPU)") and ppo32.term("freed, kept by glibc (CPU)") > 0
    # eval with no baseline holds one policy while sampling
    ev = plan.plan_stage("eval", plan.stage_settings("eval", overrides={"baseline": "none"}), SMOL, **kw)
    assert ev.term("baseline weights") == 0
    with pytest.raises(ValueError, match="no memory plan for stage 'rm-eval'"):
        plan.plan_stage("rm-eval", None, SMOL)


def test_what_fits_does_fit_and_one_more_does_not():
    kw = dict(runtime=0.0, prompt_tokens=45, response_tokens=48, device="cuda")
    cfg = plan.stage_settings("sft")
    budget = 3 * 2**30
    lines = plan.fits("sft", cfg, SMOL, budget, **kw)
    best = int(lines[0].rsplit(": ", 1)[1])
    from types import SimpleNamespace

    at = lambda b: plan.plan_stage("sft", SimpleNamespace(**{**vars(cfg), "per_device_train_batch_size": b}),  # noqa: E731
                                   SMOL, **kw).peak
    assert at(best) <= budget < at(2 * best)
    assert "gradient_checkpointing=true" in lines[1] and int(lines[1].rsplit(": ", 1)[1]) > best
    ppo = plan.fits("ppo", plan.stage_settings("ppo"), SMOL, 2 * 2**30, **kw)
    assert any(line.startswith("reward_precision that fits") for line in ppo)


def test_validate_predicts_a_run_folder_from_its_config(tmp_path):
    run = tmp_path / "study" / "sft-abc"
    run.mkdir(parents=True)
    cfg = {"stage": "sft", "model": "tiny", "per_device_train_batch_size": 4, "max_length": 64}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "summary.json").write_text(json.dumps({"stage": "sft", "status": "finished", "memory/peak_mb": 800.0}))
    failed = tmp_path / "study" / "ppo-x"
    failed.mkdir()
    (failed / "config.yaml").write_text(yaml.safe_dump({"stage": "ppo"}))
    (failed / "summary.json").write_text(json.dumps({"stage": "ppo", "status": "failed", "memory/peak_mb": 9.0}))
    (check,) = plan.validate(tmp_path / "study", runtime=300 * 2**20, prompt_tokens=20, response_tokens=20)
    expect = plan.plan_stage("sft", plan.stage_settings("sft", overrides={"per_device_train_batch_size": 4,
                                                                           "max_length": 64}),
                             plan.model_shape("tiny"), runtime=300 * 2**20, prompt_tokens=20, response_tokens=20)
    assert check.stage == "sft" and check.measured_mb == 800.0
    assert check.predicted_mb == pytest.approx(expect.peak / 2**20)
    assert "1 of 1 within ±20%" in plan.format_checks([check]) or "0 of 1 within" in plan.format_checks([check])


def test_cli_plan_budget_and_bad_keys(capsys):
    from edgerlhf.cli import main

    assert main(["plan", "--model", "tiny", "--vram", "1GB", "--stage", "sft,ppo", "--prompt-tokens", "40",
                 "--response-tokens", "40", "per_device_train_batch_size=256"]) == 0
    out = capsys.readouterr().out
    assert "memory plan: tiny" in out and "budget 1.00 GiB" in out
    assert "sft     cuda" in out and "OVER by" in out and "largest per_device_train_batch_size that fits" in out
    assert main(["plan", "--model", "tiny", "--stage", "ppo", "mini_batch_sz=4"]) == 2
    assert "did you mean 'mini_batch_size'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plan", "--stage", "rm-eval"])
    assert "no memory plan for rm-eval" in capsys.readouterr().err


def test_task_lengths_are_the_datas_longest_rows(tmp_path, sft_file):
    from conftest import write_toy_prefs
    from edgerlhf.data.formatting import encode_pair, encode_prompt
    from edgerlhf.data.loaders import load_preference_rows, load_sft_rows
    from edgerlhf.models.loading import load_tokenizer

    write_toy_prefs(tmp_path / "prefs.jsonl", 12, seed=0)
    (tmp_path / "eval.jsonl").write_text(json.dumps({"prompt": "A held-out question that is rather longer than the "
                                                                "training prompts, to be the longest prompt of all?"})
                                         + "\n")
    (tmp_path / "task.yaml").write_text(yaml.safe_dump({"sft": str(sft_file), "prefs": "prefs.jsonl",
                                                        "prompts": "prefs.jsonl", "eval_prompts": "eval.jsonl",
                                                        "gold": "none"}))
    L = plan.task_lengths(str(tmp_path / "task.yaml"), "tiny")
    tok = load_tokenizer("tiny")
    sft = load_sft_rows(str(sft_file))[0]
    prefs = load_preference_rows(str(tmp_path / "prefs.jsonl"))[0]
    assert L.sft_row == max(len(encode_pair(tok, r["prompt"], r["completion"], 10**6)[0]) for r in sft)
    assert L.prompt == len(encode_prompt(tok, json.loads((tmp_path / "eval.jsonl").read_text())["prompt"]))
    def answer(r, k):
        return len(encode_pair(tok, r["prompt"], r[k], 10**6)[0]) - len(encode_prompt(tok, r["prompt"]))

    longest = max([answer(r, k) for r in prefs for k in ("chosen", "rejected")]
                  + [answer(r, "completion") for r in sft])
    assert L.answer == longest and L.rows == len(sft) * 1 + len(prefs) * 2 + len(prefs) + 1
