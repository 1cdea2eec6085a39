"""Predictions and metrics for a split: the model over encoded features, the task's outputs
(probabilities, tag probabilities, answer candidates) and its metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import runtime
from .callable import callable_module
from .tasks import get_task, model_inputs


@dataclass
class Outputs:
    probs: object  # the task's per-example outputs: (N, C) probabilities; NER per-word (n_words, C); QA answers
    loss: np.ndarray | None  # (features,) per-feature loss, when gold labels were given
    metrics: dict | None
    scores: np.ndarray | None = None  # (N,) out-of-scope scores in [0, 1], where the model has a detector


def length_sorted_batches(features: list[dict], batch_size: int) -> list[list[int]]:
    """Batches of similar length so padding is small; inference order does not matter."""
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def forward_all(model, features: list[dict], pad_id: int, task, batch_size: int = 128, precision: str = "fp32",
                quiet: bool = True, label_smoothing: float = 0.0, pooled: bool = False):
    """Run the model over all features. Returns per-feature float32 logits in feature order
    ((C,), or (T_i, ...) for per-position heads) and, if the features carry labels, per-feature
    losses (F,) and counts (F,). pooled=True adds a fourth value: per-feature (D,) inputs of the
    output layer (open_set.HeadInput: what the out-of-scope detectors read), or None for a model
    without one linear head over the sequence."""
    from .ui import progress

    task = get_task(task)
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = len(features)
    logits_out: list = [None] * n
    losses = np.zeros(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.float64)
    has_labels = n > 0 and _has_labels(features[0])
    from .open_set import HeadInput

    catch = HeadInput(model, task) if pooled else None
    means: list | None = [None] * n if catch is not None and catch.layer is not None else None
    with progress(n, "evaluate", quiet) as bar:
        for idx in length_sorted_batches(features, batch_size):
            batch = task.collate([features[i] for i in idx], pad_id)
            with runtime.compute(precision, "infer", dev), (catch or _nothing()):
                out = model(**{k: v.to(dev) for k, v in model_inputs(batch).items()})
            logits = task.logits(out)
            if means is not None:
                caught = catch.value().float().cpu().numpy()  # (B, D)
                for j, i in enumerate(idx):
                    means[i] = caught[j]
            if has_labels:
                loss, _, _, count = task.per_example(logits, batch["labels"].to(dev), label_smoothing)
                losses[idx] = loss.cpu().numpy()
                counts[idx] = count.cpu().numpy()
            lengths = batch["attention_mask"].sum(1).tolist()
            arr = logits.cpu().numpy()
            for j, i in enumerate(idx):
                logits_out[i] = arr[j, : lengths[j]] if arr.ndim == 3 else arr[j]
            bar.advance(len(idx))
    model.train(was_training)
    out = logits_out, (losses if has_labels else None), (counts if has_labels else None)
    return (*out, means) if pooled else out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _has_labels(f: dict) -> bool:
    y = f["labels"]
    if isinstance(y, (list, tuple)):
        return any(v != -100 for v in y)
    return y != -100


def evaluate_features(model, ds, features: list[dict], *, task, labels: list[str], pad_id: int,
                      batch_size: int = 128, precision: str = "fp32", quiet: bool = True,
                      options: dict | None = None, open_set=None, tokenizer=None) -> Outputs:
    """The task's outputs on `ds` (already encoded as `features`) and, when it is labelled, its metrics.
    options: the bundle's encoding options (e.g. QA's answer length), for decoding. open_set: the
    model's out-of-scope detector (open_set.OpenSet), whose decisions the outputs then carry, and
    whose numbers the metrics gain under "open_set". tokenizer: the model's, which a task that
    generates (its outputs are decoded text) needs."""
    from . import open_set as O

    task = get_task(task)
    if "generates" in task.capabilities:
        if tokenizer is None:
            raise ValueError(f"evaluate_features needs the model's tokenizer for data.task = {task.name!r}: its "
                             "outputs are generated text; pass tokenizer=bundle.tokenizer")
        probs, losses, counts = task.generate(model, tokenizer, ds, features, pad_id=pad_id, batch_size=batch_size,
                                              precision=precision, quiet=quiet, **(options or {}))
        logits = pooled = None
    else:
        ran = forward_all(model, features, pad_id, task, batch_size, precision, quiet, pooled=open_set is not None)
        logits, losses, counts = ran[:3]
        pooled = ran[3] if open_set is not None else None
        probs = task.outputs(ds, features, logits, **(options or {}))
    scores = None
    if open_set is not None:
        z = O.by_example(logits, features, len(ds), len(labels))
        f = None if pooled is None else O.by_example(pooled, features, len(ds), None)
        plain = probs
        probs, scores = open_set.fold(probs, z, f)
    if losses is None:
        return Outputs(probs, None, None, scores)
    # Token-level tasks average over tagged words (QA over windows), as the training loss does.
    mean_loss = float((losses * counts).sum() / max(counts.sum(), 1.0))
    metrics = task.metrics(ds, probs, labels, loss=mean_loss)
    if open_set is not None:
        metrics["open_set"] = O.split_metrics(ds, labels, probs, plain, open_set.ranking_score(z, f), open_set)
    return Outputs(probs, losses, metrics, scores)


def encode_bundle(bundle, ds, labelled: bool = True) -> list[dict]:
    """ds encoded for a model bundle, with the bundle's own length and options."""
    task = get_task(bundle.task)
    label2id = {n: i for i, n in enumerate(bundle.labels)} if labelled else None
    return task.encode(bundle.tokenizer, ds, label2id, bundle.meta["max_length"], labelled=labelled,
                       **bundle.meta.get("options", {}))


def evaluate_bundle(bundle, ds, *, batch_size: int = 128, precision: str = "auto", quiet: bool = True,
                    labelled: bool = True) -> Outputs:
    """The task's outputs (and, for a labelled Dataset, metrics) of a loaded model bundle on a Dataset."""
    feats = encode_bundle(bundle, ds, labelled)
    return evaluate_features(bundle.model, ds, feats, task=bundle.task, labels=bundle.labels,
                             pad_id=pad_id(bundle.tokenizer), batch_size=batch_size,
                             precision=runtime.resolve_precision(precision), quiet=quiet,
                             options=bundle.meta.get("options"), open_set=bundle.open_set, tokenizer=bundle.tokenizer)


def bundle_probs(bundle, items, *, batch_size: int = 128, precision: str = "auto"):
    """The bundle's outputs for raw inputs (texts, or dicts of the task's input fields)."""
    ds = get_task(bundle.task).from_inputs(list(items))
    return evaluate_bundle(bundle, ds, batch_size=batch_size, precision=precision, labelled=False).probs


def evaluate(model_or_run: str | Path, data: str | Path, *, batch_size: int = 128, precision: str = "auto",
             quiet: bool = True, **columns) -> dict:
    """Metrics of a trained model (run directory or bundle) on a labelled file in its task's format."""
    from . import data as data_mod
    from .modeling import load_bundle

    bundle = load_bundle(model_or_run)
    task = get_task(bundle.task)
    ds = data_mod.load(str(data), bundle.task, **columns)
    unknown = sorted(task.unknown_labels(ds, set(task.label_names_of(bundle.labels))))
    if unknown:
        raise data_mod.DataError(f"{data}: labels {unknown[:10]} are not among the model's labels "
                                 f"({', '.join(bundle.labels[:20])}); evaluate with data of the same label set")
    return evaluate_bundle(bundle, ds, batch_size=batch_size, precision=precision, quiet=quiet).metrics


def predict(model_or_run: str | Path, items, *, batch_size: int = 128, precision: str = "auto") -> list[dict]:
    """Readable predictions for raw inputs: texts (NER: split on whitespace into words), or dicts
    with the task's input fields (QA: {"question", "context"})."""
    from .modeling import load_bundle

    bundle = load_bundle(model_or_run)
    items = list(items)
    task = get_task(bundle.task)
    out = evaluate_bundle(bundle, task.from_inputs(items), batch_size=batch_size, precision=precision, labelled=False)
    rows = task.readable(items, out.probs, bundle.labels)
    if bundle.open_set is not None:  # out_of_scope, its score, the fallback label (open_set.py)
        from .open_set import annotate

        rows = annotate(rows, out.scores, bundle.open_set)
    return rows


def pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return 0 if pad is None else int(pad)


callable_module(__name__, evaluate)  # `reflectlm.evaluate(...)` calls evaluate() (see reflectlm.callable)
