"""unfreeze: train more of the encoder when gradient health says frozen or starved layers hold
the model back (a frozen encoder, or the bottom layers barely moving)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import findings as K
from .base import SUPERIORITY, params_of


@dataclass(frozen=True)
class Unfreeze:
    name = "unfreeze"
    addresses = {K.VANISHING_GRADIENTS: 0, K.VANISHING_UPDATES: 0, K.UNDERFITTING: 2}
    mode = SUPERIORITY
    retrains = True
    requires = ()

    freeze: str = "none"  # the new train.freeze
    unfreeze_last_n: int = 2  # with freeze = "last_n"

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        current = recipe.get("train.freeze")
        if current == "none":
            return None  # nothing is frozen: there is nothing to unfreeze
        if current == "head_only":
            return cls(freeze="last_n", unfreeze_last_n=2)
        n = int(recipe.get("train.unfreeze_last_n"))
        return cls(freeze="last_n", unfreeze_last_n=n * 2) if n < 6 else cls(freeze="none")

    def apply(self, recipe, inputs):
        out = recipe.set("train.freeze", self.freeze).set("train.unfreeze_last_n", self.unfreeze_last_n)
        out.changes.append({"action": self.name, "from": recipe.get("train.freeze"), **self.params()})
        return out
