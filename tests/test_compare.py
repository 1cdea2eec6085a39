"""Paired A/B test: exact McNemar, paired bootstrap, decisions, guardrail, NER counts, bad input."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from reflectlm import compare as cmp
from reflectlm.compare import (compare, compare_ner, detectable_effect, mcnemar_exact, paired_bootstrap)


def _pairs(b: int, c: int, both_right: int = 5, both_wrong: int = 3) -> tuple[np.ndarray, np.ndarray]:
    champ = [1] * b + [0] * c + [1] * both_right + [0] * both_wrong
    chall = [0] * b + [1] * c + [1] * both_right + [0] * both_wrong
    return np.array(champ, bool), np.array(chall, bool)


def _tail(lo: int, hi: int, m: int) -> float:
    """P(lo <= X <= hi) for X ~ Binomial(m, 1/2), by hand."""
    return sum(math.comb(m, k) for k in range(lo, hi + 1)) / 2**m


def _with_errors(y: np.ndarray, wrong: np.ndarray, n_classes: int) -> np.ndarray:
    """Predictions equal to y except where `wrong`, which get the next class."""
    return np.where(wrong, (y + 1) % n_classes, y)


def _labels(k: int) -> list[str]:
    return [f"class_{i}" for i in range(k)]


# ---- McNemar --------------------------------------------------------------------------------

def test_mcnemar_b10_c2():
    r = mcnemar_exact(*_pairs(10, 2))
    assert (r["b"], r["c"], r["statistic"]) == (10, 2, 2)
    assert r["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 4096, abs=1e-12)
    assert r["p_value"] == pytest.approx(0.0385742, abs=1e-6)
    assert r["p_challenger_better"] == pytest.approx(_tail(2, 12, 12), abs=1e-12)


def test_mcnemar_b1_c9():
    r = mcnemar_exact(*_pairs(1, 9))
    assert (r["b"], r["c"]) == (1, 9)
    assert r["p_value"] == pytest.approx(2 * _tail(0, 1, 10), abs=1e-12)  # 22 / 1024
    assert r["p_challenger_better"] == pytest.approx(_tail(9, 10, 10), abs=1e-12)  # 11 / 1024


@pytest.mark.parametrize("b,c", [(0, 0), (5, 5)])
def test_mcnemar_no_evidence_gives_one(b, c):
    r = mcnemar_exact(*_pairs(b, c))
    assert r["p_value"] == pytest.approx(1.0)
    if b + c == 0:
        assert r["p_challenger_better"] == 1.0


def test_mcnemar_mid_p_by_hand():
    # b=1, c=9: exact 2 P(X <= 1) = 22/1024; mid-p 2 [P(X <= 1) - P(X = 1) / 2] = 2 (11 - 5) / 1024.
    r = mcnemar_exact(*_pairs(1, 9), test="mid_p")
    assert r["test"] == "mid_p" and r["p_exact"] == pytest.approx(22 / 1024, abs=1e-12)
    assert r["p_value"] == r["p_mid"] == pytest.approx(12 / 1024, abs=1e-12)
    assert mcnemar_exact(*_pairs(1, 9))["p_value"] == pytest.approx(22 / 1024, abs=1e-12)  # exact by default
    assert mcnemar_exact(*_pairs(5, 5), test="mid_p")["p_value"] == pytest.approx(1.0)  # b = c: no evidence
    with pytest.raises(ValueError, match="unknown McNemar test"):
        mcnemar_exact(*_pairs(1, 9), test="asymptotic")


def test_the_mid_p_gate_promotes_what_the_exact_one_cannot_confirm():
    # 1,000 examples, challenger right on 12 the champion misses and wrong on 3 it gets: exact
    # p = 0.035, mid-p p = 0.021; at alpha 0.03 only the mid-p gate confirms the bootstrap's gain.
    y = np.zeros(1000, dtype=int)
    champ, chall = y.copy(), y.copy()
    champ[:12] = 1
    chall[12:15] = 1
    kw = dict(labels=_labels(2), metric="accuracy", alpha=0.03, n_bootstrap=2000, seed=0, guardrail=False)
    exact, mid = compare(y, champ, chall, **kw), compare(y, champ, chall, mcnemar_test="mid_p", **kw)
    assert exact.ci_low > 0 and mid.ci_low == exact.ci_low
    assert exact.mcnemar["p_value"] > 0.03 > mid.mcnemar["p_value"]
    assert not exact.promote and "McNemar does not confirm" in exact.reason
    assert mid.promote and "McNemar mid-p p=" in mid.reason


def test_mcnemar_bad_shapes():
    with pytest.raises(ValueError, match="equal length"):
        mcnemar_exact([True, False], [True])


# ---- paired bootstrap -----------------------------------------------------------------------

def _loop_bootstrap(metric, y, a, b, n_bootstrap, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y), size=len(y))
        out.append(metric(y[idx], b[idx]) - metric(y[idx], a[idx]))
    return np.array(out)


@pytest.fixture
def noisy_pair():
    rng = np.random.default_rng(7)
    n, k = 200, 6
    y = rng.integers(0, k, n)
    a = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    b = np.where(rng.random(n) < 0.75, y, rng.integers(0, k, n))
    return y, a, b


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_bootstrap_matches_plain_sklearn_loop(noisy_pair, metric, monkeypatch):
    y, a, b = noisy_pair
    ids = np.unique(y)
    ref_metric = (accuracy_score if metric == "accuracy" else
                  lambda t, p: f1_score(t, p, labels=ids, average="macro", zero_division=0))
    ref = _loop_bootstrap(ref_metric, y, a, b, 57, seed=3)
    monkeypatch.setattr(cmp, "_BLOCK", 1000)  # 5 resamples per block: the indices must not change
    diffs, lo, hi = paired_bootstrap(metric, y, a, b, n_bootstrap=57, seed=3, alpha=0.1)
    np.testing.assert_allclose(diffs, ref, rtol=0, atol=1e-9)
    assert lo == pytest.approx(np.percentile(ref, 5), abs=1e-9)
    assert hi == pytest.approx(np.percentile(ref, 95), abs=1e-9)
    # a callable runs the slow path on the same indices
    slow, _, _ = paired_bootstrap(ref_metric, y, a, b, n_bootstrap=57, seed=3)
    np.testing.assert_allclose(slow, ref, rtol=0, atol=1e-12)


def test_macro_f1_equals_sklearn_with_gold_label_set():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 300)  # classes 8 and 9 never gold
    a = rng.integers(0, 10, 300)  # ... but predicted
    b = np.where(rng.random(300) < 0.5, y, a)
    r = compare(y, a, b, labels=_labels(10), n_bootstrap=10)
    ids = np.unique(y)
    assert r.champion == pytest.approx(f1_score(y, a, labels=ids, average="macro", zero_division=0), abs=1e-12)
    assert r.challenger == pytest.approx(f1_score(y, b, labels=ids, average="macro", zero_division=0), abs=1e-12)


def test_bootstrap_resamples_in_bounded_vectorised_blocks(monkeypatch):
    # 77 classes x 1,000 examples x 1,000 resamples: one count matrix per block of resamples, each
    # of at most _BLOCK entries (memory stays bounded), never one metric call per resample.
    rng = np.random.default_rng(1)
    y = rng.integers(0, 77, 1000)
    a = np.where(rng.random(1000) < 0.85, y, rng.integers(0, 77, 1000))
    b = np.where(rng.random(1000) < 0.88, y, rng.integers(0, 77, 1000))
    sizes, real = [], np.bincount

    def counting(x, *args, **kw):
        sizes.append(kw.get("minlength", 0))
        return real(x, *args, **kw)

    monkeypatch.setattr(cmp, "_BLOCK", 250_000)
    monkeypatch.setattr(np, "bincount", counting)
    r = compare(y, a, b, labels=_labels(77), n_bootstrap=1000)
    monkeypatch.undo()
    assert len(sizes) == 4 and all(0 < s <= 250_000 for s in sizes)  # 1,000 resamples / (250,000 // 1,000)
    assert r.ci_low < r.difference < r.ci_high


# ---- decisions ------------------------------------------------------------------------------

def test_identical_models_not_promoted():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    a = _with_errors(y, rng.random(300) < 0.2, 4)
    r = compare(y, a, a.copy(), labels=_labels(4), n_bootstrap=200)
    assert (r.difference, r.ci_low, r.ci_high) == (0.0, 0.0, 0.0)
    assert r.p_bootstrap == pytest.approx(1.0)
    assert r.mcnemar["p_value"] == 1.0
    assert not r.promote and "CI includes 0" in r.reason and r.reason.endswith("rejected")


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy"])
def test_clearly_better_challenger_promoted(metric):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 600)
    a = _with_errors(y, rng.random(600) < 0.3, 5)
    b = _with_errors(y, rng.random(600) < 0.1, 5)
    r = compare(y, a, b, labels=_labels(5), metric=metric, n_bootstrap=500)
    assert r.difference > 0.1 and r.ci_low > 0.05
    assert r.mcnemar["c"] > r.mcnemar["b"] and r.mcnemar["p_value"] < 1e-6
    assert r.p_bootstrap == pytest.approx(1 / 501)
    assert r.promote, r.reason
    assert r.reason.startswith(f"{metric} +0.")
    assert "(95% CI +0." in r.reason and r.reason.endswith("significant gain; promoted")
    assert r.guardrail["enabled"] and r.guardrail["tested_classes"] == 5 and r.guardrail["worse_classes"] == []


def test_tiny_noisy_gain_rejected():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 500)
    wrong = rng.random(500) < 0.2
    a = _with_errors(y, wrong, 3)
    flip_up = np.flatnonzero(wrong)[:6]  # challenger fixes 6 errors ...
    flip_down = np.flatnonzero(~wrong)[:4]  # ... and makes 4 new ones
    w2 = wrong.copy()
    w2[flip_up], w2[flip_down] = False, True
    b = _with_errors(y, w2, 3)
    r = compare(y, a, b, labels=_labels(3), metric="accuracy", n_bootstrap=500)
    assert r.difference == pytest.approx(2 / 500)
    assert (r.mcnemar["b"], r.mcnemar["c"]) == (4, 6)
    assert r.mcnemar["p_value"] == pytest.approx(2 * _tail(0, 4, 10), abs=1e-12)
    assert r.ci_low <= 0 < r.ci_high
    assert not r.promote and "not significant; rejected" in r.reason


def paired_se_accuracy(b: int, c: int, n: int) -> float:
    """The closed-form standard error of an accuracy difference from the McNemar counts: the
    per-example difference is +1 (c of them), -1 (b) or 0, so var = ((b + c) / n - ((c - b) / n)^2) / n."""
    return math.sqrt(max((b + c) / n - ((c - b) / n) ** 2, 0.0) / n)


def test_detectable_effect_against_the_closed_form():
    # b = 4, c = 6 of n = 500 (the test above): the per-example accuracy difference is +1 six
    # times and -1 four times, so se = sqrt((10/500 - (2/500)^2) / 500).
    se = paired_se_accuracy(4, 6, 500)
    assert se == pytest.approx(math.sqrt((10 / 500 - (2 / 500) ** 2) / 500))
    z = 1.959963984540054 + 0.8416212335729143  # z_{0.975} + z_{0.8}
    d = detectable_effect(se, 500, 0.05, observed=2 / 500)
    assert d["effect"] == pytest.approx(z * se)
    assert d["examples_needed"] == math.ceil(500 * (z * se / (2 / 500)) ** 2)
    assert d["more_examples"] == d["examples_needed"] - 500 and d["power"] == 0.8
    assert "examples_needed" not in detectable_effect(se, 500, 0.05, observed=-0.01)  # only for a gain
    with pytest.raises(ValueError, match="se >= 0"):
        detectable_effect(-1.0, 500, 0.05)


def test_a_rejected_gain_says_what_would_resolve_it():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 500)
    wrong = rng.random(500) < 0.2
    w2 = wrong.copy()
    w2[np.flatnonzero(wrong)[:6]], w2[np.flatnonzero(~wrong)[:4]] = False, True
    r = compare(y, _with_errors(y, wrong, 3), _with_errors(y, w2, 3), labels=_labels(3), metric="accuracy",
                n_bootstrap=2000)
    assert not r.promote and r.detectable is not None
    # The bootstrap's standard error agrees with the closed form for accuracy.
    assert r.detectable["se"] == pytest.approx(paired_se_accuracy(4, 6, 500), rel=0.1)
    assert r.detectable["effect"] > r.difference and r.detectable["examples_needed"] > 500
    assert "this split detects about +0.0" in r.reason and "selection examples would resolve +0.0040" in r.reason
    assert r.to_json()["detectable"]["more_examples"] == r.detectable["more_examples"]
    # A promoted challenger, a loss and a non-inferiority test carry none.
    better = compare(y, _with_errors(y, wrong, 3), y, labels=_labels(3), metric="accuracy", n_bootstrap=200)
    assert better.promote and better.detectable is None
    worse = compare(y, _with_errors(y, w2, 3), _with_errors(y, wrong, 3), labels=_labels(3), metric="accuracy",
                    n_bootstrap=200)
    assert worse.difference < 0 and worse.detectable is None
    ni = compare(y, _with_errors(y, wrong, 3), _with_errors(y, w2, 3), labels=_labels(3), metric="accuracy",
                 mode="non_inferiority", n_bootstrap=200)
    assert ni.detectable is None


def test_non_inferiority_margin():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 2000)
    wrong = rng.random(2000) < 0.1
    a = _with_errors(y, wrong, 4)
    slightly = wrong.copy()
    slightly[np.flatnonzero(~wrong)[:3]] = True  # 3 new errors in 2000
    r = compare(y, a, _with_errors(y, slightly, 4), labels=_labels(4), metric="accuracy",
                mode="non_inferiority", margin=0.01, n_bootstrap=500)
    assert r.difference == pytest.approx(-3 / 2000)
    assert r.ci_low > -0.01 and r.promote, r.reason
    assert "non-inferior; promoted" in r.reason
    assert r.p_bootstrap < 0.01  # few resamples lose more than the margin
    much = wrong.copy()
    much[np.flatnonzero(~wrong)[:200]] = True  # 10 points worse
    r = compare(y, a, _with_errors(y, much, 4), labels=_labels(4), metric="accuracy",
                mode="non_inferiority", margin=0.01, n_bootstrap=500, guardrail=False)
    assert r.ci_high < -0.05 and not r.promote
    assert "reaches below the -0.0100 margin" in r.reason and r.reason.endswith("rejected")


def _one_class_destroyed():
    y = np.repeat(np.arange(4), 50)
    champ_wrong = (y < 3) & (np.arange(200) % 50 < 20)  # classes 0-2 at recall 0.6, class 3 at 1.0
    chall_wrong = (y == 3) & (np.arange(200) % 50 < 25)  # classes 0-2 at 1.0, class 3 at 0.5
    return y, _with_errors(y, champ_wrong, 4), _with_errors(y, chall_wrong, 4)


def test_guardrail_rejects_class_regression():
    y, a, b = _one_class_destroyed()
    labels = ["balance", "transfer", "top_up", "card_arrival"]
    r = compare(y, a, b, labels=labels, n_bootstrap=300)
    assert r.difference > 0.1 and r.ci_low > 0  # better overall ...
    [w] = r.guardrail["worse_classes"]  # ... but one class is ruined
    assert w["class"] == "card_arrival" and w["n"] == 50
    assert (w["champion_recall"], w["challenger_recall"]) == (1.0, 0.5)
    assert w["p_value"] == pytest.approx(2 / 2**25, rel=1e-9)  # b=25, c=0
    assert not r.guardrail["allowed"] and not r.promote
    assert r.reason.startswith("class 'card_arrival' significantly worse (recall 1.00 -> 0.50, p=")
    assert "rejected by the per-class guardrail" in r.reason

    r = compare(y, a, b, labels=labels, n_bootstrap=300, allow_class_regressions=True)
    assert r.promote and r.guardrail["allowed"] and "allowed by allow_class_regressions" in r.reason
    r = compare(y, a, b, labels=labels, n_bootstrap=300, guardrail=False)
    assert r.promote and r.guardrail == {"enabled": False, "worse_classes": [], "allowed": True}


def test_guardrail_skips_small_classes():
    y = np.array([0] * 60 + [1] * 4)
    a = y.copy()
    b = np.where(np.arange(64) < 6, 1, y)  # fixes nothing, breaks 6 of class 0 and none of class 1
    b[60:] = 0  # class 1 (4 examples) fully broken: too small to test
    r = compare(y, a, b, labels=_labels(2), n_bootstrap=50)
    assert r.guardrail["tested_classes"] == 1
    assert [w["class"] for w in r.guardrail["worse_classes"]] == ["class_0"]


def test_to_json_round_trip_and_nan():
    y, a, b = _one_class_destroyed()
    r = compare(y, a, b, labels=_labels(4), n_bootstrap=100)
    d = r.to_json()
    assert json.loads(json.dumps(d)) == d
    assert d["promote"] is False and d["guardrail"]["worse_classes"][0]["class"] == "class_3"
    assert dataclasses.replace(r, ci_low=float("nan")).to_json()["ci_low"] is None


def test_same_seed_same_result():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, 400)
    a = _with_errors(y, rng.random(400) < 0.25, 5)
    b = _with_errors(y, rng.random(400) < 0.2, 5)
    r1, r2 = (compare(y, a, b, labels=_labels(5), n_bootstrap=300, seed=11) for _ in range(2))
    assert r1 == r2 and r1.to_json() == r2.to_json()
    r3 = compare(y, a, b, labels=_labels(5), n_bootstrap=300, seed=12)
    assert (r3.ci_low, r3.ci_high) != (r1.ci_low, r1.ci_high)
    assert r3.difference == r1.difference


# ---- NER ------------------------------------------------------------------------------------

def _ner_counts(rng, n, fp_rate, fn_rate):
    gold = rng.integers(0, 4, n)
    fn = rng.binomial(gold, fn_rate)
    fp = rng.binomial(2, fp_rate, n)
    return np.stack([gold - fn, fp, fn], axis=1)


def test_ner_counts_f1_and_bootstrap():
    rng = np.random.default_rng(5)
    ca, cb = _ner_counts(rng, 300, 0.3, 0.3), _ner_counts(rng, 300, 0.1, 0.1)
    tp, fp, fn = ca.sum(0)
    r = compare_ner(ca, cb, ca[:, 1:].sum(1) == 0, cb[:, 1:].sum(1) == 0, n_bootstrap=400, seed=1)
    assert r.metric == "entity_f1" and r.n == 300
    assert r.champion == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert r.promote and r.ci_low > 0, r.reason
    assert r.reason.startswith("entity_f1 +0.")

    def f1(_, c):
        t, p, n = c.sum(0)
        return 2 * t / (2 * t + p + n)

    ref = _loop_bootstrap(f1, np.zeros(300), ca, cb, 400, seed=1)
    diffs, lo, hi = paired_bootstrap("entity_f1", None, ca, cb, n_bootstrap=400, seed=1)
    np.testing.assert_allclose(diffs, ref, rtol=0, atol=1e-12)
    assert (lo, hi) == (r.ci_low, r.ci_high)


def test_ner_decisions():
    rng = np.random.default_rng(6)
    ca = _ner_counts(rng, 300, 0.2, 0.2)
    ok = ca[:, 1:].sum(1) == 0
    r = compare_ner(ca, ca.copy(), ok, ok, n_bootstrap=200)
    assert (r.ci_low, r.ci_high) == (0.0, 0.0) and not r.promote
    worse = ca.copy()
    worse[:3, 1] += 1  # 3 extra false positives: a hair worse
    r = compare_ner(ca, worse, ok, worse[:, 1:].sum(1) == 0, mode="non_inferiority", margin=0.02, n_bootstrap=200)
    assert -0.02 < r.ci_low < 0 and r.promote, r.reason
    assert compare_ner(ca, np.zeros_like(ca), ok, ~ok, n_bootstrap=200).reason.endswith("significantly worse; rejected")


# ---- bad input ------------------------------------------------------------------------------

def test_bad_input():
    e = np.array([], dtype=int)
    with pytest.raises(ValueError, match="0 selection examples"):
        compare(e, e, e, labels=["a", "b"])
    with pytest.raises(ValueError, match="same examples"):
        compare(np.array([0, 1]), np.array([0, 1]), np.array([0]), labels=["a", "b"])
    with pytest.raises(ValueError, match="argmax"):
        compare(np.array([0, 1]), np.eye(2), np.array([0, 1]), labels=["a", "b"])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        compare(np.array([0, 2]), np.array([0, 1]), np.array([0, 1]), labels=["a", "b"])
    with pytest.raises(ValueError, match="macro_f1"):
        compare(np.array([0]), np.array([0]), np.array([0]), labels=["a"], metric="f1")
    with pytest.raises(ValueError, match="non_inferiority"):
        compare(np.array([0]), np.array([0]), np.array([0]), labels=["a"], mode="better")
    with pytest.raises(ValueError, match="alpha"):
        compare(np.array([0]), np.array([0]), np.array([0]), labels=["a"], alpha=5)
    with pytest.raises(ValueError, match="0 selection examples"):
        compare_ner(np.zeros((0, 3)), np.zeros((0, 3)), [], [])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        compare_ner(np.zeros((2, 2)), np.zeros((2, 2)), [True, True], [True, True])
    with pytest.raises(ValueError, match="same examples"):
        compare_ner(np.zeros((2, 3)), np.zeros((2, 3)), [True], [True, True])
    with pytest.raises(ValueError, match="guardrail_alpha"):
        compare(np.array([0]), np.array([0]), np.array([0]), labels=["a"], guardrail_alpha=0)
    with pytest.raises(ValueError, match="pass y_true"):
        paired_bootstrap(lambda t, p: 0.0, None, np.zeros((2, 3)), np.zeros((2, 3)))


def test_holm_adjusted_p_values_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, 1 x 0.04 = 0.04 -> made monotone: 0.06
    assert cmp.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert cmp.holm([0.02, 0.01]) == pytest.approx([0.02, 0.02])
    assert cmp.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert cmp.holm([0.2]) == [0.2] and cmp.holm([]) == []


def test_gate_p_value_and_gate_passed_follow_the_decision_rule(noisy_pair):
    y, a, b = noisy_pair
    for alpha in (0.05, 0.2):
        c = compare(y, a, b, labels=[str(i) for i in range(int(y.max()) + 1)], metric="accuracy", alpha=alpha,
                    n_bootstrap=500, seed=1, guardrail=False)
        assert cmp.gate_passed(c) == c.promote
        assert cmp.gate_p_value(c) >= c.mcnemar["p_value"] or c.mcnemar["c"] <= c.mcnemar["b"]
        assert cmp.gate_p_value(c) >= min(1.0, 2 * c.p_bootstrap)


# ---- NER: the per-type guardrail --------------------------------------------------------------

def _tagged(kinds_found: list[tuple[str, bool]], labels: list[str]):
    """Sentences "X runs" with one gold entity of each kind, and one-hot probabilities that find it or not."""
    from reflectlm.data import Dataset

    gold = [[f"B-{k}", "O"] for k, _ in kinds_found]
    probs = []
    for (k, found), tags in zip(kinds_found, gold):
        p = np.zeros((2, len(labels)))
        for w, tag in enumerate(tags if found else ["O", "O"]):
            p[w, labels.index(tag)] = 1.0
        probs.append(p)
    ds = Dataset(task="ner", ids=[f"s{i}" for i in range(len(gold))], labels=gold,
                 texts=["X runs"] * len(gold), tokens=[["X", "runs"]] * len(gold))
    return ds, probs


def test_ner_guardrail_blocks_a_challenger_that_loses_an_entity_type():
    from reflectlm.metric import gated
    from reflectlm.tasks import get_task

    labels = ["B-loc", "B-per", "I-loc", "I-per", "O"]
    kinds = ["per"] * 100 + ["loc"] * 100
    champ_found = [i >= 50 if k == "per" else True for i, k in enumerate(kinds)]  # half the people, every place
    chall_found = [True if k == "per" else i < 180 for i, k in enumerate(kinds)]  # every person, 80 of 100 places
    ds, pa = _tagged(list(zip(kinds, champ_found)), labels)
    _, pb = _tagged(list(zip(kinds, chall_found)), labels)
    task = get_task("ner")
    kw = dict(mode="superiority", alpha=0.05, margin=0.01, n_bootstrap=500, seed=0)
    blocked = task.ab_test(pa, pb, ds, labels, gated("entity_f1", "ner"), **kw)
    assert blocked.difference > 0 and blocked.ci_low > 0  # better overall, significantly
    worse = blocked.guardrail["worse_classes"]
    assert [w["class"] for w in worse] == ["loc"] and worse[0]["challenger_recall"] == pytest.approx(0.8)
    assert not blocked.promote and "per-class guardrail" in blocked.reason
    allowed = task.ab_test(pa, pb, ds, labels, gated("entity_f1", "ner"), allow_class_regressions=True, **kw)
    assert allowed.promote and allowed.guardrail["allowed"]
