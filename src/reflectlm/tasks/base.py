"""The Task interface: everything that differs between tasks, asked for by every other file.

A task is one object in tasks.TASKS (classification, ner, qa). Data loading, training,
evaluation, the checks, the actions, the A/B test, the report, export, serving, monitoring and
feedback ask it; none of them tests a task's name. When a new task needs something a caller
does by hand, that is a method missing here, not a branch there.

Tasks describe themselves with `capabilities`: what their predictions are, so that a check or an
action declares what it `requires` and `applies(task, thing)` answers whether it runs:

    labels          every example carries labels from a fixed label list (class names, BIO tags)
    class_probs     one probability row per example over the label list (text classification)
    label_probs     probability rows over the label list, per example or per word
    classes         the labels group the examples into classes worth weighting (a class, an entity type)
    fast_cv         out-of-fold probabilities from frozen embeddings and a linear head (diagnose/crossval)
    lstm            the Embedding -> LSTM -> Dense baseline can learn it
    word_aligned    predictions are per whitespace word of the text (perturbations keep the word count)
    encoder         the model is a pretrained encoder with a task head (masked-LM pre-training fits it)
    generates       outputs come from the model's own decoding (`generate`), not from one forward
                    pass's logits: summarisation, translation

What a task's `outputs` are (per example: a probability row, per-word probability rows, answer
candidates) is its own; callers pass them back to its methods and read only what the methods return.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np


OUT_OF_SCOPE = "(out of scope)"  # the summary label (drift monitor, /metrics) of a prediction out of scope (open_set.py)


class Task(Protocol):
    """One task. Instances hold no state: every method is a function of its arguments."""

    name: str  # the data.task value
    unit: str  # one example, in words: "example", "sentence", "question"
    head: str  # the model head: "sequence", "token" or "span"
    capabilities: frozenset[str]
    metric_names: tuple[str, ...]  # the metrics `metrics` computes that train.metric may name
    default_metric: str  # the selection metric when train.metric is unset
    report_metrics: tuple[str, ...]  # shown first by the CLI and the report's headline
    formats: dict[str, str]  # file suffix -> format name, for data.format = "auto"
    input_fields: tuple[str, ...]  # what one raw input holds: ("text",), ("question", "context")
    text_field: str  # the input field `ds.texts` holds (what perturbations change, what drift reads)
    model_input_names: tuple[str, ...]  # what the model takes: input_ids, attention_mask (+ token_type_ids)
    group_name: str  # what `error_groups` groups by, in words: "class", "entity type", "question type"
    count_unit: str  # what `class_counts` counts: "examples", "entities", "questions"
    group_metrics: str  # the key of the per-group table in `metrics` ("per_class", "per_type")
    error_kinds: bool  # whether error_analysis gives an error-kind breakdown (the report shows it)

    # ----------------------------------------------------------------- data

    def needed_columns(self, cols: dict) -> list[tuple[str, str]]:
        """(column, config key) pairs every record must have, e.g. [("text", "data.text_column")]."""

    def parse(self, rec: dict, at: str, cols: dict) -> dict | None:
        """One record -> {"text", "label", optionally "tokens", "fields", "key"}; None skips an empty
        example. Raises DataError naming `at` (file:line) and the fix."""

    def read_format(self, text: str, fmt: str, where: str) -> dict | None:
        """Parts (as dataset.parse_records returns) for a format the task reads itself (CoNLL), or
        None when `fmt` is a record format (csv, tsv, jsonl, parquet) it reads through `parse`."""

    def check_format(self, fmt: str, where: str) -> None:
        """Raise DataError when the task cannot be read from `fmt`, saying what to give instead."""

    def label_list(self, train) -> list[str]:
        """The model's label list from the training split (sorted classes, BIO tags; [] for spans)."""

    def label_names(self, ds) -> list[str]:
        """The sorted names the labels of `ds` use (classes; entity types without B-/I-)."""

    def label_names_of(self, labels: list[str]) -> list[str]:
        """The names a model's label list stands for (tags -> entity types)."""

    def unknown_labels(self, ds, known: set[str]) -> dict[str, int]:
        """Label names in `ds` that `known` lacks -> the index of the first example with it."""

    def strata(self, ds) -> list | None:
        """One stratum per example for stratified splits and samples, or None (at random)."""

    def groups(self, ds) -> list | None:
        """One group per example that a split must keep on one side (a question's article), or None."""

    def keys(self, ds) -> list[str]:
        """Each example's input as one string: duplicates and leakage between splits are found by it."""

    def blank_labels(self, ds) -> list:
        """Labels that say nothing, one per example (an unlabelled pool keeps its inputs only)."""

    def from_inputs(self, items: Sequence) -> Any:
        """An unlabelled Dataset from raw inputs: strings, or dicts with `input_fields`."""

    def inputs(self, ds, i: int):
        """Example i's raw input, as predict and serve take it: the text for a one-field task, else a
        dict of `input_fields`."""

    def with_text(self, ds, i: int, text: str):
        """Example i's raw input with its text (the field `ds.texts` holds) replaced: a perturbed copy."""

    def to_record(self, ds, i: int) -> dict:
        """Example i as a JSON line (train.jsonl, the feedback files); `from_records` reads them back."""

    def from_records(self, rows: list[dict], source: str) -> Any:
        """A Dataset from `to_record` rows (weights kept)."""

    def record_columns(self) -> dict:
        """The data.* column settings under which `to_record` rows read back with `data.load`."""

    def vocabulary_source(self, ds) -> list:
        """What the LSTM baseline's word vocabulary is fitted on: texts, or word lists."""

    # ----------------------------------------------------------------- model

    auto_model: str  # the transformers Auto class of the head, e.g. "AutoModelForSequenceClassification"
    default_model: str  # model.name when the config does not set it ("minilm"; "smollm2" for a causal LM)
    default_max_length: int  # data.max_length when the config does not set it

    def encode_options(self, data_cfg) -> dict:
        """The data.* settings `encode` and `outputs` take beyond max_length (kept in the model bundle)."""

    def encode(self, tokenizer, ds, label2id: dict | None, max_length: int, **options) -> list[dict]:
        """Tokenise once, up front. A feature is a dict with "input_ids" and "labels", "index" (its
        example) and "record" (whether the training dynamics record it: one feature per example)."""

    def collate(self, features: list[dict], pad_id: int) -> dict:
        """A padded batch: input_ids, attention_mask (B, T), labels, index, and any other model input."""

    def logits(self, output) -> Any:
        """The model output as one float tensor the loss reads: (B, C), (B, T, C) or (B, T, 2)."""

    def per_example(self, logits, labels, label_smoothing: float = 0.0, class_weight=None):
        """(loss, gold-label probability, correctness, count), each (B,); the loss carries gradients and
        the batch loss is their count-weighted mean."""

    def outputs(self, ds, features: list[dict], logits: list[np.ndarray], **options) -> Any:
        """Per-feature float32 logits (in the order of `features`, ds's encoding) -> the task's
        per-example outputs for ds; options: encode_options."""

    # ----------------------------------------------------------------- evaluation

    def metrics(self, ds, outputs, labels: list[str], loss: float | None = None) -> dict:
        """Every metric of the task on `ds` (the metric_names among them)."""

    def check_outputs(self, ds, outputs, labels: list[str]) -> str | None:
        """What is wrong with the shape of outputs for `ds` (the problem and its fix), or None."""

    def correct(self, ds, outputs, labels: list[str]) -> np.ndarray:
        """(N,) bool: the example is entirely right (the label; every entity; an exact answer)."""

    def ab_test(self, champion, challenger, ds, labels: list[str], metric, **test):
        """The paired A/B test of two models' outputs on `ds` by metric.gate (compare.py); `test` holds
        its mode, alpha, margin, n_bootstrap, seed and allow_class_regressions."""

    def agreement(self, a, b) -> float:
        """The share of predictions two models' outputs agree on."""

    # ----------------------------------------------------------------- predictions

    def readable(self, items: Sequence, outputs, labels: list[str]) -> list[dict]:
        """The API's predictions for raw inputs, each with its "confidence"."""

    def confidence(self, outputs) -> np.ndarray:
        """(N,) how sure the model is of each example's prediction, in [0, 1]."""

    def uncertainty(self, outputs, strategy: str) -> np.ndarray:
        """(N,) higher = less sure (active learning): margin, entropy or least_confidence."""

    def summary_label(self, readable: dict) -> str:
        """One label per prediction for the drift monitor's label distribution."""

    def prediction_text(self, readable: dict) -> str:
        """A prediction in a few words (what the report and the robustness check show)."""

    def gold_text(self, ds, i: int) -> str:
        """Example i's gold label in a few words."""

    def stored_row(self, item, readable: dict, mask) -> dict:
        """What the production store keeps of a served input and its prediction: {"text": the input
        as one string (mask(text) applied to every text in it), "output": the prediction without
        text that repeats the input, optionally "words"}."""

    def stored_input(self, text: str):
        """The raw input back from a stored row's text (what `stored_row` wrote)."""

    def api_schema(self) -> dict:
        """The HTTP API's task fields as pydantic (type, default) pairs: {"prediction": {...} what
        POST /v1/predict returns beside id and confidence, "correction": {...} what POST /v1/feedback
        takes beside prediction_id}."""

    def correction(self, body: dict, stored: dict, labels: list[str]):
        """A /v1/feedback body -> the corrected label the store keeps; raises ValueError(code, message)."""

    def corrected_example(self, row: dict, labels: list[str]) -> dict | None:
        """A stored correction -> {"id", "key", "label", "record"} for the next run's training data, or
        None when it does not fit this model's labels."""

    # ----------------------------------------------------------------- diagnosis

    def error_groups(self, ds, outputs, labels: list[str]) -> dict[str, tuple[int, int]]:
        """(errors, trials) per group (class, entity type, question type)."""

    def error_analysis(self, ds, outputs, labels: list[str], examples: int) -> dict:
        """The performance check's view: {"summary", "metric", "value", "scores" (id -> 1 - outcome),
        "groups" {name: {"errors", "n", "members", "examples", "confusions"}}, "pairs" [...],
        "kinds" (an error-kind breakdown, or None)}."""

    def calibration(self, ds, outputs, labels: list[str]) -> dict:
        """Every prediction's "confidence" (M,) and whether it is "correct" (M,); "probs" (M, C) with the
        "gold" indices (M,) where predictions are probability rows (temperature scaling needs them),
        else None; "unit": what one prediction is ("examples", "words", "answers")."""

    def class_counts(self, ds) -> dict[str, int]:
        """How many examples (entities) of each class the training data has."""

    def label_counts(self, ds) -> dict[str, int]:
        """How often each entry of the label list occurs (classes; tags): what class weights weigh."""

    def valid_label(self, value, labels: list[str]) -> bool:
        """Whether a label given for an example (an oracle's answer) fits the model's label list."""

    def domain_texts(self, ds) -> list[str]:
        """The in-domain text of `ds` for masked-LM pre-training (texts; a question's context)."""

    # With the fast_cv capability only (diagnose/crossval):

    def cv_vectors(self, ds, label2id: dict, embed) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Frozen vectors (n_i, D) and targets (n_i,) per example for the out-of-fold linear head;
        embed.texts(texts) -> (N, D) and embed.words(word lists) -> per list (n_words, D) give them."""

    def cv_outputs(self, parts: list, n_labels: int):
        """Per-example (n_i, C) blocks of the head's probabilities -> the task's outputs."""


    # With the generates capability only (evaluate.evaluate_features calls it instead of one forward pass):

    def generate(self, model, tokenizer, ds, features: list[dict], *, pad_id: int, batch_size: int, precision: str,
                 quiet: bool, **options) -> tuple[Any, np.ndarray | None, np.ndarray | None]:
        """(per-example outputs, per-feature loss or None, per-feature counts or None): the model's
        decoded outputs for `features` (options: encode_options) and, for labelled features, the loss
        of the references."""

    def sample(self, model, tokenizer, ds, features: list[dict], *, k: int, temperature: float, top_p: float,
               seed: int, batch_size: int, precision: str, quiet: bool, **options) -> list[list[Any]]:
        """k sampled outputs per example (each shaped as generate's), reproducible from the seed:
        the candidates of rejection-sampling fine-tuning, preference pairs and MBR decoding."""

    def stream(self, model, tokenizer, feature: dict, streamer, *, precision: str, **options) -> dict:
        """One feature's greedy answer (shaped as generate's), each decoded piece pushed to a
        transformers streamer meanwhile (serving's server-sent events)."""

    def output_measures(self, ds, outputs, **options) -> dict:
        """Per output what the output checks read: "length_ratio" (N,) output over reference words,
        "empty" (N,), "copy_rate" (N,) share of word 4-grams from the source, "repetition" (N,)
        share of repeated word trigrams, "unsupported" (N lists) numbers and names not in the
        source, "language" ({"expected", "source", "found": N codes or None} or None where the task
        asks for no language), "score" (N,) the primary metric."""

    def candidate_scores(self, ds, candidates: list[list[Any]]) -> np.ndarray:
        """(N, k) each candidate's score in [0, 1] against the example's references, by the task's
        primary metric (per-example ROUGE-L, sentence chrF)."""


# Members a task has only with a capability (the others every task has).
CAPABILITY_MEMBERS = {"cv_vectors": "fast_cv", "cv_outputs": "fast_cv", "generate": "generates", "sample": "generates",
                      "candidate_scores": "generates", "output_measures": "generates", "stream": "generates"}


def applies(task: Task, thing) -> bool:
    """Whether a check or action (its `requires`, a set of capabilities) runs for this task."""
    return set(getattr(thing, "requires", ())) <= set(task.capabilities)


def missing(task: Task, thing) -> list[str]:
    """The capabilities `thing` requires that the task lacks (empty when it applies)."""
    return sorted(set(getattr(thing, "requires", ())) - set(task.capabilities))


def pad_batch(features: list[dict], pad_id: int, keys: Sequence[str] = ()) -> dict:
    """input_ids padded with pad_id and attention_mask, (B, T) each, plus the integer sequences
    named in `keys` padded with 0 (e.g. token_type_ids), the examples' index (B,) and whether the
    dynamics record each feature (B,)."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    n = len(features)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)  # (B, T)
    attention = torch.zeros((n, width), dtype=torch.long)  # (B, T)
    keys = [k for k in keys if k in features[0]]  # e.g. an encoder without segment ids has none
    extra = {k: torch.zeros((n, width), dtype=torch.long) for k in keys}
    for i, f in enumerate(features):
        ids = f["input_ids"]
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        for k in keys:
            extra[k][i, : len(f[k])] = torch.tensor(f[k])
    index = torch.tensor([f["index"] for f in features], dtype=torch.long)
    record = torch.tensor([bool(f.get("record", True)) for f in features], dtype=torch.bool)
    return {"input_ids": input_ids, "attention_mask": attention, **extra, "index": index, "record": record}


# position_ids and logits_to_keep: a causal LM's left-padded batch (tasks/generation.collate).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "logits_to_keep")


def model_inputs(batch: dict) -> dict:
    """The keys of a collated batch that the model takes."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    z = np.exp(x - x.max(axis, keepdims=True))
    return z / z.sum(axis, keepdims=True)


def row_uncertainty(probs: np.ndarray, strategy: str) -> np.ndarray:
    """(N,) higher = less sure, from (N, C) probability rows."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    if p.shape[0] == 0:
        return np.zeros(0)
    if strategy == "entropy":
        return -(p * np.log(p)).sum(1) / np.log(max(p.shape[1], 2))
    if strategy == "least_confidence":
        return 1.0 - p.max(1)
    if strategy == "margin":
        top2 = np.sort(p, axis=1)[:, -2:] if p.shape[1] > 1 else np.concatenate([np.zeros_like(p), p], 1)
        return 1.0 - (top2[:, 1] - top2[:, 0])
    raise ValueError(f"unknown strategy {strategy!r}; use margin, entropy or least_confidence")


def calibration_rows(P: np.ndarray, y: np.ndarray, unit: str) -> dict:
    """Task.calibration's view of probability rows P (M, C) with gold indices y (M,)."""
    conf = P.max(1) if len(P) else np.zeros(0)
    correct = (P.argmax(1) == y).astype(np.float64) if len(P) else np.zeros(0)
    return {"confidence": conf, "correct": correct, "probs": P, "gold": y, "unit": unit}


def error_kind_summary(kinds: list, groups: list[str], all_kinds: tuple[str, ...], wrong: int, n: int, shown,
                       what: str, unit_key: str) -> dict | None:
    """The performance check's error-kinds finding from per-example kinds (None for a fair output):
    the counts, their rates among the wrong, per group, and the worst examples of each kind.
    what: "answers are not exact", ...; unit_key: the evidence's count key ("n_questions")."""
    from collections import Counter, defaultdict

    counts = Counter(k for k in kinds if k)
    if not counts:
        return None
    per: dict = defaultdict(lambda: {k: 0 for k in all_kinds})
    for k, g in zip(kinds, groups):
        if k:
            per[g][k] += 1
    top = max(all_kinds, key=lambda k: (counts[k], -all_kinds.index(k)))
    return {"summary": f"{wrong} of {n} {what}; the most common kind is {top} ({counts[top]}).",
            "severity": wrong / max(n, 1),
            "evidence": {unit_key: n, "n_wrong": wrong, "counts": {k: counts[k] for k in all_kinds},
                         "rates": {k: counts[k] / max(wrong, 1) for k in all_kinds},
                         "per_type": {g: per[g] for g in sorted(per)},
                         "examples": {k: shown(lambda i, k=k: kinds[i] == k) for k in all_kinds if counts[k]}}}


def clip(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
