"""correct_noise: forward loss correction (Patrini et al. 2017) - train through the label noise
instead of around it.

Confident learning (Northcutt et al. 2021) estimates from the out-of-fold probabilities how the
labels are wrong, class by class: T[i, j] = P(given label j | true class i) (the label_issues
finding's `noise_rates`). The challenger's loss is the cross-entropy of the given label under
softmax(logits) @ T, so its own softmax is pushed towards the clean posterior, and every example is
kept - nothing is dropped or relabelled on a guess. Classification only.

It trains the base's epochs. Training longer (epochs / the matrix's mean margin T[i, i] -
max_j T[i, j], the share of the signal noisy labels carry; about 5 instead of 3 at 20 % flips) was
measured over three seeds and not adopted (docs/benchmarks.md): the same selection accuracy on
average (0.903 against 0.902) for 67 % more compute, which under the loop's compute budget left no
room for the round that builds on it. A plan that wants longer training pairs it with more_epochs;
each correction records the margin."""

from __future__ import annotations

from dataclasses import dataclass

from .. import findings as K
from .base import SUPERIORITY, params_of, unsupported


@dataclass(frozen=True)
class CorrectNoise:
    name = "correct_noise"
    # First for label noise on the measurement it was chosen by (docs/benchmarks.md): on BANKING77
    # with 20 % nearest-class flips (seed 0), forward correction alone took the selection accuracy
    # from 0.872 to 0.900 (fix_labels + drop_suspects: 0.886). On seed 1 it did not repeat (0.905 ->
    # 0.901); the store's learned action values move it down where it does not pay.
    addresses = {K.LABEL_ISSUES: 0, K.CONFUSED_PAIR: None}
    mode = SUPERIORITY
    retrains = True
    # T is estimated on the base's labels: relabelling or dropping in the same plan would change the
    # labels it describes (and when a later round does, fix_labels / drop_suspects clear it).
    conflicts = ("fix_labels", "drop_suspects")
    requires = ("class_probs",)  # the loss of a class label through a class-by-class noise matrix

    strength: float = 1.0  # 0: no correction ... 1: the estimated noise rates as they are

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        f = inputs.finding(K.LABEL_ISSUES)
        if f is None or not f.evidence.get("noise_rates"):
            return None
        if recipe.get("train.noise_transition"):
            return None  # already corrected for: the same out-of-fold view would give the same matrix
        if float(recipe.get("train.early_learning")) > 0:
            return None  # with early-learning regularisation the model ran away (actions/early_learning.py)
        return cls()

    @staticmethod
    def margin(T) -> float:
        """The mean over classes of T[i, i] - max_{j != i} T[i, j]: how far the noisy labels still
        separate a class from its closest confusion (1 for clean labels; 1 - 2 eta for pair flips at
        rate eta). Recorded with each correction; epochs / margin is the training length that was measured."""
        import numpy as np

        T = np.asarray(T, dtype=np.float64)
        if T.ndim != 2 or T.shape[0] < 2:
            return 1.0
        return float(np.mean(np.diag(T) - (T - np.diag(np.diag(T))).max(axis=1)))

    def apply(self, recipe, inputs):
        from ..diagnose.label_issues import transition_from

        f = inputs.finding(K.LABEL_ISSUES)
        skip = unsupported(inputs, self)
        if skip is not None:
            return recipe.evolve(changes=recipe.changes + [skip])
        if f is None or not f.evidence.get("noise_rates") or len(inputs.labels) < 2:
            return recipe.evolve(changes=recipe.changes + [{"action": self.name,
                                                            "skipped": "no estimated noise rates to correct for"}])
        rates = [dict(r, rate=r["rate"] * self.strength) for r in f.evidence["noise_rates"]]
        T = transition_from(rates, list(inputs.labels))
        out = recipe.set("train.noise_transition", [[round(float(x), 5) for x in row] for row in T])
        noise = 1.0 - float(T.diagonal().mean())
        out.changes.append({"action": self.name, "mean_noise_rate": round(noise, 4),
                            "largest": rates[:10], "strength": self.strength,
                            "margin": round(self.margin(T), 4)})
        return out
