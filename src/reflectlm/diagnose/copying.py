"""copying: generated outputs that are largely their source: an untranslated sentence, or an
extract pasted for a summary.

Measured as the share of the output's word 4-grams found in the source (copy_rate); an output over
`threshold` is flagged. A translation shares few 4-grams with its source in another language, a
summary paraphrases; high overlap is the copy. Severity = the share flagged.

References: See et al. 2017 (copying in abstractive summarisation); Grusky et al. 2018
(extractive fragment density).
"""

from __future__ import annotations

from ..findings import COPYING
from .base import stored_params
from .outputs import GENERATED, NEEDS, finding, measures


class Copying:
    name = "copying"
    needs = NEEDS
    requires = GENERATED

    def __init__(self, threshold: float = 0.6, examples: int = 5):
        self.threshold, self.examples = threshold, examples

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx):
        if not 0 < self.threshold <= 1:
            raise ValueError(f"copying.threshold must be in (0, 1], not {self.threshold}")
        m = measures(ctx)
        rate = m["copy_rate"]
        flagged = (rate > self.threshold) & ~m["empty"]
        return finding(self, ctx, m, COPYING, flagged, rate,
                       f"copy their source (over {self.threshold:.0%} of their word 4-grams)",
                       {"threshold": self.threshold, "mean_copy_rate": float(rate.mean()) if len(rate) else None},
                       self.examples)
