"""augment_noise: add noisy copies of training examples (keyboard typos, casing, swapped
letters, punctuation: the noise the robustness check measures), so the model learns to ignore
it. NER copies keep their tags: the noise changes letters inside words, never the word count."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import findings as K
from .base import SUPERIORITY, concat, params_of


@dataclass(frozen=True)
class AugmentNoise:
    name = "augment_noise"
    addresses = {K.NOISE_SENSITIVITY: 0, K.OVERFITTING: 2, K.LENGTH_OUTLIERS: 1}
    mode = SUPERIORITY
    retrains = True
    requires = ()

    rate: float = 0.1  # share of words changed in a noisy copy
    fraction: float = 0.5  # share of training examples that get a noisy copy
    kinds: tuple = ("typos", "casing", "swaps", "punctuation")
    weight: float = 1.0  # loss weight of a copy

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if any("~noise" in str(i) for i in recipe.train.ids):
            return None  # this training set already carries noisy copies
        f = inputs.finding(K.NOISE_SENSITIVITY)
        worst = (f.evidence.get("worst") if f is not None else None) or None
        kinds = (worst,) if isinstance(worst, str) and worst in cls.kinds else cls.kinds
        return cls(kinds=kinds)

    def apply(self, recipe, inputs):
        from ..diagnose.robustness import perturb

        train = recipe.train
        originals = [k for k, i in enumerate(train.ids) if "~noise" not in str(i)]
        if not originals:
            return recipe.evolve(changes=recipe.changes + [{"action": self.name, "skipped": "no training examples"}])
        rng = np.random.default_rng(inputs.seed)
        # Copies are made of originals only, so every copy id ("<id>~noise") is unique.
        idx = np.sort(rng.choice(originals, size=max(1, int(self.fraction * len(originals))), replace=False))
        copy = train.subset(idx)
        kinds = list(self.kinds)
        new_tokens, new_texts = [], []
        for k, i in enumerate(idx):
            how = kinds[k % len(kinds)]
            words = train.tokens[i] if train.tokens is not None else train.texts[i].split(" ")
            noisy = perturb(list(words), how, self.rate, rng, keep_spaces=train.tokens is not None)
            # NER: a word must stay one non-empty token so its tag still lines up.
            noisy = [w if w.strip() and " " not in w else o for w, o in zip(noisy, words)] if train.tokens is not None else noisy
            new_tokens.append(noisy)
            new_texts.append(" ".join(noisy))
        # The copy keeps every other input of its original (a question's context and answers).
        copy.ids, copy.texts = [f"{i}~noise" for i in copy.ids], new_texts
        copy.tokens = new_tokens if train.tokens is not None else None
        copy.weights, copy.confidence = np.full(len(idx), self.weight, dtype=np.float32), None
        out = recipe.evolve(train=concat(train, copy))
        out.changes.append({"action": self.name, "copies": len(idx), "kinds": kinds, "rate": self.rate})
        return out
