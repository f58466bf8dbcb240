"""GGUF export: the pure pieces against hand-derived values, a trained tiny policy written in every type and read
back by transformers equal to the same weights quantised in PyTorch, the Ollama Modelfile, clear errors, and (slow)
the golden check: the default base model exported unchanged reproduces the official SmolLM2 GGUF it came from."""

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from edgerlhf.models.gguf_export import (
    GGUF_TYPES,
    GGUFExportError,
    chat_pieces,
    expected_tensor_bytes,
    gguf_shapes,
    ollama_modelfile,
    permute_qk,
    pre_tokenizer,
    quantised_in_torch,
    set_default_system,
    tensor_kind,
    tensor_type,
    write_gguf,
)
from edgerlhf.models.gguf_mixed import choose_kept
from edgerlhf.models.loading import load_causal_lm, load_tokenizer


def test_permute_qk_interleaves_each_heads_rotary_halves():
    # 2 heads of 4 rows: HF keeps each head's rotary halves apart (rows 0,1 | 2,3); llama.cpp interleaves them
    w = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    got = permute_qk(w, n_head=2)
    rows = [int(r[0]) // 3 for r in got]
    assert rows == [0, 2, 1, 3, 4, 6, 5, 7]
    # transformers' GGUF reader undoes it, so the round trip is the identity (k_proj: grouped heads too)
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    undo = LlamaTensorProcessor()._reverse_permute_weights
    assert np.array_equal(undo(got, 2, 2), w)
    k = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)  # 2 kv heads of 8 rows, 4 query heads
    assert np.array_equal(undo(permute_qk(k, 2), 4, 2), k)


def test_tensor_types_per_file_type():
    import gguf

    Q = gguf.GGMLQuantizationType
    assert tensor_type("blk.0.attn_norm.weight", (576,), "q4_1") == Q.F32  # norms stay F32
    assert tensor_type("blk.0.attn_q.weight", (576, 576), "q4_1") == Q.Q4_1
    assert tensor_type("token_embd.weight", (49152, 576), "q4_0") == Q.Q8_0  # as the official Q4_1 file has it
    assert tensor_type("token_embd.weight", (49152, 576), "f16") == Q.F16
    assert tensor_type("blk.0.ffn_up.weight", (100, 40), "q8_0") == Q.F16  # 40 is no multiple of the 32 block
    # bytes: Q8_0 is 34 bytes per 32 values, Q4_1 20, F16 2 per value, F32 4
    shapes = {"blk.0.attn_q.weight": (64, 64), "blk.0.attn_norm.weight": (64,)}
    assert expected_tensor_bytes(shapes, "q8_0") == 64 * 64 // 32 * 34 + 64 * 4
    assert expected_tensor_bytes(shapes, "q4_1") == 64 * 64 // 32 * 20 + 64 * 4
    assert expected_tensor_bytes(shapes, "f16") == 64 * 64 * 2 + 64 * 4


def test_chat_template_cut_into_roles_and_the_ollama_modelfile():
    tok = load_tokenizer("tiny")
    p = chat_pieces(tok)
    assert (p.user_prefix, p.user_suffix) == ("<|im_start|>user\n", "<|im_end|>\n")
    assert p.assistant_prefix == "<|im_start|>assistant\n" and p.system_prefix == "<|im_start|>system\n"
    assert p.default_system.startswith("You are a helpful AI assistant named SmolLM")
    text = ollama_modelfile(tok, "out/policy.gguf")
    assert "FROM ./policy.gguf" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert f'SYSTEM """{p.default_system}"""' in text
    # hand-written from the ChatML template: each turn's text around .Content, the newline ending a turn kept
    assert ('TEMPLATE """{{ range .Messages }}'
            '{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}<|im_end|>\n'
            '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
            '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n'
            '{{ end }}{{ end }}<|im_start|>assistant\n"""') in text
    assert text.count('"""') == 4  # TEMPLATE and SYSTEM blocks, closed
    plain = ollama_modelfile(tok, "p.gguf", chat_template=False)  # a policy trained on plain text
    assert 'TEMPLATE """{{ .Prompt }}"""' in plain and "SYSTEM" not in plain
    assert pre_tokenizer(tok) == "smollm"  # llama.cpp's name for this tokenizer (its hash table)


def test_a_chat_template_of_another_shape_is_refused_with_the_fix():
    tok = copy.deepcopy(load_tokenizer("tiny"))
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% if m['role'] == 'user' %}!{% endif %}{% endfor %}"
    with pytest.raises(GGUFExportError, match="write the Ollama TEMPLATE by hand"):
        chat_pieces(tok)


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """The tiny model with a trained-looking LoRA merged in (weights off any quantisation grid)."""
    from conftest import make_tiny_sft
    from edgerlhf.models.export import load_for_export

    run = make_tiny_sft(tmp_path_factory.mktemp("policy"))
    return (run, *load_for_export(run))


# q4_0 is q4_1's path with another quantizer (written and sized by the last test); reading the
# 49k-token tokenizer arrays back costs ~20 s per file on a 2-core machine, so three types are read back here
@pytest.mark.parametrize("kind", ["f16", "q8_0", "q4_1"])
def test_every_type_reloads_in_transformers_as_the_same_weights_quantised(trained_tiny, tmp_path, kind):
    """Names, shapes, the Q/K permutation, metadata: if any were wrong, the reloaded file would not compute what
    the policy with the same quantisation applied in PyTorch computes."""
    import gguf
    from transformers import AutoModelForCausalLM

    _, model, tok, _ = trained_tiny
    out = write_gguf(model, tok, tmp_path / f"p-{kind}.gguf", kind, name="t", progress=False)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode("Rate item 3. It was great, I love it!")])
    with torch.no_grad():
        want = quantised_in_torch(model, kind).eval()(ids).logits
        got = reloaded(ids).logits
        exact = model.eval()(ids).logits
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    if kind != "f16":  # and the quantisation did change something (the test can see a wrong layout)
        assert (got - exact).abs().max() > 1e-4
    # the file: header + metadata + exactly the chosen type's tensor bytes (plus alignment)
    shapes = gguf_shapes(model)
    size = out.stat().st_size
    r = gguf.GGUFReader(out)
    assert sum(int(t.n_bytes) for t in r.tensors) == expected_tensor_bytes(shapes, kind)
    assert expected_tensor_bytes(shapes, kind) < size < expected_tensor_bytes(shapes, kind) + 3 * 2**20
    assert r.fields["general.file_type"].contents() == {"f16": 1, "q8_0": 7, "q4_0": 2, "q4_1": 3}[kind]
    assert r.fields["tokenizer.ggml.pre"].contents() == "smollm"


def test_cli_export_writes_gguf_and_modelfile_and_measures_them(trained_tiny, tmp_path, capsys):
    from edgerlhf.cli import main

    run = trained_tiny[0]
    out = tmp_path / "x" / "policy.gguf"
    assert main(["export", str(run), "--gguf", "q8_0", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and (tmp_path / "x" / "policy.Modelfile").is_file()
    assert "reloaded with transformers" in printed and "greedy answers identical" in printed
    assert "gain kept: not measured" in printed and "no SFT policy it started from" in printed  # an SFT run: said
    # never overwrites, and says so before loading anything
    assert main(["export", str(run), "--gguf", "q8_0", str(out), "--no-check"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(run), "--gguf", "q5_k", str(tmp_path / "y.gguf")]) == 2
    err = capsys.readouterr().err
    assert "unknown GGUF type 'q5_k'" in err and "f16, q8_0, q4_0, q4_1" in err
    assert not (tmp_path / "y.gguf").exists()
    with pytest.raises(SystemExit):
        main(["export", str(run)])  # neither --merge nor --gguf
    assert "--merge OUT" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["policy.Modelfile", "policy.gguf"]  # no temp left


def test_an_architecture_it_cannot_write_is_named_with_the_ones_it_can(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(GGUFExportError, match=r"GPT2LMHeadModel cannot be written.*LlamaForCausalLM \(llama\)"):
        write_gguf(model, load_tokenizer("tiny"), tmp_path / "g.gguf", "f16")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_golden_the_default_base_exported_unchanged_reproduces_the_official_gguf(tmp_path):
    """The default model arrives as the official SmolLM2-135M-Instruct Q4_1 GGUF; loaded (dequantised) and written
    back as q4_1, every metadata key but the descriptive general.* ones, every tokenizer array and every tensor's
    name, type, shape and bytes equal the official file's."""
    import gguf

    from edgerlhf.models.loading import _gguf_path

    out = write_gguf(load_causal_lm("default"), load_tokenizer("default"), tmp_path / "base.gguf", "q4_1",
                     progress=False)
    official, ours = gguf.GGUFReader(_gguf_path()), gguf.GGUFReader(out)
    descriptive = {"general.name", "general.organization", "general.finetune", "general.basename",
                   "general.size_label", "general.license", "general.languages", "GGUF.kv_count"}
    assert set(official.fields) - descriptive == set(ours.fields) - descriptive
    for key in set(official.fields) - descriptive:
        assert official.fields[key].contents() == ours.fields[key].contents(), key
    assert len(ours.fields["tokenizer.ggml.tokens"].contents()) == 49152
    theirs = {t.name: t for t in official.tensors}
    assert sorted(t.name for t in ours.tensors) == sorted(theirs)  # the same tensors (order is free)
    for t in ours.tensors:
        o = theirs[t.name]
        assert (t.tensor_type, list(t.shape)) == (o.tensor_type, list(o.shape)), t.name
        assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(o.data).view(np.uint8)), t.name
    assert abs(out.stat().st_size - _gguf_path().stat().st_size) < 4096  # the descriptive keys' bytes


def test_export_result_is_json_ready(trained_tiny, tmp_path):
    from edgerlhf.models.export import export_gguf

    res = export_gguf(trained_tiny[0], "q4_0", tmp_path / "p.gguf", check=False, progress=False)
    json.dumps(res)
    assert res["file_bytes"] == (tmp_path / "p.gguf").stat().st_size
    assert res["tensor_bytes"] == expected_tensor_bytes(gguf_shapes(trained_tiny[1]), "q4_0")
    assert res["tensor_bytes"] < res["file_bytes"] < res["tensor_bytes"] + 3 * 2**20
    assert GGUF_TYPES == ("f16", "q8_0", "q4_0", "q4_1", "q4_mixed")


def test_the_training_system_prompt_becomes_the_templates_default_and_the_modelfiles():
    """A policy trained with a system message of the task's is exported asking what training asked: the chat
    template inserts it when a chat has none (as SmolLM's template inserts its own), and the Modelfile says it."""
    tok = copy.deepcopy(load_tokenizer("tiny"))
    original = tok.chat_template
    assert set_default_system(tok, "You write short, honest reviews.")
    assert chat_pieces(tok).default_system == "You write short, honest reviews."
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou write short, honest reviews.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert 'SYSTEM """You write short, honest reviews."""' in ollama_modelfile(tok, "p.gguf")
    # text that would break the Jinja string is not written into it: the template is left as it was
    tok2 = copy.deepcopy(load_tokenizer("tiny"))
    assert not set_default_system(tok2, "Say 'hi' {{ now }}") and tok2.chat_template == original
    assert 'SYSTEM """Say \'hi\' {{ now }}"""' in ollama_modelfile(tok2, "p.gguf", system="Say 'hi' {{ now }}")


def test_export_carries_the_system_prompt_into_the_file_the_folder_and_the_model_card(trained_tiny, tmp_path, capsys):
    import gguf
    from transformers import AutoTokenizer

    from edgerlhf.models.export import export_gguf, export_policy
    from edgerlhf.models.gguf_export import SYSTEM_KEY

    run = tmp_path / "sft"
    shutil.copytree(trained_tiny[0], run)
    meta_file = run / "adapter" / "edgerlhf.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "system_prompt": "You write short, honest reviews."}))
    out = export_gguf(run, "q8_0", tmp_path / "p.gguf", check=False, progress=False)
    r = gguf.GGUFReader(out["gguf"])
    assert r.fields[SYSTEM_KEY].contents() == "You write short, honest reviews."
    assert "You write short, honest reviews." in r.fields["tokenizer.chat_template"].contents()
    assert "named SmolLM" not in r.fields["tokenizer.chat_template"].contents()
    assert 'SYSTEM """You write short, honest reviews."""' in (tmp_path / "p.Modelfile").read_text()
    folder = export_policy(run, tmp_path / "merged")
    tok = AutoTokenizer.from_pretrained(folder)
    assert "You write short, honest reviews." in tok.apply_chat_template([{"role": "user", "content": "Hi"}],
                                                                        tokenize=False, add_generation_prompt=True)
    card = (folder / "README.md").read_text()
    assert "You write short, honest reviews." in card and "| stage | sft |" in card
    # --system overrides what the run recorded
    export_gguf(run, "q8_0", tmp_path / "o.gguf", check=False, progress=False, system="Be brief.")
    assert 'SYSTEM """Be brief."""' in (tmp_path / "o.Modelfile").read_text()
    # a run from before the system prompt was recorded: the default is kept, and the output says how to set it
    capsys.readouterr()
    export_gguf(trained_tiny[0], "q8_0", tmp_path / "old.gguf", check=False, progress=False)
    assert "records no system prompt" in capsys.readouterr().out
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in (tmp_path / "old.Modelfile").read_text()


def test_tensor_kinds_and_the_mixed_types_by_hand():
    import gguf

    Q = gguf.GGMLQuantizationType
    assert tensor_kind("blk.3.ffn_down.weight") == "ffn_down" and tensor_kind("token_embd.weight") == "token_embd"
    keep = {"ffn_down": "q8_0", "attn_v": "f16"}
    assert tensor_type("blk.0.ffn_down.weight", (64, 64), "q4_mixed", keep) == Q.Q8_0
    assert tensor_type("blk.0.attn_v.weight", (64, 64), "q4_mixed", keep) == Q.F16
    assert tensor_type("blk.0.attn_q.weight", (64, 64), "q4_mixed", keep) == Q.Q4_1
    assert tensor_type("token_embd.weight", (64, 64), "q4_mixed", keep) == Q.Q8_0  # as in every 4-bit file
    assert tensor_type("blk.0.attn_norm.weight", (64,), "q4_mixed", keep) == Q.F32
    shapes = {"blk.0.ffn_down.weight": (64, 64), "blk.0.attn_q.weight": (64, 64)}
    assert expected_tensor_bytes(shapes, "q4_mixed", {"ffn_down": "q8_0"}) == 64 * 64 // 32 * (34 + 20)
    assert choose_kept({"attn_q": 0.01, "ffn_down": 0.05, "attn_k": 0.05}, 2) == {"attn_k": "q8_0", "ffn_down": "q8_0"}
    assert choose_kept({"attn_q": 0.01}, 0) == {}
    with pytest.raises(GGUFExportError, match="0 or more"):
        choose_kept({}, -1)


def test_a_mixed_file_holds_the_types_its_metadata_names_and_reloads_as_those_weights(trained_tiny, tmp_path):
    import gguf
    from transformers import AutoModelForCausalLM

    from edgerlhf.models.gguf_export import MIXED_KEY

    _, model, tok, _ = trained_tiny
    with pytest.raises(GGUFExportError, match="q8_0 or f16"):
        write_gguf(model, tok, tmp_path / "bad.gguf", "q4_mixed", keep={"ffn_down": "q4_0"}, progress=False)
    keep = {"ffn_down": "q8_0", "attn_v": "f16"}
    out = write_gguf(model, tok, tmp_path / "m.gguf", "q4_mixed", keep=keep, progress=False)
    r = gguf.GGUFReader(out)
    assert json.loads(r.fields[MIXED_KEY].contents()) == keep
    Q = gguf.GGMLQuantizationType
    for t in r.tensors:
        kind = tensor_kind(t.name)
        if len([d for d in t.shape if d > 1]) < 2:
            continue
        want = {"ffn_down": Q.Q8_0, "attn_v": Q.F16, "token_embd": Q.Q8_0}.get(kind, Q.Q4_1)
        assert t.tensor_type == want, t.name
    assert sum(int(t.n_bytes) for t in r.tensors) == expected_tensor_bytes(gguf_shapes(model), "q4_mixed", keep)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode("Rate item 3. It was great, I love it!")])
    with torch.no_grad():
        want_logits = quantised_in_torch(model, "q4_mixed", keep).eval()(ids).logits
        assert torch.allclose(reloaded(ids).logits, want_logits, atol=1e-4)


def test_mixed_export_keeps_the_kinds_the_policy_is_most_sensitive_to(trained_tiny, tmp_path):
    from edgerlhf.models.export import CHECK_PROMPTS, export_gguf
    from edgerlhf.models.gguf_mixed import kind_sensitivity

    run, model, tok, _ = trained_tiny
    sens = kind_sensitivity(model, tok, CHECK_PROMPTS[:2], max_new_tokens=6)
    assert set(sens) == {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}
    assert all(v >= -1e-6 for v in sens.values()) and max(sens.values()) > 0  # quantising a kind moves the policy
    res = export_gguf(run, "q4_mixed", tmp_path / "mix.gguf", check=False, progress=False, mixed_keep=1)
    top = max(res["mixed_sensitivity"], key=res["mixed_sensitivity"].get)
    assert res["mixed_kept"] == {top: "q8_0"}


def test_the_policys_lora_as_a_gguf_adapter_is_its_delta_in_llama_cpps_layout(trained_tiny, tmp_path, capsys):
    """The adapter file's factors are the LoRA's (q / k rows permuted as the base's are), and alpha / rank times
    lora_b @ lora_a is the change the merged policy has over its base, in the file's layout."""
    import gguf
    from safetensors.torch import load_file

    from edgerlhf.cli import main
    from edgerlhf.models.gguf_export import SOURCE_KEY

    run, model, tok, _ = trained_tiny
    out = tmp_path / "rl.gguf"
    assert main(["export", str(run), "--gguf-adapter", str(out)]) == 0
    assert "--lora rl.gguf" in capsys.readouterr().out
    assert "ADAPTER ./rl.gguf" in (tmp_path / "rl.Modelfile").read_text()
    r = gguf.GGUFReader(out)
    assert r.fields["general.type"].contents() == "adapter" and r.fields["adapter.type"].contents() == "lora"
    cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert r.fields["adapter.lora.alpha"].contents() == pytest.approx(cfg["lora_alpha"])
    assert r.fields[SOURCE_KEY].contents().endswith("adapter")
    lora = load_file(run / "adapter" / "adapter_model.safetensors")
    tensors = {t.name: np.array(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
               for t in r.tensors}
    assert len(tensors) == len(lora)
    scale = cfg["lora_alpha"] / cfg["r"]
    base = load_causal_lm("tiny", seed=42).state_dict()  # make_tiny_sft's base
    merged = model.state_dict()
    for layer, proj, gname, heads in ((0, "q_proj", "attn_q", model.config.num_attention_heads),
                                      (1, "k_proj", "attn_k", model.config.num_key_value_heads),
                                      (1, "down_proj", "ffn_down", 0)):
        key = f"base_model.model.model.layers.{layer}.{'mlp' if proj == 'down_proj' else 'self_attn'}.{proj}"
        a, b = tensors[f"blk.{layer}.{gname}.weight.lora_a"], tensors[f"blk.{layer}.{gname}.weight.lora_b"]
        want_b = lora[f"{key}.lora_B.weight"].numpy()
        want_b = permute_qk(want_b, heads) if heads else want_b
        np.testing.assert_allclose(a, lora[f"{key}.lora_A.weight"].numpy(), atol=2e-3, rtol=2e-3)  # F16
        np.testing.assert_allclose(b, want_b, atol=2e-3, rtol=2e-3)
        hf = key.replace("base_model.model.", "") + ".weight"
        delta = (merged[hf] - base[hf]).numpy()
        delta = permute_qk(delta, heads) if heads else delta
        np.testing.assert_allclose(scale * b @ a, delta, atol=5e-3)
    assert main(["export", str(run), "--gguf-adapter", str(out)]) == 2  # never overwrites
