"""diagnose.balance: imbalance ratio and entropy, frequency-error correlation, exact and near
duplicates across splits, and length outliers with their error rate."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from conftest import make_context

from reflectlm.data import Dataset
from reflectlm.diagnose.balance import BalanceAndData, nearest, normalise
from reflectlm.diagnose.base import Context, Finding

VOCAB = ["red", "green", "blue", "cat", "dog", "tree", "lake", "road", "sun", "moon", "rain", "wind"]


def dataset(texts: list[str], labels: list[str], prefix: str) -> Dataset:
    return Dataset(task="classification", ids=[f"{prefix}{i}" for i in range(len(texts))], labels=list(labels),
                   texts=list(texts), tokens=None)


def sentence(i: int, words: int = 6) -> str:
    # distinct for every i: the first three words spell i in base 12
    head = [VOCAB[(i // 144) % 12], VOCAB[(i // 12) % 12], VOCAB[i % 12]]
    return " ".join(head + [VOCAB[(i + k) % 12] for k in range(words - 3)])


def onehot(labels: list[str], pred: list[str], classes: list[str]) -> np.ndarray:
    p = np.full((len(pred), len(classes)), 0.1 / max(len(classes) - 1, 1))
    p[np.arange(len(pred)), [classes.index(y) for y in pred]] = 0.9
    return p


def by_kind(findings, kind):
    return [f for f in findings if f.kind == kind]


def test_ten_to_one_imbalance():
    train = dataset([sentence(i) for i in range(220)], ["a"] * 200 + ["b"] * 20, "t")
    f = by_kind(BalanceAndData().run(Context(task="classification", labels=["a", "b"], train=train)),
                "class_imbalance")[0]
    assert f.evidence["imbalance_ratio"] == pytest.approx(10.0)
    p = np.array([10, 1]) / 11
    assert f.evidence["normalised_entropy"] == pytest.approx(-(p * np.log(p)).sum() / math.log(2))
    assert (f.evidence["largest"], f.evidence["smallest"]) == ("a", "b")
    assert f.severity == pytest.approx(0.5)  # log10(10) / 2


def test_rare_classes_err_more_spearman():
    classes = ["a", "b", "c"]
    train = dataset([sentence(i) for i in range(430)], ["a"] * 300 + ["b"] * 100 + ["c"] * 30, "t")
    # selection: 20 of each; a 1 wrong, b 5 wrong, c 12 wrong
    gold = ["a"] * 20 + ["b"] * 20 + ["c"] * 20
    pred = ["a"] * 19 + ["b"] + ["b"] * 15 + ["a"] * 5 + ["c"] * 8 + ["a"] * 12
    sel = dataset([sentence(1000 + i) for i in range(60)], gold, "s")
    ctx = Context(task="classification", labels=classes, train=train, selection=sel,
                  selection_probs=onehot(gold, pred, classes))
    f = by_kind(BalanceAndData().run(ctx), "class_imbalance")[0]
    assert f.evidence["error_source"] == "selection"
    assert f.evidence["error_rate"] == pytest.approx({"a": 0.05, "b": 0.25, "c": 0.6})
    assert f.evidence["spearman_rho"] == pytest.approx(-1.0)
    assert f.evidence["imbalance_ratio"] == pytest.approx(10.0)


def embed(texts: list[str]) -> np.ndarray:
    """Texts that share their first three words point the same way (cosine ~0.99); others are random."""
    def vec(key: str, scale: float) -> np.ndarray:
        return np.random.default_rng(int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)).normal(size=64) * scale
    v = np.array([vec(" ".join(normalise(t).split()[:3]), 1.0) + vec(t, 0.1) for t in texts]).reshape(len(texts), 64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def leak_context(with_embeddings: bool) -> Context:
    train = dataset([sentence(i) for i in range(30)], ["a", "b"] * 15, "t")
    sel_texts = [sentence(100 + i) for i in range(10)]
    sel_texts[2] = sentence(4).upper().replace(" ", ",  ") + "!"  # exact after normalising
    sel_texts[5] = " ".join(sentence(6).split()[:3] + ["moon", "moon", "moon"])  # same opening, other ending
    sel = dataset(sel_texts, ["a", "b"] * 5, "s")
    return Context(task="classification", labels=["a", "b"], train=train, selection=sel,
                   embed_texts=embed if with_embeddings else None)


@pytest.mark.parametrize("chunk", [1 << 24, 7])
def test_exact_and_near_duplicates_across_splits(chunk):
    f = by_kind(BalanceAndData(chunk_elements=chunk).run(leak_context(True)), "near_duplicates")[0]
    ev = f.evidence
    assert (ev["n_exact"], ev["n_near"], ev["n_pairs"]) == (1, 1, 2)
    pairs = [(p["selection_id"], p["train_id"], p["match"]) for p in ev["pairs"]]
    assert pairs == [("s2", "t4", "exact"), ("s5", "t6", "near")]
    assert ev["pairs"][0]["same_label"] is True and ev["pairs"][1]["same_label"] is False
    assert ev["label_conflicts"] == 1
    assert f.scores["s2"] == 1.0 and 0.95 <= f.scores["s5"] < 1.0 and set(f.scores) == {"s2", "s5"}
    assert f.split == "selection" and f.severity == pytest.approx(min(1.0, 10 * 2 / 10))


def test_exact_duplicates_without_embeddings():
    f = by_kind(BalanceAndData().run(leak_context(False)), "near_duplicates")[0]
    assert (f.evidence["n_exact"], f.evidence["n_near"]) == (1, 0) and not f.evidence["used_embeddings"]


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(9, 5)), rng.normal(size=(13, 5))
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (k / np.linalg.norm(k, axis=1, keepdims=True)).T
    got = nearest(q, k, chunk_elements=20)
    assert [got[i][0] for i in range(9)] == list(sims.argmax(1))
    assert [got[i][1] for i in range(9)] == pytest.approx(list(sims.max(1)), abs=1e-5)


def test_length_outliers_and_their_errors():
    texts = [sentence(i, words=8 + i % 5) for i in range(40)]
    texts[3] = "hi"
    texts[10] = " ".join(["word"] * 100)
    labels = ["a", "b"] * 20
    pred = list(labels)
    pred[3], pred[10] = "a", "b"  # both outliers wrong (3 is gold b, 10 is gold a)
    train = dataset(texts, labels, "t")
    ctx = Context(task="classification", labels=["a", "b"], train=train, oof_probs=onehot(labels, pred, ["a", "b"]))
    f = by_kind(BalanceAndData().run(ctx), "length_outliers")[0]
    ev = f.evidence
    assert set(f.scores) == {"t3", "t10"} and f.split == "train"
    assert (ev["n_short"], ev["n_long"]) == (1, 1) and ev["median_words"] == 10
    assert ev["error_rate_outliers"] == 1.0 and ev["error_rate_others"] == 0.0
    assert ev["p_value"] == pytest.approx(1 / math.comb(40, 2))  # both errors land on the 2 outliers
    assert f.severity == 1.0
    assert ev["examples"][0] == {"id": "t10", "words": 100, "text": ev["examples"][0]["text"]}


def test_quiet_on_balanced_clean_data():
    findings = BalanceAndData().run(make_context("classification", n=60))
    assert [(f.kind, f.severity) for f in findings] == [("class_imbalance", 0.0)]
    assert findings[0].evidence["imbalance_ratio"] == 1.0
    assert findings[0].evidence["normalised_entropy"] == pytest.approx(1.0)


def test_ner_counts_entity_types():
    ctx = make_context("ner", n=30, classes=("PER", "LOC"))
    ctx.train.labels[0] = ["O", "O", "O"]  # one PER sentence loses its entity: 14 PER vs 15 LOC
    f = by_kind(BalanceAndData().run(ctx), "class_imbalance")[0]
    assert f.evidence["counts"] == {"LOC": 15, "PER": 14} and f.evidence["unit"] == "entities"


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_deterministic_and_json_round_trip(task):
    a = [f.to_json() for f in BalanceAndData().run(make_context(task, n=60, seed=2))]
    b = [f.to_json() for f in BalanceAndData().run(make_context(task, n=60, seed=2))]
    assert a == b
    for d in a + [f.to_json() for f in BalanceAndData().run(leak_context(True))]:
        assert Finding.from_json(json.loads(json.dumps(d))).to_json() == d


@pytest.mark.parametrize("task", ["classification", "ner"])
@pytest.mark.parametrize("n,classes", [(0, ("a", "b")), (12, ("a",))])
def test_empty_and_one_class(task, n, classes):
    findings = BalanceAndData().run(make_context(task, n=n, classes=classes))
    assert all(f.severity == 0.0 for f in findings)
    assert len(findings) == (0 if n == 0 else 1)


def test_leakage_reports_the_champions_score_on_the_deduplicated_part():
    """Issue 16: leakage between the user's files is reported with the champion's score on the part
    of the selection split that duplicates nothing - and no action 'fixes' it by dropping training
    data (a challenger on less data judged on the same leaked split can only lose)."""
    from reflectlm.actions import ACTIONS

    ctx = leak_context(True)
    gold = list(ctx.selection.labels)
    other = {"a": "b", "b": "a"}
    pred = [other[y] if k in (0, 1) else y for k, y in enumerate(gold)]  # two clean examples wrong
    ctx.selection_probs = onehot(gold, pred, ["a", "b"])
    f = by_kind(BalanceAndData().run(ctx), "near_duplicates")[0]
    sc = f.evidence["champion_accuracy"]
    # 10 selection examples, 2 duplicated (s2, s5) and both right; 2 of the other 8 wrong
    assert sc == {"all": pytest.approx(0.8), "deduplicated": pytest.approx(0.75), "duplicated": pytest.approx(1.0),
                  "n_deduplicated": 8}
    assert "0.750 on the 8 that duplicate nothing" in f.summary
    assert not [name for name, cls in ACTIONS.items() if cls.addresses.get("near_duplicates") is not None]
