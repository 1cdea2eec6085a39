"""diagnose.robustness: a case-sensitive predictor loses accuracy under casing noise only, one that
ignores its input loses nothing; perturbations keep the word count and are seeded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_context
from scipy.stats import binomtest

from reflectlm.data import Dataset
from reflectlm.diagnose.base import Context, Finding
from reflectlm.diagnose.robustness import PERTURBATIONS, KEYBOARD, Robustness, perturb

LABELS = ["upper", "lower"]


def case_context(n: int = 200, seed: int = 0) -> Context:
    """Texts whose first word is "A" (label upper) or "a" (label lower); a one-letter word that
    typos keep in its case and swaps cannot touch, so only casing noise can fool the predictor."""
    texts = [f"{'A' if i % 2 == 0 else 'a'} quick, note number {i}." for i in range(n)]
    ds = Dataset(task="classification", ids=[f"x{i}" for i in range(n)], labels=[LABELS[i % 2] for i in range(n)],
                 texts=texts, tokens=None)
    return Context(task="classification", labels=LABELS, selection=ds, seed=seed, predict_texts=first_letter_case)


def first_letter_case(texts: list[str]) -> np.ndarray:
    up = np.array([t[0].isupper() for t in texts], dtype=np.float32)
    return np.stack([0.1 + 0.8 * up, 0.9 - 0.8 * up], axis=1)


def test_case_sensitive_predictor_drops_under_casing_only():
    f = Robustness(rate=0.5).run(case_context())[0]
    rows = f.evidence["perturbations"]
    assert f.kind == "noise_sensitivity" and f.evidence["worst"] == "casing"
    assert rows["casing"]["clean"] == 1.0 and rows["casing"]["drop"] > 0.15
    assert rows["casing"]["significant"] and rows["casing"]["p_adjusted"] < 1e-3
    assert rows["casing"]["p_value"] == pytest.approx(binomtest(rows["casing"]["broken"], rows["casing"]["broken"],
                                                                0.5, alternative="greater").pvalue)
    assert rows["casing"]["fixed"] == 0
    for name in ("typos", "swaps", "punctuation"):
        assert rows[name]["drop"] == 0.0 and rows[name]["changed"] == 0.0 and not rows[name]["significant"]
    assert f.severity == pytest.approx(min(1.0, rows["casing"]["drop"] / 0.2))
    flipped = rows["casing"]["examples"][0]
    assert flipped["clean_text"][0] != flipped["noisy_text"][0] and flipped["before"] != flipped["after"]
    # scores: the share of the 4 perturbations that changed the prediction
    assert set(f.scores.values()) <= {0.0, 0.25} and sum(v > 0 for v in f.scores.values()) == round(
        rows["casing"]["changed"] * 200)


def test_predictor_that_ignores_input_is_quiet():
    ctx = case_context()
    ctx.predict_texts = lambda texts: np.tile([0.6, 0.4], (len(texts), 1))
    f = Robustness(rate=0.5).run(ctx)[0]
    assert f.severity == 0.0 and f.evidence["worst"] is None
    assert all(r["drop"] == 0.0 and r["p_value"] == 1.0 for r in f.evidence["perturbations"].values())
    assert set(f.scores.values()) == {0.0}


def test_ner_perturbs_word_by_word():
    labels = ["O", "B-PER", "I-PER"]
    tokens = [["we", "met", "Ann", "and", "Bob", "today"]] * 60
    ds = Dataset(task="ner", ids=[f"s{i}" for i in range(60)], labels=[["O", "O", "B-PER", "O", "B-PER", "O"]] * 60,
                 texts=[" ".join(t) for t in tokens], tokens=tokens)

    def capitalised_is_person(texts):
        out = []
        for t in texts:
            words = t.split()  # the check must keep the word count, or these shapes break
            p = np.full((len(words), 3), 0.05)
            for j, w in enumerate(words):
                p[j, 1 if w[0].isupper() else 0] = 0.9
            out.append(p)
        return out

    ctx = Context(task="ner", labels=labels, selection=ds, predict_texts=capitalised_is_person)
    f = Robustness(rate=0.5).run(ctx)[0]
    rows = f.evidence["perturbations"]
    assert f.evidence["metric"] == "entity_f1" and rows["casing"]["clean"] == 1.0
    assert rows["casing"]["drop"] > 0.1 and rows["casing"]["significant"]
    assert f.evidence["worst"] == "casing" and f.severity > 0.5


def test_perturbations_keep_words_and_are_seeded():
    words = ["Hello,", "world!", "a", "...", "keyboard"]
    for name in PERTURBATIONS:
        a = perturb(words, name, 1.0, np.random.default_rng(1))
        assert len(a) == len(words) and all(a) and a == perturb(words, name, 1.0, np.random.default_rng(1))
        assert perturb(words, name, 0.0, np.random.default_rng(1)) == words
    assert perturb(words, "punctuation", 1.0, np.random.default_rng(0)) == ["Hello", "world", "a", "...", "keyboard"]
    typo = perturb(["k"], "typos", 1.0, np.random.default_rng(0))[0]
    assert typo in KEYBOARD["k"]
    swapped = perturb(["ab"], "swaps", 1.0, np.random.default_rng(0))[0]
    assert swapped == "ba"
    assert perturb(["hello  world"], "casing", 0.0, np.random.default_rng(0), keep_spaces=True) == ["hello  world"]


def test_keyboard_neighbours():
    assert set(KEYBOARD["a"]) == set("qwsz") and set(KEYBOARD["g"]) == set("fhtybv")
    assert set(KEYBOARD["k"]) == set("jliom") and set(KEYBOARD["m"]) == set("njk")


def test_sampling_is_deterministic_and_bounded():
    ctx = make_context("classification", n=100, seed=4)  # 50 selection examples
    a = Robustness(max_examples=20).run(ctx)[0]
    b = Robustness(max_examples=20).run(make_context("classification", n=100, seed=4))[0]
    assert a.to_json() == b.to_json() and a.evidence["n"] == 20 and len(a.scores) == 20
    c = Robustness(max_examples=20).run(make_context("classification", n=100, seed=5))[0]
    assert set(c.scores) != set(a.scores)


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_deterministic_and_json_round_trip(task):
    a = [f.to_json() for f in Robustness().run(make_context(task, n=40, seed=1))]
    b = [f.to_json() for f in Robustness().run(make_context(task, n=40, seed=1))]
    assert a == b
    for d in a + [f.to_json() for f in Robustness(rate=0.5).run(case_context(40))]:
        assert Finding.from_json(json.loads(json.dumps(d))).to_json() == d


@pytest.mark.parametrize("task", ["classification", "ner"])
@pytest.mark.parametrize("n,classes", [(0, ("a", "b")), (12, ("a",))])
def test_empty_and_one_class(task, n, classes):
    findings = Robustness().run(make_context(task, n=n, classes=classes))
    assert len(findings) == (0 if n == 0 else 1)
    assert all(f.severity == 0.0 for f in findings)


def test_bad_params_and_bad_predictions_say_how_to_fix():
    with pytest.raises(ValueError, match="choose from typos, casing, swaps, punctuation"):
        Robustness(perturbations=["emoji"]).run(case_context(10))
    ctx = case_context(10)
    ctx.predict_texts = lambda texts: np.zeros((len(texts) - 1, 2))
    with pytest.raises(ValueError, match="one per text"):
        Robustness().run(ctx)
