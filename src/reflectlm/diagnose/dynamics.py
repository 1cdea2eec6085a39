"""Data maps: which training examples the model found hard to learn, and which it kept flipping on.

For each training example, over the epochs of one run (read off the training forward pass, so
no extra cost):
  confidence  = mean over epochs of the gold label's probability,
  variability = standard deviation over epochs of that probability (population std, as in the paper),
  correctness = fraction of epochs the prediction was right.

Regions, relative to this run's own distribution (a fixed cut would mean different things for a
3-class sentiment task and a 77-class intent task):
  hard_to_learn: confidence in the bottom `q_hard` of the run, below the run's median and below
                 `learned_confidence`, and variability at or below the median: the model was
                 consistently unsure of the gold label. Many of these are label errors.
  ambiguous:     variability in the top `q_ambiguous` of the run and at least `min_variability`:
                 the model kept changing its mind. Useful for generalisation, rarely errors.
  easy:          neither of the above, with confidence >= `learned_confidence` (mostly learned).

The map is only read when the model learned the typical example (median confidence >=
`learned_confidence`); otherwise low confidence is the model's failure, not the data's (the fit and
descent checks report that), and the check raises Skip saying so.

Scores cover the flagged examples only, so a Finding's scores are exactly the examples it is
about: hard_to_learn 1 - confidence, ambiguous variability / max variability of the run.
Nothing flagged -> no Finding (this module's convention: [] when nothing is wrong).
No randomness: the same context gives the same findings whatever ctx.seed.

References: Swayamdipta et al. 2020, "Dataset Cartography: Mapping and Diagnosing Datasets with
Training Dynamics".
"""

from __future__ import annotations

import copy
import math

import numpy as np

from ..findings import AMBIGUOUS, HARD_TO_LEARN
from .base import Context, Finding, Skip, stored_params

# The share of a training set that, flagged, makes a region a full-strength problem. Common
# benchmarks carry a few percent of label errors (3.3% on average across ten test sets, Northcutt,
# Athalye & Mueller 2021); 5% consistently unlearned is a clearly noisy set.
NOTABLE_FRACTION = 0.05


class DataMap:
    name = "dynamics"
    needs = ("dynamics",)
    requires = ()

    def __init__(self, q_hard: float = 0.1, q_ambiguous: float = 0.1, learned_confidence: float = 0.5,
                 min_variability: float = 0.2, top_k: int = 10):
        # q = 0.1: a tenth of the data is as much as a person will review per round, and the paper's
        # hard-to-learn region is a small corner of the map.
        # learned_confidence = 0.5: an example the model gives half its mass on average is learned.
        # min_variability = 0.2: std of gold_prob in [0, 1] is at most 0.5; below 0.2 the model
        # moved, but did not flip.
        self.q_hard = q_hard
        self.q_ambiguous = q_ambiguous
        self.learned_confidence = learned_confidence
        self.min_variability = min_variability
        self.top_k = top_k

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx: Context) -> list[Finding]:
        ctx.need(*self.needs)
        m = data_map(ctx.dynamics)
        ids, conf, var, corr = m["ids"], m["confidence"], m["variability"], m["correctness"]
        n = len(ids)
        if n == 0:
            raise Skip("no training example has recorded dynamics (empty training split)")

        conf_cut = float(np.quantile(conf, self.q_hard))
        conf_median = float(np.median(conf))
        if conf_median < self.learned_confidence:
            raise Skip(f"the model did not learn the typical training example (median gold-label probability "
                       f"{conf_median:.2f} < {self.learned_confidence}); a data map would describe the model, "
                       "not the data")
        var_median = float(np.median(var))
        var_cut = float(np.quantile(var, 1.0 - self.q_ambiguous))
        # `conf < conf_median` (strict): examples tied with the typical one do not stand out from it.
        hard = (conf <= conf_cut) & (conf < conf_median) & (conf < self.learned_confidence) & (var <= var_median)
        ambiguous = (var >= var_cut) & (var >= self.min_variability) & ~hard
        easy = ~hard & ~ambiguous & (conf >= self.learned_confidence)
        regions = {"easy": float(easy.mean()), "ambiguous": float(ambiguous.mean()),
                   "hard_to_learn": float(hard.mean()), "other": float((~hard & ~ambiguous & ~easy).mean())}
        common = {"examples": n, "epochs": m["epochs"], "regions": regions,
                  "median_confidence": conf_median, "median_variability": var_median,
                  "mean_correctness": float(corr.mean())}
        texts = _lookup(ctx.train, ids)

        findings = []
        if hard.any():
            score = 1.0 - conf
            idx = _top(np.flatnonzero(hard), score, self.top_k)
            # Severity: how unsure the model was of them, times how many there are (a lone
            # low-confidence example in a large set is not a data problem), times how far they stand
            # out from the typical example (the tail of a weak fit is not a set of label errors).
            fill = min(1.0, hard.mean() / NOTABLE_FRACTION)
            contrast = min(1.0, (conf_median - float(conf[hard].mean())) / 0.5)
            sev = float(score[hard].mean() * fill * contrast)
            evidence = {**common, "count": int(hard.sum()),
                        "thresholds": {"confidence_at_most": conf_cut, "confidence_below_median": conf_median,
                                       "confidence_below": self.learned_confidence, "variability_at_most": var_median},
                        "top_examples": [_example(i, ids, conf, var, corr, texts) for i in idx]}
            findings.append(Finding(
                check=self.name, kind=HARD_TO_LEARN, severity=sev,
                summary=(f"{int(hard.sum())} of {n} training examples stayed hard to learn (gold-label probability "
                         f"{float(conf[hard].mean()):.2f} on average over {m['epochs']} epochs); many may be "
                         "mislabelled."),
                evidence=copy.deepcopy(evidence),  # its own copy: findings are edited independently downstream
                scores={ids[i]: float(score[i]) for i in np.flatnonzero(hard)}, split="train"))
        if ambiguous.any():
            vmax = float(var.max())
            score = var / vmax if vmax > 0 else np.zeros_like(var)
            idx = _top(np.flatnonzero(ambiguous), var, self.top_k)
            fill = min(1.0, ambiguous.mean() / (2 * NOTABLE_FRACTION))  # ambiguity is common; twice the share
            # 0.6: ambiguous examples are seldom errors and training on them helps out-of-distribution
            # (the paper's finding), so they rank below hard-to-learn ones of the same strength.
            sev = float(0.6 * min(1.0, var[ambiguous].mean() / 0.5) * fill)
            evidence = {**common, "count": int(ambiguous.sum()),
                        "thresholds": {"variability_at_least": max(var_cut, self.min_variability)},
                        "top_examples": [_example(i, ids, conf, var, corr, texts) for i in idx]}
            findings.append(Finding(
                check=self.name, kind=AMBIGUOUS, severity=sev,
                summary=(f"{int(ambiguous.sum())} of {n} training examples are ambiguous: the model's gold-label "
                         f"probability swung by {float(var[ambiguous].mean()):.2f} (std) across epochs."),
                evidence=copy.deepcopy(evidence),
                scores={ids[i]: float(score[i]) for i in np.flatnonzero(ambiguous)}, split="train"))
        return findings


def data_map(dynamics: dict) -> dict:
    """confidence, variability, correctness per example: (N,) each, over the epochs each example
    was recorded in. Raises Skip when fewer than 2 epochs were recorded (no variability)."""
    gold = np.asarray(dynamics.get("gold_prob", np.zeros((0, 0))), dtype=np.float64)
    correct = np.asarray(dynamics.get("correct", np.zeros_like(gold)), dtype=np.float64)
    ids = [str(i) for i in np.asarray(dynamics.get("ids", [])).reshape(-1)]
    if gold.ndim != 2 or gold.shape[0] < 2:
        rows = gold.shape[0] if gold.ndim == 2 else 0
        raise Skip(f"data maps need at least 2 epochs of recorded dynamics for variability; this run has {rows} "
                   "(set train.record_dynamics = true and train.epochs >= 2)")
    if len(ids) != gold.shape[1]:
        raise Skip(f"dynamics ids ({len(ids)}) and gold_prob columns ({gold.shape[1]}) disagree; re-run training")
    # Examples never recorded (NaN in every epoch) carry no information; drop them.
    seen = np.isfinite(gold).any(0)
    gold, correct = gold[:, seen], correct[:, seen]
    ids = [i for i, s in zip(ids, seen) if s]
    if gold.shape[1] == 0:
        empty = np.zeros(0)
        return {"ids": [], "confidence": empty, "variability": empty, "correctness": empty, "epochs": gold.shape[0]}
    return {"ids": ids, "confidence": np.nanmean(gold, 0), "variability": np.nanstd(gold, 0),
            "correctness": np.nanmean(correct, 0), "epochs": int(gold.shape[0])}


def _top(idx: np.ndarray, score: np.ndarray, k: int) -> list[int]:
    # Highest score first; ties by position, so the list is the same on every run.
    order = sorted(idx.tolist(), key=lambda i: (-float(score[i]), i))
    return order[:k]


def _lookup(train, ids: list[str]) -> dict[str, tuple]:
    """id -> (text, label) from the training split, when the context has it."""
    if train is None:
        return {}
    return {str(i): (t, y) for i, t, y in zip(train.ids, train.texts, train.labels)}


def _example(i: int, ids, conf, var, corr, texts: dict) -> dict:
    text, label = texts.get(ids[i], (None, None))
    return {"id": ids[i], "text": text, "label": label, "confidence": _r(conf[i]), "variability": _r(var[i]),
            "correctness": _r(corr[i])}


def _r(x: float) -> float | None:
    x = float(x)
    return round(x, 4) if math.isfinite(x) else None
