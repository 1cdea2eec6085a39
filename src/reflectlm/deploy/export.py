"""`reflectlm export RUN`: a compressed or converted copy of the champion, kept only when it is
not worse than the champion on the selection split.

Variants: pruning (`--prune 0.3`, the loop's prune action), dynamic int8 (PyTorch, or ONNX
Runtime with `--onnx`), bf16 weights, and ONNX with dynamic batch and sequence axes - for every
task. Every candidate is scored against the champion with the task's paired
test in non-inferiority mode: it is accepted iff the lower end of the bootstrap CI of
(candidate - champion) on the selection metric stays above -margin (and, for classification, no
class is significantly worse). Int8 tries remedies in order until one passes: per-tensor over
every supported op, then per-channel weights on MatMul only (embeddings stay fp32), then also the
last encoder layer and the head in fp32. A candidate that fails every remedy is refused:
export.json records each attempt's evidence and no model is left in the output directory.

export.json: status, variant, the gate's comparison, every attempt, size in bytes, latency at
batch 1 and 32, throughput, and the champion's numbers measured the same way.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import rundir
from ..config import ConfigError
from ..tasks import get_task
from .export_common import ExportRefused, _gate, _source, _write_json
from .predictor import EXPORT_FILE, Predictor, from_bundle, torch_forward


@dataclass
class Attempt:
    remedy: str  # what this attempt does, in words
    predictor: Predictor
    details: dict  # variant details recorded in export.json (quantisation settings, artefact)


def export(run: str | Path, output: str | Path | None = None, *, prune: float | None = None,
           prune_method: str = "magnitude", quantize: str | None = None, onnx: bool = False,
           margin: float | None = None, n_bootstrap: int | None = None, repeats: int = 20,
           threads: int | None = None, quiet: bool = True, merge: bool = False, gguf: str | None = None) -> dict:
    """Build the variant, gate it against the champion, measure it, write DIR/export.json.
    Returns export.json's content; raises ExportRefused when no attempt passes the gate.
    A model that generates exports merged (merge) and as GGUF (gguf = "f16" or "f32"): export_lm.py."""
    from ..data import load_splits
    from ..modeling import load_bundle, save_bundle

    run = Path(run)
    model_dir, cfg = _source(run)
    if "generates" in get_task(cfg.data.task).capabilities or merge or gguf:
        return _export_generator(run, output, cfg, prune, quantize, onnx, merge, gguf, margin, n_bootstrap, quiet)
    _check_request(prune, quantize, onnx)
    margin = cfg.loop.margin if margin is None else float(margin)
    n_bootstrap = n_bootstrap or cfg.loop.n_bootstrap
    selection = load_splits(cfg.data, cfg.train.seed, cfg.open_set).selection
    if threads:
        torch.set_num_threads(threads)

    champion_bundle = load_bundle(model_dir)
    if onnx and champion_bundle.meta["kind"] != "transformer":
        from ..modeling import ModelError

        raise ModelError("ONNX export supports transformer models; the LSTM baseline can use --quantize int8")
    task = get_task(champion_bundle.task)
    champion = from_bundle(champion_bundle, torch_forward(champion_bundle.model, task.name,
                                                          features=champion_bundle.open_set is not None),
                           {"format": "torch", "precision": "fp32"})
    items = [task.inputs(selection, i) for i in range(len(selection))]
    champ_probs, _ = champion.run(items)

    name = _variant_name(prune, quantize, onnx)
    out = Path(output) if output else run / rundir.EXPORTS / name
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output directory {out} exists and is not empty; pass another --output or remove it")
    out.mkdir(parents=True, exist_ok=True)

    bundle = load_bundle(model_dir)  # the candidate's own copy of the weights
    pruned = None
    if prune:
        from .compress import prune_model

        pruned = {"amount": prune, "method": prune_method, **prune_model(bundle.model, prune, prune_method)}
    save_bundle(bundle, out / rundir.MODEL)  # tokenizer, meta and (pruned) fp32 weights: what every variant loads

    attempts, accepted = [], None
    for attempt in _attempts(bundle, out, quantize, onnx, threads):
        probs, _ = attempt.predictor.run(items)
        comparison = _gate(cfg, selection, champion_bundle.labels, champ_probs, probs, margin, n_bootstrap)
        attempts.append({"remedy": attempt.remedy, **attempt.details, "passed": comparison["promote"],
                         "selection_metric": comparison["challenger"], "difference": comparison["difference"],
                         "ci_low": comparison["ci_low"], "ci_high": comparison["ci_high"],
                         "reason": comparison["reason"], "agreement": task.agreement(champ_probs, probs)})
        if not quiet:
            print(f"{name}: {attempt.remedy}: {comparison['reason']}", flush=True)
        if comparison["promote"]:
            accepted = (attempt, comparison)
            break

    info = {"source": str(model_dir.resolve()), "run": str(run.resolve()), "task": cfg.data.task,
            "metric": comparison["metric"], "margin": margin, "selection_examples": len(selection),
            "prune": pruned, "attempts": attempts, "open_set": _open_set_info(champion_bundle),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if accepted is None:
        _refuse(out, name, info, prune, quantize)
    attempt, comparison = accepted
    sample = (items * (32 // max(len(items), 1) + 1))[:32] if items else [task.inputs(task.from_inputs(["hello"]), 0)]
    info.update(status="accepted", reason=comparison["reason"], variant={"name": name, **attempt.details},
                comparison=comparison,
                candidate=_measure(attempt.predictor, sample, repeats, _size(attempt, bundle.model, out)),
                champion=_measure(champion, sample, repeats, _state_size(champion_bundle.model)),
                files_bytes=sum(p.stat().st_size for p in out.rglob("*") if p.is_file()))
    info["candidate"]["selection_metric"] = comparison["challenger"]
    info["champion"]["selection_metric"] = comparison["champion"]
    _write_json(out / EXPORT_FILE, info)
    return {**json.loads((out / EXPORT_FILE).read_text(encoding="utf-8")), "output": str(out)}


def _export_generator(run: Path, output, cfg, prune, quantize, onnx, merge, gguf, margin, n_bootstrap, quiet) -> dict:
    """A model that generates: --merge / --gguf (export_lm.py); the encoders' variants are refused."""
    if "generates" not in get_task(cfg.data.task).capabilities:
        raise ConfigError("--merge and --gguf are for models that generate (summarisation, translation)")
    if prune or quantize or onnx or not (merge or gguf):
        raise ConfigError(f"a {cfg.data.task} model exports as --merge (the adapters folded into standalone "
                          "safetensors) and/or --gguf f16|f32 (for llama.cpp / Ollama); --prune, --quantize and "
                          "--onnx are for the encoders")
    if gguf not in (None, "f16", "f32"):
        raise ConfigError(f"--gguf must be f16 or f32, not {gguf!r}")
    from .export_lm import export_generator

    return export_generator(run, Path(output) if output else None, gguf=gguf, margin=margin,
                            n_bootstrap=n_bootstrap, quiet=quiet)


def _open_set_info(bundle) -> dict | None:
    """The out-of-scope detector every variant carries (its scores read the variant's own pooled
    embedding, so the gate above judges the detector's decisions with the rest)."""
    if bundle.open_set is None:
        return None
    meta, _ = bundle.open_set.to_json()
    return {k: meta[k] for k in ("detector", "threshold", "label", "fallback")}


def _check_request(prune, quantize, onnx) -> None:
    if quantize not in (None, "int8", "bf16"):
        raise ConfigError(f"--quantize must be int8 or bf16, not {quantize!r}")
    if prune is None and quantize is None and not onnx:
        raise ConfigError("nothing to export: give --prune AMOUNT, --quantize int8|bf16 and/or --onnx")
    if onnx and quantize == "bf16":
        raise ConfigError("ONNX Runtime's CPU provider has no fast bf16 kernels; use --onnx --quantize int8, "
                          "--onnx alone (fp32), or --quantize bf16 without --onnx")


def _refuse(out: Path, name: str, info: dict, prune, quantize) -> None:
    """No attempt passed: nothing servable is left behind, export.json says why, ExportRefused."""
    attempts = info["attempts"]
    last = attempts[-1]
    tried = "; ".join(a["remedy"] for a in attempts)
    reason = (f"refused: {name} is worse than the champion by more than the margin {info['margin']:g} on the "
              f"selection {info['metric']} (last attempt: difference {last['difference']:+.4f}, CI low "
              f"{last['ci_low']:+.4f}); tried: {tried}")
    hint = " Try a smaller --prune." if prune else (" Try --quantize bf16 or fp32 ONNX (--onnx alone)."
                                                    if quantize == "int8" else "")
    for p in out.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    _write_json(out / EXPORT_FILE, {"status": "refused", "reason": reason + "." + hint, **info})
    raise ExportRefused(f"{reason}.{hint} Evidence: {out / EXPORT_FILE}")


def _variant_name(prune, quantize, onnx) -> str:
    parts = [f"pruned{int(round(prune * 100))}"] if prune else []
    parts.append("onnx" if onnx else "torch")
    parts.append(quantize or "fp32")
    return "-".join(parts)


def _attempts(bundle, out: Path, quantize: str | None, onnx: bool, threads: int | None):
    """Candidates in the order they are tried (a generator: each is built only if the previous failed)."""
    from .compress import apply_precision, encoder_layer_prefixes, quantize_int8
    from .predictor import onnx_forward

    def make(forward, fmt, precision):
        return from_bundle(bundle, forward, {"format": fmt, "precision": precision})

    model = bundle.model
    detect = bundle.open_set is not None  # the detector reads the output layer's input
    if onnx:
        fp32 = out / "model.onnx"
        export_onnx(model, fp32, bundle.task, model_inputs=getattr(bundle.tokenizer, "model_input_names", None))
        if quantize != "int8":
            yield Attempt("ONNX fp32", make(onnx_forward(fp32, threads), "onnx", "fp32"),
                          {"format": "onnx", "precision": "fp32", "artifact": fp32.name})
            return
        layer, head = encoder_layer_prefixes(model)
        int8 = out / "model.int8.onnx"
        for remedy, settings in (
                ("int8 per-tensor, every supported op (embeddings included)", {"ops": None, "per_channel": False}),
                ("int8 per-channel, MatMul only (embeddings fp32)", {"ops": ["MatMul"], "per_channel": True}),
                (f"int8 per-channel, MatMul only; {layer or 'last layer'} and {head} kept fp32",
                 {"ops": ["MatMul"], "per_channel": True, "exclude": [layer, head]})):
            excluded = quantize_onnx(fp32, int8, settings)
            yield Attempt(remedy, make(onnx_forward(int8, threads), "onnx", "int8"),
                          {"format": "onnx", "precision": "int8", "artifact": int8.name,
                           "quantization": {**settings, "excluded_nodes": excluded}})
        return
    if quantize == "bf16":
        import copy

        bf16 = apply_precision(copy.deepcopy(model), "bf16")
        yield Attempt("bf16 weights and activations",
                      make(torch_forward(bf16, bundle.task, "bf16", features=detect), "torch", "bf16"),
                      {"format": "torch", "precision": "bf16", "_model": bf16})
        return
    if quantize == "int8":
        layer, head = encoder_layer_prefixes(model)
        for remedy, q in (("int8 per-tensor, every linear layer", {"per_channel": False, "keep_fp32": []}),
                          ("int8 per-channel, every linear layer", {"per_channel": True, "keep_fp32": []}),
                          (f"int8 per-channel; {layer or 'last layer'} and {head} kept fp32",
                           {"per_channel": True, "keep_fp32": [p for p in (layer, head) if p]})):
            qmodel = quantize_int8(model, q["per_channel"], tuple(q["keep_fp32"]))
            yield Attempt(remedy, make(torch_forward(qmodel, bundle.task, features=detect), "torch", "int8"),
                          {"format": "torch", "precision": "int8", "quantization": q, "_model": qmodel})
        return
    yield Attempt("pruned, fp32", make(torch_forward(model, bundle.task, features=detect), "torch", "fp32"),
                  {"format": "torch", "precision": "fp32"})


# --------------------------------------------------------------------------- ONNX


class _WithPooled(nn.Module):
    """The task's logits, the masked mean of the last hidden state (the monitor's embedding) and,
    for a sequence head, the output layer's input (what out-of-scope detectors read), from one
    forward."""

    def __init__(self, model: nn.Module, task: str, inputs: tuple[str, ...]):
        from ..open_set import HeadInput
        from ..tasks import get_task

        super().__init__()
        self.model, self.task, self.inputs = model, get_task(task), inputs
        self.catch = HeadInput(model, task)

    def forward(self, *args):
        kw = dict(zip(self.inputs, args))
        with self.catch:
            out = self.model(**kw, output_hidden_states=True)
        h = out.hidden_states[-1]  # (B, T, H)
        m = kw["attention_mask"].unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        head = self.catch.value()
        return (self.task.logits(out), pooled) + (() if head is None else (head,))


def export_onnx(model: nn.Module, path: Path, task: str, opset: int = 17, model_inputs=None) -> Path:
    """ONNX graph with dynamic batch and sequence axes, taking the inputs the task's features carry
    (input_ids, attention_mask, and token_type_ids for a question with its context). The
    TorchScript exporter (dynamo=False) works offline without onnxscript; attention is switched to
    the eager implementation for the export because the SDPA path traces into ops older opsets lack."""
    from ..tasks import get_task

    spec = get_task(task)
    previous = getattr(model.config, "_attn_implementation", None)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    inputs = tuple(k for k in spec.model_input_names if k in model_inputs) if model_inputs else spec.model_input_names
    wrapped = _WithPooled(model, task, inputs).eval()
    example = tuple(torch.ones((2, 8), dtype=torch.long) if k != "token_type_ids" else torch.zeros((2, 8), dtype=torch.long)
                    for k in inputs)
    axes = {k: {0: "batch", 1: "sequence"} for k in inputs}
    # One row per text (a sequence head), else one per position.
    axes.update(logits={0: "batch"} if spec.head == "sequence" else {0: "batch", 1: "sequence"}, pooled={0: "batch"})
    names = ["logits", "pooled"] + (["features"] if wrapped.catch.layer is not None else [])
    if wrapped.catch.layer is not None:
        axes["features"] = {0: "batch"}
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow on shapes: axes are dynamic
        torch.onnx.export(wrapped, example, str(path), input_names=list(inputs), output_names=names,
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    if previous and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(previous)
    model.eval()  # the exporter restores the wrapper's (training) mode on the way out
    return path


def quantize_onnx(src: Path, dst: Path, settings: dict) -> list[str]:
    """Dynamic int8 with onnxruntime; returns the names of the nodes kept in fp32."""
    import logging
    import re

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = []
    prefixes = [p for p in settings.get("exclude", []) if p]
    if prefixes:
        graph = onnx.load(str(src), load_external_data=False).graph
        # The TorchScript exporter names nodes by module path: bert.encoder.layer.1 ->
        # /model/bert/encoder/layer.1/attention/self/query/MatMul
        keys = [re.sub(r"/(layer|layers|h|block|blocks)/(\d+)", r"/\1.\2", "/" + p.replace(".", "/")) + "/"
                for p in prefixes]
        exclude = [n.name for n in graph.node if any(k in n.name for k in keys)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs "consider pre-processing" to the root logger on every call
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=settings.get("per_channel", False),
                         op_types_to_quantize=settings.get("ops"), nodes_to_exclude=exclude)
    finally:
        root.setLevel(level)  # the process's logging is not ours to change
    return exclude


# --------------------------------------------------------------------------- measuring


def _measure(predictor: Predictor, sample: list[str], repeats: int, size: int) -> dict:
    """Median latency at batch 1 and 32 (ms) and throughput at batch 32 (texts/s)."""
    def timed(batch: list[str], n: int) -> list[float]:
        predictor.run(batch)  # warm-up: first-call allocation and kernel selection
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            predictor.run(batch)
            out.append(time.perf_counter() - t0)
        return out

    one = timed(sample[:1], max(repeats, 1))
    many = timed(sample[:32], max(repeats // 4, 1))
    return {"size_bytes": int(size), "latency_ms_batch1": 1000 * statistics.median(one),
            "latency_ms_batch32": 1000 * statistics.median(many), "throughput_texts_per_s": 32 / statistics.median(many)}


def _state_size(model: nn.Module) -> int:
    from .compress import state_bytes

    return state_bytes(model)


def _size(attempt: Attempt, model: nn.Module, out: Path) -> int:
    if "artifact" in attempt.details:
        return (out / attempt.details["artifact"]).stat().st_size
    return _state_size(attempt.details.get("_model", model))
