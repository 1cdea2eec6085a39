"""Robustness: how much the selection metric falls when the inputs carry the noise real users type.

Perturbations, each applied word by word so word tags stay aligned (the word count never changes);
the text perturbed is the task's text field (a text, a sentence, a question; a QA context is kept):

    typos        a `rate` share of words get one letter replaced by a QWERTY neighbour
    casing       a `rate` share of words become lower, UPPER or rAnDoM case
    swaps        a `rate` share of words get two adjacent characters transposed
    punctuation  each punctuation character is dropped with probability `rate`
                 (a word made only of punctuation is kept, so no word disappears)

Each perturbation has its own generator seeded from (ctx.seed, its index), so adding or removing
one does not change the others. Clean and noisy predictions both come from ctx.predict_texts on
the same (deterministically sampled) examples, and the drop is tested on paired per-example
correctness (task.correct: the label; every entity of the sentence; an exact answer) with an exact
McNemar test, one-sided for "noise breaks more than it fixes", Holm corrected over perturbations.

One "noise_sensitivity" finding is always returned for a non-empty split. Severity =
min(1, largest significant drop / scale); 0 when no drop is significant. Scores: per example,
the share of perturbations that changed its prediction.

References: Belinkov & Bisk 2018, "Synthetic and Natural Noise Both Break Neural Machine
Translation" (keyboard typos, swaps); McNemar 1947; Dror et al. 2018 (paired tests for NLP).
"""

from __future__ import annotations

import re
import unicodedata
import warnings

import numpy as np

from ..findings import NOISE_SENSITIVITY
from .base import Finding, stored_params

PERTURBATIONS = ("typos", "casing", "swaps", "punctuation")

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard() -> dict[str, str]:
    # Staggered rows: the keys touching row r, column c are c±1 in the same row, c and c+1 in
    # the row above, c-1 and c in the row below.
    near = {}
    for r, row in enumerate(_ROWS):
        for c, ch in enumerate(row):
            keys = [row[c + d] for d in (-1, 1) if 0 <= c + d < len(row)]
            if r > 0:
                keys += [_ROWS[r - 1][k] for k in (c, c + 1) if 0 <= k < len(_ROWS[r - 1])]
            if r + 1 < len(_ROWS):
                keys += [_ROWS[r + 1][k] for k in (c - 1, c) if 0 <= k < len(_ROWS[r + 1])]
            near[ch] = "".join(keys)
    return near


KEYBOARD = _keyboard()


class Robustness:
    name = "robustness"
    needs = ("selection", "predict_texts")
    requires = ()

    def __init__(self, rate: float = 0.1, max_examples: int = 1000, perturbations: list[str] | None = None,
                 alpha: float = 0.05, scale: float = 0.2, metric: str | None = None, examples: int = 3):
        self.rate = rate  # share of words (casing, typos, swaps) or punctuation characters perturbed
        self.max_examples = max_examples  # a deterministic sample of the selection split, to bound predict time
        self.perturbations = list(perturbations) if perturbations is not None else list(PERTURBATIONS)
        self.alpha = alpha  # family-wise level of the McNemar tests
        self.scale = scale  # the metric drop that counts as severity 1
        self.metric = metric  # None: the task's default metric
        self.examples = examples  # flipped examples shown per perturbation

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx) -> list[Finding]:
        from .performance import require_labels

        unknown = [p for p in self.perturbations if p not in PERTURBATIONS]
        if unknown or not self.perturbations:
            raise ValueError(f"unknown perturbation(s) {unknown}; choose from {', '.join(PERTURBATIONS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], not {self.rate}")
        ctx.need(*self.needs)
        require_labels(ctx)
        ds = ctx.selection
        if len(ds) == 0 or self.max_examples < 1:
            return []
        rng = np.random.default_rng(ctx.seed)
        idx = np.arange(len(ds))
        if len(ds) > self.max_examples:
            idx = np.sort(rng.choice(len(ds), self.max_examples, replace=False))
        probe = _Probe(ctx, ds.subset(idx), self.metric or ctx.task.default_metric)
        clean = probe.predict(probe.clean, "clean")
        changed = np.zeros(len(probe.sub))
        rows, pvals = {}, []
        names = list(dict.fromkeys(self.perturbations))  # a name given twice would count its flips twice
        for name in names:
            gen = np.random.default_rng([ctx.seed, PERTURBATIONS.index(name) + 1])
            noisy = probe.predict(probe.noisy(name, self.rate, gen), name)
            flip = np.array([a != b for a, b in zip(clean["shown"], noisy["shown"])])
            changed += flip
            rows[name] = probe.row(clean, noisy, flip, self.examples)
            pvals.append(rows[name]["p_value"])
        return [self._finding(probe, rows, pvals, names, changed, clean["score"])]

    def _finding(self, probe, rows: dict, pvals: list, names: list, changed: np.ndarray, clean: float) -> Finding:
        from .performance import holm

        for row, q in zip(rows.values(), holm(pvals)):
            row["p_adjusted"] = float(q)
            row["significant"] = bool(q < self.alpha and row["drop"] > 0)
        hits = {k: r for k, r in rows.items() if r["significant"]}
        largest = max(rows, key=lambda k: (rows[k]["drop"], -names.index(k)))
        metric, n = probe.metric, len(probe.sub)
        label = {"macro_f1": "macro F1", "entity_f1": "entity F1", "weighted_f1": "weighted F1", "f1": "F1",
                 "exact_match": "exact match"}.get(metric, metric.replace("_", " "))
        if hits:
            worst = max(hits, key=lambda k: (hits[k]["drop"], -names.index(k)))
            r = hits[worst]
            others = ", ".join(f"{k} {rows[k]['drop']:+.3f}" for k in rows if k != worst)
            summary = (f"Under {worst} noise (rate {self.rate:g}) {label} falls from {r['clean']:.3f} "
                       f"to {r['noisy']:.3f} on {n} selection examples (adjusted McNemar p = {r['p_adjusted']:.2g})"
                       + (f"; drops under the others: {others}." if others else "."))
            severity = min(1.0, r["drop"] / self.scale)
        else:
            worst = None
            summary = (f"{label[0].upper() + label[1:]} {clean:.3f} holds under {', '.join(rows)} noise "
                       f"(rate {self.rate:g}) on {n} selection examples; the largest drop, "
                       f"{rows[largest]['drop']:+.3f} under {largest}, is not significant.")
            severity = 0.0
        return Finding(
            check=self.name, kind=NOISE_SENSITIVITY, severity=severity, summary=summary,
            evidence={"metric": metric, "clean": clean, "n": n, "rate": self.rate, "worst": worst,
                      "largest_drop": rows[largest]["drop"], "perturbations": rows},
            scores={i: c / len(names) for i, c in zip(probe.sub.ids, changed)}, split="selection")


class _Probe:
    """The sampled selection examples, their words, and the model's predictions on clean or noisy
    inputs: the task's score, per-example correctness and a readable prediction each."""

    def __init__(self, ctx, sub, metric: str):
        self.ctx, self.sub, self.metric = ctx, sub, metric
        self.task, self.labels = ctx.task, list(ctx.labels)
        # A word-tagging task keeps its words (and tags) aligned: pieces are its words, joined by one
        # space; otherwise the text's words and the whitespace between them, joined as they were.
        self.aligned = "word_aligned" in self.task.capabilities
        self.words = ([list(t) for t in sub.tokens] if self.aligned else [re.split(r"(\s+)", t) for t in sub.texts])
        self.clean = self._join(self.words)

    def _join(self, words: list[list[str]]) -> list[str]:
        return [" ".join(w) if self.aligned else "".join(w) for w in words]

    def noisy(self, how: str, rate: float, gen) -> list[str]:
        return self._join([perturb(w, how, rate, gen, keep_spaces=not self.aligned) for w in self.words])

    def predict(self, texts: list[str], what: str) -> dict:
        items = [self.task.with_text(self.sub, i, t) for i, t in enumerate(texts)]  # a QA context stays as it was
        probs = self.ctx.predict_texts(items)
        if len(probs) != len(items):
            raise ValueError(f"predict_texts returned {len(probs)} rows for {len(items)} {what} inputs; it must "
                             "return one per text (input)")
        problem = self.task.check_outputs(self.sub, probs, self.labels)
        if problem:
            raise ValueError(f"predict_texts on {what} inputs: {problem}")
        with warnings.catch_warnings():  # sklearn warns when only one class occurs; the numbers are still right
            warnings.simplefilter("ignore", UserWarning)
            score = float(self.task.metrics(self.sub, probs, self.labels)[self.metric])
        shown = [self.task.prediction_text(r) for r in self.task.readable(items, probs, self.labels)]
        return {"texts": texts, "score": score, "right": self.task.correct(self.sub, probs, self.labels),
                "shown": shown}

    def row(self, clean: dict, noisy: dict, flip: np.ndarray, examples: int) -> dict:
        cr, nr = clean["right"], noisy["right"]
        broke, fixed = int((cr & ~nr).sum()), int((~cr & nr).sum())
        # Show what broke first, then other changed predictions.
        order = [k for k in np.flatnonzero(cr & ~nr)] + [k for k in np.flatnonzero(flip) if not (cr[k] and not nr[k])]
        shown = [{"id": self.sub.ids[k], "clean_text": _clip(clean["texts"][k]), "noisy_text": _clip(noisy["texts"][k]),
                  "gold": self.task.gold_text(self.sub, k), "before": clean["shown"][k], "after": noisy["shown"][k]}
                 for k in order[:examples]]
        return {"clean": clean["score"], "noisy": noisy["score"], "drop": clean["score"] - noisy["score"],
                "accuracy_clean": float(cr.mean()), "accuracy_noisy": float(nr.mean()), "broken": broke,
                "fixed": fixed, "p_value": mcnemar_greater(broke, fixed), "changed": float(flip.mean()),
                "examples": shown}


# ---------------------------------------------------------------------- perturbations


def perturb(words: list[str], how: str, rate: float, rng: np.random.Generator, keep_spaces: bool = False) -> list[str]:
    """Perturb each word (whitespace pieces, with keep_spaces, pass through untouched); the output
    has as many items as the input and no word becomes empty."""
    out = []
    for w in words:
        if not w or (keep_spaces and w.isspace()):
            out.append(w)
            continue
        out.append(_perturb_word(w, how, rate, rng))
    return out


def _perturb_word(w: str, how: str, rate: float, rng: np.random.Generator) -> str:
    if how == "punctuation":
        kept = "".join(ch for ch in w if not (unicodedata.category(ch).startswith("P") and rng.random() < rate))
        return kept or w
    if rng.random() >= rate:
        return w
    if how == "typos":
        letters = [i for i, ch in enumerate(w) if ch.lower() in KEYBOARD]
        if not letters:
            return w
        i = letters[int(rng.integers(len(letters)))]
        options = KEYBOARD[w[i].lower()]
        new = options[int(rng.integers(len(options)))]
        return w[:i] + (new.upper() if w[i].isupper() else new) + w[i + 1:]
    if how == "casing":
        mode = int(rng.integers(3))
        if mode == 0:
            return w.lower()
        if mode == 1:
            return w.upper()
        return "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in w)
    if how == "swaps":
        if len(w) < 2:
            return w
        i = int(rng.integers(len(w) - 1))
        return w[:i] + w[i + 1] + w[i] + w[i + 2:]
    raise ValueError(f"unknown perturbation {how!r}; choose from {', '.join(PERTURBATIONS)}")


# ---------------------------------------------------------------------- helpers


def mcnemar_greater(broke: int, fixed: int) -> float:
    """Exact one-sided McNemar p-value that noise breaks more examples than it fixes: under the
    null each discordant example is equally likely to go either way, so broke ~ Bin(broke + fixed, 1/2)."""
    from scipy.stats import binomtest

    if broke + fixed == 0:
        return 1.0
    return float(binomtest(broke, broke + fixed, 0.5, alternative="greater").pvalue)


def _clip(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
