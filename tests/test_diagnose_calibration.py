"""diagnose.calibration: ECE / MCE against hand computations, the temperature that fixes an
over-confident model, and silence for a calibrated one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_context

from reflectlm.data import Dataset
from reflectlm.diagnose.base import Context, Finding
from reflectlm.diagnose.calibration import Calibration, reliability


def binary_context(top: np.ndarray, gold: np.ndarray) -> Context:
    """Predicted class 0 with probability `top` (> 0.5) per example; gold class 0 or 1."""
    probs = np.stack([top, 1 - top], axis=1)
    labels = ["a", "b"]
    ds = Dataset(task="classification", ids=[f"x{i}" for i in range(len(gold))], labels=[labels[k] for k in gold],
                 texts=[f"t{i}" for i in range(len(gold))], tokens=None)
    return Context(task="classification", labels=labels, selection=ds, selection_probs=probs, seed=0)


def test_overconfident_ece_mce_and_temperature():
    # Every example at confidence 0.95, right 70% of the time: ECE = MCE = |0.70 - 0.95| = 0.25.
    gold = np.array([0] * 700 + [1] * 300)
    f = Calibration().run(binary_context(np.full(1000, 0.95), gold))[0]
    ev = f.evidence
    assert f.kind == "miscalibration"
    assert ev["ece"] == pytest.approx(0.25) and ev["mce"] == pytest.approx(0.25)
    assert ev["gap"] == pytest.approx(0.25) and ev["direction"] == "over-confident"
    # The NLL-optimal temperature maps 0.95 to 0.70: T = log(0.95 / 0.05) / log(0.7 / 0.3).
    assert ev["temperature"] == pytest.approx(np.log(19) / np.log(7 / 3), rel=1e-3)
    assert ev["temperature"] > 1 and ev["ece_after_temperature"] < 0.005
    assert ev["nll_after_temperature"] < ev["nll"]
    assert ev["p_value"] < 0.05 and f.severity == 1.0  # min(1, 0.25 / 0.15)
    full = [row for row in ev["reliability"] if row["count"]]
    assert len(ev["reliability"]) == 15 and full == [
        {"lower": 14 / 15, "upper": 1.0, "count": 1000, "confidence": pytest.approx(0.95),
         "accuracy": pytest.approx(0.7)}]


def test_two_bins_hand_computed():
    # Half at 0.9 (60% right), half at 0.6 (50% right): ECE = 0.5 * 0.3 + 0.5 * 0.1 = 0.2, MCE = 0.3.
    top = np.array([0.9] * 100 + [0.6] * 100)
    gold = np.array([0] * 60 + [1] * 40 + [0] * 50 + [1] * 50)
    f = Calibration().run(binary_context(top, gold))[0]
    assert f.evidence["ece"] == pytest.approx(0.2) and f.evidence["mce"] == pytest.approx(0.3)
    assert f.severity == pytest.approx(min(1, 0.2 / 0.15))
    assert Calibration(scale=0.4).run(binary_context(top, gold))[0].severity == pytest.approx(0.5)


def test_calibrated_model_is_quiet():
    rng = np.random.default_rng(7)
    top = rng.uniform(0.5, 1.0, size=2000)
    gold = (rng.random(2000) >= top).astype(int)  # right with probability = confidence
    f = Calibration().run(binary_context(top, gold))[0]
    assert f.severity == 0.0 and f.evidence["p_value"] >= 0.05
    assert f.evidence["ece"] < 0.05
    assert 0.8 < f.evidence["temperature"] < 1.25


def test_underconfident_gets_temperature_below_one():
    gold = np.array([0] * 95 + [1] * 5)
    f = Calibration().run(binary_context(np.full(100, 0.6), gold))[0]
    assert f.evidence["direction"] == "under-confident" and f.evidence["gap"] == pytest.approx(-0.35)
    assert f.evidence["temperature"] < 1


def test_ner_counts_every_word():
    ctx = make_context("ner", n=40)
    f = Calibration().run(ctx)[0]
    assert f.evidence["n"] == sum(len(t) for t in ctx.selection.labels) and f.evidence["unit"] == "words"
    probs = np.concatenate(ctx.selection_probs)
    gold = np.array([ctx.labels.index(t) for tags in ctx.selection.labels for t in tags])
    ece, _, _ = reliability(probs.max(1).astype(np.float64), (probs.argmax(1) == gold).astype(float))
    assert f.evidence["ece"] == pytest.approx(ece)


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_deterministic_and_json_round_trip(task):
    a = [f.to_json() for f in Calibration().run(make_context(task, n=60, seed=5))]
    b = [f.to_json() for f in Calibration().run(make_context(task, n=60, seed=5))]
    assert a == b
    for d in a:
        assert Finding.from_json(json.loads(json.dumps(d))).to_json() == d


@pytest.mark.parametrize("task", ["classification", "ner"])
@pytest.mark.parametrize("n,classes", [(0, ("a", "b")), (12, ("a",))])
def test_empty_and_one_class(task, n, classes):
    findings = Calibration().run(make_context(task, n=n, classes=classes))
    assert len(findings) == (0 if n == 0 else 1)
    if task == "classification" and n:  # a single class: probability 1, always right
        assert findings[0].severity == 0.0 and findings[0].evidence["temperature"] == 1.0
