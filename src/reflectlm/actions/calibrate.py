"""calibrate: temperature scaling on the selection split. One scalar T minimises the selection
negative log-likelihood of softmax(logits / T); it is folded into the output layer (weights and
bias divided by T), so every consumer of the model gets calibrated probabilities and no
prediction changes. Judged by non-inferiority; the reliability before and after goes to
calibration.json.

Because no prediction changes, the A/B test alone would always pass it, and T is fitted on the
very examples that judge it. So it is also cross-fitted: each of CV_FOLDS folds of the selection
split is scored with a T fitted on the other folds, and the step is refused (the round rejected)
unless that out-of-sample log-loss is lower than the uncalibrated one.

References: Guo, Pleiss, Sun & Weinberger 2017 (on calibration of modern neural networks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import findings as K
from .. import rundir
from .base import NON_INFERIORITY, champion_post, params_of


def output_layer(model: torch.nn.Module, num_labels: int) -> torch.nn.Linear:
    last = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.out_features == num_labels:
            last = m
    if last is None:
        raise ValueError(f"no output layer with {num_labels} outputs found; calibrate needs a linear head")
    return last


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """T > 0 minimising the mean NLL of softmax(logits / T) (searched on log T)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    if len(y) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> tuple[float, list[dict]]:
    """Expected calibration error and the per-bin (confidence, accuracy, count) of the top class."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    rows, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            acc, c = float((pred[m] == y[m]).mean()), float(conf[m].mean())
            ece += m.mean() * abs(acc - c)
            rows.append({"low": float(lo), "high": float(hi), "confidence": c, "accuracy": acc, "count": int(m.sum())})
    return float(ece), rows


CV_FOLDS = 5


def cross_fitted(logits: np.ndarray, y: np.ndarray, seed: int, folds: int = CV_FOLDS) -> dict:
    """Log-loss and ECE of softmax(logits) before and after temperature scaling, every example
    scored with a T fitted on the other folds: what calibration does for examples it has not seen."""
    from scipy.special import log_softmax, softmax

    n = len(y)
    k = min(folds, n)
    if k < 2:
        return {"folds": k, "nll_before": None, "nll_after": None, "ece_before": None, "ece_after": None}
    order = np.random.default_rng(seed).permutation(n)
    scaled = np.empty_like(logits)
    temps = []
    for part in np.array_split(order, k):
        rest = np.setdiff1d(order, part)
        t = fit_temperature(logits[rest], y[rest])
        temps.append(t)
        scaled[part] = logits[part] / t
    rows = np.arange(n)
    nll = lambda z: float(-log_softmax(z, axis=1)[rows, y].mean())  # noqa: E731
    return {"folds": k, "temperatures": temps, "nll_before": nll(logits), "nll_after": nll(scaled),
            "ece_before": reliability(softmax(logits, axis=1), y)[0], "ece_after": reliability(softmax(scaled, axis=1), y)[0]}


@dataclass(frozen=True)
class Calibrate:
    name = "calibrate"
    addresses = {K.MISCALIBRATION: 0}
    mode = NON_INFERIORITY
    retrains = False
    requires = ("class_probs",)  # one temperature over one softmax row per example
    record = rundir.CALIBRATION  # the round file its transform() result is also written to

    bins: int = 15

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if "calibrate" in champion_post(inputs):
            return None  # already calibrated: a second temperature would be 1
        return cls()

    def apply(self, recipe, inputs):
        out = recipe.evolve(post=recipe.post + [{"action": self.name, "params": self.params()}])
        out.changes.append({"action": self.name, "post": "temperature scaling on the selection split"})
        return out

    def transform(self, model, post) -> dict:
        """Fold the fitted temperature into `model`'s output layer; return calibration.json's content."""
        from scipy.special import softmax

        logits = np.asarray(post.selection_logits(model), dtype=np.float64)  # (N, C)
        y = post.selection_targets
        t = fit_temperature(logits, y)
        before, bins_before = reliability(softmax(logits, axis=1), y, self.bins)
        after, bins_after = reliability(softmax(logits / t, axis=1), y, self.bins)
        cv = cross_fitted(logits, y, post.cfg.train.seed)
        layer = output_layer(model, len(post.labels))
        with torch.no_grad():
            layer.weight.div_(t)
            if layer.bias is not None:
                layer.bias.div_(t)
        out = {"temperature": t, "ece_before": before, "ece_after": after, "bins_before": bins_before,
               "bins_after": bins_after, "n": int(len(y)), "cross_fitted": cv}
        if cv["nll_after"] is None or cv["nll_after"] >= cv["nll_before"]:
            # The loop's judge rejects a round whose post step says "refused" (see loop/round.py).
            out["refused"] = ("too few selection examples to cross-fit the temperature" if cv["nll_after"] is None else
                              f"cross-fitted log-loss does not improve ({cv['nll_before']:.4f} -> {cv['nll_after']:.4f}): "
                              "the temperature does not carry to examples it was not fitted on")
        return out
