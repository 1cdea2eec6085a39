"""Held-out performance: the selection split's metrics, the groups (classes, entity types, question
types) that fail more often than the rest, the pairs of classes the model mixes up, and what kind
of errors it makes.

Findings (convention: one "selection_performance" finding with severity 0 is always returned for
a non-empty selection split, carrying the metrics and per-example scores; the kinds below are
added only when something is found):

- high_error_class  a group whose error rate exceeds the overall rate, by a one-sided binomial test
                    per group, Holm (or Benjamini-Hochberg) corrected.
- confused_pair     two classes predicted as each other at least `min_pair_count` times (both
                    directions counted); NER: same span, other type.
- error_kinds       the task's error-kind breakdown (NER: boundary / type / missed / spurious;
                    QA: no overlap / too long / too short / wrong sentence), overall and per group.

What the groups, pairs and kinds are is the task's (task.error_analysis); this check tests and
words them.

Which data the groups and pairs are read from (`shape_from`): these findings shape the next
challenger (reweight_classes weights the classes they name; the planner picks remedies for them),
and the challenger is then judged on the selection split. Read there too, a class that was unlucky
on those few examples gets the weight, the challenger "fixes" it by regression to the mean, and
the gate counts that as a gain, round after round (the reuse of a holdout, Dwork et al. 2015). So
by default ("train_oof") high_error_class and confused_pair are tested on the training data's
out-of-fold probabilities, where the task has them (the run's cross-validation, which the label
checks already need); the summary finding still reports the selection split, and carries the
per-class F1 of the shaping data under evidence["shaping"]. "selection" reads them from the
selection split (then the gate judges on what shaped the challenger). Without out-of-fold
probabilities the groups fall back to the selection split and say so. Tasks whose cross-validation
is not the fast kind (word tags, spans) read the selection split.

References: Holm 1979, "A simple sequentially rejective multiple test procedure"; Benjamini &
Hochberg 1995; Dwork et al. 2015 (the reusable holdout).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..findings import CONFUSED_PAIR, ERROR_KINDS, HIGH_ERROR_CLASS, SELECTION_PERFORMANCE
from .base import Finding, Skip, stored_params


class HeldOutPerformance:
    name = "performance"
    needs = ("selection", "selection_probs")
    requires = ()

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
        view = self._view(ctx, ds, probs)
        summary = Finding(check=self.name, kind=SELECTION_PERFORMANCE, severity=0.0,
                          summary=f"Selection split: {view['headline']}.",
                          evidence={"metric": view["metric"], "value": view["value"], "metrics": view["metrics"],
                                    "overall_error_rate": view["overall_error_rate"],
                                    view.get("rates_key", "per_group"): _rates(view["groups"])},
                          scores=view["scores"], split="selection")
        # What shapes the next challenger is read from data the gate does not judge on (module docstring).
        shaping, oof, why = self._shaping(ctx, view)
        if shaping.get("group_f1") is not None:
            summary.evidence["shaping"] = {"split": "train" if oof else "selection", "source": why,
                                           "overall_error_rate": shaping["overall_error_rate"],
                                           "per_class_f1": shaping["group_f1"]}
        split = "train" if oof else "selection"
        out = [summary]
        out += self._groups(ctx, shaping, split, _unit(shaping, shaping["trials"], oof))
        out += self._pairs(shaping, split, _unit(shaping, shaping["pair_trials"], oof) + " of the two")
        kinds = view.get("kinds")
        if kinds:
            out.append(Finding(check=self.name, kind=ERROR_KINDS, severity=kinds["severity"], summary=kinds["summary"],
                               evidence=kinds["evidence"], split="selection"))
        return out

    def _view(self, ctx, ds, probs) -> dict:
        with warnings.catch_warnings():  # sklearn warns when only one class occurs; the numbers are still right
            warnings.simplefilter("ignore", UserWarning)
            return ctx.task.error_analysis(ds, probs, list(ctx.labels), self.examples, decode=self.decode)

    def _shaping(self, ctx, view: dict) -> tuple[dict, bool, str]:
        """The analysis the groups and pairs are read from, whether it is out of fold, and why."""
        train, oof = ctx.train, ctx.oof_probs
        # Out-of-fold rows per example (one class each); per-word out-of-fold decoding is not built.
        oof_ok = ("class_probs" in ctx.task.capabilities and oof is not None and train is not None
                  and len(train) == len(oof) > 0)
        if self.shape_from == "train_oof" and oof_ok:
            return (self._view(ctx, train, np.asarray(oof, np.float64)), True,
                    "the training data's out-of-fold predictions: the selection split only judges")
        return view, False, "the selection split, which also judges the challenger " + (
            "(no out-of-fold predictions in this run)" if self.shape_from == "train_oof" else "(shape_from = 'selection')")

    def _groups(self, ctx, view: dict, split: str, unit: str) -> list[Finding]:
        overall = view["overall_error_rate"]
        name = ctx.task.group_name
        out = []
        for c, row in self._flag_classes({g: (v["errors"], v["n"]) for g, v in view["groups"].items()}, overall):
            g = view["groups"][c]
            out.append(Finding(
                check=self.name, kind=HIGH_ERROR_CLASS, severity=row.pop("severity"),
                summary=(f"{name[0].upper() + name[1:]} {c!r} is wrong on {row['error_rate']:.0%} of its {row['n']} "
                         f"{unit}, against {overall:.0%} overall (adjusted p = {row['p_adjusted']:.2g})."),
                evidence={**row, "class": c, "group": name, **g.get("evidence", {})},
                scores=g.get("scores"), split=split))
        return out

    def _pairs(self, view: dict, split: str, unit: str) -> list[Finding]:
        rows = [p for p in view.get("pairs") or [] if p["count"] >= max(self.min_pair_count, 1)]
        rows = sorted(rows, key=lambda p: (-p["count"], p["a"], p["b"]))[: self.top_pairs]
        verb = view.get("pair_verb", "are predicted as each other")  # the task's words for a confusion
        out = []
        for p in rows:
            a, b, count, n_ab = p["a"], p["b"], p["count"], p["n"]
            out.append(Finding(
                check=self.name, kind=CONFUSED_PAIR, severity=count / max(n_ab, 1),
                summary=(f"{a!r} and {b!r} {verb} {count} times ({p['a_to_b']} {a}->{b}, {p['b_to_a']} {b}->{a}) "
                         f"out of {n_ab} {unit}."),
                evidence={**p, "rate": count / max(n_ab, 1)}, split=split))
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
    if not ctx.labels and "labels" in ctx.task.capabilities:
        raise Skip("ctx.labels is empty: there are no classes to score; build the Context with the model's label list")


def check_inputs(task, ds, probs, labels: list[str], split: str) -> None:
    """Outputs must line up with the dataset (the task checks their shape); say how to fix it when not."""
    if len(probs) != len(ds):
        raise ValueError(f"{split} outputs have {len(probs)} rows but the {split} split has {len(ds)} "
                         f"examples; compute them on the same split, in the same order")
    problem = task.check_outputs(ds, probs, labels)
    if problem:
        raise ValueError(f"{split} {problem}")
    unknown = task.unknown_labels(ds, set(task.label_names_of(labels))) if labels else {}
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


def _unit(view: dict, trials: str, oof: bool) -> str:
    """What the counts count: "selection examples", "training examples (out of fold)", "gold entities"."""
    if not view.get("prefixed"):
        return trials
    return f"training {trials} (out of fold)" if oof else f"selection {trials}"


def _rates(groups: dict) -> dict:
    return {c: {"errors": g["errors"], "n": g["n"], "error_rate": g["errors"] / g["n"] if g["n"] else None}
            for c, g in groups.items()}
