"""Fitting a model bundle's out-of-scope detector (open_set.py holds the detectors and the maths):
its training and selection features read through the evaluator, the choice, and the cross-fitted
check the loop's detect_out_of_scope action refuses on."""

from __future__ import annotations

import numpy as np

from .open_set import OpenSet, OpenSetError, by_example, check_settings, score_of, decide, fit


def logits_and_features(bundle, ds, *, batch_size: int = 128, precision: str = "auto", quiet: bool = True):
    """(logits (N, C), features (N, D) or None) of a classifier bundle on a Dataset: the features are
    what its output layer reads (HeadInput), which every predictor (PyTorch and ONNX alike) returns
    beside its logits, so a served or exported model is scored on what the detector was fitted on."""
    from . import runtime
    from .evaluate import encode_bundle, forward_all, pad_id

    feats = encode_bundle(bundle, ds, labelled=False)
    logits, _, _, pooled = forward_all(bundle.model, feats, pad_id(bundle.tokenizer), bundle.task, batch_size,
                                       runtime.resolve_precision(precision), quiet, pooled=True)
    z = by_example(logits, feats, len(ds), len(bundle.labels))
    return z, (None if pooled is None else by_example(pooled, feats, len(ds), None))


def fit_bundle(bundle, train, selection, settings, *, metric: str = "macro_f1", batch_size: int = 128,
               precision: str = "auto", arrays: tuple | None = None) -> OpenSet:
    """Fit the configured detectors (settings: the config's [open_set]) on a trained classifier's
    training split, choose one and its threshold on the selection split. arrays: features_for()'s,
    when the caller already has them (the model is then not run again)."""
    labels = bundle.labels
    check_settings(settings.label, labels, settings.max_false_rejection, settings.threshold, settings.fallback)
    if settings.label not in labels:
        raise OpenSetError(f"the model's labels have no {settings.label!r}: train it with open_set.enabled = true "
                           "(the label list then holds it)")
    arrays = arrays if arrays is not None else features_for(bundle, train, selection, batch_size, precision)
    out = fit(*arrays, labels=labels, **_fit_settings(settings, metric))
    out.fallback = settings.fallback
    return out


def features_for(bundle, train, selection, batch_size: int = 128, precision: str = "auto") -> tuple:
    """(train features, labels, logits, selection features, logits, labels) as fit() takes them."""
    l2i = {n: i for i, n in enumerate(bundle.labels)}
    z_tr, f_tr = logits_and_features(bundle, train, batch_size=batch_size, precision=precision)
    z_sel, f_sel = logits_and_features(bundle, selection, batch_size=batch_size, precision=precision)
    y_tr = np.array([l2i[y] for y in train.labels], dtype=int)
    y_sel = np.array([l2i[y] for y in selection.labels], dtype=int)
    return f_tr, y_tr, z_tr, f_sel, z_sel, y_sel


def _fit_settings(settings, metric: str) -> dict:
    return {"label": settings.label, "detectors": tuple(settings.detectors),
            "max_false_rejection": settings.max_false_rejection, "threshold": settings.threshold,
            "metric": "accuracy" if metric == "accuracy" else "macro_f1",
            "max_accuracy_drop": settings.max_accuracy_drop}


def cross_fitted(bundle, arrays: tuple, settings, *, metric: str = "macro_f1", seed: int = 0, folds: int = 5) -> dict:
    """What the detector does for selection examples it was not chosen on: each of `folds` folds
    is scored by a detector and threshold chosen on the other folds (the detectors themselves are
    fitted on the training split, which no fold is part of). Returns the selection metric (with
    out of scope as a class) and in-scope accuracy, with and without the detector, out of sample."""
    f_tr, y_tr, z_tr, f_sel, z_sel, y_sel = arrays  # features_for()'s
    labels = bundle.labels
    kw = _fit_settings(settings, metric)
    oos_index = labels.index(settings.label)
    n = len(y_sel)
    k = min(folds, n // 2)
    if k < 2:
        return {"folds": k, "metric": kw["metric"]}
    order = np.random.default_rng(seed).permutation(n)
    pred = z_sel.argmax(1).copy()
    plain = z_sel.argmax(1)
    for part in np.array_split(order, k):
        rest = np.setdiff1d(order, part)
        fitted = fit(f_tr, y_tr, z_tr, None if f_sel is None else f_sel[rest], z_sel[rest], y_sel[rest],
                     labels=labels, **kw)
        fp = None if f_sel is None else f_sel[part]
        pred[part] = decide(z_sel[part], fitted.score(z_sel[part], fp), fitted, oos_index)
    inside = y_sel != oos_index
    width = len(labels)
    acc = lambda p: float((p[inside] == y_sel[inside]).mean()) if inside.any() else None  # noqa: E731
    return {"folds": k, "metric": kw["metric"], "with_detector": score_of(y_sel, pred, kw["metric"], width),
            "without_detector": score_of(y_sel, plain, kw["metric"], width), "in_scope_accuracy": acc(pred),
            "in_scope_accuracy_without_detector": acc(plain), "n_out_of_scope": int((~inside).sum())}
