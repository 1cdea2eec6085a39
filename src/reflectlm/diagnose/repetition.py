"""repetition: generated outputs caught in n-gram loops.

Measured as the share of the output's word trigrams that repeat an earlier one; an output over
`threshold` is flagged. Loops are a decoding failure of small models under greedy search, which a
no-repeat n-gram constraint (the tune_decoding action) stops. Severity = the share flagged.

References: Holtzman et al. 2020 (neural text degeneration); Paulus et al. 2018 (no-repeat
trigrams).
"""

from __future__ import annotations

from ..findings import REPETITION
from .base import stored_params
from .outputs import GENERATED, NEEDS, finding, measures


class Repetition:
    name = "repetition"
    needs = NEEDS
    requires = GENERATED

    def __init__(self, threshold: float = 0.3, examples: int = 5):
        self.threshold, self.examples = threshold, examples

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx):
        if not 0 < self.threshold < 1:
            raise ValueError(f"repetition.threshold must be in (0, 1), not {self.threshold}")
        m = measures(ctx)
        rep = m["repetition"]
        flagged = rep > self.threshold
        return finding(self, ctx, m, REPETITION, flagged, rep,
                       f"loop (over {self.threshold:.0%} of their word trigrams repeat)",
                       {"threshold": self.threshold, "mean_repetition": float(rep.mean()) if len(rep) else None},
                       self.examples)
