"""Make a trained model smaller or faster: pruning (the `prune` action's code), dynamic int8
quantisation of the linear layers, and bf16 weights. Each function changes the model in place or
returns the changed model; whether the result is good enough is export.py's paired test.

Dynamic int8 (weights int8, activations quantised per batch at run time) needs no calibration
data. Known to hurt small encoders in some settings (onnxruntime#11286, #9599); the remedies are
per-channel weight scales and keeping the most sensitive layers (the head, the last encoder
layer) in fp32 - `keep_fp32` names them.

References: Jacob et al. 2018 (integer-arithmetic-only inference); Zafrir et al. 2019 (Q8BERT).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..config import ConfigError


def prune_model(model: nn.Module, amount: float, method: str = "magnitude") -> dict:
    """Prune in place with the loop's `prune` action (magnitude: global L1 over the encoder's
    linear weights; heads: the least important attention heads per layer). Returns what it did."""
    from ..actions.prune import Prune

    if not 0.0 < amount < 1.0:
        raise ConfigError(f"--prune is the share of weights (or heads) to remove, in (0, 1), e.g. 0.3; got {amount}")
    if method not in ("magnitude", "heads"):
        raise ConfigError(f"prune method must be 'magnitude' or 'heads', not {method!r}")
    return Prune(method=method, amount=amount).transform(model)


def linear_names(model: nn.Module, keep_fp32: tuple[str, ...] = ()) -> list[str]:
    """Names of the nn.Linear modules to quantise: all but those under a `keep_fp32` prefix."""
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and not any(n == k or n.startswith(k + ".") for k in keep_fp32)]


def quantize_int8(model: nn.Module, per_channel: bool = True, keep_fp32: tuple[str, ...] = ()) -> nn.Module:
    """A copy with dynamic int8 linear layers (x86 fbgemm kernels); embeddings and layer norms stay fp32."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {name: qconfig for name in linear_names(model, keep_fp32)}
    return quantize_dynamic(copy.deepcopy(model).eval(), qconfig_spec=spec, dtype=torch.qint8)


def to_bf16(model: nn.Module) -> nn.Module:
    """bf16 weights and activations: half the size; fast only on a CPU with native bf16 (AVX-512
    BF16 / AMX), which `reflectlm.runtime.cpu_has_bf16` detects."""
    return model.to(torch.bfloat16).eval()


def apply_precision(model: nn.Module, precision: str, quantization: dict | None = None) -> nn.Module:
    """The serving form of a loaded fp32 bundle, as export.json's variant describes it."""
    if precision == "bf16":
        return to_bf16(model)
    if precision == "int8":
        q = quantization or {}
        return quantize_int8(model, q.get("per_channel", True), tuple(q.get("keep_fp32", ())))
    if precision != "fp32":
        raise ConfigError(f"unknown precision {precision!r}; use fp32, bf16 or int8")
    return model


def state_bytes(model: nn.Module) -> int:
    """Serialized size of the model's weights (packed int8 weights included) in bytes."""
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def encoder_layer_prefixes(model: nn.Module) -> tuple[str, str]:
    """(last encoder layer's module prefix, head prefix) - the parts most sensitive to int8."""
    from ..modeling import layer_groups

    groups = [g for g, _ in layer_groups(model) if g.startswith("layer.")]
    last = groups[-1].split(".")[1] if groups else None
    names = [n for n, _ in model.named_modules()]
    layer = next((n for n in names if last is not None and n.endswith(f"layer.{last}")), "")
    head = next((n for n in names if n.split(".")[0] in ("classifier", "pre_classifier")), "classifier")
    return layer, head.split(".")[0]
