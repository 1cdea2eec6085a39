"""tune_lr: change the learning rate and warm-up from what the descent path and the update sizes
say: lower it when the loss diverges, oscillates or updates are too large; raise it when the
loss creeps down and updates are tiny."""

from __future__ import annotations

from dataclasses import dataclass

from .. import findings as K
from .base import SUPERIORITY, params_of

DOWN = {K.DIVERGENCE: 0.3, K.LR_TOO_HIGH: 0.5, K.EXPLODING_GRADIENTS: 0.5, K.UNSTABLE_UPDATES: 0.5,
        K.OSCILLATION: 0.5, K.GRADIENT_SPIKES: 0.7}
UP = {K.LR_TOO_LOW: 2.0, K.PLATEAU: 1.5, K.UNDERFITTING: 2.0, K.VANISHING_UPDATES: 2.0, K.VANISHING_GRADIENTS: 1.5}


@dataclass(frozen=True)
class TuneLR:
    name = "tune_lr"
    addresses = {K.DIVERGENCE: 0, K.LR_TOO_HIGH: 0, K.EXPLODING_GRADIENTS: 0, K.UNSTABLE_UPDATES: 0,
                 K.OSCILLATION: 0, K.GRADIENT_SPIKES: 0, K.LR_TOO_LOW: 0, K.PLATEAU: 0, K.UNDERFITTING: 1,
                 K.VANISHING_UPDATES: 1, K.VANISHING_GRADIENTS: 2}
    mode = SUPERIORITY
    retrains = True
    requires = ()

    factor: float = 0.5  # new lr = factor * lr (and the head's rate likewise)
    warmup_ratio: float | None = None  # None: keep

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        down = [f for f in inputs.findings if f.kind in DOWN and f.severity > 0]
        up = [f for f in inputs.findings if f.kind in UP and f.severity > 0]
        if down:  # instability outranks slowness: a diverging run cannot be sped up
            worst = max(down, key=lambda f: f.severity)
            warm = max(0.1, float(recipe.get("train.warmup_ratio")))
            return cls(factor=DOWN[worst.kind], warmup_ratio=warm)
        if up:
            worst = max(up, key=lambda f: f.severity)
            return cls(factor=UP[worst.kind])
        return None

    def apply(self, recipe, inputs):
        lr = float(recipe.get("train.lr"))
        out = recipe.set("train.lr", lr * self.factor)
        head = float(recipe.get("train.head_lr") or 0.0)
        if head:
            out = out.set("train.head_lr", head * self.factor)
        if self.warmup_ratio is not None:
            out = out.set("train.warmup_ratio", self.warmup_ratio)
        out.changes.append({"action": self.name, "lr": [lr, lr * self.factor], "head_lr": [head, head * self.factor],
                            "warmup_ratio": self.warmup_ratio})
        return out
