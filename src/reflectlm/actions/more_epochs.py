"""more_epochs: train longer when the model is still improving at its last epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import findings as K
from .base import SUPERIORITY, params_of


@dataclass(frozen=True)
class MoreEpochs:
    name = "more_epochs"
    addresses = {K.UNDERFITTING: 0, K.PLATEAU: 1, K.LR_TOO_LOW: 1, K.ERROR_KINDS: 0, K.AMBIGUOUS: 1,
                 K.WRONG_LANGUAGE: 0}
    mode = SUPERIORITY
    retrains = True
    requires = ()

    factor: float = 1.5  # epochs *= factor (at least one more)
    max_epochs: int = 30

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        epochs = int(recipe.get("train.epochs"))
        if epochs >= cls.max_epochs:
            return None
        hist = inputs.history or []
        if hist and len(hist) >= 2:
            key = next((k for k in hist[-1] if k.startswith("selection_") and k != "selection_loss"), None)
            if key and hist[-1][key] is not None and max(h[key] or 0 for h in hist) > hist[-1][key] + 1e-9:
                return None  # the best epoch was not the last: more epochs will not help
        return cls()

    def estimate(self, n: int, epochs: int, extra: int) -> tuple[int, int, int]:
        # (training examples, epochs, examples processed outside fine-tuning) once this runs
        return n, min(self.max_epochs, max(epochs + 1, math.ceil(epochs * self.factor))), extra

    def apply(self, recipe, inputs):
        epochs = int(recipe.get("train.epochs"))
        new = min(self.max_epochs, max(epochs + 1, math.ceil(epochs * self.factor)))
        out = recipe.set("train.epochs", new)
        out.changes.append({"action": self.name, "epochs": [epochs, new]})
        return out
