"""adversarial_training: FGM on the word embeddings (train.adversarial_epsilon), against
sensitivity to small input changes (References: Miyato, Dai & Goodfellow 2017)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import findings as K
from .base import SUPERIORITY, params_of


@dataclass(frozen=True)
class AdversarialTraining:
    name = "adversarial_training"
    addresses = {K.NOISE_SENSITIVITY: 1, K.OVERFITTING: None}
    mode = SUPERIORITY
    retrains = True
    requires = ()

    epsilon: float = 1.0  # norm of the embedding-matrix perturbation

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if float(recipe.get("train.adversarial_epsilon")) > 0:
            return None
        return cls()

    def apply(self, recipe, inputs):
        out = recipe.set("train.adversarial_epsilon", self.epsilon)
        out.changes.append({"action": self.name, "epsilon": self.epsilon})
        return out
