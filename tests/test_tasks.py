"""reflectlm.tasks: encoding, per-example losses, decoding and metrics, checked against hand
computations, scikit-learn and seqeval."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reflectlm.tasks import classification as cls
from reflectlm.tasks import TASKS, get_task
from reflectlm.tasks import ner

NER_LABELS = ["O", "B-loc", "I-loc", "B-org", "I-org", "B-per", "I-per"]


def onehot_probs(tags: list[str], labels: list[str] = NER_LABELS, p: float = 0.9) -> np.ndarray:
    """Per-word probabilities with `p` on the given tag and the rest spread evenly."""
    C = len(labels)
    out = np.full((len(tags), C), (1 - p) / (C - 1), dtype=np.float32)
    for i, t in enumerate(tags):
        out[i, labels.index(t)] = p
    return out


# --------------------------------------------------------------------------- registry and collate


def test_get_task_unknown_lists_valid():
    assert get_task("ner") is TASKS["ner"] and get_task(TASKS["ner"]) is TASKS["ner"]
    with pytest.raises(ValueError, match=r"unknown task 'pos'; valid tasks: classification, ner"):
        get_task("pos")


def test_collate_pads_to_longest_in_batch():
    feats = [{"input_ids": [5, 6, 7], "labels": [1, -100, 2], "index": 3},
             {"input_ids": [8], "labels": [0], "index": 0, "record": False}]
    b = get_task("ner").collate(feats, pad_id=9)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[1, -100, 2], [0, -100, -100]]
    assert b["index"].tolist() == [3, 0] and b["record"].tolist() == [True, False]
    b = get_task("classification").collate([{"input_ids": [1, 2], "labels": 4, "index": 0},
                                            {"input_ids": [3], "labels": 1, "index": 1}], 0)
    assert b["labels"].tolist() == [4, 1]


# --------------------------------------------------------------------------- classification


def test_classification_per_example_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 2.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    loss, gold, correct, count = cls.per_example(logits, labels)
    for i in range(3):
        z = [math.exp(v) for v in logits[i].tolist()]
        p_gold = z[labels[i]] / sum(z)
        assert loss[i].item() == pytest.approx(-math.log(p_gold), abs=1e-6)
        assert gold[i].item() == pytest.approx(p_gold, abs=1e-6)
    assert correct.tolist() == [1.0, 0.0, 1.0]
    assert count.tolist() == [1.0, 1.0, 1.0]
    assert loss.requires_grad is False  # inputs had no grad
    x = logits.clone().requires_grad_(True)
    cls.per_example(x, labels)[0].sum().backward()  # the loss carries gradients
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_classification_per_example_label_smoothing_and_class_weight():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    labels = torch.tensor([0])
    logp = torch.log_softmax(logits, -1)[0]
    loss, *_ = cls.per_example(logits, labels, label_smoothing=0.3)
    expected = -(0.7 * logp[0] + 0.3 * logp.mean())  # (1 - eps) on gold + eps spread over all C
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    loss, *_ = cls.per_example(logits, labels, class_weight=torch.tensor([2.0, 1.0, 1.0]))
    assert loss.item() == pytest.approx(-2.0 * logp[0].item(), abs=1e-6)


def test_classification_probs_rows_sum_to_one():
    rng = np.random.default_rng(0)
    logits = [rng.normal(scale=20, size=4).astype(np.float32) for _ in range(6)]
    probs = cls.probs_from_logits([{}] * 6, logits)
    assert probs.shape == (6, 4)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert (probs >= 0).all()
    np.testing.assert_array_equal(probs.argmax(1), np.stack(logits).argmax(1))
    big = cls.probs_from_logits([{}], [np.array([1000.0, 0.0], dtype=np.float32)])  # no overflow
    np.testing.assert_allclose(big, [[1.0, 0.0]], atol=1e-6)
    assert cls.probs_from_logits([], []).shape == (0, 0)


def test_classification_metrics_against_sklearn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = ["a", "b", "c"]
    gold = ["a", "a", "a", "b", "b", "c", "c", "c"]
    pred = ["a", "a", "b", "b", "a", "c", "b", "a"]
    probs = np.stack([np.eye(3)[labels.index(p)] * 0.7 + 0.1 for p in pred])
    m = cls.metrics(SimpleNamespace(labels=gold), probs, labels, loss=0.25)

    # By hand: a: tp 2, fp 2, fn 1 -> P 0.5, R 2/3; b: tp 1, fp 2, fn 1 -> P 1/3, R 0.5; c: tp 1, fp 0, fn 2.
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(4 / 8)
    assert m["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert m["per_class"]["b"] == pytest.approx({"precision": 1 / 3, "recall": 0.5, "f1": 0.4, "support": 2})
    assert m["per_class"]["c"] == pytest.approx({"precision": 1.0, "recall": 1 / 3, "f1": 0.5, "support": 3})
    assert m["macro_f1"] == pytest.approx((4 / 7 + 0.4 + 0.5) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 4 / 7 + 2 * 0.4 + 3 * 0.5) / 8)
    # rows: gold a, b, c; columns: predicted a, b, c
    assert m["confusion"] == [[2, 1, 0], [1, 1, 0], [1, 1, 1]]
    assert m["labels"] == labels
    assert m["loss"] == 0.25

    y_true = [labels.index(y) for y in gold]
    y_pred = [labels.index(y) for y in pred]
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred)
    for i, name in enumerate(labels):
        assert m["per_class"][name]["f1"] == pytest.approx(f[i])
        assert m["per_class"][name]["support"] == s[i]
    assert m["confusion"] == confusion_matrix(y_true, y_pred).tolist()


def test_classification_metrics_class_never_seen():
    # "c" is neither gold nor predicted: it still gets a row, scored 0 with support 0.
    labels = ["a", "b", "c"]
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    m = cls.metrics(SimpleNamespace(labels=["a", "b"]), probs, labels)
    assert m["accuracy"] == 1.0
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert "loss" not in m


def test_classification_predictions():
    probs = np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    assert cls.predictions(probs, ["neg", "pos"]) == [
        {"label": "pos", "score": pytest.approx(0.8)}, {"label": "neg", "score": pytest.approx(0.6)}]


def test_classification_encode_unlabelled():
    from reflectlm.modeling import WordTokenizer

    tok = WordTokenizer.fit(["good movie", "bad movie"])
    ds = SimpleNamespace(texts=["good movie", "bad"], labels=["pos", "neg"])
    feats = cls.encode(tok, ds, {"neg": 0, "pos": 1}, max_length=8)
    assert [f["labels"] for f in feats] == [1, 0]
    assert [f["index"] for f in feats] == [0, 1]
    assert feats[0]["input_ids"] == [tok.vocab["good"], tok.vocab["movie"]]
    assert [f["labels"] for f in cls.encode(tok, ds, None, 8)] == [-100, -100]


# --------------------------------------------------------------------------- NER encoding


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from reflectlm.modeling import packaged_minilm

    return AutoTokenizer.from_pretrained(packaged_minilm())


def test_ner_encode_first_subtoken_carries_the_label(minilm_tokenizer):
    tok = minilm_tokenizer
    words = ["Peter", "Blackburnshire", "visited", "Ouagadougou"]
    tags = ["B-per", "I-per", "O", "B-loc"]
    pieces = [tok.tokenize(w) for w in words]
    assert len(pieces[1]) >= 2 and len(pieces[3]) >= 2  # the test needs words split into sub-tokens
    label2id = {t: i for i, t in enumerate(NER_LABELS)}
    ds = SimpleNamespace(tokens=[words], labels=[tags])
    (f,) = ner.encode(tok, ds, label2id, max_length=64)

    assert tok.convert_ids_to_tokens(f["input_ids"]) == ["[CLS]", *[p for ps in pieces for p in ps], "[SEP]"]
    starts = np.cumsum([1] + [len(p) for p in pieces[:-1]])  # after [CLS]
    np.testing.assert_array_equal(f["word_starts"], starts)
    expected = [-100] * len(f["input_ids"])
    for s, t in zip(starts, tags):
        expected[s] = label2id[t]
    assert f["labels"] == expected
    assert f["labels"][0] == -100 and f["labels"][-1] == -100  # [CLS], [SEP]
    assert sum(v != -100 for v in f["labels"]) == len(words)
    assert f["index"] == 0


def test_ner_encode_truncation_and_unlabelled(minilm_tokenizer):
    words = ["Ouagadougou", "is", "far", "away", "today"]
    ds = SimpleNamespace(tokens=[words], labels=[["B-loc", "O", "O", "O", "O"]])
    n_pieces = len(minilm_tokenizer.tokenize("Ouagadougou"))
    width = n_pieces + 3  # [CLS] + Ouagadougou's pieces + "is" + [SEP]: the last three words are cut
    (f,) = ner.encode(minilm_tokenizer, ds, {t: i for i, t in enumerate(NER_LABELS)}, max_length=width)
    assert len(f["input_ids"]) == width
    assert f["word_starts"].tolist() == [1, 1 + n_pieces, -1, -1, -1]  # lost words: -1
    assert [v for v in f["labels"] if v != -100] == [1, 0]
    # Lost words are predicted "O" with certainty; kept words come from their first sub-token.
    logits = np.zeros((width, len(NER_LABELS)), dtype=np.float32)
    logits[1, 1] = 5.0
    (p,) = ner.probs_from_logits([f], [logits])
    assert p.shape == (5, len(NER_LABELS))
    assert p[0].argmax() == 1 and p[0, 1] == pytest.approx(math.exp(5) / (math.exp(5) + 6), abs=1e-6)
    np.testing.assert_allclose(p[1], 1 / 7, atol=1e-6)
    np.testing.assert_allclose(p[2:], np.eye(7)[[0, 0, 0]])
    (u,) = ner.encode(minilm_tokenizer, ds, None, max_length=64)
    assert set(u["labels"]) == {-100}


# --------------------------------------------------------------------------- NER loss


def test_ner_per_example_ignores_positions_and_averages_per_sentence():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3)
    labels = torch.tensor([[-100, 2, -100, 0, -100],
                           [-100, 1, 1, 1, 0]])
    loss, gold, correct, count = ner.per_example(logits, labels)
    assert count.tolist() == [2.0, 4.0]
    logp = torch.log_softmax(logits, -1)
    for b in range(2):
        pos = [t for t in range(5) if labels[b, t] != -100]
        assert loss[b].item() == pytest.approx(-np.mean([logp[b, t, labels[b, t]].item() for t in pos]), abs=1e-6)
        assert gold[b].item() == pytest.approx(np.mean([logp[b, t, labels[b, t]].exp().item() for t in pos]), abs=1e-6)
        right = [logits[b, t].argmax().item() == labels[b, t].item() for t in pos]
        assert correct[b].item() == pytest.approx(np.mean(right))

    # Changing logits at ignored positions changes nothing.
    other = logits.clone()
    other[labels == -100] = torch.randn(int((labels == -100).sum()), 3) * 10
    for a, b in zip(ner.per_example(other, labels), (loss, gold, correct, count)):
        torch.testing.assert_close(a, b)


def test_ner_per_example_sentence_without_tagged_words():
    loss, gold, correct, count = ner.per_example(torch.randn(1, 3, 4), torch.full((1, 3), -100))
    assert count.item() == 0 and loss.item() == 0 and gold.item() == 0 and correct.item() == 0


# --------------------------------------------------------------------------- spans and decoding


@pytest.mark.parametrize("tags, expected", [
    (["B-per", "I-per", "I-per", "O"], [("per", 0, 3)]),
    (["B-per", "B-per"], [("per", 0, 1), ("per", 1, 2)]),  # two adjacent entities
    (["B-per", "I-loc", "O"], [("per", 0, 1)]),  # a type change ends the entity; stray I-loc opens nothing
    (["O", "I-per", "I-per", "O"], []),  # strict: stray I after O is ignored
    (["O", "O", "B-loc", "I-loc"], [("loc", 2, 4)]),  # entity at the sentence end
    (["B-loc"], [("loc", 0, 1)]),
    (["B-creative-work", "I-creative-work", "O"], [("creative-work", 0, 2)]),  # types with '-'
    (["B-org", "I-org", "B-per", "O", "I-per", "B-loc"], [("org", 0, 2), ("per", 2, 3), ("loc", 5, 6)]),
    ([], []),
    (["O", "O"], []),
])
def test_spans(tags, expected):
    assert ner.spans(tags) == expected


def test_spans_agree_with_seqeval_strict():
    from seqeval.scheme import IOB2, Entities

    rng = np.random.default_rng(0)
    for _ in range(200):
        tags = list(rng.choice(NER_LABELS, size=int(rng.integers(0, 8))))
        theirs = sorted((e.tag, e.start, e.end) for e in Entities([tags], IOB2).entities[0])
        assert sorted(ner.spans(tags)) == theirs, tags


def valid_bio(tags: list[str]) -> bool:
    prev = "O"
    for t in tags:
        if t.startswith("I-") and prev not in (f"B-{t[2:]}", f"I-{t[2:]}"):
            return False
        prev = t
    return True


def test_viterbi_output_is_always_valid_bio_and_optimal():
    for seed in range(200):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 7))
        probs = rng.dirichlet(np.full(len(NER_LABELS), 0.3), size=n)  # peaky, so argmax is often invalid
        path = ner.viterbi(probs, NER_LABELS)
        assert len(path) == n
        assert valid_bio(path), (seed, path)
        argmax = [NER_LABELS[k] for k in probs.argmax(1)]
        if valid_bio(argmax):
            assert path == argmax, seed
        else:
            score = np.log(probs[np.arange(n), [NER_LABELS.index(t) for t in path]]).sum()
            assert score <= np.log(probs.max(1)).sum() + 1e-9
    assert ner.viterbi(np.zeros((0, 7)), NER_LABELS) == []


def test_viterbi_is_the_best_valid_path_by_brute_force():
    import itertools

    labels = ["O", "B-per", "I-per", "B-loc", "I-loc"]
    for seed in range(30):
        probs = np.random.default_rng(seed).dirichlet(np.ones(5), size=4)
        best = max((p for p in itertools.product(labels, repeat=4) if valid_bio(list(p))),
                   key=lambda p: sum(math.log(probs[i, labels.index(t)]) for i, t in enumerate(p)))
        assert ner.viterbi(probs, labels) == list(best), seed


@pytest.mark.parametrize("probs, expected", [
    # valid paths: O O .12, O B .18, B I .15 -> O B-per
    ([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]], ["O", "B-per"]),
    # B I .36, O O .05, O B .05 -> the I-per joins an entity opened one word earlier
    ([[0.5, 0.45, 0.05], [0.1, 0.1, 0.8]], ["B-per", "I-per"]),
    # O O .405, O B .09, B I .0225 -> the stray I-per becomes O
    ([[0.9, 0.05, 0.05], [0.45, 0.1, 0.45 + 1e-6]], ["O", "O"]),
])
def test_viterbi_repairs_stray_inside_tag(probs, expected):
    labels = ["O", "B-per", "I-per"]
    probs = np.array(probs)
    assert ner.decode(probs, labels, "argmax") == ["O", "I-per"]
    assert ner.viterbi(probs, labels) == expected
    assert ner.decode(probs, labels) == expected


def test_viterbi_never_starts_with_inside_tag():
    assert ner.viterbi(np.array([[0.1, 0.3, 0.6]]), ["O", "B-per", "I-per"]) == ["B-per"]


# --------------------------------------------------------------------------- NER metrics


def test_ner_metrics_against_seqeval_and_hand_counts():
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    gold = [["B-per", "I-per", "O"], ["B-loc", "O"], ["O", "B-org", "I-org"]]
    pred = [["B-per", "O", "O"],      # boundary error: per(0,1) vs per(0,2)
            ["B-per", "O"],           # type error: per vs loc
            ["O", "B-org", "I-org"]]  # right
    probs = [onehot_probs(p) for p in pred]
    m = ner.metrics(SimpleNamespace(labels=gold), probs, NER_LABELS, loss=1.5)

    # 3 gold entities, 3 predicted, 1 right -> P = R = F1 = 1/3
    assert m["entity_precision"] == pytest.approx(1 / 3)
    assert m["entity_recall"] == pytest.approx(1 / 3)
    assert m["entity_f1"] == pytest.approx(1 / 3)
    assert m["entity_precision"] == pytest.approx(precision_score(gold, pred, mode="strict", scheme=IOB2))
    assert m["entity_recall"] == pytest.approx(recall_score(gold, pred, mode="strict", scheme=IOB2))
    assert m["entity_f1"] == pytest.approx(f1_score(gold, pred, mode="strict", scheme=IOB2))
    # per: 1 gold, 2 predicted, 0 right; loc: 1 gold, 0 predicted; org: 1 of 1.
    assert m["per_type"]["per"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_type"]["loc"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_type"]["org"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert m["entity_macro_f1"] == pytest.approx(1 / 3)
    assert m["token_accuracy"] == pytest.approx(6 / 8)  # wrong: I-per->O, B-loc->B-per
    assert m["n"] == 3 and m["loss"] == 1.5 and m["labels"] == NER_LABELS


def test_ner_metrics_two_gold_one_right():
    gold = [["B-per", "I-per", "O", "B-loc"]]
    pred = [["B-per", "I-per", "O", "O"]]
    m = ner.metrics(SimpleNamespace(labels=gold), [onehot_probs(pred[0])], NER_LABELS)
    # 2 gold, 1 predicted, 1 right: P = 1, R = 0.5, F1 = 2/3
    assert (m["entity_precision"], m["entity_recall"]) == (pytest.approx(1.0), pytest.approx(0.5))
    assert m["entity_f1"] == pytest.approx(2 / 3)
    assert m["per_type"]["loc"]["support"] == 1 and m["per_type"]["loc"]["recall"] == 0.0
    assert m["per_type"]["org"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_ner_metrics_viterbi_vs_argmax():
    # The model tags "Smith" I-per but "John" slightly O: argmax gives a stray I (no entity under
    # strict scoring), viterbi turns it into the entity B-per I-per.
    labels = ["O", "B-per", "I-per"]
    gold = [["B-per", "I-per", "O"]]
    probs = [np.array([[0.5, 0.45, 0.05], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]])]
    ds = SimpleNamespace(labels=gold)
    assert ner.metrics(ds, probs, labels, method="argmax")["entity_f1"] == 0.0
    assert ner.metrics(ds, probs, labels)["entity_f1"] == pytest.approx(1.0)


def test_ner_metrics_without_any_entity():
    m = ner.metrics(SimpleNamespace(labels=[["O", "O"]]), [onehot_probs(["O", "O"])], NER_LABELS)
    assert m["entity_f1"] == 0.0 and m["token_accuracy"] == 1.0
    assert m["per_type"]["per"]["support"] == 0


def test_ner_predictions_spans_text_and_score():
    words = ["John", "Smith", "flew", "to", "New", "York"]
    probs = onehot_probs(["B-per", "I-per", "O", "O", "B-loc", "I-loc"], p=0.8).astype(np.float64)
    probs[1] = onehot_probs(["I-per"], p=0.6)[0]
    (out,) = ner.predictions([probs], [words], NER_LABELS)
    assert out["tags"] == ["B-per", "I-per", "O", "O", "B-loc", "I-loc"]
    assert out["entities"] == [
        {"type": "per", "start": 0, "end": 2, "text": "John Smith", "score": pytest.approx((0.8 + 0.6) / 2)},
        {"type": "loc", "start": 4, "end": 6, "text": "New York", "score": pytest.approx(0.8)},
    ]
    (none,) = ner.predictions([onehot_probs(["O"])], [["hello"]], NER_LABELS)
    assert none == {"tags": ["O"], "entities": []}


def test_classification_forward_corrected_loss_matches_hand_computation():
    """Forward correction (Patrini et al. 2017): the given label's cross-entropy under softmax @ T;
    the probability and correctness reported still describe the model's own softmax."""
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([1, 1])
    T = torch.tensor([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.1, 0.9]])
    loss, gold, correct, _ = cls.per_example(logits, labels, transition=T)
    for i in range(2):
        z = [math.exp(v) for v in logits[i].tolist()]
        p = [v / sum(z) for v in z]
        q1 = p[0] * 0.3 + p[1] * 1.0 + p[2] * 0.1  # P(given = 1) under the noise model
        assert loss[i].item() == pytest.approx(-math.log(q1), abs=1e-6)
        assert gold[i].item() == pytest.approx(p[1], abs=1e-6)
    assert correct.tolist() == [0.0, 1.0]
    eye = cls.per_example(logits, labels, transition=torch.eye(3))[0]  # no noise: plain cross-entropy
    assert torch.allclose(eye, cls.per_example(logits, labels)[0], atol=1e-6)
    w = cls.per_example(logits, labels, class_weight=torch.tensor([1.0, 3.0, 1.0]), transition=T)[0]
    assert torch.allclose(w, 3.0 * loss, atol=1e-6)


def test_early_learning_term_matches_hand_computation_and_resists_a_wrong_label():
    """ELR (Liu et al. 2020): log(1 - <p, t>) with p clipped to [1e-4, 1 - 1e-4]; its gradient cancels
    part of the cross-entropy's pull towards a given label that the early target disagrees with."""
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    t = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2]])
    term = cls.early_learning_term(logits, t)
    for i in range(2):
        z = [math.exp(v) for v in logits[i].tolist()]
        p = [min(max(v / sum(z), 1e-4), 1 - 1e-4) for v in z]
        assert term[i].item() == pytest.approx(math.log(1 - sum(a * b for a, b in zip(p, t[i].tolist()))), abs=1e-6)
    q = cls.early_learning_targets(torch.tensor([[30.0, 0.0, 0.0]]))  # clipped, renormalised, no gradient
    assert q.sum().item() == pytest.approx(1.0) and q.min().item() > 0 and not q.requires_grad
    # The early target says class 0; the given label is 2. Cross-entropy alone raises logit 2; with
    # the term added the net push on it is smaller and class 0 is pushed up rather than down.
    z = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    F.cross_entropy(z, torch.tensor([2])).backward()
    ce = z.grad.clone()
    z.grad = None
    (F.cross_entropy(z, torch.tensor([2])) + 3.0 * cls.early_learning_term(z, torch.tensor([[0.9, 0.05, 0.05]]))).backward()
    assert ce[0, 2] < z.grad[0, 2] < 0 and z.grad[0, 0] < ce[0, 0]


# --------------------------------------------------------------------------- the interface


def test_every_task_implements_the_whole_interface():
    """Each TASKS entry has every member of tasks.base.Task, with the Protocol's parameter names, so
    no caller meets a task that lacks what another has."""
    import inspect

    from reflectlm.tasks.base import CAPABILITY_MEMBERS, Task

    every = {n for n in dir(Task) if not n.startswith("_")} | set(Task.__annotations__)
    for name, task in TASKS.items():
        assert task.name == name
        members = {m for m in every if m not in CAPABILITY_MEMBERS or CAPABILITY_MEMBERS[m] in task.capabilities}
        missing = sorted(m for m in members if not hasattr(task, m))
        assert not missing, f"{name} lacks {missing}"
        for m in members:
            proto = getattr(Task, m, None)
            if callable(proto):
                want = list(inspect.signature(proto).parameters)[1:]
                got = list(inspect.signature(getattr(task, m)).parameters)
                assert got[: len(want)] == want or "options" in want, f"{name}.{m}{got} vs Task.{m}{want}"
        assert task.default_metric in task.metric_names and task.report_metrics
        assert isinstance(task.capabilities, frozenset)


def test_checks_and_actions_declare_what_they_require_and_the_tasks_say_what_applies():
    from reflectlm.actions import ACTIONS
    from reflectlm.diagnose import DIAGNOSTICS
    from reflectlm.tasks import applies

    for table in (ACTIONS, DIAGNOSTICS):
        for name, member in table.items():
            assert isinstance(member.requires, tuple), f"{name} declares requires"
    qa, clf = TASKS["qa"], TASKS["classification"]
    # classification can take every action but those for generated text
    generator_only = {"tune_decoding", "rejection_sampling", "preference_optimisation"}
    assert {n for n, a in ACTIONS.items() if not applies(clf, a)} == generator_only
    assert {n for n, a in ACTIONS.items() if not applies(qa, a)} == {
        "fix_labels", "correct_noise", "early_learning", "self_training", "reweight_classes", "calibrate",
        "detect_out_of_scope"} | generator_only
    mt = TASKS["translation"]
    assert all(applies(mt, ACTIONS[n]) for n in generator_only) and not applies(mt, ACTIONS["domain_pretraining"])
    output_checks = {"length", "copying", "repetition", "unsupported", "language"}
    assert {n for n, c in DIAGNOSTICS.items() if not applies(qa, c)} == {"crossval", "out_of_scope"} | output_checks
    assert {n for n, c in DIAGNOSTICS.items() if not applies(clf, c)} == output_checks
    assert output_checks <= {n for n, c in DIAGNOSTICS.items() if applies(mt, c)}
