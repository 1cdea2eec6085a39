"""tune_decoding: choose how a generator decodes (greedy or beam search, no-repeat n-grams, length
penalty, and, when asked for, minimum-Bayes-risk decoding over samples) on the selection split, for the champion's trained model: no training.

Every candidate setting decodes the whole selection split once. The best by the run's metric
becomes the model's decoding (the bundle's data.* decoding options, which predict, serve and
export then use), and later challengers keep the step, so each re-tunes its own decoding.

Picking the best of several settings on the split that then judges it would favour it by
selection alone, so the choice is also cross-fitted: each of CV_FOLDS folds of the selection split
is decoded with the setting that scores best on the other folds, and the step is refused (the
round rejected) unless that out-of-sample score beats the current setting's. The A/B test then
judges the chosen setting against the champion as for any other challenger.

References: Freitag & Al-Onaizan 2017 (beam search strategies for NMT); Kumar & Byrne 2004 and
Freitag et al. 2022, 2023 (MBR decoding, epsilon sampling for its candidates); Paulus et al. 2018 (the
no-repeat trigram constraint against repetition in summaries); Wu et al. 2016 (length penalty).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from .. import findings as K
from .base import SUPERIORITY, champion_post, params_of

CV_FOLDS = 5
DECODING_KEYS = ("num_beams", "no_repeat_ngram_size", "length_penalty", "mbr_samples")


@dataclass(frozen=True)
class TuneDecoding:
    name = "tune_decoding"
    addresses = {K.ERROR_KINDS: 0, K.UNDERFITTING: None, K.REPETITION: 0, K.LENGTH_ERRORS: 0}
    mode = SUPERIORITY
    retrains = False
    requires = ("generates",)

    beams: tuple[int, ...] = (1, 4)  # 1: greedy
    no_repeat_ngram: tuple[int, ...] = (0, 3)  # 0: off
    length_penalty: tuple[float, ...] = (1.0,)  # beam search only
    # minimum-Bayes-risk decoding over this many samples, tried on the greedy setting (each decodes
    # the selection split that many times more; e.g. (8,)); empty: not tried
    mbr: tuple[int, ...] = ()

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if "tune_decoding" in champion_post(inputs):
            return None  # tuned already; each later challenger re-tunes its own (the step is kept)
        return cls()

    def apply(self, recipe, inputs):
        if not self.beams or min(self.beams) < 1 or any(n < 0 for n in self.no_repeat_ngram) or any(
                k < 2 for k in self.mbr):
            raise ValueError("tune_decoding.beams must be >= 1, no_repeat_ngram >= 0 (0 turns it off) and mbr >= 2 "
                             "samples")
        out = recipe.evolve(post=recipe.post + [{"action": self.name, "params": self.params()}])
        out.changes.append({"action": self.name, "post": "decoding chosen on the selection split (cross-fitted)",
                            **self.params()})
        return out

    def settings(self, current: dict) -> list[dict]:
        """The current decoding first, then every grid point that differs from it."""
        base = {k: current.get(k, d) or d for k, d in zip(DECODING_KEYS, (1, 0, 1.0, 0))}
        grid = [{"num_beams": b, "no_repeat_ngram_size": n, "length_penalty": lp if b > 1 else 1.0, "mbr_samples": 0}
                for b, n, lp in product(self.beams, self.no_repeat_ngram, self.length_penalty)]
        grid += [{"num_beams": 1, "no_repeat_ngram_size": n, "length_penalty": 1.0, "mbr_samples": k}
                 for n, k in product(self.no_repeat_ngram, self.mbr)]
        out = [base]
        for g in grid:
            if g not in out:
                out.append(g)
        return out

    def transform(self, model, post) -> dict:
        """Decode the selection split with each setting, keep the best in the bundle; the record of
        every setting's score and the cross-fitted check."""
        from ..evaluate import evaluate_bundle
        from ..tasks import get_task

        task, ds, bundle = get_task(post.cfg.data.task), post.splits.selection, post.bundle
        metric = post.cfg.selection_metric
        current = dict(bundle.meta.get("options") or {})
        candidates = self.settings(current)
        outputs = []
        for s in candidates:
            bundle.meta["options"] = {**current, **s}
            outputs.append(evaluate_bundle(bundle, ds, batch_size=post.cfg.train.eval_batch_size,
                                           precision=post.cfg.train.precision, labelled=False).probs)

        def score(idx, outs) -> float:
            return float(task.metrics(ds.subset(idx), [outs[i] for i in idx], [])[metric])

        everyone = np.arange(len(ds))
        scores = [score(everyone, o) for o in outputs]
        best = int(np.argmax(scores))
        cross = self._cross_fitted(outputs, score, len(ds), post.cfg.train.seed)
        chosen = candidates[best]
        bundle.meta["options"] = {**current, **chosen}
        info = {"metric": metric, "candidates": [{**s, metric: v} for s, v in zip(candidates, scores)],
                "chosen": chosen, "before": candidates[0], "selection_before": scores[0],
                "selection_after": scores[best], "cross_fitted": cross}
        if best == 0:
            info["refused"] = "no setting decodes the selection split better than the current one"
        elif cross["score"] is None or cross["score"] <= scores[0]:
            info["refused"] = ("too few selection examples to cross-fit the choice" if cross["score"] is None else
                               f"cross-fitted {metric} does not improve ({scores[0]:.4f} -> {cross['score']:.4f}): "
                               "the best setting was best on these examples only")
        return info

    @staticmethod
    def _cross_fitted(outputs: list, score, n: int, seed: int) -> dict:
        """Each fold decoded with the setting best on the other folds; the whole split's score of that."""
        k = min(CV_FOLDS, n)
        if k < 2:
            return {"folds": k, "score": None, "picked": []}
        order = np.random.default_rng(seed).permutation(n)
        mixed: list = [None] * n
        picked = []
        for part in np.array_split(order, k):
            rest = np.setdiff1d(order, part)
            pick = int(np.argmax([score(rest, o) for o in outputs]))
            picked.append(pick)
            for i in part:
                mixed[i] = outputs[pick][i]
        return {"folds": k, "score": score(np.arange(n), mixed), "picked": picked}
