"""language: translations not in the language asked for (data.target_lang).

Each output's language is identified by a language-identification library (lingua, restricted to
the source and target languages), not a heuristic; an output identified as another language is
flagged (in the source's language: usually untranslated). Outputs too short to identify are left
out. Skipped for a task that asks for no output language. Severity = the share flagged.

References: Zhang et al. 2020 (off-target translation in multilingual NMT); lingua-py.
"""

from __future__ import annotations

import numpy as np

from ..findings import WRONG_LANGUAGE
from .base import Skip, stored_params
from .outputs import GENERATED, NEEDS, finding, measures


class Language:
    name = "language"
    needs = NEEDS
    requires = GENERATED

    def __init__(self, examples: int = 5):
        self.examples = examples

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx):
        m = measures(ctx)
        lang = m["language"]
        if lang is None:
            raise Skip("the task asks for no output language (or the language library, lingua, is missing: "
                       "pip install 'reflectlm[generate]')")
        found = lang["found"]
        flagged = np.array([f is not None and f != lang["expected"] for f in found], dtype=bool)
        in_source = int(sum(1 for f in found if f == lang["source"]))
        return finding(self, ctx, m, WRONG_LANGUAGE, flagged, 1.0 - m["score"],
                       f"are not in {lang['expected']!r} ({in_source} in the source's {lang['source']!r})",
                       {"expected": lang["expected"], "in_source_language": in_source,
                        "unidentified": int(sum(1 for f in found if f is None))}, self.examples,
                       extra=lambda i: {"language": found[i]})
