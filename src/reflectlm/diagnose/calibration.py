"""Calibration: does the model's confidence match how often it is right?

Top-label confidence c_i = max_k p_ik, correct_i = [argmax_k p_ik == y_i]. Sort the examples into
B equal-width confidence bins b = ((m-1)/B, m/B]; per bin, acc_b and conf_b are the means of
correct and c over its n_b examples. Then

    ECE = sum_b (n_b / N) * |acc_b - conf_b|          expected calibration error
    MCE = max_b |acc_b - conf_b|                      maximum calibration error (non-empty bins)
    gap = mean(c) - mean(correct)                     > 0: over-confident, < 0: under-confident

Temperature scaling divides the log-probabilities by one scalar T > 0 and re-normalises; the T
that minimises the negative log-likelihood of the gold labels on the selection split says how
much the probabilities should be softened (T > 1) or sharpened (T < 1). ECE after it shows what
that one-parameter fix buys (fitted and measured on the same split, so it is optimistic).

ECE of a perfectly calibrated model is above 0 on a finite sample, so the finding only counts
when the ECE stands out: consistency resampling draws correct*_i ~ Bernoulli(c_i) (what a
calibrated model with these confidences would score), and the p-value is the share of draws
whose ECE reaches the observed one.

What one prediction is, and its confidence, is the task's (task.calibration): an example's top
class; every word of an NER sentence over the tag set; a question's best answer, whose correctness
is an exact match (no temperature there: the answer score is not one softmax row).

One "miscalibration" finding is always returned for a non-empty split (severity 0 when the ECE
does not stand out), carrying the reliability table. Severity = min(1, ECE / scale) when p < alpha.

References: Guo et al. 2017, "On Calibration of Modern Neural Networks" (ECE, temperature
scaling); Naeini et al. 2015 (ECE / MCE); Bröcker & Smith 2007, "Increasing the reliability of
reliability diagrams" (consistency resampling).
"""

from __future__ import annotations

import numpy as np

from ..findings import MISCALIBRATION
from .base import Finding, stored_params


class Calibration:
    name = "calibration"
    needs = ("selection", "selection_probs")
    requires = ()

    def __init__(self, bins: int = 15, scale: float = 0.15, alpha: float = 0.05, resamples: int = 200):
        self.bins = bins  # equal-width confidence bins (Guo et al. use 15)
        self.scale = scale  # the ECE that counts as severity 1
        self.alpha = alpha  # significance level of the consistency-resampling test
        self.resamples = resamples  # draws for that test

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx) -> list[Finding]:
        from .performance import check_inputs, require_labels

        if self.bins < 1 or self.resamples < 1:
            raise ValueError(f"bins ({self.bins}) and resamples ({self.resamples}) must be >= 1")
        ctx.need(*self.needs)
        require_labels(ctx)
        ds = ctx.selection
        check_inputs(ctx.task, ds, ctx.selection_probs, ctx.labels, "selection")
        view = ctx.task.calibration(ds, ctx.selection_probs, list(ctx.labels))
        conf, correct = np.asarray(view["confidence"], np.float64), np.asarray(view["correct"], np.float64)  # (M,)
        if len(conf) == 0:
            return []
        ece, mce, table = reliability(conf, correct, self.bins)
        p_value = consistency_p_value(conf, ece, self.bins, self.resamples, ctx.seed)
        T = nll_before = nll_after = None
        if view["probs"] is not None:  # probability rows: what one temperature would fix
            T, nll_before, nll_after = fit_temperature(np.asarray(view["probs"], np.float64), view["gold"])
        if T is None:  # one class (every probability is 1), or no rows to scale
            ece_after, T = ece, 1.0
        else:
            ece_after = reliability(temper(view["probs"], T).max(1), correct, self.bins)[0]
        gap = float(conf.mean() - correct.mean())
        direction = ("over-confident" if gap > 0 else "under-confident" if gap < 0
                     else "neither over- nor under-confident")
        stands_out = p_value < self.alpha
        unit = view["unit"]
        tempered = (f"; temperature {T:.2f} brings it to {ece_after:.3f}" if view["probs"] is not None
                    else "; the answer scores are not one softmax row, so no temperature is fitted")
        summary = (f"Expected calibration error {ece:.3f} on {len(conf)} selection {unit} "
                   f"({direction}: mean confidence {conf.mean():.3f} vs accuracy {correct.mean():.3f})"
                   + tempered + ("." if stands_out
                      else f", within what a calibrated model shows on this sample (p = {p_value:.2g})."))
        return [Finding(
            check=self.name, kind=MISCALIBRATION,
            severity=min(1.0, ece / self.scale) if stands_out else 0.0,
            summary=summary,
            evidence={"ece": ece, "mce": mce, "mean_confidence": float(conf.mean()), "accuracy": float(correct.mean()),
                      "gap": gap, "direction": direction, "p_value": p_value, "n": int(len(conf)), "unit": unit,
                      "temperature": T, "ece_after_temperature": ece_after, "nll": nll_before,
                      "nll_after_temperature": nll_after, "bins": self.bins, "reliability": table},
            split="selection")]


def _bins(conf: np.ndarray, bins: int) -> np.ndarray:
    # Right-closed bins ((m-1)/B, m/B]; a confidence of exactly 0 goes to the first.
    return np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)


def reliability(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> tuple[float, float, list[dict]]:
    """ECE, MCE and the per-bin table (count, mean confidence, accuracy; None for empty bins)."""
    idx = _bins(conf, bins)
    count = np.bincount(idx, minlength=bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=bins)
    sum_acc = np.bincount(idx, weights=correct, minlength=bins)
    # (n_b / N) * |acc_b - conf_b| = |sum_acc_b - sum_conf_b| / N
    ece = float(np.abs(sum_acc - sum_conf).sum() / len(conf))
    full = count > 0
    gaps = np.abs(sum_acc[full] - sum_conf[full]) / count[full]
    mce = float(gaps.max()) if full.any() else 0.0
    table = [{"lower": b / bins, "upper": (b + 1) / bins, "count": int(count[b]),
              "confidence": float(sum_conf[b] / count[b]) if count[b] else None,
              "accuracy": float(sum_acc[b] / count[b]) if count[b] else None} for b in range(bins)]
    return ece, mce, table


def consistency_p_value(conf: np.ndarray, ece: float, bins: int, resamples: int, seed: int) -> float:
    """Share of calibrated re-draws (correct ~ Bernoulli(conf)) whose ECE is at least `ece`."""
    rng = np.random.default_rng(seed)
    idx = _bins(conf, bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=bins)
    hits = 0
    for _ in range(resamples):
        drawn = (rng.random(len(conf)) < conf).astype(np.float64)
        sim = np.abs(np.bincount(idx, weights=drawn, minlength=bins) - sum_conf).sum() / len(conf)
        hits += sim >= ece - 1e-12
    return float((hits + 1) / (resamples + 1))


def temper(probs: np.ndarray, T: float) -> np.ndarray:
    """softmax(log p / T): the probabilities a temperature-scaled model would give."""
    z = np.log(np.clip(probs, 1e-12, 1.0)) / T
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> tuple[float | None, float, float]:
    """(T, NLL at T = 1, NLL at T): T minimises the mean NLL of the gold labels, searched over
    log T in [-3, 3] (T in [0.05, 20]) so T stays positive. T is None with fewer than two classes."""
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    z = np.log(np.clip(probs, 1e-12, 1.0))  # (M, C) log-probabilities act as logits
    gold = z[np.arange(len(y)), y]

    def nll(log_t: float) -> float:
        t = np.exp(log_t)
        return float(np.mean(logsumexp(z / t, axis=1) - gold / t))

    before = nll(0.0)
    if probs.shape[1] < 2:
        return None, before, before
    res = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-4})
    T, after = float(np.exp(res.x)), float(res.fun)
    if after > before:  # the bounded search can stop a hair worse than T = 1 when T = 1 is best
        T, after = 1.0, before
    return T, before, after
