"""Over- and under-fitting and the peak epoch (diagnose/fit.py), on per-epoch histories built to
show each, a healthy one, and degenerate ones."""

from __future__ import annotations

import json

import pytest
from conftest import make_context

from reflectlm.diagnose.base import Context, Finding, Skip
from reflectlm.diagnose.fit import Fit, selection_metric


def _rows(train_loss, train_acc, sel_loss, sel_metric, metric="macro_f1"):
    return [{"epoch": e + 1, "train_loss": tl, "train_accuracy": ta, "selection_loss": sl, f"selection_{metric}": sm,
             "lr": 1e-4, "seconds": 1.0}
            for e, (tl, ta, sl, sm) in enumerate(zip(train_loss, train_acc, sel_loss, sel_metric))]


def _ctx(history, task="classification", train_config=None) -> Context:
    return Context(task=task, labels=["a", "b"], history=history, train_config=train_config)


def _kinds(findings):
    return {f.kind: f for f in findings}


# Six epochs: selection loss bottoms out at epoch 3 and climbs while train loss keeps falling.
OVERFIT = _rows(train_loss=[0.9, 0.6, 0.4, 0.25, 0.15, 0.08], train_acc=[0.65, 0.78, 0.86, 0.92, 0.96, 0.98],
                sel_loss=[0.8, 0.6, 0.5, 0.55, 0.62, 0.7], sel_metric=[0.60, 0.70, 0.76, 0.75, 0.74, 0.73])

# Converged: both curves flatten, the selection metric still creeps up to the last epoch.
HEALTHY = _rows(train_loss=[0.9, 0.5, 0.35, 0.3], train_acc=[0.70, 0.85, 0.90, 0.92],
                sel_loss=[0.8, 0.55, 0.45, 0.44], sel_metric=[0.68, 0.80, 0.84, 0.845])


def test_rising_selection_loss_is_overfitting_with_the_right_best_epoch():
    by = _kinds(Fit().run(_ctx(OVERFIT)))
    assert set(by) == {"overfitting", "peak_epoch"}
    over = by["overfitting"]
    assert over.evidence["best_epoch"] == 3 and over.evidence["last_epoch"] == 6
    assert over.evidence["metric"] == "macro_f1"
    sl = over.evidence["selection_loss"]
    assert sl["min_epoch"] == 3 and sl["relative_rise"] == pytest.approx(0.4)
    assert sl["train_loss_last"] < sl["train_loss_at_min"]
    # The gap (0.98 - 0.73 = 0.25, up from 0.05) counts too.
    assert over.evidence["gap"]["last"] == pytest.approx(0.25) and over.evidence["gap"]["growth"] == pytest.approx(0.2)
    assert over.severity == pytest.approx(0.3 + 0.5 * 1.0)  # gap growth 0.2 saturates
    peak = by["peak_epoch"]
    assert peak.evidence["best_epoch"] == 3 and peak.evidence["epochs_after_peak"] == 3
    assert peak.severity == pytest.approx(0.1 + 0.3 * 3 / 6) and peak.severity < over.severity
    assert "epoch 3" in over.summary


def test_selection_loss_rise_needs_two_epochs_after_the_minimum():
    hist = OVERFIT[:4]  # one epoch after the minimum: noise, not a trend (the gap rule still fires)
    assert "selection_loss" not in _kinds(Fit().run(_ctx(hist)))["overfitting"].evidence
    assert _kinds(Fit(patience=1).run(_ctx(hist)))["overfitting"].evidence["selection_loss"]["min_epoch"] == 3


def test_large_and_growing_gap_is_overfitting():
    hist = _rows(train_loss=[0.8, 0.5, 0.3, 0.15], train_acc=[0.75, 0.88, 0.95, 0.99],
                 sel_loss=[0.7, 0.6, 0.58, 0.57], sel_metric=[0.68, 0.70, 0.71, 0.715], metric="accuracy")
    over = _kinds(Fit().run(_ctx(hist)))["overfitting"]
    assert "selection_loss" not in over.evidence  # the loss did not turn up
    assert over.evidence["gap"]["last"] == pytest.approx(0.275) and over.evidence["metric"] == "accuracy"
    # A constant offset between train accuracy and macro F1 is not over-fitting: the gap must grow.
    flat = _rows([0.8, 0.6, 0.5, 0.45], [0.90, 0.91, 0.92, 0.92], [0.7, 0.6, 0.55, 0.5], [0.70, 0.71, 0.72, 0.72])
    assert "overfitting" not in _kinds(Fit().run(_ctx(flat)))


def test_gap_of_a_model_that_never_fit_train_is_not_overfitting():
    # A diverged model: train accuracy 0.3 -> 0.4, macro F1 of a one-class predictor stuck at 0.17.
    hist = _rows([13.0, 7.0, 5.0], [0.29, 0.36, 0.40], [13.7, 3.3, 3.0], [0.167, 0.167, 0.167])
    assert "overfitting" not in _kinds(Fit().run(_ctx(hist)))


def test_still_improving_and_low_is_underfitting():
    hist = _rows(train_loss=[1.0, 0.9, 0.8], train_acc=[0.45, 0.58, 0.70], sel_loss=[1.0, 0.92, 0.85],
                 sel_metric=[0.40, 0.52, 0.63])
    by = _kinds(Fit().run(_ctx(hist)))
    assert set(by) == {"underfitting"}
    under = by["underfitting"]
    assert under.evidence["train_accuracy_gain_last_epoch"] == pytest.approx(0.12)
    assert under.evidence["selection_gain_last_epoch"] == pytest.approx(0.11)
    assert under.evidence["best_epoch"] == 3 == under.evidence["last_epoch"]
    assert under.evidence["suggested_epochs"] > 3
    assert under.severity == pytest.approx(0.8)


def test_healthy_history_is_quiet():
    assert Fit().run(_ctx(HEALTHY)) == []


def test_peak_is_not_reported_when_early_stopping_already_stopped_there():
    hist = OVERFIT[:5]  # best epoch 3, stopped after 2 epochs without improvement
    assert "peak_epoch" in _kinds(Fit().run(_ctx(hist)))
    assert "peak_epoch" not in _kinds(Fit().run(_ctx(hist, train_config={"early_stopping_patience": 2})))


def test_selection_metric_column():
    assert selection_metric(OVERFIT, "classification") == "macro_f1"
    both = [{**r, "selection_entity_f1": 0.5, "selection_accuracy": 0.9} for r in OVERFIT]
    assert selection_metric(both, "ner") == "entity_f1"
    assert selection_metric(both, "classification", configured="accuracy") == "accuracy"
    only_loss = [{k: v for k, v in r.items() if k != "selection_macro_f1"} for r in OVERFIT]
    assert selection_metric(only_loss, "classification") == "loss"
    # Judged by selection loss alone, the best epoch is its minimum.
    over = _kinds(Fit().run(_ctx(only_loss)))["overfitting"]
    assert over.evidence["metric"] == "loss" and over.evidence["best_epoch"] == 3 and "gap" not in over.evidence


def test_entity_f1_is_not_compared_with_train_accuracy():
    hist = _rows([0.8, 0.5, 0.3, 0.15], [0.75, 0.88, 0.95, 0.99], [0.7, 0.6, 0.58, 0.57], [0.40, 0.45, 0.46, 0.465],
                 metric="entity_f1")
    assert "overfitting" not in _kinds(Fit().run(_ctx(hist, task="ner")))


def test_missing_values_and_short_histories():
    with pytest.raises(Skip, match="at least 2 epochs"):
        Fit().run(_ctx(HEALTHY[:1]))
    with pytest.raises(Skip, match="at least 2 epochs"):
        Fit().run(_ctx([]))
    with pytest.raises(Skip, match="needs history"):
        Fit().run(_ctx(None))
    with pytest.raises(Skip, match="no selection_"):
        Fit().run(_ctx([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}]))
    no_loss = [{**r, "selection_loss": None} for r in OVERFIT]  # evaluation without a loss
    over = _kinds(Fit().run(_ctx(no_loss)))["overfitting"]
    assert over.evidence["best_epoch"] == 3 and over.evidence["curve"]["selection_loss"] == [None] * 6
    assert Finding.from_json(json.loads(json.dumps(over.to_json()))) == over


@pytest.mark.parametrize("kw", [dict(), dict(n=0), dict(classes=("a",)), dict(task="ner"), dict(epochs=1),
                                dict(epochs=2)])
def test_synthetic_contexts_do_not_crash_and_findings_round_trip(kw):
    try:
        findings = Fit().run(make_context(**kw))
    except Skip:
        return
    for f in findings:
        assert 0 <= f.severity <= 1 and f.check == "fit" and f.summary and f.scores is None
        assert Finding.from_json(json.loads(json.dumps(f.to_json()))) == f


def test_deterministic_and_params():
    a = [f.to_json() for f in Fit().run(_ctx(OVERFIT))]
    assert a == [f.to_json() for f in Fit().run(_ctx(OVERFIT))]
    p = Fit(patience=3, max_gap=0.2).params()
    assert p["patience"] == 3 and p["max_gap"] == 0.2 and json.loads(json.dumps(p)) == p
