"""Token classification (NER) with BIO tags.

The first sub-token of each word carries the word's tag; the other sub-tokens and the special
tokens are ignored (-100) in the loss. Predictions are read at each word's first sub-token, so
they map back to words and from words to entity spans.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_METRIC = "entity_f1"
IGNORE = -100


def encode(tokenizer, ds, label2id: dict[str, int] | None, max_length: int) -> list[dict]:
    enc = tokenizer([list(t) for t in ds.tokens], is_split_into_words=True, truncation=True, max_length=max_length)
    features = []
    for i, ids in enumerate(enc["input_ids"]):
        words = ds.tokens[i]
        tags = ds.labels[i] if label2id is not None else None
        word_ids = enc.word_ids(i)
        starts = np.full(len(words), -1, dtype=np.int64)  # first sub-token position per word; -1: lost
        labels = [IGNORE] * len(ids)
        previous = None
        for pos, w in enumerate(word_ids):
            if w is not None and w != previous:
                starts[w] = pos
                if tags is not None:
                    labels[pos] = label2id[tags[w]]
            previous = w
        features.append({"input_ids": ids, "labels": labels, "index": i, "word_starts": starts})
    return features


def per_example(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                class_weight: torch.Tensor | None = None):
    """Per-sentence mean token loss, mean gold-tag probability, fraction of words right, word count.

    logits (B, T, C) float32, labels (B, T) with -100 where ignored. Returns four (B,) tensors.
    """
    B, T, C = logits.shape
    flat = F.cross_entropy(logits.reshape(-1, C), labels.reshape(-1), weight=class_weight, reduction="none",
                           ignore_index=IGNORE, label_smoothing=label_smoothing).view(B, T)
    mask = (labels != IGNORE).float()  # (B, T)
    count = mask.sum(1)
    denom = count.clamp(min=1.0)
    loss = (flat * mask).sum(1) / denom
    with torch.no_grad():
        prob = logits.softmax(-1)
        safe = labels.clamp(min=0)
        gold = prob.gather(2, safe[..., None]).squeeze(2)  # (B, T)
        correct = (prob.argmax(-1) == safe).float()
        gold = (gold * mask).sum(1) / denom
        correct = (correct * mask).sum(1) / denom
    return loss, gold, correct, count


def probs_from_logits(features: list[dict], logits: list[np.ndarray]) -> list[np.ndarray]:
    """Per-example sub-token logits (T_i, C) -> per-word probabilities (n_words, C)."""
    out = []
    for f, x in zip(features, logits):
        starts = f["word_starts"]
        C = x.shape[1]
        p = np.zeros((len(starts), C), dtype=np.float32)
        p[:, 0] = 1.0  # a word the tokenizer dropped (or truncated) is predicted "O" (index 0)
        ok = starts >= 0
        if ok.any():
            z = x[starts[ok]].astype(np.float64)
            z = np.exp(z - z.max(1, keepdims=True))
            p[ok] = z / z.sum(1, keepdims=True)
        out.append(p)
    return out


# ------------------------------------------------------------------ decoding


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entity spans (type, start, end-exclusive) under strict BIO: an entity opens with B-x and
    continues over I-x of the same type; a stray I-x opens nothing (as seqeval's strict mode)."""
    out = []
    current = None  # [type, start]
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, kind = tag.partition("-")
        if current is not None and not (prefix == "I" and kind == current[0]):
            out.append((current[0], current[1], i))
            current = None
        if prefix == "B":
            current = [kind, i]
    return out


def _allowed(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Transition mask (C, C) and start mask (C,) of the BIO grammar."""
    C = len(labels)
    trans = np.ones((C, C), dtype=bool)
    start = np.ones(C, dtype=bool)
    for j, tag in enumerate(labels):
        if tag.startswith("I-"):
            start[j] = False
            kind = tag[2:]
            for i, prev in enumerate(labels):
                trans[i, j] = prev in (f"B-{kind}", f"I-{kind}")
    return trans, start


def viterbi(probs: np.ndarray, labels: list[str]) -> list[str]:
    """Most probable tag sequence that is valid BIO, from per-word probabilities (n, C).

    Plain argmax can emit an I-x after O, which strict scoring then drops; constrained decoding
    turns such a word into a well-formed entity or into O, whichever is more probable.
    """
    n, C = probs.shape
    if n == 0:
        return []
    trans, start = _allowed(labels)
    logp = np.log(np.clip(probs, 1e-12, 1.0))
    penalty = np.where(trans, 0.0, -np.inf)
    score = np.where(start, logp[0], -np.inf)
    back = np.zeros((n, C), dtype=np.int64)
    for t in range(1, n):
        cand = score[:, None] + penalty  # (C_prev, C_next)
        back[t] = cand.argmax(0)
        score = cand.max(0) + logp[t]
    path = [int(score.argmax())]
    for t in range(n - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return [labels[k] for k in reversed(path)]


def decode(probs: np.ndarray, labels: list[str], method: str = "viterbi") -> list[str]:
    if method == "argmax":
        return [labels[k] for k in probs.argmax(1)] if len(probs) else []
    return viterbi(probs, labels)


# ------------------------------------------------------------------ metrics


def metrics(ds, probs: list[np.ndarray], labels: list[str], loss: float | None = None, method: str = "viterbi") -> dict:
    """Entity-level precision / recall / F1 (seqeval, strict IOB2) overall and per type, plus
    word-level tag accuracy."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    y_true = [list(t) for t in ds.labels]
    y_pred = [decode(p, labels, method) for p in probs]
    words = sum(len(t) for t in y_true)
    right = sum(a == b for t, p in zip(y_true, y_pred) for a, b in zip(t, p))
    types = sorted({lab[2:] for lab in labels if lab != "O"})
    report = {}
    if any(spans(t) for t in y_true) or any(spans(p) for p in y_pred):
        report = classification_report(y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    micro = report.get("micro avg", {})
    out = {
        "n": len(y_true),
        "entity_precision": float(micro.get("precision", 0.0)),
        "entity_recall": float(micro.get("recall", 0.0)),
        "entity_f1": float(micro.get("f1-score", 0.0)),
        "entity_macro_f1": float(report.get("macro avg", {}).get("f1-score", 0.0)),
        "token_accuracy": right / words if words else 0.0,
        "per_type": {
            k: {
                "precision": float(report.get(k, {}).get("precision", 0.0)),
                "recall": float(report.get(k, {}).get("recall", 0.0)),
                "f1": float(report.get(k, {}).get("f1-score", 0.0)),
                "support": int(report.get(k, {}).get("support", 0)),
            }
            for k in types
        },
        "labels": list(labels),
    }
    if loss is not None:
        out["loss"] = float(loss)
    return out


def predictions(probs: list[np.ndarray], tokens: list[list[str]], labels: list[str], method: str = "viterbi") -> list[dict]:
    """Readable predictions: tags per word and the entity spans with their text and score."""
    out = []
    for p, words in zip(probs, tokens):
        tags = decode(p, labels, method)
        ents = []
        for kind, s, e in spans(tags):
            idx = [labels.index(t) for t in tags[s:e]]
            score = float(np.mean([p[s + k, j] for k, j in enumerate(idx)]))
            ents.append({"type": kind, "start": s, "end": e, "text": " ".join(words[s:e]), "score": score})
        out.append({"tags": tags, "entities": ents})
    return out


def sentence_counts(probs: list[np.ndarray], ds, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per sentence: entity (tp, fp, fn) under strict span matching, (N, 3), and whether it is all right, (N,)."""
    counts = np.zeros((len(ds), 3), dtype=np.int64)
    right = np.zeros(len(ds), dtype=bool)
    for k, (p, gold) in enumerate(zip(probs, ds.labels)):
        g, q = set(spans(list(gold))), set(spans(decode(p, labels)))
        counts[k] = (len(g & q), len(q - g), len(g - q))
        right[k] = g == q
    return counts, right


def ab_test(champion_probs, challenger_probs, ds, labels: list[str], metric, *, allow_class_regressions=False, **test):
    """The A/B test of two taggers on `ds`: entity F1 with sentences as the resampling unit
    (compare.compare_ner). There is no per-type guardrail yet, so allow_class_regressions is unused."""
    from ..compare import compare_ner

    ca, ka = sentence_counts(champion_probs, ds, labels)
    cb, kb = sentence_counts(challenger_probs, ds, labels)
    return compare_ner(ca, cb, ka, kb, **test)


def blank_labels(ds) -> list[list[str]]:
    """Tags that say nothing, one "O" per word (an unlabelled pool keeps its words only)."""
    return [["O"] * len(t) for t in ds.tokens]
