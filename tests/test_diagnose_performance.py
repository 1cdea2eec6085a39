"""diagnose.performance: high-error classes by a corrected binomial test, confused pairs, and NER
error kinds, checked on hand-built predictions whose counts are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_context
from scipy.stats import binomtest

from reflectlm.data import Dataset
from reflectlm.diagnose.base import Context, Finding
from reflectlm.diagnose.performance import HeldOutPerformance, holm
from reflectlm.tasks.ner import entity_errors

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def cls_context(gold: list[str], pred: list[str], labels=("a", "b", "c"), p: float = 0.8) -> Context:
    """Selection split with `p` on the predicted class and the rest spread evenly."""
    labels = list(labels)
    C = len(labels)
    probs = np.full((len(gold), C), (1 - p) / (C - 1))
    probs[np.arange(len(gold)), [labels.index(y) for y in pred]] = p
    ds = Dataset(task="classification", ids=[f"x{i}" for i in range(len(gold))], labels=list(gold),
                 texts=[f"text {i} {y}" for i, y in enumerate(gold)], tokens=None)
    return Context(task="classification", labels=labels, selection=ds, selection_probs=probs)


def ner_context(sentences: list[tuple[list[str], list[str], list[str]]]) -> Context:
    """(words, gold tags, predicted tags) per sentence; probabilities 0.9 on the predicted tag."""
    probs = []
    for words, _, pred in sentences:
        p = np.full((len(words), len(NER_LABELS)), 0.1 / (len(NER_LABELS) - 1))
        p[np.arange(len(words)), [NER_LABELS.index(t) for t in pred]] = 0.9
        probs.append(p)
    ds = Dataset(task="ner", ids=[f"s{i}" for i in range(len(sentences))], labels=[s[1] for s in sentences],
                 texts=[" ".join(s[0]) for s in sentences], tokens=[s[0] for s in sentences])
    return Context(task="ner", labels=NER_LABELS, selection=ds, selection_probs=probs)


def by_kind(findings: list[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.kind == kind]


def skewed() -> Context:
    # a: 57 right, 2 -> c, 1 -> b; b: 58 right, 2 -> a; c: 24 right, 30 -> a, 6 -> b.
    gold = ["a"] * 60 + ["b"] * 60 + ["c"] * 60
    pred = ["a"] * 57 + ["c"] * 2 + ["b"] + ["b"] * 58 + ["a"] * 2 + ["c"] * 24 + ["a"] * 30 + ["b"] * 6
    return cls_context(gold, pred)


@pytest.mark.parametrize("correction", ["holm", "bh"])
def test_high_error_class_flagged_with_binomial_test(correction):
    findings = HeldOutPerformance(correction=correction).run(skewed())
    high = by_kind(findings, "high_error_class")
    assert [f.evidence["class"] for f in high] == ["c"]
    ev = high[0].evidence
    overall = 41 / 180
    assert ev["errors"] == 36 and ev["n"] == 60 and ev["error_rate"] == pytest.approx(0.6)
    assert ev["overall_error_rate"] == pytest.approx(overall)
    assert ev["p_value"] == pytest.approx(binomtest(36, 60, overall, alternative="greater").pvalue)
    assert ev["p_adjusted"] < 0.05 and ev["correction"] == correction
    assert ev["top_confusions"] == [{"predicted": "a", "count": 30}, {"predicted": "b", "count": 6}]
    assert high[0].severity == pytest.approx((0.6 - overall) / (1 - overall))
    assert all(e["gold"] == "c" and e["predicted"] != "c" for e in ev["examples"])
    assert set(high[0].scores) == {f"x{i}" for i in range(120, 180)} and high[0].split == "selection"


def test_confused_pairs_count_both_directions():
    pairs = by_kind(HeldOutPerformance().run(skewed()), "confused_pair")
    assert [(f.evidence["a"], f.evidence["b"], f.evidence["count"]) for f in pairs] == [("a", "c", 32), ("b", "c", 6),
                                                                                        ("a", "b", 3)]
    top = pairs[0].evidence
    assert (top["a_to_b"], top["b_to_a"], top["n"]) == (2, 30, 120)
    assert pairs[0].severity == pytest.approx(32 / 120)
    shown = {(e["gold"], e["predicted"]) for e in top["examples"]}
    assert shown == {("a", "c"), ("c", "a")}
    # min_pair_count drops the pair confused 3 times
    assert len(by_kind(HeldOutPerformance(min_pair_count=4).run(skewed()), "confused_pair")) == 2


def test_summary_metrics_and_scores():
    f = HeldOutPerformance().run(skewed())[0]
    assert f.kind == "selection_performance" and f.severity == 0.0
    assert f.evidence["metrics"]["accuracy"] == pytest.approx(139 / 180)
    assert f.evidence["per_class"]["c"] == {"errors": 36, "n": 60, "error_rate": pytest.approx(0.6)}
    assert f.scores["x0"] == pytest.approx(0.2)  # right: 1 - 0.8
    assert f.scores["x57"] == pytest.approx(0.9)  # wrong: 1 - 0.1
    assert len(f.scores) == 180


def test_quiet_when_errors_are_even_or_absent():
    # 6 errors in each class, spread over the other two: nothing stands out
    gold, pred = [], []
    for y, others in (("a", "bc"), ("b", "ca"), ("c", "ab")):
        gold += [y] * 60
        pred += [y] * 54 + [others[0]] * 3 + [others[1]] * 3
    assert by_kind(HeldOutPerformance().run(cls_context(gold, pred)), "high_error_class") == []
    perfect = HeldOutPerformance().run(cls_context(gold, gold))
    assert [(f.kind, f.severity) for f in perfect] == [("selection_performance", 0.0)]


def test_ner_error_kinds_one_of_each():
    O = "O"
    ctx = ner_context([
        (["John", "Smith", "went", "home"], ["B-PER", "I-PER", O, O], ["B-PER", O, O, O]),  # boundary
        (["Paris", "is", "nice"], ["B-LOC", O, O], ["B-PER", O, O]),  # type
        (["Mary", "sings"], ["B-PER", O], [O, O]),  # missed
        (["the", "Berlin", "wall"], [O, O, O], [O, "B-LOC", O]),  # spurious
        (["Ann", "Lee", "in", "Rome"], ["B-PER", "I-PER", O, "B-LOC"], ["B-PER", "I-PER", O, "B-LOC"]),  # right
    ])
    findings = HeldOutPerformance().run(ctx)
    summary = findings[0]
    assert summary.evidence["metrics"]["entity_f1"] == pytest.approx(0.4)
    kinds = by_kind(findings, "error_kinds")[0]
    ev = kinds.evidence
    assert ev["counts"] == {"boundary": 1, "type": 1, "boundary_and_type": 0, "missed": 1, "spurious": 1}
    assert (ev["n_gold"], ev["n_predicted"]) == (5, 5)
    assert ev["rates"]["boundary"] == pytest.approx(0.2) and ev["rates"]["spurious"] == pytest.approx(0.2)
    assert kinds.severity == pytest.approx(4 / 6)
    per = ev["per_type"]
    assert (per["PER"]["gold"], per["PER"]["boundary"], per["PER"]["missed"]) == (3, 1, 1)
    assert (per["LOC"]["type"], per["LOC"]["spurious"], per["LOC"]["predicted"]) == (1, 1, 2)
    assert ev["examples"]["boundary"][0] == {"id": "s0", "text": "John Smith went home", "kind": "boundary",
                                             "gold": "PER: John Smith", "predicted": "PER: John"}
    assert ev["examples"]["type"][0]["predicted"] == "PER: Paris"
    # per-type strict error rate 1 - TP / (TP + FN + FP): PER 4 of 5, LOC 2 of 3
    assert summary.evidence["per_type"]["PER"] == {"errors": 4, "n": 5, "error_rate": pytest.approx(0.8)}
    assert summary.evidence["per_type"]["LOC"]["errors"] == 2


def test_entity_errors_boundary_and_type():
    errs = entity_errors(["B-PER", "I-PER", "O"], ["O", "B-LOC", "I-LOC"])
    assert [e["kind"] for e in errs] == ["boundary_and_type"]


def test_ner_high_error_type_and_quiet():
    O = "O"
    right = [(["Ann", "sang"], ["B-PER", O], ["B-PER", O])] * 30
    loc_ok = [(["in", "Rome"], [O, "B-LOC"], [O, "B-LOC"])] * 10
    loc_missed = [(["in", "Rome"], [O, "B-LOC"], [O, O])] * 20
    high = by_kind(HeldOutPerformance().run(ner_context(right + loc_ok + loc_missed)), "high_error_class")
    assert [f.evidence["class"] for f in high] == ["LOC"]
    assert high[0].evidence["error_rate"] == pytest.approx(20 / 30)
    assert high[0].evidence["error_kinds"] == {"missed": 20}
    quiet = HeldOutPerformance().run(ner_context(right + loc_ok))
    assert [(f.kind, f.severity) for f in quiet] == [("selection_performance", 0.0)]


def test_holm_matches_hand_computation():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_deterministic_and_json_round_trip(task):
    ctx = make_context(task, n=60, seed=3)
    a = [f.to_json() for f in HeldOutPerformance().run(ctx)]
    b = [f.to_json() for f in HeldOutPerformance().run(make_context(task, n=60, seed=3))]
    assert a == b
    for d in a + [f.to_json() for f in HeldOutPerformance().run(skewed())]:
        again = Finding.from_json(json.loads(json.dumps(d)))
        assert again.to_json() == d


@pytest.mark.parametrize("task", ["classification", "ner"])
@pytest.mark.parametrize("n,classes", [(0, ("a", "b")), (12, ("a",))])
def test_empty_and_one_class(task, n, classes):
    findings = HeldOutPerformance().run(make_context(task, n=n, classes=classes))
    assert all(0.0 <= f.severity <= 1.0 for f in findings)
    assert not by_kind(findings, "high_error_class")


def test_misaligned_probabilities_say_how_to_fix():
    ctx = skewed()
    ctx.selection_probs = ctx.selection_probs[:10]
    with pytest.raises(ValueError, match="same split, in the same order"):
        HeldOutPerformance().run(ctx)
    assert HeldOutPerformance().params() == {"alpha": 0.05, "correction": "holm", "min_pair_count": 2, "top_pairs": 5,
                                             "examples": 3, "decode": "viterbi", "shape_from": "train_oof"}
    with pytest.raises(ValueError, match="shape_from must be 'train_oof' or 'selection'"):
        HeldOutPerformance(shape_from="test").run(skewed())


def test_the_classes_that_shape_a_challenger_are_read_out_of_fold():
    """By default high_error_class and confused_pair come from the training data's out-of-fold
    predictions, so the selection split that judges the challenger does not also shape it; the
    selection summary stays, and carries the per-class F1 the findings were read from."""
    ctx = skewed()  # on the selection split class "c" is the bad one
    gold = ["a"] * 60 + ["b"] * 60 + ["c"] * 60
    pred = ["b"] * 30 + ["a"] * 30 + ["b"] * 60 + ["c"] * 60  # out of fold, "a" is the bad one (30 -> b)
    oof = cls_context(gold, pred)
    ctx.train, ctx.oof_probs = oof.selection, oof.selection_probs
    findings = HeldOutPerformance().run(ctx)
    summary = by_kind(findings, "selection_performance")[0]
    assert summary.split == "selection" and summary.evidence["value"] == pytest.approx(
        HeldOutPerformance(shape_from="selection").run(ctx)[0].evidence["value"])
    high = by_kind(findings, "high_error_class")
    assert [f.evidence["class"] for f in high] == ["a"] and high[0].split == "train"
    assert "training examples (out of fold)" in high[0].summary
    assert HeldOutPerformance().wants == ("oof_probs",) and HeldOutPerformance(shape_from="selection").wants == ()
    assert high[0].evidence["error_rate"] == pytest.approx(0.5) and high[0].evidence["n"] == 60
    pair = by_kind(findings, "confused_pair")[0]
    assert {pair.evidence["a"], pair.evidence["b"]} == {"a", "b"} and pair.evidence["count"] == 30 and pair.split == "train"
    shaping = summary.evidence["shaping"]
    assert shaping["split"] == "train" and shaping["per_class_f1"]["c"] == pytest.approx(1.0)
    assert shaping["per_class_f1"]["a"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # precision 1, recall 0.5
    # asked for, the selection split (the behaviour before); without out-of-fold predictions, the same, said so
    old = HeldOutPerformance(shape_from="selection").run(ctx)
    assert [f.evidence["class"] for f in by_kind(old, "high_error_class")] == ["c"]
    bare = HeldOutPerformance().run(skewed())
    assert [f.evidence["class"] for f in by_kind(bare, "high_error_class")] == ["c"]
    assert "no out-of-fold predictions" in by_kind(bare, "selection_performance")[0].evidence["shaping"]["source"]
