"""early_learning: early-learning regularisation (Liu et al. 2020, ELR) - keep the model from
memorising the labels it got wrong, without deciding which ones they are.

A network fitting noisy labels first learns the clean majority and only later memorises the
wrong labels. ELR keeps, per training example, a moving average t of the model's own predictions
and adds lambda * log(1 - <p, t>) to the loss (train.early_learning): for an example whose given
label is wrong, that term's gradient cancels much of the cross-entropy's pull towards the wrong
class while the early predictions point elsewhere. Every example is kept, nothing is relabelled
on a guess, and it costs no extra training - so it also goes with a cleaning plan (fix_labels,
drop_suspects), against the noise the cleaning missed. Classification only."""

from __future__ import annotations

from dataclasses import dataclass

from .. import findings as K
from .base import SUPERIORITY, params_of, unsupported


@dataclass(frozen=True)
class EarlyLearning:
    name = "early_learning"
    addresses = {K.LABEL_ISSUES: 1, K.HARD_TO_LEARN: 2}
    mode = SUPERIORITY
    retrains = True
    # Never with forward correction, in one plan or on a base trained through a noise matrix
    # (correct_noise refuses the other way round). Measured (docs/benchmarks.md, tenth session): on
    # BANKING77 seed 0, early_learning + adversarial_training on a correct_noise champion fell from
    # 0.902 to 0.822 selection accuracy (-7.7 points on test), while the same plan on an uncorrected
    # base gained. With the loss taken through T, the cross-entropy no longer anchors the model's
    # own softmax, and the term's pull towards its own predictions runs away.
    conflicts = ("correct_noise",)
    requires = ("class_probs",)  # the targets are moving averages of one softmax row per example

    # The paper's CIFAR-10 setting (asymmetric noise included); not tuned here.
    strength: float = 3.0  # lambda
    beta: float = 0.7  # how much of a target is kept at each visit

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if inputs.finding(K.LABEL_ISSUES) is None and inputs.finding(K.HARD_TO_LEARN) is None:
            return None
        if float(recipe.get("train.early_learning")) > 0:
            return None  # already regularised so: the same round again
        if recipe.get("train.noise_transition"):
            return None  # trained through a noise matrix: the combination failed (see conflicts)
        return cls()

    def apply(self, recipe, inputs):
        skip = unsupported(inputs, self)
        if skip is not None:
            return recipe.evolve(changes=recipe.changes + [skip])
        out = recipe.set("train.early_learning", self.strength).set("train.early_learning_beta", self.beta)
        out.changes.append({"action": self.name, **self.params()})
        return out
