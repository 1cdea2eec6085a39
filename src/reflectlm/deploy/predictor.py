"""One inference interface over whatever is deployed: a run directory (its champion), a model
bundle, or an export directory (PyTorch fp32 / bf16 / int8, or ONNX Runtime fp32 / int8).

A Predictor turns raw inputs (texts, or the task's input dicts: a question with its context) into
the task's outputs and the encoder's pooled embedding (the drift monitor's input) with one forward
pass, and into readable predictions in the task's schema (task.readable): a label with its
probabilities, entity spans with character offsets into the text, an answer span.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import rundir

EXPORT_FILE = rundir.EXPORT


@dataclass
class Predictor:
    task: str
    labels: list[str]
    tokenizer: object
    max_length: int
    # {input name: (B, T) int64} -> (logits (B, C) | (B, T, C) | (B, T, 2), pooled (B, H) | None,
    # the output layer's input (B, D) for a sequence head | None: what out-of-scope detectors read)
    forward: Callable
    info: dict = field(default_factory=dict)  # what was loaded: path, format, precision
    batch_size: int = 64
    options: dict = field(default_factory=dict)  # the bundle's encoding options (tasks: encode_options)
    # open_set.OpenSet: the bundle's out-of-scope detector, read from the pooled embedding the
    # forward returns (every backend alike), or None
    open_set: object = None
    # the PyTorch model, which a task that generates decodes with (model.generate); None for ONNX
    model: object = None

    @property
    def spec(self):
        from ..tasks import get_task

        return get_task(self.task)

    def run(self, items: list) -> tuple[object, np.ndarray | None]:
        """The task's outputs for raw inputs and their pooled embeddings (N, H) (a multi-window input:
        its first window's). With a detector, the outputs carry its decisions (OpenSet.fold)."""
        outputs, pooled, _ = self.scored(items)
        return outputs, pooled

    def scored(self, items: list) -> tuple[object, np.ndarray | None, np.ndarray | None]:
        """run()'s outputs and embeddings, and the out-of-scope scores (N,) in [0, 1] (None without a
        detector)."""
        from ..evaluate import length_sorted_batches, pad_id
        from ..tasks import model_inputs

        task = self.spec
        ds = task.from_inputs(list(items))
        feats = task.encode(self.tokenizer, ds, None, self.max_length, **self.options)
        if "generates" in task.capabilities:  # decoded text: the model's own generate, not one forward
            return self.generated(ds, feats), None, None
        logits: list = [None] * len(feats)
        pooled: np.ndarray | None = None
        heads: np.ndarray | None = None
        for idx in length_sorted_batches(feats, self.batch_size):
            batch = task.collate([feats[i] for i in idx], pad_id(self.tokenizer))
            arrays = {k: v.numpy() for k, v in model_inputs(batch).items()}
            out, emb, head = self.forward(arrays)
            if head is not None and self.open_set is not None:
                if heads is None:
                    heads = np.zeros((len(feats), head.shape[1]), dtype=np.float32)
                heads[idx] = head
            out = np.asarray(out, dtype=np.float32)
            lengths = arrays["attention_mask"].sum(1)
            for j, i in enumerate(idx):
                logits[i] = out[j, : lengths[j]] if out.ndim == 3 else out[j]
            if emb is not None:
                if pooled is None:
                    pooled = np.zeros((len(ds), emb.shape[1]), dtype=np.float32)
                for j, i in enumerate(idx):
                    if feats[i].get("record", True):  # one window per input speaks for it
                        pooled[feats[i]["index"]] = emb[j]
        outputs = task.outputs(ds, feats, logits, **self.options)
        if self.open_set is None:
            return outputs, pooled, None
        if heads is None and self.open_set.detector.needs_features and len(feats):
            raise RuntimeError(f"the {self.open_set.detector.name} detector reads the output layer's input, which "
                               f"this backend ({self.info.get('format')}) does not return: export the model again")
        z = np.zeros((len(ds), len(self.labels)), dtype=np.float32)
        f = None if heads is None else np.zeros((len(ds), heads.shape[1]), dtype=np.float32)
        for i, feat in enumerate(feats):  # one feature per example for a task with one class per example
            z[feat["index"]] = logits[i]
            if f is not None:
                f[feat["index"]] = heads[i]
        outputs, scores = self.open_set.fold(outputs, z, f)
        return outputs, pooled, scores

    def generated(self, ds, feats: list[dict]) -> list:
        """The outputs of a task that generates (tasks/base.py Task.generate), decoded by the model
        with the bundle's decoding options."""
        from ..evaluate import pad_id

        task = self.spec
        if self.model is None:
            raise RuntimeError(f"a {task.name} model decodes its outputs with model.generate, which this backend "
                               f"({self.info.get('format')}) cannot run: serve the run or a PyTorch export")
        outputs, _, _ = task.generate(self.model, self.tokenizer, ds, feats, pad_id=pad_id(self.tokenizer),
                                      **self.options)
        return outputs

    def readable(self, items: list, outputs, scores=None) -> list[dict]:
        """Predictions in the API's shape (the task's schema), each with its confidence; with a
        detector, out_of_scope, its score, and the configured fallback label (or null) for an input
        out of scope."""
        rows = self.spec.readable(list(items), outputs, self.labels)
        if self.open_set is not None and scores is not None:
            from ..open_set import annotate

            rows = annotate(rows, scores, self.open_set)
        return rows

    def confidence(self, outputs) -> np.ndarray:
        """(N,) how sure the model is of each prediction (tasks/base.py Task.confidence)."""
        return self.spec.confidence(outputs)

    def predict(self, items: list) -> list[dict]:
        outputs, _, scores = self.scored(items)
        return self.readable(items, outputs, scores)


# --------------------------------------------------------------------------- backends


def torch_forward(model, task: str, precision: str = "fp32", features: bool = False) -> Callable:
    """Forward of a PyTorch model: the task's logits and the masked mean of the last hidden state."""
    import torch

    from ..tasks import get_task

    from ..open_set import HeadInput

    spec = get_task(task)
    dtype = torch.bfloat16 if precision == "bf16" else None
    catch = HeadInput(model, task, name=None if features else "")  # features: only for a detector to read

    @torch.inference_mode()
    def forward(arrays: dict):
        inputs = {k: torch.from_numpy(v) for k, v in arrays.items()}
        transformer = hasattr(model, "config")
        with catch:
            out = model(**inputs, **({"output_hidden_states": True} if transformer else {}))
        head = catch.value()
        pooled = None
        if transformer and getattr(out, "hidden_states", None) is not None:
            h = out.hidden_states[-1].float()  # (B, T, H)
            m = inputs["attention_mask"][..., None].float()
            pooled = ((h * m).sum(1) / m.sum(1).clamp(min=1.0)).numpy()  # (B, H)
        logits = spec.logits(out)
        return ((logits.float() if dtype is not None or logits.dtype != torch.float32 else logits).numpy(), pooled,
                None if head is None else head.float().numpy())

    return forward


def onnx_forward(path: Path, threads: int | None = None) -> Callable:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # no warnings about unused initialisers on stdout
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o for o in ("logits", "pooled", "features") if o in {x.name for x in session.get_outputs()}]

    def forward(arrays: dict):
        got = dict(zip(outputs, session.run(outputs, {k: arrays[k].astype(np.int64) for k in names})))
        return got["logits"], got.get("pooled"), got.get("features")

    return forward


def resolve_model_dir(path: str | Path) -> Path:
    """A run directory -> its champion's model/ (a loop run) or its model/ (a train run); a bundle
    directory as it is. Raises ModelError saying what to pass otherwise."""
    from ..modeling import ModelError

    found = rundir.model_of(path)
    if found is None:
        raise ModelError(f"{path} holds no model: pass a run directory (from `reflectlm run` or `reflectlm train`), "
                         f"a model bundle, or an export directory from `reflectlm export` (with {EXPORT_FILE})")
    return found


def from_bundle(bundle, forward: Callable, info: dict, model=None) -> Predictor:
    """model: the PyTorch model `forward` runs (what a task that generates decodes with), or None."""
    return Predictor(bundle.task, bundle.labels, bundle.tokenizer, bundle.meta["max_length"], forward, info,
                     options=bundle.meta.get("options", {}), open_set=bundle.open_set, model=model)


def load_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """Load a run (its champion), a bundle, or an export directory."""
    path = Path(path)
    if (path / EXPORT_FILE).is_file():
        return load_export(path, threads)
    from ..modeling import load_bundle

    model_dir = resolve_model_dir(path)
    bundle = load_bundle(model_dir)
    return from_bundle(bundle, torch_forward(bundle.model, bundle.task, features=bundle.open_set is not None),
                       {"path": str(model_dir), "format": "torch", "precision": "fp32"}, bundle.model)


def load_export(path: Path, threads: int | None = None) -> Predictor:
    from ..modeling import ModelError, load_bundle

    info = json.loads((path / EXPORT_FILE).read_text(encoding="utf-8"))
    if info.get("status") != "accepted":
        raise ModelError(f"{path} is a refused export ({info.get('reason', 'no reason recorded')}); serve the run "
                         "itself or export again with a remedy (see export.json)")
    bundle = load_bundle(path / rundir.MODEL)
    variant = info["variant"]
    model = None
    if variant["format"] == "onnx":
        forward = onnx_forward(path / variant["artifact"], threads)
    else:
        from .compress import apply_precision

        model = apply_precision(bundle.model, variant["precision"], variant.get("quantization"))
        forward = torch_forward(model, bundle.task, variant["precision"], features=bundle.open_set is not None)
    return from_bundle(bundle, forward, {"path": str(path), **{k: variant[k] for k in ("format", "precision")}},
                       model)
