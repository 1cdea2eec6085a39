"""Sequence classification: one label per text."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_METRIC = "macro_f1"


def encode(tokenizer, ds, label2id: dict[str, int] | None, max_length: int) -> list[dict]:
    """Tokenise once, up front; padding happens per batch in `collate`."""
    ids = tokenizer(list(ds.texts), truncation=True, max_length=max_length)["input_ids"]
    labels = [label2id[y] for y in ds.labels] if label2id is not None else [-100] * len(ids)
    return [{"input_ids": x, "labels": y, "index": i} for i, (x, y) in enumerate(zip(ids, labels))]


def per_example(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                class_weight: torch.Tensor | None = None, transition: torch.Tensor | None = None):
    """Per-example loss, probability of the gold label, correctness and weight in the batch mean.

    logits (B, C) float32, labels (B,). Returns four (B,) tensors; the loss carries gradients.
    The count is 1 per example here (per sentence it is the number of tagged words, see ner).
    transition (C, C): forward correction - the loss is that of the given (noisy) label under
    softmax(logits) @ transition; the probability and correctness still describe softmax(logits).
    """
    if transition is None:
        loss = F.cross_entropy(logits, labels, weight=class_weight, reduction="none", label_smoothing=label_smoothing)
    else:
        log_q = (logits.softmax(-1) @ transition).clamp(min=1e-12).log()  # (B, C): the noisy-label distribution
        loss = -log_q.gather(1, labels[:, None]).squeeze(1)
        if label_smoothing:
            loss = (1.0 - label_smoothing) * loss - label_smoothing * log_q.mean(-1)
        if class_weight is not None:
            loss = loss * class_weight[labels]
    with torch.no_grad():
        prob = logits.softmax(-1)
        gold = prob.gather(1, labels[:, None]).squeeze(1)
        correct = (prob.argmax(-1) == labels).float()
    return loss, gold, correct, torch.ones_like(loss)


def early_learning_targets(logits: torch.Tensor) -> torch.Tensor:
    """The (B, C) predictions an early-learning target moves towards: softmax(logits) clipped to
    [1e-4, 1 - 1e-4] and renormalised, detached (Liu et al. 2020)."""
    with torch.no_grad():
        q = logits.detach().softmax(-1).clamp(1e-4, 1.0 - 1e-4)
        return q / q.sum(1, keepdim=True)


def early_learning_term(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log(1 - <p, t>) per example (B,), p = softmax(logits) clipped as the targets are, t (B, C) the
    examples' moving-average targets. Minimising it pulls p towards t: while the model still fits
    the clean majority, t carries the true class, and the term's gradient cancels much of the
    cross-entropy's pull towards a wrong given label (Liu et al. 2020, ELR)."""
    p = logits.softmax(-1).clamp(1e-4, 1.0 - 1e-4)
    return (1.0 - (target * p).sum(1)).clamp(min=1e-6).log()


def probs_from_logits(features: list[dict], logits: list[np.ndarray]) -> np.ndarray:
    """Per-example logits (C,) in dataset order -> (N, C) probabilities."""
    if not logits:
        return np.zeros((0, 0), dtype=np.float32)
    x = np.stack(logits).astype(np.float64)
    x = np.exp(x - x.max(1, keepdims=True))
    return (x / x.sum(1, keepdims=True)).astype(np.float32)


def metrics(ds, probs: np.ndarray, labels: list[str], loss: float | None = None) -> dict:
    """Accuracy, macro/weighted F1, per-class P/R/F1/support and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    label2id = {name: i for i, name in enumerate(labels)}
    y_true = np.array([label2id[y] for y in ds.labels], dtype=int)
    y_pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    out = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels)
        },
        "labels": list(labels),
        "confusion": confusion_matrix(y_true, y_pred, labels=ids).tolist() if len(y_true) else [],
    }
    if loss is not None:
        out["loss"] = float(loss)
    return out


def predictions(probs: np.ndarray, labels: list[str]) -> list[dict]:
    """Readable predictions: label and its probability, per example."""
    top = probs.argmax(1)
    return [{"label": labels[k], "score": float(probs[i, k])} for i, k in enumerate(top)]


def ab_test(champion_probs, challenger_probs, ds, labels: list[str], metric, **test):
    """The A/B test of two models' (N, C) probabilities on `ds` by metric.gate (compare.compare);
    `test` holds its mode, alpha, margin, n_bootstrap, seed and allow_class_regressions."""
    from ..compare import compare

    l2i = {n: i for i, n in enumerate(labels)}
    y = np.array([l2i[v] for v in ds.labels])
    return compare(y, np.asarray(champion_probs).argmax(1), np.asarray(challenger_probs).argmax(1), labels=labels,
                   metric=metric.gate, **test)


def blank_labels(ds) -> list:
    """Labels that say nothing (an unlabelled pool keeps its texts only)."""
    return [None] * len(ds)
