"""transfer: start the challenger from an earlier model instead of the base model - the champion
(continue training on the updated data, usually with fewer epochs) or another run's model with
the same task and labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import findings as K
from .base import SUPERIORITY, params_of, warm_start


@dataclass(frozen=True)
class Transfer:
    name = "transfer"
    addresses = {K.UNDERFITTING: 4, K.PLATEAU: None}
    mode = SUPERIORITY
    retrains = True
    requires = ()
    # It warm-starts from the champion with its own short schedule: the schedule and initialisation
    # changes of these would fight it, and relabelled data would not match the model it starts from.
    conflicts = ("tune_lr", "more_epochs", "early_stop", "fix_labels", "domain_pretraining", "regularize")

    source: str = "champion"  # "champion", or a model bundle / run directory
    epochs: int | None = None  # None: keep the recipe's epoch count
    lr_factor: float = 0.5  # a trained body needs smaller steps than a fresh one

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if inputs.champion_model is None or recipe.get("model.kind") != "transformer":
            return None
        return cls(epochs=max(1, int(recipe.get("train.epochs")) // 2))

    def estimate(self, n: int, epochs: int, extra: int) -> tuple[int, int, int]:
        return n, self.epochs or epochs, extra

    def apply(self, recipe, inputs):
        src = inputs.champion_model if self.source == "champion" else Path(self.source)
        if src is None:
            return recipe.evolve(changes=recipe.changes + [{"action": self.name, "skipped": "no champion model"}])
        out = warm_start(recipe, src, self.lr_factor, self.epochs)
        out.changes.append({"action": self.name, "from": str(src), "epochs": self.epochs, "lr_factor": self.lr_factor})
        return out
