"""A policy as GGUF, the file llama.cpp, Ollama and LM Studio read, written in pure Python with the ``gguf``
package (its writer, tensor-name map, special-vocab reader and Q8_0 / Q4_0 / Q4_1 quantizers): nothing is cloned
or compiled. Unsloth and LLaMA-Factory build llama.cpp to run its ``convert_hf_to_gguf.py``; that script is not part
of the ``gguf`` package, so the llama-architecture part of it is done here (metadata, the Q/K rotary permutation,
the BPE tokenizer's pre-tokenizer name), checked against the official SmolLM2 GGUF the default model ships as.

Pure parts (:func:`permute_qk`, :func:`tensor_type`, :func:`pre_tokenizer`, :func:`chat_pieces`,
:func:`ollama_modelfile`, :func:`expected_tensor_bytes`) have no I/O; :func:`write_gguf` writes atomically;
:func:`check_gguf` reloads the file with transformers and measures how close it is to the model it came from.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from hashlib import sha256
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from edgerlhf.data.formatting import encode_prompt

GGUF_TYPES = ("f16", "q8_0", "q4_0", "q4_1", "q4_mixed")
# q4_mixed: q4_1 everywhere except the tensor kinds the policy is most sensitive to, kept at Q8_0 (measured by
# kind_sensitivity on the export's check prompts). K-quants are not offered: gguf 0.19's quantize() raises
# NotImplementedError for Q2_K..Q6_K (it only dequantizes them), and this exporter writes what it can check.
# architectures this writer knows, HF class -> GGUF architecture. llama covers SmolLM / SmolLM2, TinyLlama,
# Llama 2 and Llama 3 without rope scaling.
ARCHITECTURES = {"LlamaForCausalLM": "llama"}
# GGUF metadata key holding the system message the policy was trained with
SYSTEM_KEY = "edgerlhf.system_prompt"
SOURCE_KEY = "edgerlhf.source"  # the policy run the file was exported from (absolute path), for `edgerlhf eval FILE`
MIXED_KEY = "edgerlhf.mixed_types"  # q4_mixed: the tensor kinds kept at higher precision, JSON {kind: type}

# llama.cpp names the BPE pre-tokenizer by the SHA-256 of the token ids of this text (its convert_hf_to_gguf.py,
# get_vocab_base_pre); the table holds the llama-architecture tokenizers' names from there.
_CHKTXT = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ '
           '(multiple emojis concatenated) ✅ 🦙🦙 3 33 '
           '333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
           '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
           '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')
_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
}


class GGUFExportError(ValueError):
    """What cannot be written as GGUF, and what can."""


def _ftype(kind: str):
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    if kind not in GGUF_TYPES:
        k_quant = "_k" in kind.lower()  # Q4_K_M and the like: the gguf package reads them but cannot write them
        raise GGUFExportError(f"unknown GGUF type {kind!r}; choose one of {', '.join(GGUF_TYPES)}" + (
            " (K-quants cannot be written by the gguf package; for one, write f16 and run llama.cpp's llama-quantize "
            "on it)" if k_quant else ""))
    return {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
            "q4_mixed": gguf.LlamaFileType.MOSTLY_Q4_1}[kind]


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a q_proj / k_proj weight (``n_head`` heads) from Hugging Face's rotary layout (each head
    split in two halves) to llama.cpp's (interleaved pairs), as convert_hf_to_gguf.py does; transformers' GGUF
    loader undoes it on reading."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_rows(hf_name: str, w: np.ndarray, config) -> np.ndarray:
    """``w`` with its output rows in llama.cpp's layout: a q_proj / k_proj weight (or a LoRA B factor of one: the
    permutation acts on output rows) permuted to the rotary layout, anything else unchanged."""
    if hf_name.endswith("q_proj.weight"):
        return permute_qk(w, config.num_attention_heads)
    if hf_name.endswith("k_proj.weight"):
        return permute_qk(w, config.num_key_value_heads)
    return w


def tensor_kind(gguf_name: str) -> str:
    """A tensor's kind, the same in every block: ``blk.3.ffn_down.weight`` -> ``ffn_down``, ``token_embd.weight``
    -> ``token_embd``."""
    parts = gguf_name.split(".")
    return parts[2] if parts[0] == "blk" and len(parts) > 2 else parts[0]


def tensor_type(gguf_name: str, shape: tuple[int, ...], kind: str, keep: dict[str, str] | None = None):
    """The GGML type of one tensor in a ``kind`` file: norms and other 1-D tensors stay F32 (llama.cpp does the
    same: they are tiny and precision-sensitive); with 4-bit files the token embedding and output matrix keep
    Q8_0 (the official SmolLM2 Q4_1 file does); in a ``q4_mixed`` file the tensor kinds in ``keep`` take the type
    it names (``q8_0`` or ``f16``); a row whose length is not a multiple of the block falls back to F16."""
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    Q = gguf.GGMLQuantizationType
    if len(shape) == 1:
        return Q.F32
    types = {"f16": Q.F16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1, "q4_mixed": Q.Q4_1}
    want = types[kind]
    if kind in ("q4_0", "q4_1", "q4_mixed") and gguf_name in ("token_embd.weight", "output.weight"):
        want = Q.Q8_0
    if kind == "q4_mixed" and keep and tensor_kind(gguf_name) in keep:
        want = types[keep[tensor_kind(gguf_name)]]
    block = gguf.GGML_QUANT_SIZES[want][0]
    return want if shape[-1] % block == 0 else Q.F16


class ExportSizes(NamedTuple):
    file_bytes: int
    tensor_bytes: int  # what the tensors of the chosen type take; the rest is metadata, tokenizer, alignment


def _named_weights(model):
    """(GGUF name, Hugging Face name, tensor) for every weight written: names through the ``gguf`` package's map;
    a tied output matrix and rotary buffers are not written."""
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    c = model.config
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    tied = getattr(c, "tie_word_embeddings", False)
    for hf_name, t in model.state_dict().items():
        if (tied and hf_name == "lm_head.weight") or hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFExportError(f"no GGUF name for tensor {hf_name!r}")
        yield name, hf_name, t


def gguf_shapes(model) -> dict[str, tuple[int, ...]]:
    """The GGUF names and (Hugging Face order) shapes of the tensors :func:`gguf_tensors` writes."""
    return {name: tuple(t.shape) for name, _, t in _named_weights(model)}


def expected_tensor_bytes(shapes: dict[str, tuple[int, ...]], kind: str, keep: dict[str, str] | None = None) -> int:
    """Bytes of tensor data a ``kind`` file holds for these (GGUF-named) tensor shapes."""
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    total = 0
    for name, shape in shapes.items():
        block, size = gguf.GGML_QUANT_SIZES[tensor_type(name, shape, kind, keep)]
        total += int(np.prod(shape)) // block * size
    return total


def pre_tokenizer(tok) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer ("smollm" for the default model), from the token ids of
    llama.cpp's check text; "default" (llama.cpp's generic split, which may tokenize some text differently) when
    the tokenizer is not one it names."""
    chkhsh = sha256(str(tok.encode(_CHKTXT)).encode()).hexdigest()
    return _PRE_TOKENIZERS.get(chkhsh, "default")


class ChatPieces(NamedTuple):
    """A chat template cut into the text around each role's message, found by rendering it with markers."""

    system_prefix: str
    system_suffix: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str  # also the generation prompt
    assistant_suffix: str
    default_system: str  # what the template inserts when a conversation has no system message ("" for none)


def chat_pieces(tok) -> ChatPieces:
    """Cut the tokenizer's chat template into per-role prefix / suffix by rendering marked conversations. Raises
    GGUFExportError for a template that is not of that shape (the rendering of a conversation with the pieces must
    equal the template's own)."""
    S, U1, A1, U2 = "\x00S\x00", "\x00U1\x00", "\x00A1\x00", "\x00U2\x00"
    bad = GGUFExportError("the chat template is not a fixed prefix / suffix per role (with one end-of-turn text for "
                          "every role); write the Ollama TEMPLATE by hand")

    def render(msgs, gen=False):
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    one = [{"role": "user", "content": U1}]
    gen_prompt = render(one, gen=True)
    if not gen_prompt.startswith(render(one)):
        raise bad
    gp = gen_prompt[len(render(one)):]  # the generation prompt: the assistant turn's opening
    full = render([{"role": "system", "content": S}, {"role": "user", "content": U1},
                   {"role": "assistant", "content": A1}, {"role": "user", "content": U2}], gen=True)
    try:
        sp, rest = full.split(S)
        ss_up, rest = rest.split(U1)
        us_ap, rest = rest.split(A1)
        as_up, us_gp = rest.split(U2)
    except ValueError:
        raise bad from None
    if not us_gp.endswith(gp):
        raise bad
    end = us_gp[:len(us_gp) - len(gp)]  # the end of a user turn, taken as every role's end of turn
    if not (us_ap.startswith(end) and ss_up.startswith(end) and as_up.startswith(end)):
        raise bad
    up, ap = ss_up[len(end):], us_ap[len(end):]
    if as_up[len(end):] != up:
        raise bad
    head = gen_prompt.split(U1)[0]
    default_system = ""
    if head != up:  # the template adds a system message of its own
        if not (head.startswith(sp) and head.endswith(end + up)):
            raise bad
        default_system = head[len(sp):len(head) - len(end + up)]
    pieces = ChatPieces(sp, end, up, end, ap, end, default_system)
    # the pieces must reproduce the template's own rendering of a conversation
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    for conv in (msgs, msgs[1:]):  # with and without a system message of the caller's
        if render(conv, gen=True) != _render_pieces(pieces, conv):
            raise bad
    return pieces


# characters that would end or open something in a Jinja string literal: a system prompt holding one is not written
# into the template (the Modelfile's SYSTEM line and the file's metadata still carry it)
_UNSAFE_IN_TEMPLATE = set("'\"{}%#\\\n")


def set_default_system(tok, system: str) -> bool:
    """Make ``system`` the chat template's default system message, the one it inserts when a conversation has none,
    so that a chat with no system message of its own (``ollama run``, llama.cpp's chat, a plain ``generate``) is
    formatted as the policy was trained. Changes ``tok.chat_template`` in place; returns False, changing nothing,
    when the template has no default of its own to replace or ``system`` cannot be written into it safely."""
    try:
        p = chat_pieces(tok)
    except GGUFExportError:
        return False
    old = tok.chat_template
    if (not p.default_system or old.count(p.default_system) != 1 or not system
            or _UNSAFE_IN_TEMPLATE & set(system)):
        return p.default_system == system and bool(system)
    tok.chat_template = old.replace(p.default_system, system)
    try:
        ok = chat_pieces(tok).default_system == system
    except GGUFExportError:
        ok = False
    if not ok:
        tok.chat_template = old
    return ok


def _render_pieces(p: ChatPieces, msgs) -> str:
    out = ""
    if msgs[0]["role"] != "system" and p.default_system:
        out += p.system_prefix + p.default_system + p.system_suffix
    for m in msgs:
        pre, suf = {"system": (p.system_prefix, p.system_suffix), "user": (p.user_prefix, p.user_suffix),
                    "assistant": (p.assistant_prefix, p.assistant_suffix)}[m["role"]]
        out += pre + m["content"] + suf
    return out + p.assistant_prefix


def _go(s: str) -> str:
    """Text inside an Ollama TEMPLATE \"\"\" block (Go text/template): literal braces must not open an action."""
    return s.replace("{{", '{{ "{{" }}')


def ollama_modelfile(tok, gguf_file: str, chat_template: bool = True, system: str | None = None) -> str:
    """An Ollama Modelfile for the exported file: FROM, a Go TEMPLATE equivalent to the chat template (or the raw
    prompt for a policy trained without one), the system message the policy was trained with (``system``; empty or
    None: the template's own default, which is what a prompt without a system message was trained with), and stop
    tokens (the end of an assistant turn and the end-of-sequence token)."""
    lines = [f"# Ollama: ollama create my-policy -f {Path(gguf_file).stem}.Modelfile && ollama run my-policy",
             f"FROM ./{Path(gguf_file).name}"]
    stops = []
    if chat_template and tok.chat_template:
        p = chat_pieces(tok)
        # Ollama puts the SYSTEM text (or the caller's) into .Messages as a system message. No "{{-" trimming:
        # it would eat the newline that ends a turn.
        turns = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{_go(pre)}{{{{ .Content '
                        f'}}}}{_go(suf)}'
                        for i, (role, pre, suf) in enumerate((("system", p.system_prefix, p.system_suffix),
                                                               ("user", p.user_prefix, p.user_suffix),
                                                               ("assistant", p.assistant_prefix, p.assistant_suffix))))
        tmpl = "{{ range .Messages }}" + turns + "{{ end }}{{ end }}" + _go(p.assistant_prefix)
        lines.append(f'TEMPLATE """{tmpl}"""')
        if system or p.default_system:
            lines.append(f'SYSTEM """{system or p.default_system}"""')
        if p.assistant_suffix.strip():
            stops.append(p.assistant_suffix.strip())
    else:
        lines.append('TEMPLATE """{{ .Prompt }}"""')
    if tok.eos_token and tok.eos_token not in stops:
        stops.append(tok.eos_token)
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"


def _metadata(writer, model, tok, kind: str, name: str, chat_template: bool, tmp_tok: Path,
              system: str | None = None, keep: dict[str, str] | None = None, source: str = "") -> None:
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    c = model.config
    rope = dict(getattr(c, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise GGUFExportError(f"rope scaling {rope_type!r} is not written by this exporter (only plain rotary "
                              "embeddings); export with --merge and convert that folder with llama.cpp's "
                              "convert_hf_to_gguf.py")
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        raise GGUFExportError("attention / MLP biases are not written by this exporter")
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    writer.add_file_type(_ftype(kind))
    writer.add_vocab_size(c.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != c.hidden_size // c.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if system:  # the system message the policy was trained with (llama.cpp ignores keys it does not know)
        writer.add_string(SYSTEM_KEY, system)
    if source:
        writer.add_string(SOURCE_KEY, source)
    if kind == "q4_mixed":  # which tensor kinds were kept at higher precision, as {kind: type}
        writer.add_string(MIXED_KEY, json.dumps(keep or {}, sort_keys=True))

    # tokenizer: byte-level BPE ("gpt2" in GGUF), token types as llama.cpp's converter sets them
    backend = json.loads(tok.backend_tokenizer.to_str()) if getattr(tok, "backend_tokenizer", None) else {}
    if backend.get("model", {}).get("type") != "BPE":
        raise GGUFExportError("only byte-level BPE tokenizers are written by this exporter (the SentencePiece kind "
                              "needs llama.cpp's converter)")
    added = tok.backend_tokenizer.get_added_tokens_decoder()
    vocab = tok.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(c.vocab_size):
        if i in by_id:
            tokens.append(by_id[i])
            if i in added:
                types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
            else:
                types.append(gguf.TokenType.NORMAL)
        else:  # embedding rows past the tokenizer (padding): llama.cpp's converter names them the same way
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(tok))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(tmp_tok, load_merges=True, n_vocab=c.vocab_size)
    if not chat_template:
        special.chat_template = None
    special.add_to_gguf(writer, quiet=True)
    if "bos" not in special.add_special_token:  # as the tokenizer really does it (SmolLM2: no BOS)
        ids = tok("x").input_ids
        writer.add_add_bos_token(bool(tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id))
    writer.add_add_space_prefix(False)  # byte-level BPE never adds one


def gguf_tensors(model, kind: str, keep: dict[str, str] | None = None):
    """(GGUF name, array to write, GGML type) for every weight: Q and K permuted, quantised as ``kind`` says."""
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    for name, hf_name, t in _named_weights(model):
        w = llama_rows(hf_name, t.detach().to(torch.float32).cpu().numpy(), model.config)
        qtype = tensor_type(name, w.shape, kind, keep)
        if qtype == gguf.GGMLQuantizationType.F32:
            data = np.ascontiguousarray(w, dtype=np.float32)
        elif qtype == gguf.GGMLQuantizationType.F16:
            data = np.ascontiguousarray(w, dtype=np.float16)
        else:
            data = gguf.quants.quantize(np.ascontiguousarray(w), qtype)
        yield name, data, qtype


def quantised_in_torch(model, kind: str, keep: dict[str, str] | None = None, only: str = ""):
    """A copy of ``model`` with every weight a ``kind`` file quantises replaced by its quantise-dequantise through
    the ``gguf`` package, in Hugging Face's layout: what a correct file reloads as, and the reference that tells a
    type's own loss from a writer's (tests, bench/gguf_export.py). ``only``: quantise that tensor kind alone."""
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    q = copy.deepcopy(model)
    sd = q.state_dict()
    Q = gguf.GGMLQuantizationType
    with torch.no_grad():
        for name, hf_name, _ in _named_weights(q):
            w = sd[hf_name].detach().to(torch.float32).cpu().numpy()
            qt = tensor_type(name, w.shape, kind, keep)
            if qt == Q.F32 or (only and tensor_kind(name) != only):
                continue
            d = (w.astype(np.float16).astype(np.float32) if qt == Q.F16
                 else gguf.quants.dequantize(gguf.quants.quantize(w, qt), qt).reshape(w.shape))
            sd[hf_name].copy_(torch.from_numpy(d))
    return q


def write_gguf(model, tok, out: str | Path, kind: str, *, name: str = "", chat_template: bool = True,
               progress: bool = True, system: str | None = None, keep: dict[str, str] | None = None,
               source: str = "") -> Path:
    """Write ``model`` (a merged Hugging Face causal LM) and ``tok`` as one GGUF file of ``kind`` (f16, q8_0,
    q4_0, q4_1, or q4_mixed with the tensor kinds in ``keep`` at their own type), atomically: a temporary file
    beside ``out``, renamed when complete."""
    import gguf  # noqa: PLC0415 - gguf loads only where a GGUF file is written, sized or checked

    _ftype(kind)
    bad = {k: v for k, v in (keep or {}).items() if v not in ("q8_0", "f16")}
    if bad or (keep and kind != "q4_mixed"):
        raise GGUFExportError(f"keep= is for q4_mixed files and takes q8_0 or f16 per tensor kind; got {keep!r} for "
                              f"{kind}")
    cls = type(model).__name__
    if cls not in ARCHITECTURES:
        raise GGUFExportError(f"{cls} cannot be written as GGUF by this exporter; it writes "
                              f"{', '.join(f'{k} ({v})' for k, v in ARCHITECTURES.items())}. Export a merged folder "
                              "with --merge and convert it with llama.cpp's convert_hf_to_gguf.py")
    out = Path(out)
    if out.suffix != ".gguf":
        raise GGUFExportError(f"the GGUF output {out} should end in .gguf")
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another file name (nothing was overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    tok_dir = Path(tempfile.mkdtemp(prefix="edgerlhf-gguf-tok-"))
    try:
        tok.save_pretrained(tok_dir)
        writer = gguf.GGUFWriter(tmp, ARCHITECTURES[cls])
        _metadata(writer, model, tok, kind, name or "EdgeRLHF policy", chat_template, tok_dir, system, keep, source)
        n = len(gguf_shapes(model))
        for tname, data, qtype in tqdm(gguf_tensors(model, kind, keep), total=n, desc=f"[export] {kind} tensors",
                                       disable=not progress, leave=False):
            writer.add_tensor(tname, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        shutil.rmtree(tok_dir, ignore_errors=True)
    return out


class GGUFCheck(NamedTuple):
    """How close the GGUF file, reloaded by transformers, is to the model it was written from."""

    max_abs_logit_diff: float  # over every position of the check prompts
    logit_scale: float  # max |logit| of the source model there, to read the difference against
    top1_agreement: float  # teacher-forced: share of positions of the source's greedy continuations where the
    #                        file's argmax is the same token
    greedy_identical: float  # share of prompts whose free greedy continuation is identical token for token
    n_prompts: int
    n_tokens: int  # positions compared for top1_agreement


def check_gguf(path: str | Path, model, tok, prompts: list, max_new_tokens: int = 24,
               chat_template: bool = True, reloaded=None) -> GGUFCheck:
    """Reload ``path`` with transformers (``gguf_file=``: dequantised to float32) and compare it with ``model`` on
    the chat-formatted ``prompts``: logits on the prompt and the source's greedy continuation, the share of those
    continuation tokens the file would also pick (teacher-forced) and of prompts it continues identically.
    ``reloaded``: the file already loaded (e.g. a base file with an adapter applied)."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 - transformers is heavy; only to check a written file

    path = Path(path)
    if reloaded is None:
        reloaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    reloaded = reloaded.eval()
    model = model.eval()
    max_diff = scale = 0.0
    agree = total = same = 0
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([encode_prompt(tok, p, chat_template)])
            kw = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            ref = model.generate(ids, **kw)
            got = reloaded.generate(ids, **kw)
            same += int(ref.shape == got.shape and torch.equal(ref, got))
            a, b = model(ref).logits[0].float(), reloaded(ref).logits[0].float()
            max_diff = max(max_diff, (a - b).abs().max().item())
            scale = max(scale, a.abs().max().item())
            n0 = ids.shape[1] - 1  # positions predicting the continuation
            agree += (a[n0:-1].argmax(-1) == b[n0:-1].argmax(-1)).sum().item()
            total += a[n0:-1].shape[0]
    return GGUFCheck(max_diff, scale, agree / max(total, 1), same / max(len(prompts), 1), len(prompts), total)
