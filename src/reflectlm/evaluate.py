"""Predictions, probabilities and metrics for a split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import callable_module, runtime
from .tasks import collate, get_task


@dataclass
class Outputs:
    probs: object  # classification: (N, C) array; ner: list of (n_words, C) arrays
    loss: np.ndarray | None  # (N,) per-example loss, when gold labels were given
    metrics: dict | None


def length_sorted_batches(features: list[dict], batch_size: int) -> list[list[int]]:
    """Batches of similar length so padding is small; inference order does not matter."""
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def forward_all(model, features: list[dict], pad_id: int, task_name: str, batch_size: int = 128,
                precision: str = "fp32", quiet: bool = True, label_smoothing: float = 0.0):
    """Run the model over all features. Returns per-example float32 logits in dataset order
    ((C,) or (T_i, C)) and, if the features carry labels, per-example losses (N,) and counts (N,)."""
    from .ui import progress

    task = get_task(task_name)
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = len(features)
    logits_out: list = [None] * n
    losses = np.zeros(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.float64)
    has_labels = n > 0 and _has_labels(features[0])
    batches = length_sorted_batches(features, batch_size)
    with progress(n, "evaluate", quiet) as bar:
        for idx in batches:
            batch = collate([features[i] for i in idx], pad_id)
            with runtime.compute(precision, "infer", dev):
                logits = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev)).logits
            logits = logits.float()
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
    return logits_out, (losses if has_labels else None), (counts if has_labels else None)


def _has_labels(f: dict) -> bool:
    y = f["labels"]
    return any(v != -100 for v in y) if isinstance(y, list) else y != -100


def evaluate_features(model, ds, features: list[dict], labels: list[str], pad_id: int, task_name: str,
                      batch_size: int = 128, precision: str = "fp32", quiet: bool = True) -> Outputs:
    task = get_task(task_name)
    logits, losses, counts = forward_all(model, features, pad_id, task_name, batch_size, precision, quiet)
    probs = task.probs_from_logits(features, logits)
    if losses is None:
        return Outputs(probs, None, None)
    # Token-level tasks average over tagged words, as the training loss does.
    mean_loss = float((losses * counts).sum() / max(counts.sum(), 1.0))
    return Outputs(probs, losses, task.metrics(ds, probs, labels, loss=mean_loss))


def evaluate_bundle(bundle, ds, *, batch_size: int = 128, precision: str = "auto", quiet: bool = True,
                    labelled: bool = True) -> Outputs:
    """Probabilities (and, for a labelled Dataset, metrics) of a loaded model bundle on a Dataset."""
    task = get_task(bundle.task)
    label2id = {n: i for i, n in enumerate(bundle.labels)} if labelled else None
    feats = task.encode(bundle.tokenizer, ds, label2id, bundle.meta["max_length"])
    return evaluate_features(bundle.model, ds, feats, bundle.labels, _pad_id(bundle.tokenizer), bundle.task,
                             batch_size, runtime.resolve_precision(precision), quiet)


def text_dataset(texts: list[str], task: str):
    """Unlabelled texts as a Dataset (NER: split on whitespace into words)."""
    from .data import Dataset

    tokens = [t.split() for t in texts] if task == "ner" else None
    labels = [["O"] * len(t) for t in tokens] if task == "ner" else [None] * len(texts)
    return Dataset(task=task, ids=[str(i) for i in range(len(texts))], labels=labels, texts=list(texts), tokens=tokens)


def bundle_probs(bundle, texts: list[str], *, batch_size: int = 128, precision: str = "auto"):
    """The bundle's probabilities for raw texts: (N, C), or per sentence (n_words, C) for NER."""
    return evaluate_bundle(bundle, text_dataset(texts, bundle.task), batch_size=batch_size, precision=precision,
                           labelled=False).probs


def evaluate(model_or_run: str | Path, data: str | Path, *, batch_size: int = 128, precision: str = "auto",
             quiet: bool = True, **columns) -> dict:
    """Metrics of a trained model (run directory or bundle) on a labelled file."""
    from . import data as data_mod
    from .modeling import load_bundle

    bundle = load_bundle(model_or_run)
    ds = data_mod.load(str(data), bundle.task, **columns)
    unknown = sorted(_label_set(ds, bundle.task) - set(bundle.labels))
    if unknown:
        raise data_mod.DataError(f"{data}: labels {unknown[:10]} are not among the model's labels "
                                 f"({', '.join(bundle.labels[:20])}); evaluate with data of the same label set")
    return evaluate_bundle(bundle, ds, batch_size=batch_size, precision=precision, quiet=quiet).metrics


def predict(model_or_run: str | Path, texts: list[str], *, batch_size: int = 128, precision: str = "auto") -> list[dict]:
    """Predictions for raw texts (NER: split on whitespace into words)."""
    from .modeling import load_bundle

    bundle = load_bundle(model_or_run)
    task = get_task(bundle.task)
    probs = bundle_probs(bundle, texts, batch_size=batch_size, precision=precision)
    if bundle.task == "ner":
        return task.predictions(probs, [t.split() for t in texts], bundle.labels)
    return task.predictions(probs, bundle.labels)


def _label_set(ds, task: str) -> set:
    return {t for tags in ds.labels for t in tags} if task == "ner" else set(ds.labels)


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return 0 if pad is None else int(pad)


callable_module(__name__, evaluate)  # `reflectlm.evaluate(...)` calls evaluate() (see reflectlm.callable_module)
