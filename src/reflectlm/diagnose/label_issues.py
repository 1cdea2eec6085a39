"""Label issues: training examples whose given label is probably wrong, ranked, with the label
they probably should have.

Up to three views of each example are pooled, because each fails where another does not:

- out-of-fold probabilities (crossval.out_of_fold; always): a model that never saw the example
  judges its label; confident learning estimates from them how many labels are wrong
  (Northcutt et al. 2021);
- the fine-tuned model's training dynamics (ctx.dynamics, when the run has them): an example
  whose gold label keeps a low probability across epochs is one the model could not learn,
  which mislabelled examples are (data-map confidence, Swayamdipta et al. 2020; a fine-tuned
  LM's fit to each example beats older detectors, Chong et al. 2022);
- the fine-tuned model's own probabilities on the training texts (ctx.predict_texts, when
  given): its view of which *other* class an example belongs to, which the dynamics (gold
  label only) do not record.

How (classification):
1. gold-label probability = mean of the views' gold-label probabilities (the dynamics view is
   the data-map confidence, the mean gold probability over epochs) - a linear opinion pool
   with equal weights; the rest of the mass goes to the other classes in the proportions of
   the mean out-of-fold / model distribution;
2. rank by cleanlab's normalized margin on these probabilities, p(given) - max p(other):
   it is low when another class is clearly preferred, which is what a label confused with a
   neighbouring class looks like (self-confidence alone also flags merely hard examples);
3. flag as many as confident learning estimates are wrong (cleanlab.count.num_label_issues on
   the out-of-fold probabilities, which are out-of-sample as it assumes; the in-sample views
   lean towards the given labels and would skew its per-class thresholds), most suspect first.
No cut-off is fixed in advance. Measured on 4,500 BANKING77 examples with 10% of labels moved
to the nearest class (a development seed and subset, not the benchmark's), AUROC / precision
at the estimated count: out-of-fold self-confidence 0.946 / 0.62, its normalized margin 0.969 /
0.76, + dynamics 0.975 / 0.78, + the model's probabilities 0.978 / 0.80. The mean loss over
epochs ranked worse than the mean probability (AUROC 0.900 vs 0.940): the first epoch, with a
random head, dominates a mean of log-probabilities. benchmarks/label_issues.py (full BANKING77,
its own seed, 9,003 examples, 900 flipped): precision 0.84, recall 0.82, AUROC 0.984, against
0.71 / 0.84 / 0.945 for frozen embeddings + cleanlab defaults.

For NER the unit is the sentence: cleanlab.token_classification (the worst token of the
sentence; Wang & Mueller 2022) on the out-of-fold token probabilities pooled, equally, with the
fine-tuned model's own token probabilities on its training sentences; as many sentences are
flagged as it finds sentences with a token issue. The fast out-of-fold head (frozen word vectors)
is a much weaker tagger than the fine-tuned model and misses rare entities, so on its own it
flags every sentence with an entity it cannot find. benchmarks/label_issues_ner.py (WNUT-17,
339 of 3,394 sentences corrupted: type swaps, deleted and spurious entities): out-of-fold alone
flags 1,047 (precision 0.28, recall 0.85, AUROC 0.87); pooled, with the tagger fine-tuned for
3 epochs, 320 (0.64, 0.61, 0.91); for 5 epochs, 144 (0.84, 0.36, 0.90): a tagger that has
learnt more of the wrong tags flags fewer, more surely. Precision is a lower bound (WNUT's own
errors count against it). The sentence-mean gold-tag probability over epochs is not used for
NER: one wrong word barely moves a mean over twenty (it lowered AUROC to 0.84 / 0.90).

References: Northcutt, Jiang & Chuang 2021 (confident learning, JAIR); Swayamdipta et al. 2020
(dataset cartography); Chong, Hong & Lipton 2022 (detecting label errors by using pre-trained
language models); Wang & Mueller 2022 (detecting label errors in token classification data).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..findings import LABEL_ISSUES
from .base import Finding, Skip, stored_params

_EPS = 1e-6
COMBINE = ("mean", "oof")


def dynamics_confidence(ctx, ids: list[str]) -> np.ndarray:
    """(N,) data-map confidence: mean gold-label probability over epochs (Swayamdipta et al. 2020),
    aligned to `ids`; NaN where the run has no record of the example (no dynamics, or the
    example was not trained on)."""
    out = np.full(len(ids), np.nan)
    dyn = ctx.dynamics
    if not dyn or "gold_prob" not in dyn or "ids" not in dyn:
        return out
    gold = np.asarray(dyn["gold_prob"], dtype=np.float64)  # (E, N')
    if gold.ndim != 2 or gold.shape[0] == 0 or gold.shape[1] != len(dyn["ids"]):
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (never trained) stay NaN
        per_example = np.nanmean(gold, axis=0)  # (N',)
    where = {str(i): k for k, i in enumerate(np.asarray(dyn["ids"]).tolist())}
    for n, i in enumerate(ids):
        k = where.get(str(i))
        if k is not None:
            out[n] = per_example[k]
    return np.clip(out, 0.0, 1.0)


def combine_probs(oof: np.ndarray, given: np.ndarray, confidence: np.ndarray | None = None,
                  model: np.ndarray | None = None, how: str = "mean") -> np.ndarray:
    """(N, C) probabilities that pool the views of each example, equal weights.

    oof (N, C) out-of-fold probabilities; confidence (N,) data-map confidence of the given label
    (NaN where unknown); model (N, C) the trained model's own probabilities, or None. The gold
    column is the mean of every view's gold-label probability; the other columns share the rest
    in the proportions of the mean of the full distributions (out-of-fold, model). With neither
    confidence nor model (or how="oof"), the out-of-fold probabilities as they are.
    """
    if how not in COMBINE:
        raise ValueError(f"unknown combination {how!r}; use one of: {', '.join(COMBINE)}")

    def norm(x):
        x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
        return x / np.maximum(x.sum(1, keepdims=True), _EPS)

    P = norm(oof)  # (N, C)
    rows = np.arange(len(P))
    has_conf = confidence is not None and np.isfinite(confidence).any()
    if how == "oof" or (not has_conf and model is None):
        return P
    dists = [P] + ([norm(model)] if model is not None else [])
    golds = [d[rows, given] for d in dists]  # each (N,)
    if has_conf:
        golds.append(np.asarray(confidence, dtype=np.float64))  # NaN where the run has no record
    g = np.nanmean(np.stack(golds), axis=0)  # (N,); the out-of-fold view is always there
    rest = np.mean(dists, axis=0)
    rest[rows, given] = 0.0
    mass = rest.sum(1, keepdims=True)  # (N, 1)
    # Where every view put everything on the gold class there is no other class to prefer:
    # spread the remainder evenly.
    even = np.full_like(rest, 1.0 / max(P.shape[1] - 1, 1))
    even[rows, given] = 0.0
    rest = np.where(mass > _EPS, rest / np.maximum(mass, _EPS), even)
    out = rest * (1.0 - g)[:, None]
    out[rows, given] = g
    return out


def _estimated_count(given: np.ndarray, P: np.ndarray) -> int:
    """Cleanlab's confident-joint estimate of how many labels are wrong (off-diagonal mass)."""
    from cleanlab.count import num_label_issues

    present = np.unique(given)
    if len(present) < 2:
        return 0
    # Classes nobody was given carry no per-class threshold; count over the classes in use.
    sub = P[:, present]
    sub = sub / np.maximum(sub.sum(1, keepdims=True), _EPS)
    remap = np.searchsorted(present, given)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(num_label_issues(remap, sub))


def noise_transition(given: np.ndarray, P: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) confident learning's estimate of P(given label = j | true class = i) from out-of-fold
    probabilities (cleanlab.count.estimate_latent on the calibrated confident joint). Rows of
    classes nobody was given stay the identity."""
    from cleanlab.count import compute_confident_joint, estimate_latent

    T = np.eye(n_classes)
    present = np.unique(given)
    if len(present) < 2:
        return T
    sub = P[:, present]
    sub = sub / np.maximum(sub.sum(1, keepdims=True), _EPS)
    remap = np.searchsorted(present, given)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, noise_matrix, _ = estimate_latent(compute_confident_joint(remap, sub), remap)  # [given][true]
    T[np.ix_(present, present)] = np.asarray(noise_matrix, dtype=np.float64).T
    return T / T.sum(1, keepdims=True)


def noise_rates(T: np.ndarray, labels: list[str], floor: float = 0.005) -> list[dict]:
    """The off-diagonal entries of a transition matrix worth reading, largest first."""
    rows = [{"true": labels[i], "given": labels[j], "rate": round(float(T[i, j]), 4)}
            for i in range(len(labels)) for j in range(len(labels)) if i != j and T[i, j] >= floor]
    return sorted(rows, key=lambda r: (-r["rate"], r["true"], r["given"]))


def transition_from(rates: list[dict], labels: list[str]) -> np.ndarray:
    """Rebuild the (C, C) matrix from noise_rates (the diagonal takes what the rows leave)."""
    idx = {n: k for k, n in enumerate(labels)}
    T = np.zeros((len(labels), len(labels)))
    for r in rates:
        if r["true"] in idx and r["given"] in idx:
            T[idx[r["true"]], idx[r["given"]]] = r["rate"]
    np.fill_diagonal(T, 0.0)
    off = T.sum(1)
    scale = np.where(off > 0.95, 0.95 / np.maximum(off, _EPS), 1.0)  # a row keeps at least 5 % on its class
    T = T * scale[:, None]
    np.fill_diagonal(T, 1.0 - T.sum(1))
    return T


def _normalized_margin(given: np.ndarray, P: np.ndarray) -> np.ndarray:
    """(N,) cleanlab's normalized margin (p(given) - max p(other) + 1) / 2: label quality in [0, 1]."""
    from cleanlab.rank import get_label_quality_scores

    return get_label_quality_scores(given, P, method="normalized_margin")


def _inputs(task, ds) -> list:
    return [task.inputs(ds, i) for i in range(len(ds))]


def _text(s: str, limit: int = 200) -> str:
    return s if len(s) <= limit else s[: limit - 3] + "..."


class LabelIssues:
    """Suspected label errors: out-of-fold probabilities pooled with the fine-tuned model's training
    dynamics (classification only) and its own probabilities, when the context has them; see the
    module docstring."""

    name = "label_issues"
    needs = ("train",)
    wants = ("oof_probs",)  # class and tag labels are judged out of fold; span answers by the model itself
    requires = ()

    def __init__(self, combine: str = "mean", use_dynamics: bool = True, use_model: bool = True, top: int = 50,
                 min_prob: float = 0.5):
        self.combine = combine  # "mean" (pool every view) or "oof" (out-of-fold only)
        self.use_dynamics = use_dynamics  # ctx.dynamics, when the run has them
        self.use_model = use_model  # the trained model's probabilities (ctx.predict_texts)
        self.top = top  # how many ranked examples the evidence lists
        self.min_prob = min_prob  # span answers: the model's own answer is this sure (its candidates' softmax)

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx) -> list[Finding]:
        ctx.need(*self.needs)
        if self.combine not in COMBINE:
            raise ValueError(f"unknown combination {self.combine!r}; use one of: {', '.join(COMBINE)}")
        train = ctx.train
        if len(train) == 0:
            return [Finding(self.name, LABEL_ISSUES, 0.0, "no training examples to check", {"count": 0,
                            "flagged": [], "ranked": []}, scores={}, split="train")]
        if ctx.task.head != "span":
            ctx.need("oof_probs")
        if ctx.oof_probs is not None and len(ctx.oof_probs) != len(train):
            raise Skip(f"out-of-fold probabilities cover {len(ctx.oof_probs)} examples but train has {len(train)}; "
                       "recompute them with crossval.out_of_fold on this training set")
        # How a label is judged depends on what the model predicts (per example, per word, a span);
        # a task of another head has no scorer here.
        scorer = {"sequence": self._classification, "token": self._ner, "span": self._span}.get(ctx.task.head)
        if scorer is None:
            raise Skip(f"no label-issue scorer for {ctx.task.head} outputs")
        return scorer(ctx)

    # ------------------------------------------------------------------ classification

    def _classification(self, ctx) -> list[Finding]:
        train, labels = ctx.train, list(ctx.labels)
        l2i = {n: i for i, n in enumerate(labels)}
        missing = sorted(set(train.labels) - set(l2i))
        if missing:
            raise Skip(f"training labels {missing[:5]} are not in the run's label list")
        given = np.array([l2i[y] for y in train.labels], dtype=int)  # (N,)
        oof = np.asarray(ctx.oof_probs, dtype=np.float64)
        if oof.ndim != 2 or oof.shape[1] != len(labels):
            raise Skip(f"out-of-fold probabilities have shape {oof.shape}, expected ({len(train)}, {len(labels)})")
        if len(labels) < 2:  # one class: no label can be the wrong one
            return [self._finding(train, np.zeros(len(train)), [], [], None)]
        dyn = dynamics_confidence(ctx, train.ids) if self.use_dynamics else None
        model = None
        if self.use_model and self.combine != "oof" and ctx.predict_texts is not None:
            # One inference pass over the training texts: the fine-tuned model's view of the other
            # classes, which the dynamics (gold label only) do not record.
            model = np.asarray(ctx.predict_texts(_inputs(ctx.task, train)), dtype=np.float64)
            if model.shape != oof.shape:
                model = None
        P = combine_probs(oof, given, dyn, model, self.combine)  # (N, C)
        rows = np.arange(len(P))
        scores = 1.0 - _normalized_margin(given, P)  # (N,) in [0, 1], higher = more likely mislabelled
        # The count comes from the out-of-fold probabilities alone: confident learning assumes
        # out-of-sample probabilities, and the in-sample views (dynamics, the model) lean towards
        # the given labels (the model has partly learnt them), which would skew the thresholds.
        n_flag = _estimated_count(given, combine_probs(oof, given, how="oof"))
        order = np.lexsort((rows, -scores))  # most suspect first; ties by position (deterministic)
        flagged_idx = order[:n_flag]
        alt = P.copy()
        alt[rows, given] = -1.0
        suggested = alt.argmax(1)  # the most probable label other than the given one

        def row(i: int) -> dict:
            return {"id": train.ids[i], "line": train.lines[i] if train.lines else None, "text": _text(train.texts[i]),
                    "given": labels[given[i]], "suggested": labels[suggested[i]],
                    "score": float(scores[i]), "oof_gold_prob": float(oof[i, given[i]]),
                    "train_gold_prob": None if dyn is None or not np.isfinite(dyn[i]) else float(dyn[i])}

        finding = self._finding(train, scores, flagged_idx, [row(int(i)) for i in order[: self.top]], dyn,
                                pairs=self._pairs(labels, given, suggested, flagged_idx), model=model is not None)
        # Every flagged example's suggested label and its pooled probability, so the update stage
        # (fix_labels) can relabel the confident ones and leave the rest (the ranked list is capped).
        finding.evidence["suggested"] = {train.ids[i]: [labels[suggested[i]], round(float(P[i, suggested[i]]), 4),
                                                        round(float(P[i, given[i]]), 4)] for i in flagged_idx}
        # How the labels are wrong, class by class: P(given | true) from the same out-of-fold
        # probabilities (what forward loss correction, the correct_noise action, trains through).
        finding.evidence["noise_rates"] = noise_rates(noise_transition(given, oof, len(labels)), labels)
        return [finding]

    @staticmethod
    def _pairs(labels, given, suggested, flagged_idx) -> list[dict]:
        from collections import Counter

        counts = Counter((labels[given[i]], labels[suggested[i]]) for i in flagged_idx)
        return [{"given": a, "suggested": b, "count": c} for (a, b), c in counts.most_common(10)]

    def _finding(self, train, scores, flagged_idx, ranked, dyn, pairs=None, unit="examples",
                 model: bool = False, first: str = "out-of-fold probabilities") -> Finding:
        n = len(train)
        count = len(flagged_idx)
        fraction = count / n
        views = [first]
        if self.combine != "oof" and dyn is not None and np.isfinite(dyn).any():
            views.append("training dynamics")
        if model:
            views.append("the trained model's probabilities")
        used = ", ".join(views[:-1]) + " and " + views[-1] if len(views) > 1 else views[0]
        if count:
            summary = (f"{count} of {n} training {unit} ({100 * fraction:.1f}%) look mislabelled "
                       f"(from {used}); review the top-ranked ones first")
        else:
            summary = f"no training {unit} look mislabelled (checked {n} with {used})"
        evidence = {"count": count, "fraction": fraction, "flagged": [train.ids[i] for i in flagged_idx],
                    "ranked": ranked, "signals": used, "combine": self.combine}
        if pairs is not None:
            evidence["pairs"] = pairs
        return Finding(check=self.name, kind=LABEL_ISSUES, severity=min(1.0, 5.0 * fraction), summary=summary,
                       evidence=evidence, scores={train.ids[i]: float(scores[i]) for i in range(n)}, split="train")

    # ------------------------------------------------------------------ NER

    def _ner(self, ctx) -> list[Finding]:
        from cleanlab.token_classification.filter import find_label_issues
        from cleanlab.token_classification.rank import get_label_quality_scores

        train, tags = ctx.train, list(ctx.labels)
        t2i = {t: i for i, t in enumerate(tags)}
        missing = sorted({t for s in train.labels for t in s} - set(t2i))
        if missing:
            raise Skip(f"training tags {missing[:5]} are not in the run's tag list")
        given = [np.array([t2i[t] for t in s], dtype=int) for s in train.labels]
        probs = []
        for p, g in zip(ctx.oof_probs, given):
            p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0).reshape(len(g), len(tags))
            probs.append(p / np.maximum(p.sum(1, keepdims=True), _EPS))
        model = self._ner_model_view(ctx, given, len(tags))
        if model is not None:
            probs = [0.5 * (o + m) for o, m in zip(probs, model)]
        keep = [i for i, g in enumerate(given) if len(g)]  # cleanlab cannot score an empty sentence
        n = len(train)
        quality = np.ones(n)  # (N,) worst-token quality per sentence; empty sentences are fine
        flagged_sent: set[int] = set()
        present = {t for i in keep for t in given[i].tolist()}
        if keep and len(present) >= 2:
            # Score over the tags in use (cleanlab's per-class thresholds need examples of each).
            used = np.array(sorted(present))
            remap = {t: k for k, t in enumerate(used)}
            lab = [np.array([remap[t] for t in given[i]]) for i in keep]
            pp = [probs[i][:, used] / np.maximum(probs[i][:, used].sum(1, keepdims=True), _EPS) for i in keep]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sent_q, _ = get_label_quality_scores(lab, pp)
                issues = find_label_issues(lab, pp)
            quality[keep] = sent_q
            flagged_sent = {keep[s] for s, _ in issues}
        # Shown per sentence, not used in the score (see the module docstring).
        dyn = dynamics_confidence(ctx, train.ids) if self.use_dynamics else None
        scores = 1.0 - quality
        rows = np.arange(n)
        order = np.lexsort((rows, -scores))
        flagged_idx = order[: len(flagged_sent)]

        def row(i: int) -> dict:
            p, g = probs[i], given[i]
            worst = int(np.argmin(p[np.arange(len(g)), g])) if len(g) else None
            alt = p.copy()
            if len(g):
                alt[np.arange(len(g)), g] = -1.0
            return {"id": train.ids[i], "line": train.lines[i] if train.lines else None, "text": _text(train.texts[i]),
                    "given": list(train.labels[i]), "suggested": [tags[k] for k in p.argmax(1)] if len(g) else [],
                    "worst_token": worst, "worst_word": train.tokens[i][worst] if worst is not None else None,
                    "worst_given": tags[g[worst]] if worst is not None else None,
                    "worst_suggested": tags[int(alt[worst].argmax())] if worst is not None else None,
                    "score": float(scores[i]),
                    "train_gold_prob": None if dyn is None or not np.isfinite(dyn[i]) else float(dyn[i])}

        return [self._finding(train, scores, flagged_idx, [row(int(i)) for i in order[: self.top]], None,
                              unit="sentences", model=model is not None)]

    # ------------------------------------------------------------------ span answers

    def _span(self, ctx) -> list[Finding]:
        """Questions whose given answer the fine-tuned model places elsewhere: its own answer shares no
        token with the given one (F1 0), it is sure of it (at least min_prob of its candidates'
        softmax) and, where the run has training dynamics, the given span kept a low probability
        (the data-map confidence below the model's own answer's). There is no out-of-fold view: a
        span head per fold is a full fine-tune each. Score: the model's probability of its own answer
        times (1 - F1 with the given one), pooled with 1 - the data-map confidence."""
        from ..tasks.qa import best_over, token_f1

        ctx.need("predict_texts")
        train = ctx.train
        outputs = ctx.predict_texts([ctx.task.inputs(train, i) for i in range(len(train))])
        f1 = np.array([best_over(token_f1, o["text"], ans.get("text") or []) for o, ans in zip(outputs, train.labels)])
        p = np.array([float(o["score"]) for o in outputs])
        dyn = dynamics_confidence(ctx, train.ids) if self.use_dynamics else np.full(len(train), np.nan)
        views = [p * (1.0 - f1)] + ([1.0 - np.nan_to_num(dyn, nan=0.0)] if np.isfinite(dyn).any() else [])
        scores = np.clip(np.mean(views, axis=0), 0.0, 1.0)  # (N,)
        low_gold = ~np.isfinite(dyn) | (dyn < p)
        flagged = np.flatnonzero((f1 == 0.0) & (p >= self.min_prob) & low_gold)
        flagged = flagged[np.lexsort((flagged, -scores[flagged]))]  # most suspect first, ties by position
        order = np.lexsort((np.arange(len(train)), -scores))

        def row(i: int) -> dict:
            return {"id": train.ids[i], "line": train.lines[i] if train.lines else None, "text": _text(train.texts[i]),
                    "given": (train.labels[i].get("text") or [""])[0], "suggested": outputs[i]["text"],
                    "suggested_start": outputs[i]["start"], "score": float(scores[i]), "model_prob": float(p[i]),
                    "f1_with_given": float(f1[i]),
                    "train_gold_prob": None if not np.isfinite(dyn[i]) else float(dyn[i])}

        finding = self._finding(train, scores, flagged, [row(int(i)) for i in order[: self.top]],
                                dyn if np.isfinite(dyn).any() else None, unit="questions",
                                first="the trained model's answers")
        finding.evidence["suggested"] = {train.ids[i]: [outputs[i]["text"], round(float(p[i]), 4),
                                                        None if not np.isfinite(dyn[i]) else round(float(dyn[i]), 4)]
                                         for i in flagged}
        return [finding]

    def _ner_model_view(self, ctx, given: list[np.ndarray], n_tags: int) -> list[np.ndarray] | None:
        """The fine-tuned model's (n_words, n_tags) probabilities per training sentence, or None when
        unavailable or not word-aligned with the gold tags (then out-of-fold alone is used)."""
        if not self.use_model or self.combine == "oof" or ctx.predict_texts is None:
            return None
        out = []
        for p, g in zip(ctx.predict_texts(_inputs(ctx.task, ctx.train)), given):
            p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
            if p.shape != (len(g), n_tags):
                return None
            out.append(p / np.maximum(p.sum(1, keepdims=True), _EPS))
        return out if len(out) == len(given) else None
