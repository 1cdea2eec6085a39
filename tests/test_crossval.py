"""Out-of-fold probabilities (fast and full) and the cross-validation check."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_context

from reflectlm.data import Dataset, load
from reflectlm.diagnose import crossval
from reflectlm.diagnose.base import Skip
from reflectlm.diagnose.crossval import CrossValidation, out_of_fold

LABELS = ["neg", "neu", "pos"]


@pytest.fixture
def cls_ds(cls_csv):
    return load(str(cls_csv), "classification")


def test_fast_shape_rows_and_info(cls_ds, tiny_bert_dir, tmp_path):
    probs, info = out_of_fold(cls_ds, LABELS, "classification", model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert probs.shape == (240, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert info["mode"] == "fast" and info["folds"] == 5 and info["metric"] == "macro_f1"
    assert len(info["fold_metrics"]) == 5 and all(0.0 <= m <= 1.0 for m in info["fold_metrics"])
    assert info["mean"] == pytest.approx(np.mean(info["fold_metrics"]))
    assert info["std"] == pytest.approx(np.std(info["fold_metrics"]))
    assert info["seconds"] > 0 and "note" not in info
    # Stratified folds of 48: each holds 16 of each class.
    fold = np.array(info["fold"])
    assert sorted(np.bincount(fold).tolist()) == [48] * 5
    # The words carry the label, so even a random tiny encoder's features beat chance (1/3).
    assert info["mean"] > 0.45


def test_fast_is_deterministic_for_a_seed(cls_ds, tiny_bert_dir, tmp_path):
    a, ia = out_of_fold(cls_ds, LABELS, "classification", model=str(tiny_bert_dir), cache_dir=tmp_path, seed=3)
    b, ib = out_of_fold(cls_ds, LABELS, "classification", model=str(tiny_bert_dir), cache_dir=tmp_path, seed=3)
    np.testing.assert_array_equal(a, b)
    assert ia["fold_metrics"] == ib["fold_metrics"]
    _, ic = out_of_fold(cls_ds, LABELS, "classification", model=str(tiny_bert_dir), cache_dir=tmp_path, seed=4)
    assert ic["fold"] != ia["fold"]


def test_every_example_predicted_once_by_a_model_that_never_saw_it(cls_ds, tiny_bert_dir, tmp_path, monkeypatch):
    # A "head" that remembers its training rows exactly: it answers class 0 for a row it was
    # trained on and class 1 otherwise. Out-of-fold, every answer must be class 1.
    calls = []

    def memoriser(X, y, n_classes, seed=0, C=1.0, tol_scale=1.0):
        seen = {row.tobytes() for row in X}
        calls.append(len(X))

        def predict(Xq):
            out = np.zeros((len(Xq), n_classes), dtype=np.float32)
            for i, row in enumerate(Xq):
                out[i, 0 if row.tobytes() in seen else 1] = 1.0
            return out
        return predict

    monkeypatch.setattr(crossval, "fit_head", memoriser)
    probs, info = out_of_fold(cls_ds, LABELS, "classification", model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert (probs.argmax(1) == 1).all()  # never predicted by a head that trained on it
    assert calls == [192] * 5  # each head trained on the other 4 folds
    assert sorted(np.bincount(info["fold"], minlength=5).tolist()) == [48] * 5  # and each example held out once


def test_absent_class_gets_a_zero_column_in_its_place(cls_ds, tiny_bert_dir, tmp_path):
    labels = ["aaa", "neg", "neu", "pos"]  # "aaa" never occurs in the data
    probs, _ = out_of_fold(cls_ds, labels, "classification", model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert probs.shape == (240, 4)
    assert (probs[:, 0] == 0).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # The other columns are the same as without the extra class.
    ref, _ = out_of_fold(cls_ds, LABELS, "classification", model=str(tiny_bert_dir), cache_dir=tmp_path)
    np.testing.assert_allclose(probs[:, 1:], ref, atol=1e-6)


def test_folds_reduced_for_a_rare_class_and_skip_when_impossible(tiny_bert_dir, tmp_path):
    texts = [f"good {i}" for i in range(10)] + [f"bad {i}" for i in range(10)] + ["meh 1", "meh 2"]
    ys = ["pos"] * 10 + ["neg"] * 10 + ["neu"] * 2
    ds = Dataset(task="classification", ids=[str(i) for i in range(22)], labels=ys, texts=texts, tokens=None)
    probs, info = out_of_fold(ds, LABELS, "classification", model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert info["folds"] == 2 and "'neu' has only 2" in info["note"]
    assert probs.shape == (22, 3)

    one = Dataset(task="classification", ids=["a", "b"], labels=["pos", "pos"], texts=["x", "y"], tokens=None)
    with pytest.raises(Skip, match="2 classes"):
        out_of_fold(one, LABELS, "classification", model=str(tiny_bert_dir), cache_dir=tmp_path)
    single = Dataset(task="classification", ids=["a"], labels=["pos"], texts=["x"], tokens=None)
    with pytest.raises(Skip, match="at least 2"):
        out_of_fold(single, LABELS, "classification", model=str(tiny_bert_dir), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="full label list"):
        out_of_fold(ds, ["neg", "pos"], "classification", model=str(tiny_bert_dir), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="fast, full"):
        out_of_fold(ds, LABELS, "classification", mode="slow")


def test_ner_fast_gives_per_word_probabilities(ner_conll, tiny_bert_dir, tmp_path):
    ds = load(str(ner_conll), "ner")
    tags = ["O", "B-location", "I-location", "B-person", "I-person"]
    probs, info = out_of_fold(ds, tags, "ner", model=str(tiny_bert_dir), cache_dir=tmp_path, folds=3)
    assert len(probs) == len(ds) == 120
    assert [p.shape for p in probs] == [(len(t), 5) for t in ds.tokens]
    for p in probs:
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert info["folds"] == 3 and info["metric"] == "entity_f1" and len(info["fold_metrics"]) == 3
    # Word-level logistic regression finds "O" vs entity words well above chance.
    word_acc = np.mean([(p.argmax(1) == [tags.index(t) for t in y]).mean() for p, y in zip(probs, ds.labels)])
    assert word_acc > 0.7


def test_full_mode_fine_tunes_per_fold(cls_csv, tiny_bert_dir):
    from reflectlm.config import ModelConfig, TrainConfig

    ds = load(str(cls_csv), "classification").subset(range(60))
    tc = TrainConfig(epochs=1, batch_size=16, lr=1e-2, head_lr=0.0, telemetry_every=0, precision="fp32", seed=0)
    probs, info = out_of_fold(ds, LABELS, "classification", mode="full", folds=2, train_cfg=tc,
                              model_cfg=ModelConfig(name=str(tiny_bert_dir)))
    assert probs.shape == (60, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert info["mode"] == "full" and info["folds"] == 2 and len(info["fold_metrics"]) == 2
    assert sorted(np.bincount(info["fold"]).tolist()) == [30, 30]


# ---------------------------------------------------------------- the check


def test_check_reports_mean_and_spread():
    ctx = make_context()
    (f,) = CrossValidation().run(ctx)
    assert f.check == "crossval" and f.kind == "cv_spread"
    assert f.evidence["mean"] == pytest.approx(0.804) and f.evidence["std"] == pytest.approx(np.std([0.8, 0.82, 0.79, 0.81, 0.8]))
    assert f.severity == pytest.approx(f.evidence["std"] / 0.05)
    assert f.to_json()["evidence"]["folds"] == 5
    assert CrossValidation().params() == {"spread_scale": 0.05, "gap_scale": 0.1}


def test_severity_grows_with_spread_and_with_the_gap_to_selection():
    steady, shaky = make_context(), make_context()
    shaky.cv = {**shaky.cv, "fold_metrics": [0.6, 0.9, 0.7, 0.85, 0.75]}
    s_steady = CrossValidation().run(steady)[0].severity
    s_shaky = CrossValidation().run(shaky)[0].severity
    assert s_steady < 0.3 and s_shaky == 1.0

    near, far = make_context(), make_context()
    near.cv = {**near.cv, "mode": "full"}
    far.cv = {**far.cv, "mode": "full"}
    near.selection_metrics = {"macro_f1": 0.81}
    far.selection_metrics = {"macro_f1": 0.95}
    f_near, f_far = CrossValidation().run(near)[0], CrossValidation().run(far)[0]
    assert f_far.evidence["gap"] == pytest.approx(0.146)
    assert f_near.severity < 0.3 < 0.9 < f_far.severity


def test_check_skips_without_cv():
    ctx = make_context()
    ctx.cv = None
    with pytest.raises(Skip):
        CrossValidation().run(ctx)
    ctx.cv = {"mode": "fast", "folds": 5, "fold_metrics": []}
    with pytest.raises(Skip, match="no fold metrics"):
        CrossValidation().run(ctx)


def test_full_mode_zeroes_a_class_the_fold_never_trained_on(tiny_bert_dir):
    from reflectlm.config import ModelConfig, TrainConfig

    texts = [f"good thing {i}" for i in range(12)] + [f"bad thing {i}" for i in range(12)] + ["meh"]
    ys = ["pos"] * 12 + ["neg"] * 12 + ["neu"]
    ds = Dataset(task="classification", ids=[str(i) for i in range(25)], labels=ys, texts=texts, tokens=None)
    tc = TrainConfig(epochs=1, batch_size=16, lr=1e-2, head_lr=0.0, telemetry_every=0, precision="fp32", seed=0)
    probs, info = out_of_fold(ds, LABELS, "classification", mode="full", folds=2, train_cfg=tc,
                              model_cfg=ModelConfig(name=str(tiny_bert_dir)))
    assert "one example" in info["note"]
    # The fold holding the single "neu" example trained without it: no probability for "neu" there.
    fold = np.array(info["fold"])
    assert (probs[fold == fold[24], 1] == 0).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


# ---------------------------------------------------------------- the head always fits


def _crowded_unit_vectors(n_classes=120, per_class=20, dim=128, spread=0.2, seed=0):
    """Many classes of unit vectors around one shared direction: the gradient at the all-zero
    start is about (class-mean difference) / n_classes, below the old head's tol=1e-3."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=dim) + spread * rng.normal(size=(n_classes, dim))
    X = np.repeat(centres, per_class, 0) + 0.5 * spread * rng.normal(size=(n_classes * per_class, dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), np.repeat(np.arange(n_classes), per_class)


def _crowded_dataset(monkeypatch, **kw):
    X, y = _crowded_unit_vectors(**kw)
    labels = [f"c{k:03d}" for k in range(y.max() + 1)]
    ds = Dataset(task="classification", ids=[str(i) for i in range(len(y))], labels=[labels[k] for k in y],
                 texts=[f"text {i}" for i in range(len(y))], tokens=None)
    by_text = dict(zip(ds.texts, X))
    import reflectlm.embed

    monkeypatch.setattr(reflectlm.embed, "embed_texts", lambda texts, **_: np.stack([by_text[t] for t in texts]))
    return ds, labels


def test_old_head_stopped_at_iteration_zero_and_the_new_one_fits_every_fold(monkeypatch):
    import warnings

    from sklearn.linear_model import LogisticRegression

    X, y = _crowded_unit_vectors()
    assert crossval.start_gradient(X, y, np.unique(y)) < 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = LogisticRegression(C=10.0, max_iter=1000, tol=1e-3).fit(X, y)  # the head before the fix
    assert old.n_iter_.tolist() == [0] and not old.coef_.any()
    np.testing.assert_allclose(old.predict_proba(X[:5]), 1 / 120, rtol=1e-6)  # uniform

    ds, labels = _crowded_dataset(monkeypatch)
    probs, info = out_of_fold(ds, labels, "classification")
    accuracy = [(probs[np.array(info["fold"]) == f].argmax(1) == np.repeat(np.arange(120), 20)[np.array(info["fold"]) == f]).mean()
                for f in range(5)]
    assert min(accuracy) > 0.9  # chance is 1/120
    assert min(info["fold_metrics"]) > 0.9 and "refits" not in info  # fitted at the first try


def test_a_degenerate_fit_is_refitted_tighter_and_recorded(monkeypatch):
    X, y = _crowded_unit_vectors()
    # A tolerance exactly at the starting gradient reproduces iteration 0 on purpose.
    monkeypatch.setattr(crossval, "HEAD_TOL", 1.0)
    monkeypatch.setattr(crossval, "HEAD_REL_TOL", 1.0)
    head = crossval.fit_head(X, y, 120)
    (refit,) = head.fit_info["refits"]
    assert "iteration 0" in refit["reason"] and refit["tol"] == pytest.approx(crossval.start_gradient(X, y, np.unique(y)))
    assert head.fit_info["n_iter"] > 0 and head.fit_info["tol"] == pytest.approx(refit["tol"] / 100)
    assert (head(X).argmax(1) == y).mean() > 0.9


def test_a_head_that_cannot_fit_raises_with_the_reason(monkeypatch):
    X, y = _crowded_unit_vectors()
    monkeypatch.setattr(crossval, "HEAD_TOL", 1.0)
    monkeypatch.setattr(crossval, "HEAD_REL_TOL", 1e4)  # both tries stay above the starting gradient
    with pytest.raises(crossval.HeadFitError, match=r"iteration 0 .* even at tol=1.0e-02"):
        crossval.fit_head(X, y, 120)
    with pytest.raises(crossval.HeadFitError, match="no gradient"):
        crossval.fit_head(np.ones((40, 8)), np.repeat([0, 1], 20), 2)


def _uniform_on_fold(monkeypatch, fold: int, *, always: bool):
    """fit_head, except that the fold-th call (and its refit too when `always`) returns a head
    that answers uniform probabilities - what the old head gave a whole fold."""
    real, calls = crossval.fit_head, []

    def fake(X, y, n_classes, seed=0, C=crossval.FAST_C, tol_scale=1.0):
        calls.append(tol_scale)
        if len(calls) == fold or (always and tol_scale < 1):
            return lambda Xq: np.full((len(Xq), n_classes), 1 / n_classes, dtype=np.float32)
        return real(X, y, n_classes, seed, C, tol_scale=tol_scale)

    monkeypatch.setattr(crossval, "fit_head", fake)
    return calls


def test_a_fold_at_chance_is_refitted_and_reported_by_the_check(monkeypatch):
    ds, labels = _crowded_dataset(monkeypatch)
    calls = _uniform_on_fold(monkeypatch, 3, always=False)
    probs, info = out_of_fold(ds, labels, "classification")
    assert calls == [1.0] * 5 + [0.01]  # fold 3 fitted again, 100x tighter
    assert min(info["fold_metrics"]) > 0.9
    (refit,) = info["refits"]
    assert refit["fold"] == 3 and "at chance" in refit["reason"]

    ctx = make_context()
    ctx.cv = info
    ctx.selection_metrics = None
    (finding,) = CrossValidation().run(ctx)
    assert finding.evidence["refits"] == info["refits"] and finding.to_json()["evidence"]["refits"][0]["fold"] == 3


def test_a_fold_still_at_chance_after_the_refit_fails_loudly(monkeypatch):
    ds, labels = _crowded_dataset(monkeypatch)
    _uniform_on_fold(monkeypatch, 2, always=True)
    with pytest.raises(crossval.HeadFitError, match="fold 2's logistic head scored at chance"):
        out_of_fold(ds, labels, "classification")
