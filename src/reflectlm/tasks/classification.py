"""Sequence classification: one label per text (sentiment, intents, topics).

Data: CSV / TSV / JSONL / Parquet records with a text and a label column. The model is an encoder
with a sequence head; its output per example is one probability row over the sorted class names.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .base import calibration_rows, clip, pad_batch, row_uncertainty, softmax

DEFAULT_METRIC = "macro_f1"


def encode(tokenizer, ds, label2id: dict[str, int] | None, max_length: int, **_) -> list[dict]:
    """Tokenise once, up front; padding happens per batch in `collate`."""
    ids = tokenizer(list(ds.texts), truncation=True, max_length=max_length)["input_ids"]
    labels = [label2id[y] for y in ds.labels] if label2id is not None else [-100] * len(ids)
    return [{"input_ids": x, "labels": y, "index": i, "record": True} for i, (x, y) in enumerate(zip(ids, labels))]


def collate(features: list[dict], pad_id: int) -> dict:
    """Dynamic padding to the longest text of the batch; labels (B,)."""
    import torch

    batch = pad_batch(features, pad_id)
    batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
    return batch


def per_example(logits, labels, label_smoothing: float = 0.0, class_weight=None, transition=None):
    """Per-example loss, probability of the gold label, correctness and weight in the batch mean.

    logits (B, C) float32, labels (B,). Returns four (B,) tensors; the loss carries gradients.
    The count is 1 per example here (per sentence it is the number of tagged words, see ner).
    transition (C, C): forward correction - the loss is that of the given (noisy) label under
    softmax(logits) @ transition; the probability and correctness still describe softmax(logits).
    """
    import torch
    import torch.nn.functional as F

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


def early_learning_targets(logits):
    """The (B, C) predictions an early-learning target moves towards: softmax(logits) clipped to
    [1e-4, 1 - 1e-4] and renormalised, detached (Liu et al. 2020)."""
    import torch

    with torch.no_grad():
        q = logits.detach().softmax(-1).clamp(1e-4, 1.0 - 1e-4)
        return q / q.sum(1, keepdim=True)


def early_learning_term(logits, target):
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
    return softmax(np.stack(logits)).astype(np.float32)


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


def error_analysis(ds, probs, labels: list[str], examples: int = 3) -> dict:
    """Per class: errors, members, the classes it is mistaken for and its most confident errors;
    the pairs of classes predicted as each other (see tasks.base.Task.error_analysis)."""
    probs = np.asarray(probs, dtype=np.float64)  # (N, C)
    m = metrics(ds, probs, labels)
    y = np.array([labels.index(v) for v in ds.labels], dtype=int)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    gold_prob = probs[np.arange(len(y)), y] if len(y) else np.zeros(0)
    conf = np.asarray(m["confusion"]) if len(y) else np.zeros((len(labels), len(labels)), dtype=int)  # rows gold
    wrong = pred != y

    def error_examples(mask: np.ndarray) -> list[dict]:
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(-probs[idx, pred[idx]], kind="stable")][:examples]  # most confident first
        return [{"id": ds.ids[k], "text": clip(ds.texts[k]), "gold": labels[y[k]], "predicted": labels[pred[k]],
                 "probability": float(probs[k, pred[k]])} for k in idx]

    groups = {}
    for i, c in enumerate(labels):
        members = y == i
        row = [(int(conf[i, j]), labels[j]) for j in range(len(labels)) if j != i and conf[i, j] > 0]
        groups[c] = {"errors": int((members & wrong).sum()), "n": int(members.sum()),
                     "scores": {ds.ids[k]: 1.0 - gold_prob[k] for k in np.flatnonzero(members)},
                     "evidence": {"top_confusions": [{"predicted": name, "count": n} for n, name in
                                                     sorted(row, key=lambda t: (-t[0], t[1]))[:3]],
                                  "examples": error_examples(members & wrong)}}
    pairs = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            count = int(conf[i, j] + conf[j, i]) if len(y) else 0
            if count:
                a, b = labels[i], labels[j]
                pairs.append({"a": a, "b": b, "count": count, "a_to_b": int(conf[i, j]), "b_to_a": int(conf[j, i]),
                              "n": int(conf[i].sum() + conf[j].sum()),
                              "examples": error_examples((y == i) & (pred == j)) + error_examples((y == j) & (pred == i))})
    return {"metrics": m, "metric": "macro_f1", "value": m["macro_f1"],
            "headline": f"macro F1 {m['macro_f1']:.3f}, accuracy {m['accuracy']:.3f} on {len(ds)} examples",
            "scores": {i: 1.0 - p for i, p in zip(ds.ids, gold_prob)}, "trials": "examples", "pair_trials": "examples",
            "prefixed": True, "rates_key": "per_class", "groups": groups, "pairs": pairs, "kinds": None,
            "group_f1": {c: float(v["f1"]) for c, v in m["per_class"].items()},
            "overall_error_rate": float(wrong.mean()) if len(y) else 0.0}


class Classification:
    """A text and its class. See tasks.base.Task for what each member means."""

    name = "classification"
    unit = "example"
    head = "sequence"
    capabilities = frozenset({"labels", "class_probs", "label_probs", "classes", "fast_cv", "lstm", "encoder"})
    metric_names = ("accuracy", "macro_f1", "weighted_f1", "loss")
    default_metric = DEFAULT_METRIC
    report_metrics = ("accuracy", "macro_f1")
    formats = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
    input_fields = ("text",)
    text_field = "text"  # the input field `ds.texts` holds
    model_input_names = ("input_ids", "attention_mask")
    group_metrics = "per_class"  # the metrics' per-group table (report)
    error_kinds = False  # error_analysis gives an error-kind breakdown
    count_unit = "examples"  # what class_counts counts
    group_name = "class"
    default_max_length = 128
    auto_model = "AutoModelForSequenceClassification"
    default_model = "minilm"  # model.name when the config does not set it

    # ----------------------------------------------------------------- data

    def needed_columns(self, cols: dict) -> list[tuple[str, str]]:
        return [(cols["text_column"], "data.text_column"), (cols["label_column"], "data.label_column")]

    def parse(self, rec: dict, at: str, cols: dict) -> dict:
        from ..dataset import label_cell, text_cell

        return {"text": text_cell(rec[cols["text_column"]], at, cols["text_column"]),
                "label": label_cell(rec[cols["label_column"]], at, cols["label_column"])}

    def read_format(self, text: str, fmt: str, where: str) -> None:
        return None

    def check_format(self, fmt: str, where: str) -> None:
        from ..dataset import error

        if fmt not in ("csv", "tsv", "jsonl", "parquet"):
            raise error(where, f"{fmt.upper() if fmt == 'conll' else fmt} is not a format for text classification"
                        + (" (CoNLL is a token-tagging format)" if fmt == "conll" else ""),
                        "give a csv / jsonl / parquet file with text and label columns, or set data.task = 'ner' "
                        "for CoNLL")

    def label_list(self, train) -> list[str]:
        return self.label_names(train)

    def label_names(self, ds) -> list[str]:
        return sorted(set(ds.labels))

    def label_names_of(self, labels: list[str]) -> list[str]:
        return list(labels)

    def unknown_labels(self, ds, known: set[str]) -> dict[str, int]:
        first: dict[str, int] = {}
        for i, y in enumerate(ds.labels):
            if y not in known and y not in first:
                first[y] = i
        return first

    def strata(self, ds) -> list:
        return list(ds.labels)

    def groups(self, ds) -> None:
        return None

    def keys(self, ds) -> list[str]:
        return list(ds.texts)

    def blank_labels(self, ds) -> list:
        return blank_labels(ds)

    def from_inputs(self, items):
        from ..dataset import Dataset

        texts = [_text_of(x) for x in items]
        return Dataset(task=self.name, ids=[str(i) for i in range(len(texts))], labels=[None] * len(texts),
                       texts=texts, tokens=None)

    def inputs(self, ds, i: int) -> str:
        return ds.texts[i]

    def with_text(self, ds, i: int, text: str) -> str:
        return text

    def to_record(self, ds, i: int) -> dict:
        rec = {"id": ds.ids[i], "text": ds.texts[i], "label": ds.labels[i]}
        if ds.weights is not None:
            rec["weight"] = float(ds.weights[i])
        if ds.confidence is not None:
            rec["confidence"] = float(ds.confidence[i])
        return rec

    def from_records(self, rows: list[dict], source: str):
        from ..dataset import Dataset

        return Dataset(task=self.name, ids=[r["id"] for r in rows], labels=[r["label"] for r in rows],
                       texts=[r["text"] for r in rows], tokens=None, weights=_weights(rows), source=source)

    def record_columns(self) -> dict:
        return {"text_column": "text", "label_column": "label"}

    def vocabulary_source(self, ds) -> list:
        return list(ds.texts)

    # ----------------------------------------------------------------- model

    def encode_options(self, data_cfg) -> dict:
        return {}

    def encode(self, tokenizer, ds, label2id, max_length: int, **options) -> list[dict]:
        return encode(tokenizer, ds, label2id, max_length)

    def collate(self, features: list[dict], pad_id: int) -> dict:
        return collate(features, pad_id)

    def logits(self, output):
        return output.logits.float()

    def per_example(self, logits, labels, label_smoothing: float = 0.0, class_weight=None, transition=None):
        return per_example(logits, labels, label_smoothing, class_weight, transition)

    def outputs(self, ds, features: list[dict], logits: list[np.ndarray], **options) -> np.ndarray:
        return probs_from_logits(features, logits)

    # ----------------------------------------------------------------- evaluation

    def metrics(self, ds, outputs, labels: list[str], loss: float | None = None) -> dict:
        return metrics(ds, np.asarray(outputs), labels, loss)

    def check_outputs(self, ds, outputs, labels: list[str]) -> str | None:
        if len(ds) and np.shape(outputs)[1:] != (len(labels),):
            return (f"probabilities have shape {np.shape(outputs)}, expected ({len(ds)}, {len(labels)}); give one "
                    "column per class in the label list's order")
        return None

    def correct(self, ds, outputs, labels: list[str]) -> np.ndarray:
        y = np.array([labels.index(v) for v in ds.labels], dtype=int)
        return np.asarray(outputs).argmax(1) == y if len(y) else np.zeros(0, dtype=bool)

    def ab_test(self, champion, challenger, ds, labels: list[str], metric, **test):
        return ab_test(champion, challenger, ds, labels, metric, **test)

    def agreement(self, a, b) -> float:
        return float(np.mean(np.asarray(a).argmax(1) == np.asarray(b).argmax(1))) if len(a) else 1.0

    # ----------------------------------------------------------------- predictions

    def readable(self, items, outputs, labels: list[str]) -> list[dict]:
        probs = np.asarray(outputs)
        top = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
        return [{"label": labels[k], "confidence": float(probs[i, k]),
                 "probabilities": {lab: float(v) for lab, v in zip(labels, probs[i])}} for i, k in enumerate(top)]

    def confidence(self, outputs) -> np.ndarray:
        return np.asarray(outputs).max(1) if len(outputs) else np.zeros(0)

    def uncertainty(self, outputs, strategy: str) -> np.ndarray:
        return row_uncertainty(np.asarray(outputs), strategy)

    def summary_label(self, readable: dict) -> str:
        from .base import OUT_OF_SCOPE

        return OUT_OF_SCOPE if readable.get("out_of_scope") else readable["label"]

    def prediction_text(self, readable: dict) -> str:
        from .base import OUT_OF_SCOPE

        return OUT_OF_SCOPE if readable.get("out_of_scope") else readable["label"]

    def gold_text(self, ds, i: int) -> str:
        return ds.labels[i]

    def stored_row(self, item, readable: dict, mask) -> dict:
        out = {"label": readable["label"]}
        if readable.get("out_of_scope"):
            out["out_of_scope"] = True
        return {"text": mask(_text_of(item)), "output": out}

    def stored_input(self, text: str) -> str:
        return text

    def api_schema(self) -> dict:
        # With an out-of-scope detector (open_set.py): out_of_scope, its score in [0, 1], and label
        # null (or open_set.fallback) for an input that belongs to no intent.
        return {"prediction": {"label": (str | None, ...), "probabilities": (dict[str, float], ...),
                               "out_of_scope": (bool, False), "out_of_scope_score": (float, None)},
                "correction": {"label": (str | None, None)}}

    def correction(self, body: dict, stored: dict, labels: list[str]):
        if body.get("label") is None:
            raise ValueError("invalid_feedback", "send label (the correct class) for a classification model")
        if body["label"] not in labels:
            raise ValueError("unknown_label", f"label {body['label']!r} is not one of the model's labels: "
                                              f"{', '.join(labels[:30])}")
        return body["label"]

    def corrected_example(self, row: dict, labels: list[str]) -> dict | None:
        if row["label"] not in set(labels):
            return None
        rec = {"id": f"fb-{row['prediction_id']}", "text": row["text"], "label": row["label"]}
        return {"id": rec["id"], "key": row["text"], "label": row["label"], "record": rec,
                "changed": row["served"].get("label") != row["label"]}

    # ----------------------------------------------------------------- diagnosis

    def error_groups(self, ds, outputs, labels: list[str]) -> dict[str, tuple[int, int]]:
        probs = np.asarray(outputs)
        pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
        y = np.array([labels.index(v) for v in ds.labels], dtype=int)
        return {c: (int(((y == i) & (pred != i)).sum()), int((y == i).sum())) for i, c in enumerate(labels)}

    def error_analysis(self, ds, outputs, labels: list[str], examples: int = 3, **_) -> dict:
        return error_analysis(ds, outputs, labels, examples)

    def calibration(self, ds, outputs, labels: list[str]) -> dict:
        P = np.asarray(outputs, dtype=np.float64).reshape(len(ds), len(labels))
        return calibration_rows(P, np.asarray([labels.index(v) for v in ds.labels], dtype=int), "examples")

    def class_counts(self, ds) -> dict[str, int]:
        return dict(Counter(ds.labels))

    def label_counts(self, ds) -> dict[str, int]:
        return dict(Counter(ds.labels))

    def valid_label(self, value, labels: list[str]) -> bool:
        return value in set(labels)

    def domain_texts(self, ds) -> list[str]:
        return list(ds.texts)

    def cv_vectors(self, ds, label2id: dict, embed) -> tuple[list[np.ndarray], list[np.ndarray]]:
        # The out-of-fold head learns from one vector per example: the text's frozen embedding.
        X = embed.texts(ds.texts)  # (N, D)
        return [X[i : i + 1] for i in range(len(X))], [np.array([label2id[v]]) for v in ds.labels]

    def cv_outputs(self, parts: list, n_labels: int) -> np.ndarray:
        if not parts:
            return np.zeros((0, n_labels), dtype=np.float32)
        return np.stack([np.asarray(p, dtype=np.float32).reshape(n_labels) for p in parts])


def _text_of(item) -> str:
    if isinstance(item, dict):
        return item.get("text", "")
    return str(item)


def _weights(rows: list[dict]):
    w = [r.get("weight") for r in rows]
    return None if all(v is None for v in w) else np.array([1.0 if v is None else v for v in w], dtype=np.float32)
