"""drop_suspects: remove training examples that are probably mislabelled (and were not
relabelled by fix_labels in the same plan) or hard to learn.

Not for leakage (near_duplicates between the selection and training files): dropping the training
side gives the challenger less data and judges it on the same leaked selection split, so it can only
lose - it cost a whole round on a public intent set. The finding reports the champion's score on
the de-duplicated part instead, and the fix is the user's (which file the duplicates leave)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import findings as K
from .base import SUPERIORITY, drop_ids, params_of


@dataclass(frozen=True)
class DropSuspects:
    name = "drop_suspects"
    addresses = {K.LABEL_ISSUES: 1, K.HARD_TO_LEARN: 1}
    mode = SUPERIORITY
    retrains = True
    requires = ()

    min_score: float = 0.0  # drop flagged examples whose suspicion score is at least this
    max_fraction: float = 0.2  # never drop more than this share of the training set
    kinds: tuple = (K.LABEL_ISSUES, K.HARD_TO_LEARN)

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        return cls() if inputs.finding(*cls.addresses) is not None else None

    def apply(self, recipe, inputs):
        present = set(recipe.train.ids)
        fixed = {r["id"] for c in recipe.changes for r in c.get("relabels", [])}
        scored: dict[str, float] = {}
        for f in inputs.findings:
            if f.kind not in self.kinds:
                continue
            if f.kind == K.LABEL_ISSUES:
                pairs = {i: (f.scores or {}).get(i, 1.0) for i in f.evidence.get("flagged", [])}
            else:
                pairs = dict(f.scores or {})
            for i, s in pairs.items():
                if i in present and i not in fixed and s >= self.min_score:
                    scored[i] = max(scored.get(i, 0.0), s)
        order = sorted(scored, key=lambda i: (-scored[i], i))[: int(self.max_fraction * len(recipe.train))]
        out = recipe.evolve(train=drop_ids(recipe.train, set(order)))
        if order and out.get("train.noise_transition"):
            # the noise matrix described the labels before this change: training through it now over-corrects
            out = out.set("train.noise_transition", [])
        out.changes.append({"action": self.name, "dropped": len(order), "ids": order})
        return out
