"""Out-of-scope detectors, their [0, 1] scores, the threshold and the open-set metrics, each
against a case computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reflectlm import open_set as O


def test_msp_is_one_minus_the_top_softmax_probability():
    z = np.array([[0.0, 0.0], [math.log(3.0), 0.0]])
    np.testing.assert_allclose(O.MSP().raw(z), [0.5, 0.25])


def test_energy_is_minus_logsumexp():
    z = np.array([[0.0, 0.0], [1.0, 2.0]])
    np.testing.assert_allclose(O.Energy().raw(z), [-math.log(2.0), -math.log(math.e + math.e**2)])


def test_mahalanobis_fits_class_means_and_a_shared_covariance_and_scores_the_nearest_mean():
    # Hand-set state: means (0, 0) and (4, 0), precision diag(1, 4).
    det = O.Mahalanobis(means=np.array([[0.0, 0.0], [4.0, 0.0]]), precision=np.diag([1.0, 4.0]))
    x = np.array([[1.0, 1.0], [3.0, 0.0], [2.0, -0.5]])
    # (1,1): to m0 1 + 4 = 5, to m1 9 + 4 = 13 -> 5; (3,0): 9 vs 1 -> 1; (2,-0.5): 4 + 1 = 5 both -> 5
    np.testing.assert_allclose(det.raw(None, x), [5.0, 1.0, 5.0])
    # fit: the means are the class means; an example at its class mean scores 0
    feats = np.array([[0.0, 1.0], [0.0, -1.0], [5.0, 2.0], [5.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    y = np.array([0, 0, 1, 1, 0, 0])
    fitted = O.Mahalanobis().fit(feats, y)
    np.testing.assert_allclose(fitted.means, [[0.0, 0.0], [5.0, 1.0]])
    assert fitted.raw(None, np.array([[5.0, 1.0]]))[0] == pytest.approx(0.0, abs=1e-9)
    far, near = fitted.raw(None, np.array([[20.0, 20.0], [0.1, 0.1]]))
    assert far > 10 * near


def test_knn_is_one_minus_the_cosine_of_the_kth_neighbour():
    bank = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    q = np.array([[1.0, 1.0]])
    assert O.KNN(k=1).fit(bank).raw(None, q)[0] == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)
    assert O.KNN(k=3).fit(bank).raw(None, q)[0] == pytest.approx(1 + 1 / math.sqrt(2), abs=1e-6)
    with pytest.raises(O.OpenSetError, match="at least k"):
        O.KNN(k=5).fit(bank)


def test_the_score_is_the_share_of_in_scope_selection_scores_below_it_and_the_round_trip_keeps_it():
    os_ = O.OpenSet(O.MSP(), np.array([0.1, 0.2, 0.3, 0.4]), threshold=0.5)
    z = np.log(np.array([[0.95, 0.05], [0.75, 0.25], [0.5, 0.5]]))  # raw 0.05, 0.25, 0.5
    np.testing.assert_allclose(os_.score(z), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(os_.rejects(z), [False, False, True])
    meta, arrays = os_.to_json()
    back = O.OpenSet.from_json(meta, arrays)
    np.testing.assert_allclose(back.score(z), os_.score(z))
    det = O.Mahalanobis(means=np.eye(2), precision=np.eye(2))
    m = O.OpenSet(det, np.array([0.5, 1.0]), 0.9)
    back = O.OpenSet.from_json(*m.to_json())
    np.testing.assert_allclose(back.raw(None, np.array([[3.0, 0.0]])), [4.0])


def _toy(seed=0, n=60):
    """Two in-scope classes around (+-3, 0) and out-of-scope examples around (0, 6); logits that
    are confident on both (so the softmax cannot see the out-of-scope ones, the features can)."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    feats = np.stack([np.where(y == 0, -3.0, 3.0), np.zeros(n)], 1) + rng.normal(0, 0.5, (n, 2))
    oos = np.array([0.0, 6.0]) + rng.normal(0, 0.5, (n // 3, 2))
    logits = lambda f: np.stack([-f[:, 0], f[:, 0]], 1) * 3 + np.where(f[:, 1:2] > 3, 8.0, 0.0) * [[1, 0]]  # noqa: E731
    return feats, y, logits(feats), oos, logits(oos)


def test_fit_chooses_the_detector_and_threshold_on_the_selection_split():
    ftr, ytr, ztr, _, _ = _toy(0)
    fsel_in, ysel_in, zsel_in, fsel_oos, zsel_oos = _toy(1)
    fsel = np.concatenate([fsel_in, fsel_oos])
    zsel = np.concatenate([zsel_in, zsel_oos])
    # the selection split's out-of-scope examples carry index 2 ("oos" is not a training label here)
    ysel = np.concatenate([ysel_in, np.full(len(fsel_oos), -1)])
    fitted = O.fit(ftr, ytr, ztr, fsel, zsel, ysel, labels=["a", "b"], sel_oos=ysel == -1)
    assert fitted.detector.name in {"mahalanobis", "knn"}  # the softmax is confident on the out-of-scope ones
    assert fitted.selection["msp"]["auroc"] < fitted.selection[fitted.detector.name]["auroc"]
    assert "highest AUROC" in fitted.chosen_by and "threshold maximising" in fitted.chosen_by
    assert fitted.rejects(zsel_oos, fsel_oos).mean() > 0.9 and fitted.rejects(zsel_in, fsel_in).mean() < 0.1
    # without out-of-scope examples: mahalanobis, and the quantile that rejects max_false_rejection
    fitted = O.fit(ftr, ytr, ztr, fsel_in, zsel_in, ysel_in, labels=["a", "b"], max_false_rejection=0.1)
    assert fitted.detector.name == "mahalanobis" and fitted.threshold == pytest.approx(0.9)
    # at most 10 % of them (the scores are k / n: the largest share <= 10 %)
    assert 0.1 - 1 / len(ysel_in) - 1e-9 <= fitted.rejects(zsel_in, fsel_in).mean() <= 0.1


def test_the_training_data_s_out_of_scope_class_is_used_as_a_class():
    ftr, ytr, ztr, foos, zoos = _toy(0)
    # a third class "oos" (index 1) trained from out-of-scope examples: logits get a third column
    labels = ["a", "oos", "b"]
    y3 = np.concatenate([np.where(ytr == 0, 0, 2), np.ones(len(foos), int)])
    f3 = np.concatenate([ftr, foos])
    z3 = np.concatenate([np.insert(ztr, 1, -5.0, axis=1), np.insert(zoos, 1, 20.0, axis=1)])
    fitted = O.fit(f3, y3, z3, f3, z3, y3, labels=labels, detectors=["msp"])
    assert fitted.oos_class == 1
    # predicted "oos" by the classifier -> rejected whatever the score
    assert fitted.rejects(np.insert(zoos, 1, 20.0, axis=1), foos).all()


def test_bad_settings_say_what_to_change():
    with pytest.raises(O.OpenSetError, match=r"threshold = 1.5 must be in \[0, 1\]"):
        O.check_settings("oos", ["a", "b"], 0.05, threshold=1.5)
    with pytest.raises(O.OpenSetError, match=r"max_false_rejection = 0 must be in \(0, 1\)"):
        O.check_settings("oos", ["a", "b"], 0)
    with pytest.raises(O.OpenSetError, match="fallback label 'a' is also an intent"):
        O.check_settings("oos", ["a", "b"], 0.05, fallback="a")
    with pytest.raises(O.OpenSetError, match="unknown out-of-scope detector"):
        O.make_detector("odin")


def test_open_set_metrics_by_hand():
    # classes 0, 1; out of scope = 2. Four in-scope examples, two out of scope.
    y = np.array([0, 0, 1, 1, 2, 2])
    argmax = np.array([0, 1, 1, 1, 0, 1])
    pred = np.array([0, 2, 1, 1, 2, 1])  # one in-scope rejected (it was wrong anyway), one oos caught
    scores = np.array([0.1, 0.8, 0.2, 0.3, 0.9, 0.25])
    m = O.metrics(y, pred, scores, oos_index=2, argmax_pred=argmax)
    assert m["in_scope_accuracy"] == pytest.approx(3 / 4)
    assert m["in_scope_accuracy_without_detector"] == pytest.approx(3 / 4)
    assert m["false_rejection"] == pytest.approx(1 / 4)
    assert (m["oos_precision"], m["oos_recall"], m["f1_open"]) == pytest.approx((0.5, 0.5, 0.5))
    # F1 known: class 0 P 1 R 1/2 -> 2/3; class 1 P 2/3 R 1 -> 4/5
    assert m["f1_known"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # AUROC: oos scores 0.9, 0.25 against in-scope 0.1, 0.8, 0.2, 0.3: 0.9 beats 4, 0.25 beats 2 -> 6/8
    assert m["auroc"] == pytest.approx(6 / 8)
    # at <= 5 % false rejection (none of the 4 in-scope rejected): only 0.9 is above 0.8 -> recall 1/2
    assert m["oos_recall_at_5pct_false_rejection"] == pytest.approx(0.5)


def test_features_are_what_the_output_layer_reads_in_training_and_serving_alike(tiny_bert_dir):
    import torch

    from reflectlm.config import ModelConfig
    from reflectlm.data import Dataset
    from reflectlm.deploy.predictor import from_bundle, torch_forward
    from reflectlm.evaluate import evaluate_bundle
    from reflectlm.modeling import build
    from reflectlm.tasks.base import softmax

    bundle = build(ModelConfig(name=str(tiny_bert_dir)), "classification", ["a", "b", "c"], max_length=32)
    texts = ["great service", "my card was declined at the shop", "hello"]
    ds = Dataset(task="classification", ids=["1", "2", "3"], labels=[None] * 3, texts=texts, tokens=None)
    from reflectlm.fit_open_set import logits_and_features

    logits, feats = logits_and_features(bundle, ds, precision="fp32")
    assert logits.shape == (3, 3) and feats.shape == (3, 32)
    probs = evaluate_bundle(bundle, ds, precision="fp32", labelled=False).probs
    np.testing.assert_allclose(softmax(logits, axis=1), probs, atol=1e-5)
    # the head maps the caught features to the logits
    with torch.no_grad():
        head = bundle.model.classifier(torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(head, logits, atol=1e-4)
    # and a served model's forward returns the same features beside its logits
    p = from_bundle(bundle, torch_forward(bundle.model, "classification", features=True), {})
    from reflectlm.evaluate import encode_bundle
    from reflectlm.tasks import get_task, model_inputs

    task = get_task("classification")
    batch = task.collate(encode_bundle(bundle, ds, labelled=False), 0)
    z, _, served = p.forward({k: v.numpy() for k, v in model_inputs(batch).items()})
    np.testing.assert_allclose(served, feats, atol=1e-5)
    np.testing.assert_allclose(z, logits, atol=1e-5)


def test_fold_puts_the_decision_and_the_score_in_the_probability_rows():
    ftr, ytr, ztr, foos, zoos = _toy(0)
    labels = ["a", "b", "oos"]  # out of scope: a class of the label list with no training examples
    z3 = lambda z: np.concatenate([z, np.full((len(z), 1), -9.0)], 1)  # noqa: E731
    fitted = O.fit(ftr, ytr, z3(ztr), ftr, z3(ztr), ytr, labels=labels, detectors=["mahalanobis"])
    assert fitted.oos_class == 2
    typical = np.argsort(fitted.raw(z3(ztr), ftr))[:5]  # the five most typical in-scope examples
    f = np.concatenate([ftr[typical], foos[:5]])
    z = z3(np.concatenate([ztr[typical], zoos[:5]]))
    from reflectlm.tasks.base import softmax

    probs, scores = fitted.fold(softmax(z, axis=1), z, f)
    rejected = fitted.rejects(z, f)
    assert rejected[5:].all() and not rejected[:5].any()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs[rejected].argmax(1) == 2).all()
    np.testing.assert_allclose(probs[rejected, 2], np.maximum(scores[rejected], 0.51), atol=1e-6)
    np.testing.assert_allclose(probs[~rejected], softmax(z, axis=1)[~rejected], atol=1e-6)
    rows = O.annotate([{"label": labels[k], "confidence": 1.0} for k in probs.argmax(1)], scores, fitted)
    assert [r["out_of_scope"] for r in rows] == list(rejected)
    assert all(r["label"] is None for r in rows[5:]) and rows[0]["label"] in ("a", "b")
    fitted.fallback = "handoff"
    rows = O.annotate([{"label": "oos", "confidence": 1.0}], scores[5:6], fitted)
    assert rows[0] == {"label": "handoff", "confidence": 1.0, "out_of_scope": True,
                       "out_of_scope_score": pytest.approx(float(scores[5]))}


def test_the_threshold_keeps_in_scope_accuracy_within_the_allowed_drop():
    # 20 in-scope examples (all right), 10 out of scope; the detector's scores interleave
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(10, int), np.ones(10, int), np.full(10, 2)]
    logits = np.zeros((30, 2))
    logits[np.arange(30), np.r_[np.zeros(10, int), np.ones(10, int), rng.integers(0, 2, 10)]] = 5.0
    scores = np.r_[np.linspace(0.0, 0.95, 20), np.linspace(0.5, 1.0, 10)]

    class Fixed(O.OpenSet):
        def score(self, logits, features=None, raw=None):
            return scores

    fixed = Fixed(O.MSP(), np.zeros(1), 1.0)
    t_free, _ = O.best_threshold(scores, logits, y, fixed, "macro_f1", 2)
    t_kept, _ = O.best_threshold(scores, logits, y, fixed, "macro_f1", 2, max_accuracy_drop=0.05)
    rejected = lambda t: scores > t  # noqa: E731
    assert rejected(t_free)[:20].mean() > 0.05  # the free choice turns away more than 1 in 20 in-scope
    assert rejected(t_kept)[:20].mean() <= 0.05 and t_kept >= t_free
