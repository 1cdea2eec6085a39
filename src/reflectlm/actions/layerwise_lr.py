"""layerwise_lr: layer-wise learning-rate decay (each layer below the top gets `decay` times the
rate of the one above), when the lower layers' updates are too large or too small relative to
the top (References: Howard & Ruder 2018, ULMFiT discriminative fine-tuning)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import findings as K
from .base import SUPERIORITY, params_of


@dataclass(frozen=True)
class LayerwiseLR:
    name = "layerwise_lr"
    addresses = {K.VANISHING_GRADIENTS: 1, K.VANISHING_UPDATES: 2, K.UNSTABLE_UPDATES: None}
    mode = SUPERIORITY
    retrains = True
    requires = ()

    decay: float = 0.8

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if recipe.get("model.kind") != "transformer":
            return None
        current = float(recipe.get("train.layerwise_lr_decay"))
        if inputs.finding(K.VANISHING_GRADIENTS, K.VANISHING_UPDATES) is not None:
            # the lower layers barely move: decay less (closer to 1); at 1 there is nothing to undo
            return cls(decay=round(min(1.0, current + 0.1), 3)) if current < 1.0 else None
        return cls(decay=round(current * 0.85, 3)) if current > 0.5 else None

    def apply(self, recipe, inputs):
        out = recipe.set("train.layerwise_lr_decay", self.decay)
        out.changes.append({"action": self.name, "from": recipe.get("train.layerwise_lr_decay"), "to": self.decay})
        return out
