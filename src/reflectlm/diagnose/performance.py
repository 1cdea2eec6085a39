"""Held-out performance: the selection split's metrics, the classes that fail more often than the
rest, the pairs of classes the model mixes up, and for NER what kind of entity errors it makes.

Findings (convention: one "selection_performance" finding with severity 0 is always returned for
a non-empty selection split, carrying the metrics and per-example scores; the kinds below are
added only when something is found):

- high_error_class  a class (NER: entity type) whose error rate exceeds the overall rate, by a
                    one-sided binomial test per class, Holm (or Benjamini-Hochberg) corrected.
- confused_pair     two classes predicted as each other at least `min_pair_count` times (both
                    directions counted); NER: same span, other type.
- ner_error_kinds   NER only: boundary / type / boundary-and-type / missed / spurious entity
                    counts and rates, overall and per type.

Which data the classification kinds are read from (`shape_from`): these findings shape the next
challenger (reweight_classes weights the classes they name; the planner picks remedies for them),
and the challenger is then judged on the selection split. Read there too, a class that was unlucky
on those few examples gets the weight, the challenger "fixes" it by regression to the mean, and
the gate counts that as a gain, round after round (the reuse of a holdout, Dwork et al. 2015). So
by default ("train_oof") high_error_class and confused_pair are tested on the training data's
out-of-fold probabilities (the run's cross-validation, which the label checks already need); the
summary finding still reports the selection split, and carries the per-class F1 of the shaping
data under evidence["shaping"]. "selection" reads them from the selection split (the behaviour
before; then the gate judges on what shaped the challenger). Without out-of-fold probabilities
the classification kinds fall back to the selection split and say so. NER reads the selection
split (its out-of-fold decoding is not built).

References: Holm 1979, "A simple sequentially rejective multiple test procedure"; Benjamini &
Hochberg 1995; error kinds after the MUC scoring categories (Chinchor & Sundheim 1993, "MUC-5
evaluation metrics": incorrect, partial, missing, spurious).
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict

import numpy as np

from ..findings import CONFUSED_PAIR, HIGH_ERROR_CLASS, NER_ERROR_KINDS, SELECTION_PERFORMANCE
from .base import Finding, Skip, stored_params

ERROR_KINDS = ("boundary", "type", "boundary_and_type", "missed", "spurious")


class HeldOutPerformance:
    name = "performance"
    needs = ("selection", "selection_probs")

    def __init__(self, alpha: float = 0.05, correction: str = "holm", min_pair_count: int = 2, top_pairs: int = 5,
                 examples: int = 3, decode: str = "viterbi", shape_from: str = "train_oof"):
        self.alpha = alpha  # family-wise (holm) or false-discovery (bh) level for flagging a class
        self.correction = correction  # "holm" | "bh"
        self.min_pair_count = min_pair_count  # a pair confused fewer times than this is noise, not a pattern
        self.top_pairs = top_pairs
        self.examples = examples  # example ids / texts shown per finding
        self.decode = decode  # NER: "viterbi" (as the metrics) or "argmax"
        self.shape_from = shape_from  # "train_oof" | "selection": where the classes and pairs are read

    @property
    def wants(self) -> tuple[str, ...]:
        # built when the run can (cross-validation); missing is not a skip: the classes fall back
        return ("oof_probs",) if self.shape_from == "train_oof" else ()

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx) -> list[Finding]:
        if self.correction not in ("holm", "bh"):
            raise ValueError(f"correction must be 'holm' or 'bh', not {self.correction!r}")
        if self.shape_from not in ("train_oof", "selection"):
            raise ValueError(f"shape_from must be 'train_oof' or 'selection', not {self.shape_from!r}")
        ctx.need(*self.needs)
        require_labels(ctx)
        ds, probs = ctx.selection, ctx.selection_probs
        check_inputs(ctx.task, ds, probs, ctx.labels, "selection")
        if len(ds) == 0:
            return []
        if ctx.task == "ner":
            return self._run_ner(ctx, ds, probs)
        return self._run_classification(ctx, ds, probs)

    # ------------------------------------------------------------------ classification

    def _run_classification(self, ctx, ds, probs) -> list[Finding]:
        from reflectlm.tasks.classification import metrics

        labels = list(ctx.labels)
        probs = np.asarray(probs, dtype=np.float64)  # (N, C)
        with warnings.catch_warnings():  # sklearn warns when only one class occurs; the numbers are still right
            warnings.simplefilter("ignore", UserWarning)
            m = metrics(ds, probs, labels)
        def tallies(ds, probs, m):
            y = np.array([labels.index(v) for v in ds.labels])
            pred = probs.argmax(1)
            conf = np.asarray(m["confusion"])  # (C, C), rows gold, columns predicted
            per_class = {c: (int(conf[i].sum() - conf[i, i]), int(conf[i].sum())) for i, c in enumerate(labels)}
            return y, pred, probs[np.arange(len(y)), y], conf, per_class, float((pred != y).mean())

        y, pred, gold_prob, conf, per_class, overall = tallies(ds, probs, m)
        summary = Finding(
            check=self.name, kind=SELECTION_PERFORMANCE, severity=0.0,
            summary=(f"Selection split: macro F1 {m['macro_f1']:.3f}, accuracy {m['accuracy']:.3f} "
                     f"on {len(ds)} examples."),
            evidence={"metric": "macro_f1", "value": m["macro_f1"], "metrics": m, "overall_error_rate": overall,
                      "per_class": _rates(per_class)},
            scores={i: 1.0 - p for i, p in zip(ds.ids, gold_prob)}, split="selection")
        out = [summary]

        # What shapes the next challenger is read from data the gate does not judge on (module docstring).
        split, where = "selection", "selection examples"
        train, oof = ctx.train, ctx.oof_probs
        if self.shape_from == "train_oof" and oof is not None and train is not None and len(train) == len(oof) > 0:
            split, where, ds, probs = "train", "training examples (out of fold)", train, np.asarray(oof, np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                m = metrics(ds, probs, labels)
            y, pred, gold_prob, conf, per_class, overall = tallies(ds, probs, m)
        wrong = pred != y
        if split == "train":
            why = "the training data's out-of-fold predictions: the selection split only judges"
        else:
            why = "the selection split, which also judges the challenger " + (
                "(no out-of-fold predictions in this run)" if self.shape_from == "train_oof"
                else "(shape_from = 'selection')")
        summary.evidence["shaping"] = {"split": split, "source": why, "overall_error_rate": overall,
                                       "per_class_f1": {c: float(v["f1"]) for c, v in m["per_class"].items()}}

        def confusions(i: int) -> list[dict]:
            row = [(int(conf[i, j]), labels[j]) for j in range(len(labels)) if j != i and conf[i, j] > 0]
            return [{"predicted": name, "count": n} for n, name in sorted(row, key=lambda t: (-t[0], t[1]))[:3]]

        def error_examples(mask: np.ndarray) -> list[dict]:
            idx = np.flatnonzero(mask)
            idx = idx[np.argsort(-probs[idx, pred[idx]], kind="stable")][: self.examples]  # most confident first
            return [{"id": ds.ids[k], "text": _clip(ds.texts[k]), "gold": labels[y[k]], "predicted": labels[pred[k]],
                     "probability": float(probs[k, pred[k]])} for k in idx]

        for c, row in self._flag_classes(per_class, overall):
            i = labels.index(c)
            members = y == i
            out.append(Finding(
                check=self.name, kind=HIGH_ERROR_CLASS, severity=row.pop("severity"),
                summary=(f"Class {c!r} is wrong on {row['error_rate']:.0%} of its {row['n']} {where}, "
                         f"against {overall:.0%} overall (adjusted p = {row['p_adjusted']:.2g})."),
                evidence={**row, "class": c, "top_confusions": confusions(i),
                          "examples": error_examples(members & wrong)},
                scores={ds.ids[k]: 1.0 - gold_prob[k] for k in np.flatnonzero(members)}, split=split))

        pairs = Counter()
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                if conf[i, j] + conf[j, i] > 0:
                    pairs[(i, j)] = int(conf[i, j] + conf[j, i])
        for (i, j), count in _top(pairs, self.min_pair_count, self.top_pairs, lambda k: (labels[k[0]], labels[k[1]])):
            a, b = labels[i], labels[j]
            n_ab = int(conf[i].sum() + conf[j].sum())
            out.append(Finding(
                check=self.name, kind=CONFUSED_PAIR, severity=count / max(n_ab, 1),
                summary=(f"{a!r} and {b!r} are predicted as each other {count} times "
                         f"({int(conf[i, j])} {a}->{b}, {int(conf[j, i])} {b}->{a}) "
                         f"out of {n_ab} {where} of the two."),
                evidence={"a": a, "b": b, "count": count, "a_to_b": int(conf[i, j]), "b_to_a": int(conf[j, i]),
                          "n": n_ab, "rate": count / max(n_ab, 1),
                          "examples": error_examples((y == i) & (pred == j)) + error_examples((y == j) & (pred == i))},
                split=split))
        return out

    # ------------------------------------------------------------------ NER

    def _run_ner(self, ctx, ds, probs) -> list[Finding]:
        from reflectlm.tasks.ner import decode, metrics

        labels = list(ctx.labels)
        m = metrics(ds, probs, labels, method=self.decode)
        preds = [decode(np.asarray(p), labels, self.decode) for p in probs]
        errors = [entity_errors(g, p) for g, p in zip(ds.labels, preds)]
        per_type = ner_type_errors(ds.labels, preds)
        trials = sum(n for _, n in per_type.values())
        overall = sum(e for e, _ in per_type.values()) / trials if trials else 0.0
        # Sentence score: the worst word's 1 - p(gold tag); one bad word is enough to spoil an entity
        # (Wang & Mueller 2022 rank sentences the same way).
        scores = {}
        for i, (tags, p) in enumerate(zip(ds.labels, probs)):
            p = np.asarray(p, dtype=np.float64)
            gold = p[np.arange(len(tags)), [labels.index(t) for t in tags]] if len(tags) else np.ones(1)
            scores[ds.ids[i]] = 1.0 - float(gold.min())
        out = [Finding(
            check=self.name, kind=SELECTION_PERFORMANCE, severity=0.0,
            summary=(f"Selection split: entity F1 {m['entity_f1']:.3f}, word accuracy {m['token_accuracy']:.3f} "
                     f"on {len(ds)} sentences."),
            evidence={"metric": "entity_f1", "value": m["entity_f1"], "metrics": m, "overall_error_rate": overall,
                      "per_type": _rates(per_type)},
            scores=scores, split="selection")]

        def examples(keep) -> list[dict]:
            rows = []
            for i, errs in enumerate(errors):
                for err in errs:
                    if keep(err) and len(rows) < self.examples:
                        rows.append({"id": ds.ids[i], "text": _clip(ds.texts[i]), "kind": err["kind"],
                                     "gold": _span_text(err["gold"], ds.tokens[i]),
                                     "predicted": _span_text(err["pred"], ds.tokens[i])})
            return rows

        all_errors = [e for errs in errors for e in errs]
        for t, row in self._flag_classes(per_type, overall):
            kinds = Counter(e["kind"] for e in all_errors if _type_of(e) == t)
            as_other = Counter(e["pred"][0] for e in all_errors if e["kind"] == "type" and e["gold"][0] == t)
            out.append(Finding(
                check=self.name, kind=HIGH_ERROR_CLASS, severity=row.pop("severity"),
                summary=(f"Entity type {t!r} is wrong on {row['error_rate']:.0%} of its {row['n']} gold or predicted "
                         f"entities, against {overall:.0%} overall (adjusted p = {row['p_adjusted']:.2g})."),
                evidence={**row, "class": t, "error_kinds": dict(kinds),
                          "top_confusions": [{"predicted": k, "count": n} for k, n in as_other.most_common(3)],
                          "examples": examples(lambda e, t=t: _type_of(e) == t)},
                split="selection"))

        pairs = Counter()
        for e in all_errors:
            if e["kind"] == "type":
                pairs[tuple(sorted((e["gold"][0], e["pred"][0])))] += 1
        gold_count = Counter(s[0] for tags in ds.labels for s in _spans(tags))
        for (a, b), count in _top(pairs, self.min_pair_count, self.top_pairs, lambda k: k):
            a_to_b = sum(1 for e in all_errors if e["kind"] == "type" and (e["gold"][0], e["pred"][0]) == (a, b))
            n_ab = gold_count[a] + gold_count[b]
            out.append(Finding(
                check=self.name, kind=CONFUSED_PAIR, severity=count / max(n_ab, 1),
                summary=(f"Entity types {a!r} and {b!r} are given to each other's spans {count} times "
                         f"({a_to_b} {a}->{b}, {count - a_to_b} {b}->{a}) out of {n_ab} gold entities of the two."),
                evidence={"a": a, "b": b, "count": count, "a_to_b": a_to_b, "b_to_a": count - a_to_b, "n": n_ab,
                          "rate": count / max(n_ab, 1),
                          "examples": examples(lambda e, a=a, b=b: e["kind"] == "type"
                                               and {e["gold"][0], e["pred"][0]} == {a, b})},
                split="selection"))

        counts = Counter(e["kind"] for e in all_errors)
        if counts:
            n_gold = sum(gold_count.values())
            n_pred = sum(len(_spans(p)) for p in preds)
            by_type: dict = defaultdict(lambda: {"gold": 0, "predicted": 0, **{k: 0 for k in ERROR_KINDS}})
            for t, n in gold_count.items():
                by_type[t]["gold"] = n
            for p in preds:
                for s in _spans(p):
                    by_type[s[0]]["predicted"] += 1
            for e in all_errors:
                by_type[_type_of(e)][e["kind"]] += 1
            for row in by_type.values():  # gold-side kinds per gold entity, spurious per predicted entity
                row["rates"] = {k: (row[k] / row["predicted"] if k == "spurious" else row[k] / row["gold"])
                                if (row["predicted"] if k == "spurious" else row["gold"]) else 0.0 for k in ERROR_KINDS}
            rates = {k: (counts[k] / n_pred if k == "spurious" else counts[k] / n_gold)
                     if (n_pred if k == "spurious" else n_gold) else 0.0 for k in ERROR_KINDS}
            total = sum(counts.values())
            # Each gold entity has at most one gold-side error and each spurious entity is one more
            # item, so total <= n_gold + spurious and the share is in [0, 1].
            share = total / max(n_gold + counts["spurious"], 1)
            top = max(ERROR_KINDS, key=lambda k: (counts[k], -ERROR_KINDS.index(k)))
            out.append(Finding(
                check=self.name, kind=NER_ERROR_KINDS, severity=share,
                summary=(f"{total} entity errors on {n_gold} gold entities; the most common kind is {top} "
                         f"({counts[top]})."),
                evidence={"n_gold": n_gold, "n_predicted": n_pred, "counts": {k: counts[k] for k in ERROR_KINDS},
                          "rates": rates, "error_share": share, "per_type": {t: by_type[t] for t in sorted(by_type)},
                          "examples": {k: examples(lambda e, k=k: e["kind"] == k) for k in ERROR_KINDS if counts[k]}},
                split="selection"))
        return out

    # ------------------------------------------------------------------ the test

    def _flag_classes(self, per_class: dict[str, tuple[int, int]], overall: float) -> list[tuple[str, dict]]:
        """Classes whose errors exceed the overall rate: one-sided exact binomial test each, then
        a multiple-testing correction over the classes tested."""
        from scipy.stats import binomtest, false_discovery_control

        names = [c for c, (_, n) in per_class.items() if n > 0]
        if not names or not 0.0 < overall < 1.0:  # no errors, or all wrong: nothing can stand out
            return []
        pvals = np.array([binomtest(per_class[c][0], per_class[c][1], overall, alternative="greater").pvalue
                          for c in names])
        adjusted = holm(pvals) if self.correction == "holm" else false_discovery_control(pvals)
        flagged = []
        for c, p, q in zip(names, pvals, adjusted):
            errors, n = per_class[c]
            rate = errors / n
            if q < self.alpha and rate > overall:
                # Excess over the overall rate, scaled by the room above it: 1 = every example wrong.
                flagged.append((c, {"error_rate": rate, "errors": errors, "n": n, "overall_error_rate": overall,
                                    "p_value": float(p), "p_adjusted": float(min(q, 1.0)),
                                    "correction": self.correction,
                                    "severity": (rate - overall) / (1.0 - overall)}))
        return sorted(flagged, key=lambda t: (-t[1]["severity"], t[0]))


# ---------------------------------------------------------------------- helpers other checks reuse


def require_labels(ctx) -> None:
    if not ctx.labels:
        raise Skip("ctx.labels is empty: there are no classes to score; build the Context with the model's label list")


def check_inputs(task: str, ds, probs, labels: list[str], split: str) -> None:
    """Probabilities must line up with the dataset; say how to fix it when they do not."""
    if len(probs) != len(ds):
        raise ValueError(f"{split} probabilities have {len(probs)} rows but the {split} split has {len(ds)} "
                         f"examples; compute them on the same split, in the same order")
    known = set(labels)
    if task == "ner":
        for i, (tags, p) in enumerate(zip(ds.labels, probs)):
            if np.shape(p) != (len(tags), len(labels)):
                raise ValueError(f"{split} example {ds.ids[i]}: probabilities have shape {np.shape(p)}, expected "
                                 f"({len(tags)} words, {len(labels)} tags); give one row per word over ctx.labels")
        unknown = {t for tags in ds.labels for t in tags} - known
    else:
        if len(ds) and np.shape(probs)[1:] != (len(labels),):
            raise ValueError(f"{split} probabilities have shape {np.shape(probs)}, "
                             f"expected ({len(ds)}, {len(labels)}); "
                             "give one column per class in ctx.labels order")
        unknown = set(ds.labels) - known
    if unknown:
        raise ValueError(f"{split} has labels {sorted(unknown)[:5]} that are not in ctx.labels; build the Context "
                         "with the label list the model was trained on")


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, kept monotone), in the input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def class_errors(task: str, ds, probs, labels: list[str], method: str = "viterbi") -> dict[str, tuple[int, int]]:
    """(errors, trials) per class; NER per entity type (see ner_type_errors)."""
    if task == "ner":
        from reflectlm.tasks.ner import decode

        return ner_type_errors(ds.labels, [decode(np.asarray(p), labels, method) for p in probs])
    probs = np.asarray(probs)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    y = np.array([labels.index(v) for v in ds.labels], dtype=int)
    return {c: (int(((y == i) & (pred != i)).sum()), int((y == i).sum())) for i, c in enumerate(labels)}


def ner_type_errors(gold_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, tuple[int, int]]:
    """Per entity type: trials = gold entities plus predicted entities that match none exactly,
    errors = trials minus exact matches. The error rate is 1 - TP / (TP + FN + FP), strict like
    seqeval, so a wrong boundary costs a missed and a spurious entity."""
    tp, trials = Counter(), Counter()
    for g, p in zip(gold_tags, pred_tags):
        gs, ps = set(_spans(g)), set(_spans(p))
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
    """
    gold, pred = _spans(gold_tags), _spans(pred_tags)
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


def _spans(tags) -> list[tuple[str, int, int]]:
    from reflectlm.tasks.ner import spans

    return spans(list(tags))


def _type_of(err: dict) -> str:
    # Gold-side errors belong to the gold type; a spurious entity to its predicted type.
    return err["gold"][0] if err["gold"] is not None else err["pred"][0]


def _span_text(span, tokens) -> str | None:
    return None if span is None else f"{span[0]}: {' '.join(tokens[span[1]:span[2]])}"


def _rates(per_class: dict[str, tuple[int, int]]) -> dict:
    return {c: {"errors": e, "n": n, "error_rate": e / n if n else None} for c, (e, n) in per_class.items()}


def _top(counter: Counter, min_count: int, k: int, name) -> list:
    rows = [(key, n) for key, n in counter.items() if n >= max(min_count, 1)]
    return sorted(rows, key=lambda t: (-t[1], name(t[0])))[:k]


def _clip(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
