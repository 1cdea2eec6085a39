"""unsupported: numbers, names and capitalised entities in generated outputs that neither the
source nor the reference mentions: the cheap signal of invented content (hallucination).

A reference may name what its source does not (a translation's capitalised German nouns, a
summary's "#Person1#"), so a string either holds counts as supported. An output holding at least
`min_items` unsupported strings is flagged; the evidence lists the most frequent ones. Severity =
the share flagged.

References: Maynez et al. 2020 (faithfulness in abstractive summarisation); Kryscinski et al. 2020
(factual consistency); Nan et al. 2021 (entity-level hallucination).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..findings import UNSUPPORTED_CONTENT
from .base import stored_params
from .outputs import GENERATED, NEEDS, finding, measures


class Unsupported:
    name = "unsupported"
    needs = NEEDS
    requires = GENERATED

    def __init__(self, min_items: int = 1, examples: int = 5):
        self.min_items, self.examples = min_items, examples

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx):
        if self.min_items < 1:
            raise ValueError(f"unsupported.min_items must be >= 1, not {self.min_items}")
        m = measures(ctx)
        items = m["unsupported"]
        count = np.array([len(x) for x in items], dtype=np.float64)
        flagged = count >= self.min_items
        top = Counter(w for x in items for w in x).most_common(10)
        return finding(self, ctx, m, UNSUPPORTED_CONTENT, flagged, count,
                       "name numbers or names that neither their source nor their reference holds",
                       {"min_items": self.min_items, "most_common": [{"item": w, "outputs": c} for w, c in top]},
                       self.examples, extra=lambda i: {"unsupported": items[i][:8]})
