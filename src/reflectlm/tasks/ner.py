"""Token classification (NER) with BIO tags.

The first sub-token of each word carries the word's tag; the other sub-tokens and the special
tokens are ignored (-100) in the loss. Predictions are read at each word's first sub-token, so
they map back to words and from words to entity spans.

Data: CoNLL (token<TAB>tag lines, an empty line between sentences) or JSONL with a token list and a
tag list per sentence, strict BIO. Raw input (predict, serve) is split into words on whitespace.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np

from .base import calibration_rows, clip, pad_batch, row_uncertainty, softmax

DEFAULT_METRIC = "entity_f1"
IGNORE = -100
_BIO = re.compile(r"([BI])-(\S.*)")
_WORD = re.compile(r"\S+")  # the words of a raw text (what from_inputs splits it into)
ERROR_KINDS = ("boundary", "type", "boundary_and_type", "missed", "spurious")


def encode(tokenizer, ds, label2id: dict[str, int] | None, max_length: int, **_) -> list[dict]:
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
        features.append({"input_ids": ids, "labels": labels, "index": i, "record": True, "word_starts": starts})
    return features


def collate(features: list[dict], pad_id: int) -> dict:
    """Dynamic padding; labels (B, T) with -100 on padding."""
    import torch

    batch = pad_batch(features, pad_id)
    labels = torch.full(batch["input_ids"].shape, IGNORE, dtype=torch.long)
    for i, f in enumerate(features):
        labels[i, : len(f["labels"])] = torch.tensor(f["labels"])
    batch["labels"] = labels
    return batch


def per_example(logits, labels, label_smoothing: float = 0.0, class_weight=None):
    """Per-sentence mean token loss, mean gold-tag probability, fraction of words right, word count.

    logits (B, T, C) float32, labels (B, T) with -100 where ignored. Returns four (B,) tensors.
    """
    import torch
    import torch.nn.functional as F

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
            p[ok] = softmax(x[starts[ok]])
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


def entity_hits(probs: list[np.ndarray], ds, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Every gold entity of `ds`, in order: its type, and whether the tagger found it exactly (B)."""
    types, hit = [], []
    for p, gold in zip(probs, ds.labels):
        found = set(spans(decode(p, labels)))
        for span in spans(list(gold)):
            types.append(span[0])
            hit.append(span in found)
    return types, np.array(hit, dtype=bool)


def ab_test(champion_probs, challenger_probs, ds, labels: list[str], metric, *, allow_class_regressions=False,
            guardrail_alpha: float = 0.05, **test):
    """The A/B test of two taggers on `ds`: entity F1 with sentences as the resampling unit
    (compare.compare_ner), and the per-type guardrail: an entity type whose recall (its gold
    entities found exactly) is significantly lower for the challenger, McNemar per type,
    Holm-corrected, vetoes the promotion unless allow_class_regressions - as a class does for
    classification."""
    from ..compare import compare_ner, type_guardrail

    ca, ka = sentence_counts(champion_probs, ds, labels)
    cb, kb = sentence_counts(challenger_probs, ds, labels)
    types, ha = entity_hits(champion_probs, ds, labels)
    _, hb = entity_hits(challenger_probs, ds, labels)
    guard = type_guardrail(np.array(types, dtype=object), ha, hb, guardrail_alpha, allow_class_regressions)
    return compare_ner(ca, cb, ka, kb, guard=guard, **test)


def blank_labels(ds) -> list[list[str]]:
    """Tags that say nothing, one "O" per word (an unlabelled pool keeps its words only)."""
    return [["O"] * len(t) for t in ds.tokens]


# ------------------------------------------------------------------ entity errors


def type_errors(gold_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, tuple[int, int]]:
    """Per entity type: trials = gold entities plus predicted entities that match none exactly,
    errors = trials minus exact matches. The error rate is 1 - TP / (TP + FN + FP), strict like
    seqeval, so a wrong boundary costs a missed and a spurious entity."""
    tp, trials = Counter(), Counter()
    for g, p in zip(gold_tags, pred_tags):
        gs, ps = set(spans(list(g))), set(spans(list(p)))
        for s in gs | ps:
            trials[s[0]] += 1
        for s in gs & ps:
            tp[s[0]] += 1
    return {t: (trials[t] - tp[t], trials[t]) for t in sorted(trials)}


def entity_errors(gold_tags: list[str], pred_tags: list[str]) -> list[dict]:
    """Every entity that is not an exact match, with its kind:

    type               a predicted entity has the same span and another type
    boundary           an overlapping predicted entity has the same type and other boundaries
    boundary_and_type  overlapping, other type and other boundaries
    missed             no predicted entity overlaps the gold one
    spurious           a predicted entity overlaps no gold entity

    Spans are (type, start, end-exclusive). Each gold entity gets at most one kind.
    References: after the MUC scoring categories (Chinchor & Sundheim 1993: incorrect, partial,
    missing, spurious).
    """
    gold, pred = spans(list(gold_tags)), spans(list(pred_tags))
    gold_set, pred_set = set(gold), set(pred)
    out = []
    for g in gold:
        if g in pred_set:
            continue
        overlap = [p for p in pred if p[1] < g[2] and g[1] < p[2]]
        same_span = [p for p in overlap if (p[1], p[2]) == (g[1], g[2])]
        same_type = [p for p in overlap if p[0] == g[0]]
        if same_span:
            out.append({"kind": "type", "gold": g, "pred": same_span[0]})
        elif same_type:
            out.append({"kind": "boundary", "gold": g, "pred": same_type[0]})
        elif overlap:
            out.append({"kind": "boundary_and_type", "gold": g, "pred": overlap[0]})
        else:
            out.append({"kind": "missed", "gold": g, "pred": None})
    for p in pred:
        if p not in gold_set and not any(g[1] < p[2] and p[1] < g[2] for g in gold):
            out.append({"kind": "spurious", "gold": None, "pred": p})
    return out


def _type_of(err: dict) -> str:
    # Gold-side errors belong to the gold type; a spurious entity to its predicted type.
    return err["gold"][0] if err["gold"] is not None else err["pred"][0]


def _span_text(span, tokens) -> str | None:
    return None if span is None else f"{span[0]}: {' '.join(tokens[span[1]:span[2]])}"


def error_analysis(ds, probs, labels: list[str], examples: int = 3, method: str = "viterbi") -> dict:
    """Per entity type: its errors (strict spans) and error kinds; type confusions between pairs of
    types; the boundary / type / missed / spurious breakdown (tasks.base.Task.error_analysis)."""
    m = metrics(ds, probs, labels, method=method)
    preds = [decode(np.asarray(p), labels, method) for p in probs]
    errors = [entity_errors(g, p) for g, p in zip(ds.labels, preds)]
    per_type = type_errors(ds.labels, preds)
    trials = sum(n for _, n in per_type.values())
    # Sentence score: the worst word's 1 - p(gold tag); one bad word is enough to spoil an entity
    # (Wang & Mueller 2022 rank sentences the same way).
    scores = {}
    for i, (tags, p) in enumerate(zip(ds.labels, probs)):
        p = np.asarray(p, dtype=np.float64)
        gold = p[np.arange(len(tags)), [labels.index(t) for t in tags]] if len(tags) else np.ones(1)
        scores[ds.ids[i]] = 1.0 - float(gold.min())

    def shown(keep) -> list[dict]:
        rows = []
        for i, errs in enumerate(errors):
            for err in errs:
                if keep(err) and len(rows) < examples:
                    rows.append({"id": ds.ids[i], "text": clip(ds.texts[i]), "kind": err["kind"],
                                 "gold": _span_text(err["gold"], ds.tokens[i]),
                                 "predicted": _span_text(err["pred"], ds.tokens[i])})
        return rows

    all_errors = [e for errs in errors for e in errs]
    groups = {}
    for t, (e, n) in per_type.items():
        kinds = Counter(x["kind"] for x in all_errors if _type_of(x) == t)
        as_other = Counter(x["pred"][0] for x in all_errors if x["kind"] == "type" and x["gold"][0] == t)
        groups[t] = {"errors": e, "n": n, "evidence": {
            "error_kinds": dict(kinds), "top_confusions": [{"predicted": k, "count": c} for k, c in as_other.most_common(3)],
            "examples": shown(lambda x, t=t: _type_of(x) == t)}}
    gold_count = Counter(s[0] for tags in ds.labels for s in spans(list(tags)))
    swapped = Counter(tuple(sorted((e["gold"][0], e["pred"][0]))) for e in all_errors if e["kind"] == "type")
    pairs = []
    for (a, b), count in swapped.items():
        a_to_b = sum(1 for e in all_errors if e["kind"] == "type" and (e["gold"][0], e["pred"][0]) == (a, b))
        pairs.append({"a": a, "b": b, "count": count, "a_to_b": a_to_b, "b_to_a": count - a_to_b,
                      "n": gold_count[a] + gold_count[b],
                      "examples": shown(lambda e, a=a, b=b: e["kind"] == "type" and {e["gold"][0], e["pred"][0]} == {a, b})})
    return {"metrics": m, "metric": "entity_f1", "value": m["entity_f1"],
            "headline": f"entity F1 {m['entity_f1']:.3f}, word accuracy {m['token_accuracy']:.3f} on {len(ds)} sentences",
            "scores": scores, "trials": "gold or predicted entities", "pair_trials": "gold entities", "prefixed": False,
            "rates_key": "per_type", "groups": groups, "pairs": pairs, "pair_verb": "are given to each other's spans",
            "kinds": _kinds(ds, preds, all_errors, gold_count, shown),
            "overall_error_rate": sum(e for e, _ in per_type.values()) / trials if trials else 0.0}


def _kinds(ds, preds, all_errors, gold_count, shown) -> dict | None:
    """The error-kind breakdown overall and per type (None without errors)."""
    counts = Counter(e["kind"] for e in all_errors)
    if not counts:
        return None
    n_gold = sum(gold_count.values())
    n_pred = sum(len(spans(p)) for p in preds)
    by_type: dict = defaultdict(lambda: {"gold": 0, "predicted": 0, **{k: 0 for k in ERROR_KINDS}})
    for t, n in gold_count.items():
        by_type[t]["gold"] = n
    for p in preds:
        for s in spans(p):
            by_type[s[0]]["predicted"] += 1
    for e in all_errors:
        by_type[_type_of(e)][e["kind"]] += 1

    def rate(k, count, gold, predicted):  # gold-side kinds per gold entity, spurious per predicted entity
        base = predicted if k == "spurious" else gold
        return count / base if base else 0.0

    for row in by_type.values():
        row["rates"] = {k: rate(k, row[k], row["gold"], row["predicted"]) for k in ERROR_KINDS}
    total = sum(counts.values())
    # Each gold entity has at most one gold-side error and each spurious entity is one more item,
    # so total <= n_gold + spurious and the share is in [0, 1].
    share = total / max(n_gold + counts["spurious"], 1)
    top = max(ERROR_KINDS, key=lambda k: (counts[k], -ERROR_KINDS.index(k)))
    return {"summary": f"{total} entity errors on {n_gold} gold entities; the most common kind is {top} ({counts[top]}).",
            "severity": share,
            "evidence": {"n_gold": n_gold, "n_predicted": n_pred, "counts": {k: counts[k] for k in ERROR_KINDS},
                         "rates": {k: rate(k, counts[k], n_gold, n_pred) for k in ERROR_KINDS}, "error_share": share,
                         "per_type": {t: by_type[t] for t in sorted(by_type)},
                         "examples": {k: shown(lambda e, k=k: e["kind"] == k) for k in ERROR_KINDS if counts[k]}}}


# ------------------------------------------------------------------ reading


def bio_problem(tags: list[str]) -> tuple[int, str, str] | None:
    """First strict-BIO violation as (position, problem, fix), or None."""
    prev = "O"
    for i, tag in enumerate(tags):
        if tag != "O":
            m = _BIO.fullmatch(tag)
            if m is None:
                fix = "use 'O', 'B-<type>' or 'I-<type>' (convert IOB1/IOBES files to BIO first)"
                return i, f"tag {tag!r} is not BIO", fix
            kind, typ = m.groups()
            if kind == "I" and prev not in (f"B-{typ}", f"I-{typ}"):
                problem = f"tag {tag!r} does not continue an entity of type {typ!r} (previous tag is {prev!r})"
                return i, problem, f"start the entity with B-{typ}"
        prev = tag
    return None


def parse_sentence(rec: dict, at: str, tokens_key: str, tags_key: str) -> dict | None:
    """A JSONL / Parquet record with a token list and a tag list -> one sentence; None when empty."""
    from ..dataset import error

    toks, tags = rec[tokens_key], rec[tags_key]
    toks = toks.tolist() if isinstance(toks, np.ndarray) else toks
    tags = tags.tolist() if isinstance(tags, np.ndarray) else tags
    for name, seq in ((tokens_key, toks), (tags_key, tags)):
        if not isinstance(seq, list) or not all(isinstance(s, str) for s in seq):
            raise error(at, f"{name!r} must be a list of strings", f'write e.g. "{name}": ["Paris", "is", "nice"]')
    if len(toks) != len(tags):
        raise error(at, f"{len(toks)} tokens but {len(tags)} tags", "give exactly one tag per token")
    if not toks:
        return None
    tags = [t.strip() for t in tags]
    for i, tok in enumerate(toks):
        if not tok.strip():
            raise error(at, f"token {i} is empty", "remove empty tokens (and their tags)")
    bad = bio_problem(tags)
    if bad is not None:
        i, problem, fix = bad
        raise error(at, f"token {i} ({toks[i]!r}): {problem}", fix)
    return {"text": " ".join(toks), "label": tags, "tokens": list(toks)}


def read_conll(text: str, where: str) -> dict:
    """CoNLL text -> the parallel lists of a Dataset (dataset.assemble's parts)."""
    from ..dataset import add_example, error

    out: dict[str, list] = defaultdict(list)
    toks: list[str] = []
    tags: list[str] = []
    tag_lines: list[int] = []

    def flush() -> None:
        if not toks:
            return
        bad = bio_problem(tags)
        if bad is not None:
            i, problem, fix = bad
            raise error(f"{where}:{tag_lines[i]}", problem, fix)
        add_example(out, {"text": " ".join(toks), "label": list(tags), "tokens": list(toks)}, tag_lines[0])
        toks.clear()
        tags.clear()
        tag_lines.clear()

    for no, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r\n")
        # A whitespace-only line (some files use a lone TAB) separates sentences like an empty one.
        if not line.strip() or line.startswith("-DOCSTART-"):
            flush()
            continue
        line = line.rstrip()
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) != 2:
            raise error(f"{where}:{no}", f"expected 'token<TAB>tag' but found {len(parts)} column(s): {line!r}",
                        "write exactly one token and its tag per line, separated by a tab, and an empty line "
                        "between sentences")
        tok, tag = parts[0], parts[1].strip()
        if not tok.strip() or not tag:
            raise error(f"{where}:{no}", "empty token or tag", "write 'token<TAB>tag' with both filled in")
        toks.append(tok)
        tags.append(tag)
        tag_lines.append(no)
    flush()
    return out


def spans_to_tags(entities: list[dict], words: list, labels: list[str]) -> list[str]:
    """Character-offset spans [{type, start, end}] -> one BIO tag per word of the text (words as
    [start, end) offsets; a span covers the words it overlaps). ValueError(code, message) for a span
    outside the text, an unknown type or overlapping spans."""
    types = {lab[2:] for lab in labels if lab != "O"}
    tags = ["O"] * len(words)
    end_of_text = words[-1][1] if words else 0
    for e in sorted(entities, key=lambda e: e["start"]):
        if e["type"] not in types:
            raise ValueError("unknown_label", f"entity type {e['type']!r} is not one of {', '.join(sorted(types))}")
        if not 0 <= e["start"] < e["end"] <= end_of_text:
            raise ValueError("invalid_span", f"span [{e['start']}, {e['end']}) is not inside the text (0..{end_of_text})")
        covered = [i for i, (s, t) in enumerate(words) if s < e["end"] and t > e["start"]]
        if not covered or any(tags[i] != "O" for i in covered):
            raise ValueError("invalid_span", f"span [{e['start']}, {e['end']}) covers no word or overlaps another span")
        for k, i in enumerate(covered):
            tags[i] = ("B-" if k == 0 else "I-") + e["type"]
    return tags


def words_of(text: str) -> list[list[int]]:
    """The [start, end) character offsets of a raw text's whitespace words."""
    return [[w.start(), w.end()] for w in _WORD.finditer(text)]


# ------------------------------------------------------------------ the API's shapes


def _api_models():
    from pydantic import BaseModel, ConfigDict, Field

    class Span(BaseModel):
        model_config = ConfigDict(extra="forbid")
        type: str
        start: int = Field(..., ge=0, description="character offset of the first character")
        end: int = Field(..., ge=0, description="character offset after the last character")

    class Entity(Span):
        text: str
        score: float

    return Span, Entity


Span, Entity = _api_models()


# ------------------------------------------------------------------ the task


class NER:
    """Words and their BIO tags. See tasks.base.Task for what each member means."""

    name = "ner"
    unit = "sentence"
    head = "token"
    capabilities = frozenset({"labels", "label_probs", "classes", "fast_cv", "lstm", "word_aligned", "encoder"})
    metric_names = ("entity_f1", "loss")
    default_metric = DEFAULT_METRIC
    report_metrics = ("entity_f1", "entity_precision", "entity_recall")
    formats = {".conll": "conll", ".txt": "conll", ".bio": "conll", ".tsv": "conll", ".jsonl": "jsonl",
               ".json": "jsonl", ".parquet": "parquet"}
    input_fields = ("text",)
    text_field = "text"  # the input field `ds.texts` holds
    model_input_names = ("input_ids", "attention_mask")
    group_metrics = "per_type"  # the metrics' per-group table (report)
    error_kinds = True  # error_analysis gives an error-kind breakdown
    count_unit = "entities"  # what class_counts counts
    group_name = "entity type"
    default_max_length = 128
    auto_model = "AutoModelForTokenClassification"
    default_model = "minilm"  # model.name when the config does not set it

    # ----------------------------------------------------------------- data

    def needed_columns(self, cols: dict) -> list[tuple[str, str]]:
        return [(cols["tokens_key"], "data.tokens_key"), (cols["tags_key"], "data.tags_key")]

    def parse(self, rec: dict, at: str, cols: dict) -> dict | None:
        return parse_sentence(rec, at, cols["tokens_key"], cols["tags_key"])

    def read_format(self, text: str, fmt: str, where: str) -> dict | None:
        return read_conll(text, where) if fmt == "conll" else None

    def check_format(self, fmt: str, where: str) -> None:
        from ..dataset import error

        if fmt in ("csv", "tsv"):
            raise error(where, f"NER data cannot be read from {fmt.upper()}",
                        "use CoNLL (token<TAB>tag lines) or JSONL with token and tag lists")

    def label_list(self, train) -> list[str]:
        return ["O"] + [f"{p}-{t}" for t in self.label_names(train) for p in ("B", "I")]

    def label_names(self, ds) -> list[str]:
        return sorted({tag[2:] for tags in ds.labels for tag in tags if tag != "O"})

    def label_names_of(self, labels: list[str]) -> list[str]:
        return sorted({t[2:] for t in labels if t != "O"})

    def unknown_labels(self, ds, known: set[str]) -> dict[str, int]:
        first: dict[str, int] = {}
        for i, tags in enumerate(ds.labels):
            for t in tags:
                if t != "O" and t[2:] not in known and t[2:] not in first:
                    first[t[2:]] = i
        return first

    def strata(self, ds) -> None:
        return None

    def groups(self, ds) -> None:
        return None

    def keys(self, ds) -> list[str]:
        return list(ds.texts)

    def blank_labels(self, ds) -> list[list[str]]:
        return blank_labels(ds)

    def from_inputs(self, items):
        from ..dataset import Dataset

        texts = [item.get("text", "") if isinstance(item, dict) else str(item) for item in items]
        tokens = [t.split() for t in texts]
        return Dataset(task=self.name, ids=[str(i) for i in range(len(texts))], labels=[["O"] * len(t) for t in tokens],
                       texts=list(texts), tokens=tokens)

    def inputs(self, ds, i: int) -> str:
        return ds.texts[i]

    def with_text(self, ds, i: int, text: str) -> str:
        return text

    def to_record(self, ds, i: int) -> dict:
        rec = {"id": ds.ids[i], "text": ds.texts[i], "tokens": list(ds.tokens[i]), "tags": list(ds.labels[i])}
        if ds.weights is not None:
            rec["weight"] = float(ds.weights[i])
        if ds.confidence is not None:
            rec["confidence"] = float(ds.confidence[i])
        return rec

    def from_records(self, rows: list[dict], source: str):
        from ..dataset import Dataset

        w = [r.get("weight") for r in rows]
        weights = None if all(v is None for v in w) else np.array([1.0 if v is None else v for v in w], np.float32)
        return Dataset(task=self.name, ids=[r["id"] for r in rows], labels=[r.get("tags", r.get("label")) for r in rows],
                       texts=[r.get("text") or " ".join(r["tokens"]) for r in rows], tokens=[r["tokens"] for r in rows],
                       weights=weights, source=source)

    def record_columns(self) -> dict:
        return {"tokens_key": "tokens", "tags_key": "tags"}

    def vocabulary_source(self, ds) -> list:
        return list(ds.tokens)

    # ----------------------------------------------------------------- model

    def encode_options(self, data_cfg) -> dict:
        return {}

    def encode(self, tokenizer, ds, label2id, max_length: int, **options) -> list[dict]:
        return encode(tokenizer, ds, label2id, max_length)

    def collate(self, features: list[dict], pad_id: int) -> dict:
        return collate(features, pad_id)

    def logits(self, output):
        return output.logits.float()

    def per_example(self, logits, labels, label_smoothing: float = 0.0, class_weight=None):
        return per_example(logits, labels, label_smoothing, class_weight)

    def outputs(self, ds, features: list[dict], logits: list[np.ndarray], **options) -> list[np.ndarray]:
        return probs_from_logits(features, logits)

    # ----------------------------------------------------------------- evaluation

    def metrics(self, ds, outputs, labels: list[str], loss: float | None = None) -> dict:
        return metrics(ds, outputs, labels, loss)

    def check_outputs(self, ds, outputs, labels: list[str]) -> str | None:
        for i, (tags, p) in enumerate(zip(ds.labels, outputs)):
            if np.shape(p) != (len(tags), len(labels)):
                return (f"example {ds.ids[i]}: probabilities have shape {np.shape(p)}, expected ({len(tags)} words, "
                        f"{len(labels)} tags); give one row per word over the tag list")
        return None

    def correct(self, ds, outputs, labels: list[str]) -> np.ndarray:
        return np.array([set(spans(list(g))) == set(spans(decode(np.asarray(p), labels)))
                         for g, p in zip(ds.labels, outputs)], dtype=bool)

    def ab_test(self, champion, challenger, ds, labels: list[str], metric, **test):
        return ab_test(champion, challenger, ds, labels, metric, **test)

    def agreement(self, a, b) -> float:
        same = [int(x.argmax(1)[i] == y.argmax(1)[i]) for x, y in zip(a, b) for i in range(len(x))]
        return float(np.mean(same)) if same else 1.0

    # ----------------------------------------------------------------- predictions

    def readable(self, items, outputs, labels: list[str]) -> list[dict]:
        out = []
        for item, p in zip(items, outputs):
            text = item.get("text", "") if isinstance(item, dict) else str(item)
            words = words_of(text)  # the same whitespace words the model saw
            tags = decode(p, labels)
            ents = []
            for kind, s, e in spans(tags):
                score = float(np.mean([p[s + k, labels.index(t)] for k, t in enumerate(tags[s:e])]))
                start, end = words[s][0], words[e - 1][1]
                ents.append({"type": kind, "start": start, "end": end, "text": text[start:end], "score": score})
            conf = float(np.min(p.max(1))) if len(p) else 1.0  # the least sure word
            out.append({"entities": ents, "tags": tags, "confidence": conf})
        return out

    def confidence(self, outputs) -> np.ndarray:
        return np.array([float(p.max(1).min()) if len(p) else 1.0 for p in outputs])

    def uncertainty(self, outputs, strategy: str) -> np.ndarray:
        # A sentence is as uncertain as its least certain word: that word's distribution decides.
        rows = []
        for p in outputs:
            p = np.asarray(p)
            rows.append(np.ones(p.shape[1] if p.ndim == 2 else 1) if len(p) == 0 else p[np.argmin(np.sort(p, 1)[:, -1])])
        return row_uncertainty(np.array(rows), strategy) if rows else np.zeros(0)

    def summary_label(self, readable: dict) -> str:
        return "+".join(sorted({e["type"] for e in readable["entities"]})) or "(none)"

    def prediction_text(self, readable: dict) -> str:
        return "; ".join(f"{e['type']}: {e['text']}" for e in readable["entities"]) or "(no entities)"

    def gold_text(self, ds, i: int) -> str:
        words = ds.tokens[i]
        return "; ".join(f"{t}: {' '.join(words[s:e])}" for t, s, e in spans(list(ds.labels[i]))) or "(no entities)"

    def stored_row(self, item, readable: dict, mask) -> dict:
        text = item.get("text", "") if isinstance(item, dict) else str(item)
        # The masked text keeps its word count (the tags of a correction are one per word); entities
        # are stored without their text (it may hold personal data).
        return {"text": mask(text, keep_words=True), "words": words_of(text),
                "output": {"entities": [{k: e[k] for k in ("type", "start", "end", "score")}
                                        for e in readable["entities"]]}}

    def stored_input(self, text: str) -> str:
        return text

    def api_schema(self) -> dict:
        return {"prediction": {"entities": (list[Entity], ...), "tags": (list[str], ...)},
                "correction": {"entities": (list[Span] | None, None)}}

    def correction(self, body: dict, stored: dict, labels: list[str]):
        if body.get("entities") is None:
            raise ValueError("invalid_feedback", "this is an NER model: send entities (a list of {type, start, end}, "
                                                 "possibly empty)")
        return spans_to_tags(body["entities"], stored.get("words") or [], labels)

    def corrected_example(self, row: dict, labels: list[str]) -> dict | None:
        tags, words = row["tags"], row["text"].split()
        if tags is None or len(tags) != len(words) or not set(tags) <= set(labels):
            return None
        rec = {"id": f"fb-{row['prediction_id']}", "text": row["text"], "tokens": words, "tags": tags}
        served = {(e["type"], e["start"], e["end"]) for e in row["served"].get("entities", [])}
        # counted as a change when either the served or the corrected tags have spans
        return {"id": rec["id"], "key": row["text"], "label": tags, "record": rec,
                "changed": bool(served) or any(t != "O" for t in tags)}

    # ----------------------------------------------------------------- diagnosis

    def error_groups(self, ds, outputs, labels: list[str]) -> dict[str, tuple[int, int]]:
        return type_errors(ds.labels, [decode(np.asarray(p), labels) for p in outputs])

    def error_analysis(self, ds, outputs, labels: list[str], examples: int = 3, decode: str = "viterbi") -> dict:
        return error_analysis(ds, outputs, labels, examples, decode)

    def calibration(self, ds, outputs, labels: list[str]) -> dict:
        # Every word counts as one prediction over the tag set.
        C = len(labels)
        rows = [np.asarray(p, dtype=np.float64).reshape(-1, C) for p in outputs]
        P = np.concatenate(rows) if rows else np.zeros((0, C))
        return calibration_rows(P, np.asarray([labels.index(t) for tags in ds.labels for t in tags], dtype=int), "words")

    def class_counts(self, ds) -> dict[str, int]:
        return dict(Counter(s[0] for tags in ds.labels for s in spans(list(tags))))

    def label_counts(self, ds) -> dict[str, int]:
        return dict(Counter(t for tags in ds.labels for t in tags))

    def valid_label(self, value, labels: list[str]) -> bool:
        return isinstance(value, (list, tuple)) and set(value) <= set(labels)

    def domain_texts(self, ds) -> list[str]:
        return list(ds.texts)

    def cv_vectors(self, ds, label2id: dict, embed) -> tuple[list[np.ndarray], list[np.ndarray]]:
        # The out-of-fold head classifies each word from its frozen vector.
        vecs = embed.words(ds.tokens)  # per sentence (n_words, D)
        return list(vecs), [np.array([label2id[t] for t in s], dtype=int) for s in ds.labels]

    def cv_outputs(self, parts: list, n_labels: int) -> list[np.ndarray]:
        return [np.asarray(p, dtype=np.float32).reshape(-1, n_labels) for p in parts]
