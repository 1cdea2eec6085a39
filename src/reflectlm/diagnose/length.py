"""length: generated outputs that are empty, far shorter or far longer than their reference.

An output under `short` times its reference's length (the mean over references) leaves content
out; one over `long` times rambles (a zero-shot model's usual fault) and loses precision; an empty
one scores nothing. Severity = the share of selection outputs flagged.

References: Wu et al. 2016 (length normalisation in decoding); Murray & Chiang 2018 (the beam
search length problem).
"""

from __future__ import annotations

import numpy as np

from ..findings import LENGTH_ERRORS
from .base import stored_params
from .outputs import GENERATED, NEEDS, finding, measures


class Length:
    name = "length"
    needs = NEEDS
    requires = GENERATED

    def __init__(self, short: float = 0.5, long: float = 2.0, examples: int = 5):
        self.short, self.long, self.examples = short, long, examples

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx):
        if not 0 < self.short < 1 < self.long:
            raise ValueError(f"length needs 0 < short < 1 < long (got short={self.short}, long={self.long})")
        m = measures(ctx)
        r = np.nan_to_num(m["length_ratio"], nan=1.0)
        empty, short, long = m["empty"], (r < self.short) & ~m["empty"], r > self.long
        flagged = empty | short | long
        off = np.where(r > 1, r, 1.0 / np.maximum(r, 1e-3))  # how far from the reference's length, either way
        finite = m["length_ratio"][np.isfinite(m["length_ratio"])]
        ev = {"empty": int(empty.sum()), "too_short": int(short.sum()), "too_long": int(long.sum()),
              "median_length_ratio": float(np.median(finite)) if len(finite) else None,
              "short": self.short, "long": self.long}
        return finding(self, ctx, m, LENGTH_ERRORS, flagged, off,
                       f"are empty or off their reference's length ({ev['empty']} empty, {ev['too_short']} under "
                       f"{self.short}x, {ev['too_long']} over {self.long}x)", ev, self.examples,
                       extra=lambda i: {"length_ratio": round(float(r[i]), 3)})
