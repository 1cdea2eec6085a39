"""Extractive question answering (SQuAD v1.1 style): the answer is a span of the context.

Data: JSON lines in the SQuAD / Hugging Face layout, one question a line:
    {"id": ..., "title": ..., "question": ..., "context": ..., "answers": {"text": [...], "answer_start": [...]}}
(`answers` as a list of {"text", "answer_start"} is read too). Every answer must sit at its offset.

Model: an encoder with a span head (AutoModelForQuestionAnswering): a start and an end logit per
token. A long context is read in overlapping windows of data.max_length tokens whose starts are
data.doc_stride tokens apart (the fast tokenizer's overflowing tokens and offsets); a training
window is labelled with the first answer's token span, or with the [CLS] position when the answer
is not inside it. Decoding looks at the data.n_best best start and end tokens of every window of a
question, keeps pairs inside the context with start <= end and at most data.max_answer_tokens
tokens, scores a pair by start + end logit, and returns the best answer's text, character offsets
and its probability under a softmax over the candidates (as Hugging Face's run_qa post-processing).

Metrics: exact match and token F1 against every reference answer after the official SQuAD v1.1
normalisation (lower case, no punctuation, no articles a / an / the, single spaces); a question's
score is its best over the references, the split's is the mean. F1 is the primary metric and the
per-question F1 is what the A/B test pairs.

References: Rajpurkar et al. 2016 (SQuAD and its evaluation script); Devlin et al. 2019 (the span head).
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter, defaultdict

import numpy as np

from .base import clip, error_kind_summary, pad_batch, row_uncertainty, softmax

DEFAULT_METRIC = "f1"
QUESTION_TYPES = ("what", "who", "when", "where", "which", "how many", "how much", "how", "why", "other")
ERROR_KINDS = ("too_long", "too_short", "partial", "wrong_sentence", "no_overlap")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


# ------------------------------------------------------------------ the official metric


def normalize_answer(s: str) -> str:
    """SQuAD v1.1's normalisation: lower case, punctuation removed, articles removed, whitespace collapsed."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def token_f1(prediction: str, truth: str) -> float:
    """F1 of the normalised tokens (a bag: a repeated token counts as often as both sides have it)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def best_over(score, prediction: str, truths: list[str]) -> float:
    """A question's score: the best over its reference answers (0 without references)."""
    return max((score(prediction, t) for t in truths), default=0.0)


def question_type(question: str) -> str:
    """The question's wh-word: how many / how much before how; else the first wh-word in the question."""
    q = " " + " ".join(re.findall(r"[a-z]+", question.lower())) + " "
    for t in ("how many", "how much"):
        if f" {t} " in q:
            return t
    first = min(((q.find(f" {w} "), w) for w in ("what", "who", "whom", "whose", "when", "where", "which", "how",
                                                 "why") if f" {w} " in q), default=None)
    if first is None:
        return "other"
    return {"whom": "who", "whose": "who"}.get(first[1], first[1])


def _bucket(n: int, edges: tuple, names: tuple) -> str:
    return next((name for edge, name in zip(edges, names) if n <= edge), names[-1])


def answer_length(text: str) -> str:
    return _bucket(len(text.split()), (1, 3, 10**9), ("1 word", "2-3 words", "4+ words"))


def context_length(text: str) -> str:
    return _bucket(len(text.split()), (100, 200, 10**9), ("up to 100 words", "101-200 words", "over 200 words"))


# ------------------------------------------------------------------ encoding


def encode(tokenizer, ds, label2id, max_length: int, doc_stride: int = 128, **_) -> list[dict]:
    """Windows over each question's context: input_ids, token_type_ids, the character span of each
    context token (None elsewhere), the example it belongs to, and - labelled - the first answer's
    start and end token, or [CLS] (0, 0) where the answer is not in the window. The window that holds
    the answer (else the first) is the one the training dynamics record."""
    if not getattr(tokenizer, "is_fast", False):
        from ..errors import ModelError

        raise ModelError("extractive QA needs a fast tokenizer (its character offsets map answers to tokens); "
                         "use a model directory with a tokenizer.json")
    labelled = label2id is not None
    contexts = ds.fields["context"]
    # Hugging Face tokenizers strip a question's leading whitespace badly (a long left-padded question
    # eats the window); run_qa strips it too.
    enc = tokenizer([q.lstrip() for q in ds.texts], list(contexts), truncation="only_second", max_length=max_length,
                    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    example_of = enc["overflow_to_sample_mapping"]
    features, recorded = [], set()
    for k, ids in enumerate(enc["input_ids"]):
        i = int(example_of[k])
        seq = enc.sequence_ids(k)
        offsets = [tuple(o) if seq[t] == 1 else None for t, o in enumerate(enc["offset_mapping"][k])]
        start, end = (_positions(offsets, ds.labels[i]) if labelled else (-100, -100))
        f = {"input_ids": ids, "offsets": offsets, "index": i, "labels": [start, end], "record": False}
        if "token_type_ids" in enc:  # the segment ids of an encoder that has them (BERT's question / context)
            f["token_type_ids"] = enc["token_type_ids"][k]
        features.append(f)
    for f in features:  # the window holding the answer speaks for its question in the dynamics
        if f["index"] not in recorded and (not labelled or f["labels"][0] > 0):
            f["record"] = True
            recorded.add(f["index"])
    for f in features:  # no window holds it (truncated away): the first one
        if f["index"] not in recorded:
            f["record"] = True
            recorded.add(f["index"])
    return features


def _positions(offsets: list, answers: dict) -> tuple[int, int]:
    """Token start and end of the first answer in one window, or (0, 0) ([CLS]) when it is not inside."""
    texts, starts = answers.get("text") or [], answers.get("answer_start") or []
    if not texts:
        return 0, 0
    s_char, e_char = int(starts[0]), int(starts[0]) + len(texts[0])
    ctx = [t for t, o in enumerate(offsets) if o is not None]
    if not ctx or offsets[ctx[0]][0] > s_char or offsets[ctx[-1]][1] < e_char:
        return 0, 0
    s_tok = next(t for t in ctx if offsets[t][1] > s_char)
    e_tok = next(t for t in reversed(ctx) if offsets[t][0] < e_char)
    return s_tok, max(s_tok, e_tok)


def collate(features: list[dict], pad_id: int) -> dict:
    """Dynamic padding (token_type_ids padded with 0); labels (B, 2): start and end token."""
    import torch

    batch = pad_batch(features, pad_id, keys=("token_type_ids",))
    batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
    return batch


def per_example(logits, labels, label_smoothing: float = 0.0, class_weight=None):
    """Per-window loss (the mean of the start and end cross-entropies, as the span head's own loss),
    the gold span's probability (the geometric mean of its start and end probabilities, so it reads
    on the scale of a class probability), whether both ends are right, and a count of 1.

    logits (B, T, 2) float32, labels (B, 2). Returns four (B,) tensors."""
    import torch
    import torch.nn.functional as F

    start, end = logits[..., 0], logits[..., 1]  # (B, T) each
    s, e = labels[:, 0], labels[:, 1]
    loss = 0.5 * (F.cross_entropy(start, s, reduction="none", ignore_index=-100, label_smoothing=label_smoothing)
                  + F.cross_entropy(end, e, reduction="none", ignore_index=-100, label_smoothing=label_smoothing))
    with torch.no_grad():
        ps, pe = start.softmax(-1), end.softmax(-1)
        safe_s, safe_e = s.clamp(min=0), e.clamp(min=0)
        gold = (ps.gather(1, safe_s[:, None]).squeeze(1) * pe.gather(1, safe_e[:, None]).squeeze(1)).sqrt()
        correct = ((start.argmax(-1) == s) & (end.argmax(-1) == e)).float()
    return loss, gold, correct, torch.ones_like(loss)


# ------------------------------------------------------------------ decoding


def answers_from_logits(features: list[dict], logits: list[np.ndarray], n: int, contexts: list[str] | None = None,
                        max_answer_tokens: int = 30, n_best: int = 20) -> list[dict]:
    """Per question: the best answer {"text", "start", "end" (characters), "score" (its probability
    among the candidates)}, its candidates [(text, start, end, probability)] and, for labelled
    windows, the gold span's probability in the window that holds it ("gold_prob")."""
    cands: list[list] = [[] for _ in range(n)]
    gold = np.full(n, np.nan)
    for f, x in zip(features, logits):
        i, offsets = f["index"], f["offsets"]
        start, end = x[:, 0], x[:, 1]  # (T,) each
        ctx = np.array([t for t in range(len(x)) if t < len(offsets) and offsets[t] is not None])
        if not len(ctx):
            continue
        top_s = ctx[np.argsort(-start[ctx], kind="stable")[:n_best]]
        top_e = ctx[np.argsort(-end[ctx], kind="stable")[:n_best]]
        for s in top_s:
            for e in top_e:
                if s <= e < s + max_answer_tokens:
                    cands[i].append((float(start[s] + end[e]), offsets[s][0], offsets[e][1]))
        s_lab, e_lab = f["labels"]
        if f.get("record") and s_lab > 0:
            ps, pe = softmax(start[ctx]), softmax(end[ctx])
            where = {int(t): k for k, t in enumerate(ctx)}
            if s_lab in where and e_lab in where:
                gold[i] = float(np.sqrt(ps[where[s_lab]] * pe[where[e_lab]]))
    out = []
    for i in range(n):
        best = sorted(set(cands[i]), key=lambda c: (-c[0], c[1], c[2]))[:n_best]
        probs = softmax(np.array([c[0] for c in best])) if best else np.zeros(0)
        text_of = (lambda s, e: contexts[i][s:e]) if contexts is not None else (lambda s, e: "")
        listed = [(text_of(s, e), int(s), int(e), float(p)) for (_, s, e), p in zip(best, probs)]
        top = listed[0] if listed else ("", 0, 0, 0.0)
        out.append({"text": top[0], "start": top[1], "end": top[2], "score": top[3], "candidates": listed,
                    "gold_prob": None if np.isnan(gold[i]) else float(gold[i])})
    return out


def scores(ds, outputs) -> tuple[np.ndarray, np.ndarray]:
    """Per question: exact match and F1 of the predicted answer, (N,) each."""
    em = np.array([best_over(exact_match, o["text"], ans.get("text") or []) for o, ans in zip(outputs, ds.labels)])
    f1 = np.array([best_over(token_f1, o["text"], ans.get("text") or []) for o, ans in zip(outputs, ds.labels)])
    return em, f1


def metrics(ds, outputs, labels=None, loss: float | None = None) -> dict:
    """Exact match and F1 (fractions in [0, 1]; the official script prints them x 100), overall and
    per question type, answer length and context length."""
    em, f1 = scores(ds, outputs)
    out = {"n": len(ds), "exact_match": float(em.mean()) if len(em) else 0.0, "f1": float(f1.mean()) if len(f1) else 0.0}
    for key, of in (("per_question_type", lambda i: question_type(ds.texts[i])),
                    ("per_answer_length", lambda i: answer_length(((ds.labels[i].get("text") or [""])[0]))),
                    ("per_context_length", lambda i: context_length(ds.fields["context"][i]))):
        by: dict = defaultdict(list)
        for i in range(len(ds)):
            by[of(i)].append(i)
        out[key] = {g: {"exact_match": float(em[ix].mean()), "f1": float(f1[ix].mean()), "n": len(ix)}
                    for g, ix in sorted(by.items())}
    if loss is not None:
        out["loss"] = float(loss)
    return out


# ------------------------------------------------------------------ error kinds


def _sentences(context: str) -> list[tuple[int, int]]:
    """[start, end) character spans of the context's sentences (split after . ! ? and a space)."""
    bounds, last = [], 0
    for m in _SENTENCE_END.finditer(context):
        bounds.append((last, m.end()))
        last = m.end()
    if last < len(context):
        bounds.append((last, len(context)))
    return bounds or [(0, len(context))]


def error_kind(pred: tuple[int, int], gold: list[tuple[int, int]], context: str) -> str:
    """How a wrong answer is wrong, against the reference it overlaps most:

    too_long        it contains a reference answer and more
    too_short       it lies inside a reference answer
    partial         it overlaps one, neither containing the other (a boundary shifted)
    wrong_sentence  it overlaps none and sits in a sentence no reference answer is in
    no_overlap      it overlaps none, in the sentence of a reference answer
    """
    ps, pe = pred
    overlap = [(min(pe, ge) - max(ps, gs), gs, ge) for gs, ge in gold]
    best = max(overlap, default=(0, 0, 0))
    if best[0] > 0:
        _, gs, ge = best
        if ps <= gs and ge <= pe:
            return "too_long"
        if gs <= ps and pe <= ge:
            return "too_short"
        return "partial"
    sents = _sentences(context)

    def sentence(pos: int) -> int:
        return next((k for k, (s, e) in enumerate(sents) if s <= pos < e), len(sents) - 1)

    return "no_overlap" if sentence(ps) in {sentence(gs) for gs, _ in gold} else "wrong_sentence"


def error_analysis(ds, outputs, labels=None, examples: int = 3, **_) -> dict:
    """The performance check's view (tasks.base.Task.error_analysis): question types as the groups,
    no pairs, and the error kinds of the answers that are not exact."""
    m = metrics(ds, outputs)
    em, f1 = scores(ds, outputs)
    types = [question_type(q) for q in ds.texts]
    kinds = []
    for i, o in enumerate(outputs):
        if em[i]:
            kinds.append(None)
            continue
        ans = ds.labels[i]
        gold = [(int(s), int(s) + len(t)) for t, s in zip(ans.get("text") or [], ans.get("answer_start") or [])]
        kinds.append(error_kind((o["start"], o["end"]), gold, ds.fields["context"][i]) if gold else "no_overlap")

    def shown(keep) -> list[dict]:
        idx = [i for i in range(len(ds)) if keep(i)]
        idx.sort(key=lambda i: (-outputs[i]["score"], i))  # the surest wrong answers first
        return [{"id": ds.ids[i], "question": clip(ds.texts[i]), "predicted": outputs[i]["text"],
                 "gold": (ds.labels[i].get("text") or [""])[0], "kind": kinds[i], "f1": float(f1[i]),
                 "score": float(outputs[i]["score"])} for i in idx[:examples]]

    groups = {}
    for t in sorted(set(types)):
        members = [i for i in range(len(ds)) if types[i] == t]
        groups[t] = {"errors": int(sum(1 - em[i] for i in members)), "n": len(members),
                     "scores": {ds.ids[i]: 1.0 - float(f1[i]) for i in members},
                     "evidence": {"f1": float(np.mean(f1[members])), "error_kinds": dict(Counter(
                         kinds[i] for i in members if kinds[i])), "examples": shown(lambda i, t=t: types[i] == t
                                                                                      and not em[i])}}
    wrong = int(len(ds) - em.sum())
    return {"metrics": m, "metric": "f1", "value": m["f1"],
            "headline": f"F1 {100 * m['f1']:.1f}, exact match {100 * m['exact_match']:.1f} on {len(ds)} questions",
            "scores": {i: 1.0 - float(v) for i, v in zip(ds.ids, f1)}, "trials": "questions", "pair_trials": "questions",
            "prefixed": True, "rates_key": "per_question_type", "groups": groups, "pairs": [],
            "kinds": error_kind_summary(kinds, types, ERROR_KINDS, wrong, len(ds), shown, "answers are not exact",
                                         "n_questions"),
            "overall_error_rate": wrong / len(ds) if len(ds) else 0.0}


# ------------------------------------------------------------------ reading


def parse_question(rec: dict, at: str, cols: dict) -> dict:
    """A SQuAD-layout record -> one question; DataError naming `at` for an empty question or context,
    a malformed answers field, or an answer that is not at its offset."""
    from ..dataset import error, is_blank

    q, c = rec[cols["question_key"]], rec[cols["context_key"]]
    for what, v in (("question", q), ("context", c)):
        name = cols[f"{what}_key"]
        if v is not None and not isinstance(v, str):
            raise error(at, f"{name!r} must be a string, got {type(v).__name__}",
                        "write the question and its context as plain strings")
        if is_blank(v):
            raise error(at, f"the {what} ({name!r}) is empty", f"give every question a non-empty {what}, or delete "
                                                                 "the line")
    answers = _answers(rec.get(cols["answers_key"]), at, cols["answers_key"])
    for k, (t, s) in enumerate(zip(answers["text"], answers["answer_start"])):
        if c[s:s + len(t)] != t:
            found = c.find(t)
            hint = (f"the text occurs at offset {found}" if found >= 0 else "the text does not occur in the context")
            raise error(at, f"answer {k} ({clip(t, 60)!r}) is not at offset {s} of the context (the context there reads "
                            f"{clip(c[s:s + len(t)], 60)!r}; {hint})",
                        "give answer_start as the answer's character offset in the context (counted from 0)")
    title = rec.get(cols["title_key"])
    return {"text": q, "label": answers, "key": q + "\n" + c,
            "fields": {"context": c, "title": str(title) if isinstance(title, (str, int)) and str(title) else None}}


def _answers(value, at: str, key: str) -> dict:
    """{"text": [...], "answer_start": [...]} from the dict-of-lists or list-of-dicts layout."""
    from ..dataset import error

    if isinstance(value, list):  # [{"text": ..., "answer_start": ...}, ...]
        if not all(isinstance(a, dict) for a in value):
            raise error(at, f"{key!r} must be {{\"text\": [...], \"answer_start\": [...]}} or a list of objects",
                        'write e.g. "answers": {"text": ["Paris"], "answer_start": [17]}')
        value = {"text": [a.get("text") for a in value], "answer_start": [a.get("answer_start") for a in value]}
    if not isinstance(value, dict) or not isinstance(value.get("text"), list) or not isinstance(
            value.get("answer_start"), list):
        raise error(at, f"{key!r} is missing or not of the SQuAD layout",
                    'write e.g. "answers": {"text": ["Paris"], "answer_start": [17]} (lists of the same length)')
    texts, starts = value["text"], value["answer_start"]
    if len(texts) != len(starts) or not texts:
        raise error(at, f"{key!r} has {len(texts)} texts and {len(starts)} offsets",
                    "give at least one answer, with one answer_start per text")
    if not all(isinstance(t, str) and t.strip() for t in texts) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in starts):
        raise error(at, "an answer text is empty or an answer_start is not a non-negative integer",
                    "write each answer's text and its character offset in the context")
    return {"text": list(texts), "answer_start": [int(s) for s in starts]}


# ------------------------------------------------------------------ the task


class QA:
    """A question, its context and the answer spans. See tasks.base.Task for what each member means."""

    name = "qa"
    unit = "question"
    head = "span"
    capabilities = frozenset({"encoder"})  # no label list, no class rows: span answers
    metric_names = ("f1", "exact_match", "loss")
    default_metric = DEFAULT_METRIC
    report_metrics = ("f1", "exact_match")
    formats = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
    input_fields = ("question", "context")
    text_field = "question"
    model_input_names = ("input_ids", "attention_mask", "token_type_ids")
    group_metrics = "per_question_type"
    error_kinds = True
    count_unit = "questions"
    group_name = "question type"
    default_max_length = 384
    auto_model = "AutoModelForQuestionAnswering"
    default_model = "minilm"  # model.name when the config does not set it

    # ----------------------------------------------------------------- data

    def needed_columns(self, cols: dict) -> list[tuple[str, str]]:
        return [(cols["question_key"], "data.question_key"), (cols["context_key"], "data.context_key")]

    def parse(self, rec: dict, at: str, cols: dict) -> dict:
        return parse_question(rec, at, cols)

    def read_format(self, text: str, fmt: str, where: str) -> None:
        return None

    def check_format(self, fmt: str, where: str) -> None:
        from ..dataset import error

        if fmt not in ("jsonl", "parquet"):
            raise error(where, f"extractive QA data cannot be read from {fmt.upper()}",
                        'give JSON lines in the SQuAD layout: {"id", "question", "context", "answers": {"text": [...], '
                        '"answer_start": [...]}} (optional "title")')

    def label_list(self, train) -> list[str]:
        return []

    def label_names(self, ds) -> list[str]:
        return []

    def label_names_of(self, labels: list[str]) -> list[str]:
        return []

    def unknown_labels(self, ds, known: set[str]) -> dict[str, int]:
        return {}

    def strata(self, ds) -> None:
        return None

    def groups(self, ds) -> list:
        # Questions on one paragraph (or article) must not sit on both sides of a split: they leak.
        titles, contexts = ds.fields.get("title") or [None] * len(ds), ds.fields["context"]
        return [t if t else c for t, c in zip(titles, contexts)]

    def keys(self, ds) -> list[str]:
        return [q + "\n" + c for q, c in zip(ds.texts, ds.fields["context"])]

    def blank_labels(self, ds) -> list[dict]:
        return [{"text": [], "answer_start": []} for _ in range(len(ds))]

    def from_inputs(self, items):
        from ..dataset import Dataset

        rows = []
        for k, item in enumerate(items):
            if not isinstance(item, dict) or not all(isinstance(item.get(f), str) for f in self.input_fields):
                raise ValueError(f"input {k}: a question-answering input is an object with a question and a context, "
                                 'e.g. {"question": "Who ...?", "context": "..."}')
            rows.append(item)
        return Dataset(task=self.name, ids=[str(i) for i in range(len(rows))], labels=self.blank_labels(rows),
                       texts=[r["question"] for r in rows], tokens=None,
                       fields={"context": [r["context"] for r in rows], "title": [None] * len(rows)})

    def inputs(self, ds, i: int) -> dict:
        return {"question": ds.texts[i], "context": ds.fields["context"][i]}

    def with_text(self, ds, i: int, text: str) -> dict:
        return {"question": text, "context": ds.fields["context"][i]}

    def to_record(self, ds, i: int) -> dict:
        rec = {"id": ds.ids[i], "title": (ds.fields.get("title") or [None] * len(ds))[i], "question": ds.texts[i],
               "context": ds.fields["context"][i], "answers": ds.labels[i]}
        if ds.weights is not None:
            rec["weight"] = float(ds.weights[i])
        if ds.confidence is not None:
            rec["confidence"] = float(ds.confidence[i])
        return rec

    def from_records(self, rows: list[dict], source: str):
        from ..dataset import Dataset

        w = [r.get("weight") for r in rows]
        weights = None if all(v is None for v in w) else np.array([1.0 if v is None else v for v in w], np.float32)
        return Dataset(task=self.name, ids=[r["id"] for r in rows], labels=[r["answers"] for r in rows],
                       texts=[r["question"] for r in rows], tokens=None, weights=weights, source=source,
                       fields={"context": [r["context"] for r in rows], "title": [r.get("title") for r in rows]})

    def record_columns(self) -> dict:
        return {"question_key": "question", "context_key": "context", "answers_key": "answers", "title_key": "title"}

    def vocabulary_source(self, ds) -> list:
        return list(ds.texts)

    # ----------------------------------------------------------------- model

    def encode_options(self, data_cfg) -> dict:
        return {"doc_stride": data_cfg.doc_stride, "max_answer_tokens": data_cfg.max_answer_tokens,
                "n_best": data_cfg.n_best}

    def encode(self, tokenizer, ds, label2id, max_length: int, **options) -> list[dict]:
        return encode(tokenizer, ds, label2id, max_length, doc_stride=options.get("doc_stride", 128))

    def collate(self, features: list[dict], pad_id: int) -> dict:
        return collate(features, pad_id)

    def logits(self, output):
        import torch

        return torch.stack([output.start_logits, output.end_logits], dim=-1).float()  # (B, T, 2)

    def per_example(self, logits, labels, label_smoothing: float = 0.0, class_weight=None):
        return per_example(logits, labels, label_smoothing)

    def outputs(self, ds, features: list[dict], logits: list[np.ndarray], **options) -> list[dict]:
        return answers_from_logits(features, logits, len(ds), ds.fields["context"], options.get("max_answer_tokens", 30),
                                   options.get("n_best", 20))

    # ----------------------------------------------------------------- evaluation

    def metrics(self, ds, outputs, labels: list[str], loss: float | None = None) -> dict:
        return metrics(ds, outputs, labels, loss)

    def check_outputs(self, ds, outputs, labels: list[str]) -> str | None:
        bad = next((i for i, o in enumerate(outputs) if not isinstance(o, dict) or "text" not in o), None)
        return None if bad is None else (f"output {bad} is not an answer ({{'text', 'start', 'end', 'score'}}); "
                                         "give the task's outputs (evaluate.evaluate_features)")

    def correct(self, ds, outputs, labels: list[str]) -> np.ndarray:
        return scores(ds, outputs)[0].astype(bool)

    def ab_test(self, champion, challenger, ds, labels: list[str], metric, **test):
        from ..compare import compare_scores

        em_a, f1_a = scores(ds, champion)
        em_b, f1_b = scores(ds, challenger)
        a, b = (f1_a, f1_b) if metric.gate == "f1" else (em_a, em_b)
        return compare_scores(a, b, em_a.astype(bool), em_b.astype(bool), metric=metric.gate,
                              groups=[question_type(q) for q in ds.texts], **test)

    def agreement(self, a, b) -> float:
        return float(np.mean([normalize_answer(x["text"]) == normalize_answer(y["text"]) for x, y in zip(a, b)])) \
            if len(a) else 1.0

    # ----------------------------------------------------------------- predictions

    def readable(self, items, outputs, labels: list[str]) -> list[dict]:
        return [{"answer": o["text"], "start": o["start"], "end": o["end"], "score": o["score"],
                 "confidence": o["score"]} for o in outputs]

    def confidence(self, outputs) -> np.ndarray:
        return np.array([o["score"] for o in outputs], dtype=np.float64)

    def uncertainty(self, outputs, strategy: str) -> np.ndarray:
        # The spread of the candidate answers' probabilities (the n-best softmax), padded to one width.
        width = max((len(o["candidates"]) for o in outputs), default=1) or 1
        rows = np.zeros((len(outputs), max(width, 2)))
        for i, o in enumerate(outputs):
            p = [c[3] for c in o["candidates"]] or [1.0]
            rows[i, : len(p)] = p
        return row_uncertainty(rows, strategy)

    def summary_label(self, readable: dict) -> str:
        return answer_length(readable.get("answer") or "") if readable.get("answer") else "(no answer)"

    def prediction_text(self, readable: dict) -> str:
        return readable.get("answer") or "(no answer)"

    def gold_text(self, ds, i: int) -> str:
        return (ds.labels[i].get("text") or ["(none)"])[0]

    def stored_row(self, item, readable: dict, mask) -> dict:
        # The question and context as one JSON object, each masked; the answer's offsets refer to the
        # context as sent (a correction's text is looked up in the stored, masked context).
        return {"text": json.dumps({"question": mask(item["question"]), "context": mask(item["context"])},
                                   ensure_ascii=False),
                "output": {"answer": mask(readable["answer"]), "start": readable["start"], "end": readable["end"],
                           "score": readable["score"]}}

    def stored_input(self, text: str) -> dict:
        return json.loads(text)

    def api_schema(self) -> dict:
        from pydantic import Field

        return {"prediction": {"answer": (str, ...), "start": (int, ...), "end": (int, ...), "score": (float, ...)},
                "correction": {"answer": (str | None, Field(None, description="the correct answer: a span of the "
                                                                               "context")),
                               "start": (int | None, Field(None, ge=0, description="its character offset in the "
                                                                                    "context, when it occurs twice"))}}

    def correction(self, body: dict, stored: dict, labels: list[str]):
        answer = body.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError("invalid_feedback", "send answer: the correct answer, a span of the context (and its "
                                                 "start offset when the span occurs more than once)")
        context = self.stored_input(stored["text"])["context"]
        found = [m.start() for m in re.finditer(re.escape(answer), context)]
        if not found:
            raise ValueError("invalid_span", "the answer is not a span of the context (as stored: personal data in it "
                                             "is masked, so an answer that holds some cannot be kept)")
        start = body.get("start")
        pos = min(found, key=lambda s: (abs(s - start), s)) if start is not None else found[0]
        return {"text": answer, "answer_start": int(pos)}

    def corrected_example(self, row: dict, labels: list[str]) -> dict | None:
        item, answer = row["text"], row.get("tags")
        if not isinstance(item, dict) or not isinstance(answer, dict) or item["context"][
                answer["answer_start"]:answer["answer_start"] + len(answer["text"])] != answer["text"]:
            return None
        label = {"text": [answer["text"]], "answer_start": [int(answer["answer_start"])]}
        rec = {"id": f"fb-{row['prediction_id']}", "title": None, "question": item["question"],
               "context": item["context"], "answers": label}
        served = row["served"].get("answer")
        return {"id": rec["id"], "key": item["question"] + "\n" + item["context"], "label": label, "record": rec,
                "changed": normalize_answer(served or "") != normalize_answer(answer["text"])}

    # ----------------------------------------------------------------- diagnosis

    def error_groups(self, ds, outputs, labels: list[str]) -> dict[str, tuple[int, int]]:
        em = scores(ds, outputs)[0]
        out: dict = defaultdict(lambda: [0, 0])
        for q, right in zip(ds.texts, em):
            row = out[question_type(q)]
            row[0] += int(not right)
            row[1] += 1
        return {t: (e, n) for t, (e, n) in sorted(out.items())}

    def error_analysis(self, ds, outputs, labels: list[str], examples: int = 3, **_) -> dict:
        return error_analysis(ds, outputs, labels, examples)

    def calibration(self, ds, outputs, labels: list[str]) -> dict:
        # One prediction per question: the best answer's probability against an exact match; the
        # candidates' softmax is not one row over a fixed label set, so no temperature is fitted.
        return {"confidence": self.confidence(outputs), "correct": scores(ds, outputs)[0], "probs": None, "gold": None,
                "unit": "answers"}

    def class_counts(self, ds) -> dict[str, int]:
        return dict(Counter(question_type(q) for q in ds.texts))

    def label_counts(self, ds) -> dict[str, int]:
        return {}

    def valid_label(self, value, labels: list[str]) -> bool:
        return isinstance(value, dict) and bool(value.get("text")) and len(value.get("text", [])) == len(
            value.get("answer_start", []))

    def domain_texts(self, ds) -> list[str]:
        # The paragraphs the answers come from are the domain's text; each once.
        return list(dict.fromkeys(ds.fields["context"]))
