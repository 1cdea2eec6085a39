"""early_stop: stop at the epoch the selection metric peaked (and keep early stopping on), when
the run over-fits or its best epoch came early - the same model for less compute."""

from __future__ import annotations

from dataclasses import dataclass

from .. import findings as K
from .base import SUPERIORITY, params_of


@dataclass(frozen=True)
class EarlyStop:
    name = "early_stop"
    addresses = {K.OVERFITTING: 0, K.PEAK_EPOCH: 0}
    mode = SUPERIORITY
    retrains = True
    requires = ()
    conflicts = ("more_epochs",)  # fewer epochs against more

    epochs: int = 3  # the new epoch count (the champion's best epoch)
    patience: int = 1

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        hist = inputs.history or []
        key = next((k for k in (hist[-1] if hist else {}) if k.startswith("selection_") and k != "selection_loss"), None)
        if not key:
            return None
        vals = [h[key] if h[key] is not None else float("-inf") for h in hist]
        best = int(max(range(len(vals)), key=lambda i: (vals[i], -i))) + 1
        if best >= len(hist):
            return None  # the last epoch was the best: nothing to stop early
        return cls(epochs=max(1, best), patience=1)

    def apply(self, recipe, inputs):
        out = recipe.set("train.epochs", self.epochs).set("train.early_stopping_patience", self.patience)
        out.changes.append({"action": self.name, "epochs": [recipe.get("train.epochs"), self.epochs]})
        return out
