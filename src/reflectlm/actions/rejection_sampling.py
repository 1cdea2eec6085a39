"""rejection_sampling: self-improvement by sampling (ReST / STaR-style rejection-sampling
fine-tuning) for a generator. The champion samples k answers for a random subset of the training
inputs; each is scored against the input's reference by the task's own metric; the best one is
kept where it scores above the champion's greedy answer (by more than min_gain) and at least the
median greedy score of the subset, and is added to the training data as a new pair (source, kept
answer) with a loss weight. The challenger warm-starts from the champion on the enlarged data
with a short schedule, as transfer does.

The kept answers are the model's own (on-policy) outputs that the metric prefers to what it
decodes now: training on them moves its decoding towards them. The references still train too,
so the round also continues the champion's supervised training; the A/B test judges the result.

References: Gulcehre et al. 2023 (ReST); Singh et al. 2024 (ReST-EM); Zelikman et al. 2022 (STaR);
Dong et al. 2023 (RAFT, reward-ranked fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import findings as K
from .. import rundir
from .base import SUPERIORITY, concat, params_of, unsupported, warm_start


@dataclass(frozen=True)
class RejectionSampling:
    name = "rejection_sampling"
    addresses = {K.ERROR_KINDS: 1, K.PLATEAU: 2, K.UNDERFITTING: None, K.COPYING: 0, K.UNSUPPORTED_CONTENT: 1,
                 K.LENGTH_ERRORS: 1, K.WRONG_LANGUAGE: 1, K.REPETITION: 2}
    mode = SUPERIORITY
    retrains = True
    requires = ("generates",)
    unprompted = ("listed", K.ERROR_KINDS)  # named in loop.actions: tried even where no error kind stands out
    # It warm-starts from the champion with its own short schedule (as transfer does).
    conflicts = ("transfer", "more_epochs", "tune_lr", "early_stop", "tune_hparams")

    inputs: int = 256  # training inputs sampled for
    k: int = 4  # samples per input
    temperature: float = 0.8
    top_p: float = 0.95
    min_gain: float = 0.0  # the kept sample's score over the greedy answer's, at least (strictly above)
    weight: float = 1.0  # loss weight of the kept pairs (references weigh 1)
    epochs: int = 1  # the warm start's epochs
    lr_factor: float = 0.5  # a trained model needs smaller steps than a fresh one

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if inputs.champion_model is None or "generates" not in inputs.task.capabilities:
            return None
        return cls()

    def estimate(self, n: int, epochs: int, extra: int) -> tuple[int, int, int]:
        # at most `inputs` kept pairs; the sampling's decoding is not training
        return n + self.inputs, self.epochs, extra

    def apply(self, recipe, inputs):
        skip = unsupported(inputs, self)
        if skip is not None:
            return recipe.evolve(changes=recipe.changes + [skip])
        if self.k < 1 or self.inputs < 1 or self.epochs < 1 or not 0 < self.lr_factor <= 1:
            raise ValueError("rejection_sampling needs inputs >= 1, k >= 1, epochs >= 1 and 0 < lr_factor <= 1")
        if inputs.champion_model is None or not (Path(inputs.champion_model) / rundir.BUNDLE).is_file():
            return recipe.evolve(changes=recipe.changes + [{"action": self.name, "skipped": "no champion model"}])
        from ..modeling import load_bundle
        from .candidates import draw

        bundle = load_bundle(inputs.champion_model)
        c = draw(bundle, recipe.train, n=self.inputs, k=self.k, temperature=self.temperature, top_p=self.top_p,
                 seed=inputs.seed, batch_size=int(recipe.get("train.eval_batch_size")),
                 precision=recipe.get("train.precision"))
        kept, best = self.select(c)
        new = c.ds.subset(kept)
        new.ids = [f"{i}~rs" for i in new.ids]  # a new pair beside the reference pair
        new.labels = [[c.samples[i][int(best[i])]["text"]] for i in kept]
        new.weights = np.full(len(kept), self.weight, dtype=np.float32)
        out = warm_start(recipe, inputs.champion_model, self.lr_factor, self.epochs, train=concat(recipe.train, new))
        gain = (c.sample_scores[kept, best[kept]] - c.greedy_scores[kept]) if kept else np.zeros(0)
        out.changes.append({"action": self.name, **c.record(), "kept": len(kept),
                            "kept_mean_gain": float(gain.mean()) if len(gain) else None,
                            "ids": [c.ds.ids[i] for i in kept][:50], "epochs": self.epochs,
                            "lr_factor": self.lr_factor})
        return out

    def select(self, c) -> tuple[list[int], np.ndarray]:
        """The inputs whose best sample beats the greedy answer by more than min_gain and reaches the
        median greedy score; and every input's best sample (index into its k)."""
        if not len(c.greedy):
            return [], np.zeros(0, dtype=int)
        best = c.sample_scores.argmax(1)
        top = c.sample_scores.max(1)
        floor = float(np.median(c.greedy_scores))
        keep = (top > c.greedy_scores + self.min_gain) & (top >= floor)
        keep &= np.array([bool(c.samples[i][int(best[i])]["text"].strip()) for i in range(len(best))])
        return [int(i) for i in np.flatnonzero(keep)], best
