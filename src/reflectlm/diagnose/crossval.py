"""Cross-validation: out-of-fold predicted probabilities for every training example, and the
spread of the metric across folds.

    probs, info = out_of_fold(train, labels, "classification")                    # fast: seconds
    probs, info = out_of_fold(train, labels, "ner", mode="full", folds=3,            # fine-tune per fold
                              data_cfg=cfg.data, model_cfg=cfg.model, train_cfg=cfg.train)

Every training example is predicted exactly once, by a model that never saw it: the input that
label-issue detection needs (an in-sample prediction has already learnt the wrong label).

- fast: frozen-encoder embeddings computed once (embed.embed_texts / embed_words, cached on
  disk) and a logistic-regression head per fold: one vector per text, or per word for a
  word-tagging task (the tasks with the `fast_cv` capability).
- full: a fresh model fine-tuned per fold (train.fit_config); 10% of each fold's training part is
  its selection split (best epoch), the held-out fold is predicted with evaluate.evaluate_features.

References: Northcutt et al. 2021 (confident learning needs out-of-sample probabilities);
Vysogorets & Gopal 2024 (cheap rounds on frozen embeddings).
"""

from __future__ import annotations

import time
import warnings
from collections import Counter

import numpy as np

from ..findings import CV_SPREAD
from .base import Finding, Skip, stored_params

MODES = ("fast", "full")
# Inverse L2 strength of the fast head. Unit-norm sentence vectors have small coordinates, so
# scikit-learn's default C=1 under-fits (soft probabilities): on BANKING77, 5-fold log-loss was
# 0.95 at C=1, 0.68 at C=10, 0.80 at C=100 (macro-F1 0.81, 0.81, 0.78) - what any user can
# measure on their own data, no ground truth about label errors involved.
FAST_C = 10.0


def _plan_folds(train, task, folds: int) -> tuple[int, str | None]:
    """The number of folds to use, and a note when it had to be reduced; Skip when impossible."""
    n = len(train)
    if folds < 2:
        raise ValueError(f"folds = {folds}: cross-validation needs at least 2 folds")
    if n < 2:
        raise Skip(f"cross-validation needs at least 2 training examples; this set has {n}")
    strata = task.strata(train)
    if strata is None:
        k = min(folds, n)
        return k, (f"folds reduced from {folds} to {k}: only {n} {task.unit}s" if k < folds else None)
    counts = Counter(strata)
    if len(counts) < 2:
        raise Skip(f"cross-validation needs at least 2 classes; every training example is {next(iter(counts))!r}")
    smallest = min(counts.values())
    k = max(2, min(folds, smallest, n))
    rare = min(counts, key=lambda c: (counts[c], c))
    notes = []
    if k < folds:
        notes.append(f"folds reduced from {folds} to {k}: class {rare!r} has only {smallest} example(s)")
    if smallest < 2:
        singles = sorted(c for c, m in counts.items() if m == 1)
        notes.append(f"{len(singles)} class(es) with one example (e.g. {singles[0]!r}) are missing from the "
                     "training part of the fold that holds it: probability 0 there")
    return k, "; ".join(notes) or None


def fold_indices(train, task, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, held_idx) per fold; stratified by the task's strata (the class) where it has them,
    else at random by example."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from ..tasks import get_task

    n = len(train)
    strata = get_task(task).strata(train)
    if strata is None:
        return list(KFold(folds, shuffle=True, random_state=seed).split(np.zeros(n)))
    with warnings.catch_warnings():
        # "The least populated class has only 1 member": expected and recorded in info["note"].
        warnings.simplefilter("ignore", UserWarning)
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), strata))


# lbfgs stops when the largest gradient coordinate falls below `tol`, and scikit-learn's loss is
# a mean over examples: with unit-norm vectors and C classes the gradient at the all-zero start is
# about (class-mean difference) / C, so a fixed tol that is right for 3 classes can sit above the
# starting gradient for 150 - the solver then "converges" at iteration 0 and every probability is
# 1/C (seen on a 151-class intent set at tol=1e-3: max start gradient 0.000997). The tolerance is
# therefore relative: the gradient must shrink to HEAD_REL_TOL of where it started (and at most
# HEAD_TOL, which on BANKING77 runs 50-65 iterations a fold and scores 0.2-0.6 points above 1e-3).
HEAD_TOL = 1e-4
HEAD_REL_TOL = 0.05
HEAD_MAX_ITER = 1000
# A fold whose held-out accuracy is within this of chance while the other folds' median is at
# least AT_CHANCE_GAP above chance has a head that did not fit, not a hard fold.
AT_CHANCE_MARGIN = 0.02
AT_CHANCE_GAP = 0.2


class HeadFitError(RuntimeError):
    """The frozen-feature head could not be fitted (refits included); the message says why."""


def start_gradient(X: np.ndarray, y: np.ndarray, classes: np.ndarray) -> float:
    """Largest coordinate of the multinomial log-loss gradient at all-zero weights (what lbfgs sees
    first): coefficients (1/n) X^T (1/C - Y) and intercepts 1/C - class share."""
    Y = (y[:, None] == classes[None, :]).astype(np.float64)  # (N, C) one-hot
    R = 1.0 / len(classes) - Y  # (N, C) residual at the uniform start
    g_coef = np.abs(X.T @ R).max() / len(X) if X.shape[1] else 0.0  # (D, C) -> max
    return float(max(g_coef, np.abs(R.mean(0)).max()))


def _degenerate(head) -> str | None:
    """Why a fitted LogisticRegression is not a model (None when it is)."""
    if int(np.max(head.n_iter_)) == 0:
        return "the solver stopped at iteration 0 (its tolerance was above the starting gradient)"
    if not np.any(head.coef_):
        return "every coefficient is 0 (the features played no part)"
    return None


class Head:
    """A fitted logistic-regression head on frozen features: head(X') -> (M, n_classes)
    probabilities, with a zero column for every class absent from the training labels (that
    part of the data never saw it, so cannot predict it). `fit_info` records the solver's
    iterations, the tolerance it used and any refit with its reason."""

    def __init__(self, model, n_classes: int, fit_info: dict):
        self.model = model
        self.n_classes = n_classes
        self.fit_info = fit_info

    def __call__(self, Xq: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        out = np.zeros((len(Xq), self.n_classes), dtype=np.float32)
        if self.model is None:  # one class in the training part: a constant model
            out[:, self.fit_info["classes"][0]] = 1.0
            return out
        with threadpool_limits(1):
            out[:, self.model.classes_] = self.model.predict_proba(Xq)  # classes_ are sorted ids; place them by id
        return out


def fit_head(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0, C: float = FAST_C,
             tol_scale: float = 1.0) -> Head:
    """Fit the head; refit with a 100x tighter tolerance when the first fit is degenerate, and raise
    HeadFitError (never uniform probabilities) when that does not help either. `tol_scale` < 1
    tightens the tolerance from the start (a refit of a fold that scored at chance)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    present = np.unique(y)
    if len(present) == 1:
        return Head(None, n_classes, {"classes": present.tolist(), "n_iter": 0, "refits": []})
    g0 = start_gradient(X, y, present)
    if g0 == 0.0:
        raise HeadFitError(f"the head cannot learn anything: the {len(X)} feature vectors give no gradient "
                           "(all identical, or all zero) - check the encoder and the texts")
    tol = min(HEAD_TOL, HEAD_REL_TOL * g0) * tol_scale
    refits: list[dict] = []
    for attempt in range(2):
        head = LogisticRegression(C=C, max_iter=HEAD_MAX_ITER, tol=tol, random_state=seed)
        # One BLAS thread: the problem is small (N x D times D x C), and on a busy machine two
        # OpenBLAS threads spin against each other - a 10x slow-down was measured here (1.4 s vs
        # 17 s per BANKING77 fold).
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter: the probabilities are usable
            head.fit(X, y)
        why = _degenerate(head)
        if why is None:
            return Head(head, n_classes, {"n_iter": int(np.max(head.n_iter_)), "tol": tol,
                                          "start_gradient": g0, "refits": refits})
        refits.append({"reason": why, "tol": tol})
        tol /= 100.0
    raise HeadFitError(f"the logistic head did not fit on {len(X)} examples of {len(present)} classes: "
                       f"{refits[-1]['reason']} even at tol={refits[-1]['tol']:.1e} (start gradient {g0:.2e}); "
                       "check the features for duplicates or constant columns")


def at_chance(accuracies: list[float], chances: list[float]) -> list[int]:
    """Folds whose held-out accuracy is at chance (their majority class's share) while the other
    folds' median is far above it: a head that did not fit, whatever the solver said."""
    margins = np.asarray(accuracies, dtype=float) - np.asarray(chances, dtype=float)
    out = []
    for f, m in enumerate(margins):
        others = np.delete(margins, f)
        if len(others) and m <= AT_CHANCE_MARGIN and float(np.median(others)) >= AT_CHANCE_GAP:
            out.append(f)
    return out


def _fold_metric(task, ds, probs, labels: list[str]) -> float:
    return float(task.metrics(ds, probs, labels)[task.default_metric])


def _fast(train, labels, task, splits, seed, model, cache_dir, quiet):
    """[(held, probs, fit record)] per fold: one head per fold on frozen vectors (one per text, or
    per word: task.cv_vectors), with a fold that scored at chance refitted at a 100x tighter tolerance."""
    l2i = {name: i for i, name in enumerate(labels)}
    C = len(labels)
    from types import SimpleNamespace

    from ..embed import embed_texts, embed_words

    embed = SimpleNamespace(texts=lambda texts: embed_texts(texts, model=model, cache_dir=cache_dir, quiet=quiet),
                            words=lambda words: embed_words(words, model=model, cache_dir=cache_dir, quiet=quiet))
    vecs, targets = task.cv_vectors(train, l2i, embed)  # per example (n_i, D), (n_i,)
    D = vecs[0].shape[1] if len(vecs) else 0

    def rows(idx):  # (vectors of these examples, D), (vectors,)
        if not len(idx):
            return np.zeros((0, D), dtype=np.float32), np.zeros(0, dtype=int)
        return np.concatenate([vecs[i] for i in idx]), np.concatenate([targets[i] for i in idx])

    def split_back(held, P):  # (vectors, C) -> one (n_i, C) block per held example
        bounds = np.cumsum([0] + [len(vecs[i]) for i in held])
        return [P[bounds[j]:bounds[j + 1]] for j in range(len(held))]

    def one_fold(tr, held, tol_scale=1.0):
        X, y = rows(tr)
        head = fit_head(X, y, C, seed, tol_scale=tol_scale)
        Xh, yh = rows(held)
        Ph = head(Xh) if len(Xh) else np.zeros((0, C), dtype=np.float32)
        record = dict(getattr(head, "fit_info", {}) or {})
        record["accuracy"] = float((Ph.argmax(1) == yh).mean()) if len(yh) else None
        record["chance"] = float(np.bincount(yh).max() / len(yh)) if len(yh) else None
        return Ph, yh, record

    out = [one_fold(tr, held) for tr, held in splits]

    def folds_at_chance():
        scored = [f for f, (_, _, r) in enumerate(out) if r["accuracy"] is not None]
        hits = at_chance([out[f][2]["accuracy"] for f in scored], [out[f][2]["chance"] for f in scored])
        return [scored[j] for j in hits]

    for f in folds_at_chance():
        before = out[f][2]
        out[f] = one_fold(*splits[f], tol_scale=0.01)
        after = out[f][2]
        after["refits"] = list(before.get("refits", [])) + [
            {"reason": f"held-out accuracy {before['accuracy']:.3f} at chance ({before['chance']:.3f}) while the "
                       "other folds were far above it", "tol": before.get("tol")}]
        if f in folds_at_chance():
            raise HeadFitError(f"fold {f + 1}'s logistic head scored at chance ({after['accuracy']:.3f}, majority share "
                               f"{after['chance']:.3f}) even after a refit at tol={after.get('tol', 0):.1e}, while "
                               "the other folds were far above it; check that fold's features for duplicates or "
                               "constant columns, or use --cv full")
    return [(held, split_back(held, P), r) for (tr, held), (P, _, r) in zip(splits, out)]


def _carve_selection(part, seed: int):
    """(fit, selection): 10% of a fold's training part picks that fold's best epoch."""
    from ..data import DataError, stratified_split

    try:
        return stratified_split(part, 0.1, seed)
    except DataError:  # a class too rare to stratify: a random 10% instead
        perm = np.random.default_rng(seed).permutation(len(part))
        n_held = min(max(1, int(round(0.1 * len(part)))), len(part) - 1)
        return part.subset(np.sort(perm[n_held:])), part.subset(np.sort(perm[:n_held]))


def _full(train, labels, task, splits, seed, model, train_cfg, model_cfg, data_cfg, quiet):
    """[(held, probs, {})] per fold: a model fine-tuned on the fold's training part (train.fit_config,
    as every model is trained) predicts the held-out fold."""
    from .. import runtime
    from ..config import Config, DataConfig, ModelConfig, TrainConfig
    from ..evaluate import evaluate_features, pad_id
    from ..train import encode, fit_config

    cfg = Config(data=data_cfg or DataConfig(task=task.name, train="(cross-validation folds)"),
                 model=model_cfg if model_cfg is not None else ModelConfig(name=model),
                 train=train_cfg if train_cfg is not None else TrainConfig(seed=seed))
    precision = runtime.resolve_precision(cfg.train.precision)
    for k, (tr, held) in enumerate(splits):
        fit_part, sel_part = _carve_selection(train.subset(tr), seed + k)
        # The head's initialisation: different per fold, repeatable.
        bundle, _ = fit_config(cfg, fit_part, sel_part, labels, quiet=quiet, seed=seed + k)
        part = train.subset(held)
        probs = evaluate_features(bundle.model, part, encode(bundle, cfg, part, labels), task=task, labels=labels,
                                  pad_id=pad_id(bundle.tokenizer), batch_size=cfg.train.eval_batch_size,
                                  precision=precision, options=bundle.meta.get("options"),
                                  tokenizer=bundle.tokenizer).probs
        # As in fast mode: a class this fold never trained on gets probability 0, not whatever its
        # untrained logit gave.
        known = set(task.label_names(fit_part))
        absent = [c for c, name in enumerate(labels) if _name_of(task, name) not in (None, *known)]
        yield held, [_drop(np.asarray(p), absent) for p in probs] if absent else list(probs), {}


def _name_of(task, label: str) -> str | None:
    """The name a label stands for (a tag's entity type); None for labels that name nothing ("O")."""
    names = task.label_names_of([label])
    return names[0] if names else None


def _drop(p: np.ndarray, absent: list[int]) -> np.ndarray:
    p = p.copy()
    p[..., absent] = 0.0
    return p / np.maximum(p.sum(-1, keepdims=True), 1e-12)


def out_of_fold(train, labels: list[str], task, *, mode: str = "fast", folds: int = 5, seed: int = 0,
                model: str = "minilm", train_cfg=None, model_cfg=None, data_cfg=None, cache_dir=None,
                quiet: bool = True):
    """Out-of-fold probabilities for every example of `train`, and a summary of the folds.

    task: a Task or its name (it must have the fast_cv capability: probability rows over a label
    list). data_cfg / model_cfg / train_cfg: the run's sections, for full mode. Returns (probs,
    info): the task's outputs for `train` ((N, C) float32 in the order of `labels`; per word for a
    tagging task). info = {"mode", "folds", "metric", "fold_metrics", "mean", "std", "seconds",
    "fold" (which fold predicted each example), "note" (when folds were reduced)}.
    """
    from ..tasks import get_task

    if mode not in MODES:
        raise ValueError(f"unknown cross-validation mode {mode!r}; use one of: {', '.join(MODES)}")
    task = get_task(task)
    if "fast_cv" not in task.capabilities:
        raise Skip(f"out-of-fold probabilities need probability rows over a label list; data.task = {task.name!r} "
                   f"predicts {task.head} outputs")
    if not labels:
        raise Skip("cross-validation needs the label list; it is empty")
    unknown = sorted(task.unknown_labels(train, set(task.label_names_of(labels))))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} of the training set are not in `labels`; pass the full label list "
                         "(data.load_splits(...).labels)")
    started = time.perf_counter()
    k, note = _plan_folds(train, task, folds)
    splits = fold_indices(train, task, k, seed)
    parts: list = [None] * len(train)
    fold_of = np.full(len(train), -1, dtype=int)
    metrics = []
    runs = (_fast(train, labels, task, splits, seed, model, cache_dir, quiet) if mode == "fast"
            else _full(train, labels, task, splits, seed, model, train_cfg, model_cfg, data_cfg, quiet))
    refits = []
    for f, (held, p, record) in enumerate(runs):
        for j, i in enumerate(held):
            parts[i] = p[j]
        fold_of[held] = f
        metrics.append(_fold_metric(task, train.subset(held), task.cv_outputs(p, len(labels)), labels))
        refits += [{"fold": f + 1, **r} for r in record.get("refits", [])]
    assert (fold_of >= 0).all(), "every example is predicted by exactly one fold"
    info = {"mode": mode, "folds": k, "metric": task.default_metric, "fold_metrics": metrics,
            "mean": float(np.mean(metrics)), "std": float(np.std(metrics)),
            "seconds": time.perf_counter() - started, "fold": fold_of.tolist()}
    if refits:  # a head that had to be refitted (degenerate fit, or a fold at chance), with why
        info["refits"] = refits
    if note:
        info["note"] = note
    return task.cv_outputs(parts, len(labels)), info


class CrossValidation:
    """How much the metric moves between folds, and how far CV sits from the selection metric.

    A large spread means the metric on one held-out split is a noisy estimate (small or uneven
    data); a CV mean far below the selection metric means the selection split is easier than
    the training data (or leaks into it); far above, that it is harder (a distribution shift).
    """

    name = "crossval"
    needs = ("cv",)
    requires = ("fast_cv",)

    def __init__(self, spread_scale: float = 0.05, gap_scale: float = 0.1):
        # Severity reaches 1 at a fold std of spread_scale, or a CV-vs-selection gap of gap_scale
        # (both in metric units, e.g. 0.05 macro-F1).
        self.spread_scale = spread_scale
        self.gap_scale = gap_scale

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx) -> list[Finding]:
        ctx.need(*self.needs)
        cv = ctx.cv
        values = [float(v) for v in cv.get("fold_metrics") or [] if v is not None]
        if not values:
            raise Skip("the cross-validation record has no fold metrics; rerun with --cv fast or full")
        mean, std = float(np.mean(values)), float(np.std(values))
        metric = cv.get("metric") or ctx.task.default_metric
        evidence = {"mode": cv.get("mode"), "folds": cv.get("folds", len(values)), "metric": metric,
                    "fold_metrics": values, "mean": mean, "std": std, "min": min(values), "max": max(values),
                    "seconds": cv.get("seconds")}
        if cv.get("note"):
            evidence["note"] = cv["note"]
        if cv.get("refits"):
            evidence["refits"] = cv["refits"]
        severity = std / self.spread_scale
        summary = f"{metric} across {len(values)} folds: {mean:.3f} ± {std:.3f}"
        sel = (ctx.selection_metrics or {}).get(metric)
        if sel is not None:
            gap = float(sel) - mean
            evidence["selection"] = float(sel)
            evidence["gap"] = gap
            severity = max(severity, abs(gap) / self.gap_scale)
            summary += f"; the selection split scores {float(sel):.3f} ({gap:+.3f})"
        # Fold metrics of a fast CV come from a frozen encoder: their level is not the fine-tuned
        # model's, so the gap matters less there than the spread.
        if cv.get("mode") == "fast" and sel is not None:
            severity = max(std / self.spread_scale, 0.5 * abs(evidence["gap"]) / self.gap_scale)
        return [Finding(check=self.name, kind=CV_SPREAD, severity=min(1.0, severity), summary=summary,
                        evidence=evidence)]
