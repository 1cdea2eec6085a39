"""regularize: more weight decay, dropout and label smoothing, against over-fitting, over-confidence
and ambiguous examples forcing the model's hand."""

from __future__ import annotations

from dataclasses import dataclass

from .. import findings as K
from .base import SUPERIORITY, params_of


@dataclass(frozen=True)
class Regularize:
    name = "regularize"
    addresses = {K.OVERFITTING: 1, K.AMBIGUOUS: 0, K.MISCALIBRATION: 1, K.CV_SPREAD: 0, K.EXPLODING_GRADIENTS: 1,
                 K.GRADIENT_SPIKES: 1}
    mode = SUPERIORITY
    retrains = True
    requires = ()

    weight_decay: float = 0.05
    dropout: float | None = 0.15  # None: keep the model's
    label_smoothing: float = 0.1

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        wd = max(0.05, 2 * float(recipe.get("train.weight_decay")))
        ls = 0.1 if float(recipe.get("train.label_smoothing")) < 0.1 else min(0.3, recipe.get("train.label_smoothing") + 0.1)
        dropout = None  # the LSTM baseline's dropout is model.lstm.dropout, left alone
        if recipe.get("model.kind") == "transformer":
            cur = recipe.get("model.dropout")
            cur = 0.1 if cur == "pretrained" else float(cur)  # 0.1: BERT-family models' own
            dropout = round(min(0.5, max(0.15, cur + 0.05)), 3)
        return cls(weight_decay=round(wd, 4), dropout=dropout, label_smoothing=round(ls, 3))

    def apply(self, recipe, inputs):
        out = recipe.set("train.weight_decay", self.weight_decay).set("train.label_smoothing", self.label_smoothing)
        if self.dropout is not None:
            out = out.set("model.dropout", self.dropout)
        out.changes.append({"action": self.name, **self.params()})
        return out
