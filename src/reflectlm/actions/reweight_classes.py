"""reweight_classes: weight the loss per class, from the champion's per-class error or from the
class frequencies, so that the classes where the metric is lost count for more.

The per-class error is read from the data the performance check shaped its findings on (its
evidence["shaping"]: by default the training data's out-of-fold predictions), never from the
selection split the challenger is then judged on: weights fitted to which classes were unlucky on
those few examples would win there by regression to the mean, not on new data."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .. import findings as K
from .base import SUPERIORITY, params_of


@dataclass(frozen=True)
class ReweightClasses:
    name = "reweight_classes"
    addresses = {K.CLASS_IMBALANCE: 0, K.HIGH_ERROR_CLASS: 0, K.CONFUSED_PAIR: 2}
    mode = SUPERIORITY
    retrains = True
    requires = ("classes",)

    basis: str = "error"  # "error": 1 - per-class F1 where the findings were read; "frequency": inverse frequency
    power: float = 1.0  # 0: no change ... 1: proportional
    max_weight: float = 4.0  # clip, so one tiny class cannot dominate the loss

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if inputs.finding(K.CLASS_IMBALANCE) is not None and inputs.finding(K.HIGH_ERROR_CLASS) is None:
            return cls(basis="frequency", power=0.5)
        return cls(basis="error", power=1.0) if cls.per_class_f1(inputs) else cls(basis="frequency", power=0.5)

    @staticmethod
    def per_class_f1(inputs) -> dict | None:
        """Per-class F1 of the data the performance check shaped its findings on (module docstring)."""
        f = inputs.finding(K.SELECTION_PERFORMANCE)
        return ((f.evidence.get("shaping") or {}).get("per_class_f1") or None) if f is not None else None

    def apply(self, recipe, inputs):
        labels = list(inputs.labels)
        C = len(labels)
        if C < 2 or len(recipe.train) == 0:
            return recipe.evolve(changes=recipe.changes + [{"action": self.name, "skipped": "fewer than two classes"}])
        pc = self.per_class_f1(inputs)  # None where the check shaped no per-class F1 (word tags)
        if self.basis == "error" and pc:
            raw = np.array([1.0 - pc.get(c, 0.0) for c in labels], dtype=np.float64)
            raw = raw + 0.02  # a perfect class keeps a small weight instead of none
        else:
            counts = Counter(inputs.task.label_counts(recipe.train))  # per entry of the label list
            raw = np.array([1.0 / max(counts.get(c, 0), 1) for c in labels], dtype=np.float64)
        w = raw**self.power
        w = w / w.mean()
        w = np.clip(w, 1.0 / self.max_weight, self.max_weight)
        w = w / w.mean()
        weights = [round(float(x), 4) for x in w]
        out = recipe.set("train.class_weights", weights)
        top = sorted(zip(labels, weights), key=lambda t: -t[1])[:5]
        out.changes.append({"action": self.name, "class_weights": dict(zip(labels, weights)), "heaviest": top})
        return out
