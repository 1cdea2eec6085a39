"""self_training: add pool examples the champion labels with high confidence, as pseudo-labels
with a reduced loss weight, most confident first, up to a cap; under-represented classes are
not starved, because the cap is split across the predicted classes.

References: Mukherjee & Awadallah 2020 (uncertainty-aware self-training); Xie et al. 2020 (UDA)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import findings as K
from .base import SUPERIORITY, concat, drop_ids, inputs_of, params_of


@dataclass(frozen=True)
class SelfTraining:
    name = "self_training"
    addresses = {K.CLASS_IMBALANCE: 2, K.HIGH_ERROR_CLASS: 3, K.CV_SPREAD: None}
    mode = SUPERIORITY
    retrains = True
    requires = ("class_probs",)  # a pseudo-label is the champion's most probable class

    threshold: float = 0.9  # minimum champion probability of the pseudo-label
    cap: int = 2000  # at most this many pseudo-labelled examples per round
    weight: float = 0.5  # their loss weight (gold examples weigh 1)

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if recipe.pool is None or len(recipe.pool) == 0 or inputs.predict is None:
            return None
        return cls()

    def estimate(self, n: int, epochs: int, extra: int) -> tuple[int, int, int]:
        return n + self.cap, epochs, extra  # at most cap pseudo-labels

    def apply(self, recipe, inputs):
        pool = recipe.pool
        if pool is None or len(pool) == 0 or inputs.predict is None:
            return recipe.evolve(changes=recipe.changes + [{"action": self.name, "skipped": "no pool"}])
        probs = np.asarray(inputs.predict(inputs_of(inputs.task, pool)), dtype=np.float64)  # (P, C)
        conf, pred = probs.max(1), probs.argmax(1)
        ok = np.flatnonzero(conf >= self.threshold)
        # Round-robin over predicted classes, most confident first within each, up to the cap.
        by_class = {c: sorted(ok[pred[ok] == c], key=lambda i: (-conf[i], i)) for c in np.unique(pred[ok])}
        picked: list[int] = []
        depth = 0
        while len(picked) < self.cap and any(depth < len(v) for v in by_class.values()):
            for c in sorted(by_class):
                if depth < len(by_class[c]) and len(picked) < self.cap:
                    picked.append(int(by_class[c][depth]))
            depth += 1
        new = pool.subset(picked)
        new.labels = [inputs.labels[pred[i]] for i in picked]
        new.weights = np.full(len(picked), self.weight, dtype=np.float32)
        out = recipe.evolve(train=concat(recipe.train, new), pool=drop_ids(pool, set(new.ids)))
        out.changes.append({"action": self.name, "pseudo_labelled": len(picked), "eligible": int(len(ok)),
                            "threshold": self.threshold, "mean_confidence": float(conf[picked].mean()) if picked else None})
        return out
