"""out_of_scope: messages of no intent that the model answers with one.

Where the selection split holds examples with the out-of-scope label (open_set.label, default
"oos"), this check counts how many the champion turns away and how many it answers with an
intent instead, names the intents that absorb them (with examples: what a team reads to see what
customers ask that no intent covers), and measures how separable they are from the in-scope
messages by the model's own confidence: the AUROC of 1 - the top in-scope probability (MSP, the
baseline detector). A model that already has a detector (open_set.py) is scored by its decisions
and its detector's AUROC (the selection metrics' "open_set" numbers).

Severity = the share of out-of-scope selection examples answered with an intent, when there are
at least `min_examples` of them; the detect_out_of_scope action answers it. No finding when the
data has no out-of-scope label at all.

References: Larson et al. 2019 (out-of-scope intents: in-scope accuracy with out-of-scope
recall); Hendrycks & Gimpel 2017 (maximum softmax probability as the baseline detector).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..findings import OUT_OF_SCOPE
from .base import Finding, Skip, stored_params


class OutOfScope:
    name = "out_of_scope"
    needs = ("selection", "selection_probs")
    requires = ("class_probs",)  # one class per example: "none of these" is one more class

    def __init__(self, min_examples: int = 5, examples: int = 5):
        self.min_examples = min_examples  # fewer out-of-scope selection examples: nothing to judge by
        self.examples = examples  # example messages shown per absorbing intent

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx) -> list[Finding]:
        from sklearn.metrics import roc_auc_score

        ctx.need(*self.needs)
        label = ctx.open_label or "oos"
        if label not in ctx.labels:
            raise Skip(f"the data has no out-of-scope examples (label {label!r}, open_set.label): label messages "
                       "of no intent so in the selection split to measure them")
        ds, probs = ctx.selection, np.asarray(ctx.selection_probs, np.float64)
        k = ctx.labels.index(label)
        oos = np.array([y == label for y in ds.labels], bool)
        n = int(oos.sum())
        detector = (ctx.selection_metrics or {}).get("open_set")
        if n < self.min_examples:
            return [Finding(check=self.name, kind=OUT_OF_SCOPE, severity=0.0,
                            summary=f"{n} out-of-scope selection examples (label {label!r}): too few to measure "
                                    f"(min_examples = {self.min_examples}).",
                            evidence={"n_out_of_scope": n, "label": label}, split="selection")]
        pred = probs.argmax(1)
        caught = pred[oos] == k
        absorbed = Counter(ctx.labels[p] for p in pred[oos][~caught])
        inside = np.delete(probs, k, axis=1)
        msp = 1.0 - inside.max(1) / np.maximum(inside.sum(1), 1e-12)  # the in-scope distribution's top share
        auroc_msp = float(roc_auc_score(oos, msp)) if (~oos).any() else None
        idx = np.flatnonzero(oos)
        by_intent: dict = {}
        for intent, count in absorbed.most_common():
            rows = [i for i in idx if ctx.labels[pred[i]] == intent][: self.examples]
            by_intent[intent] = {"count": int(count), "examples": [
                {"id": ds.ids[i], "text": ds.texts[i][:200], "confidence": float(probs[i, pred[i]])} for i in rows]}
        recall = float(caught.mean())
        top = ", ".join(f"{name} ({v['count']})" for name, v in list(by_intent.items())[:3])
        how = (f"the {detector['detector']} detector turns away {int(caught.sum())} of {n}" if detector
               else f"the model has no out-of-scope detector and predicts {label!r} for {int(caught.sum())} of {n}")
        sep = f"; MSP separates them with AUROC {auroc_msp:.3f}" if auroc_msp is not None else ""
        if detector and detector.get("auroc") is not None:
            sep += f", the detector with {detector['auroc']:.3f}"
        summary = (f"{n - int(caught.sum())} of {n} out-of-scope selection messages are answered with an intent "
                   f"({how}); most go to {top or '-'}{sep}.")
        return [Finding(
            check=self.name, kind=OUT_OF_SCOPE, severity=1.0 - recall, summary=summary,
            evidence={"label": label, "n_out_of_scope": n, "n_in_scope": int((~oos).sum()),
                      "caught": int(caught.sum()), "recall": recall, "absorbed_by": by_intent,
                      "auroc_msp": auroc_msp, "detector": detector},
            split="selection")]
