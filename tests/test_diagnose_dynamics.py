"""Data maps (diagnose/dynamics.py): hard-to-learn and ambiguous examples from training dynamics,
on synthetic dynamics built to contain them, a healthy run, degenerate inputs, and a real tiny
run with flipped labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_cls_rows, make_context

from reflectlm.data import Dataset
from reflectlm.diagnose.base import Context, Finding, Skip
from reflectlm.diagnose.dynamics import DataMap, data_map

N, E = 60, 5
HARD = [3, 17, 31, 44, 58]  # gold_prob ~ 0.05 every epoch
AMBIGUOUS = [5, 12, 26, 39, 50]  # gold_prob flips 0.1 <-> 0.9


def _train(n: int = N) -> Dataset:
    labels = [("a", "b", "c")[i % 3] for i in range(n)]
    return Dataset(task="classification", ids=[f"e{i}" for i in range(n)], labels=labels,
                   texts=[f"text {i}" for i in range(n)], tokens=None)


def _dynamics(hard=(), ambiguous=(), n: int = N, epochs: int = E, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    # Everyone else: learned steadily, 0.75 -> 0.95 with a little noise (variability ~0.07).
    gold = np.linspace(0.75, 0.95, epochs)[:, None] + rng.normal(0, 0.01, size=(epochs, n))
    for i in hard:
        gold[:, i] = 0.05 + rng.normal(0, 0.005, size=epochs)
    for i in ambiguous:
        gold[:, i] = np.where(np.arange(epochs) % 2 == 0, 0.1, 0.9)
    gold = np.clip(gold, 1e-4, 1 - 1e-4).astype(np.float32)
    return {"ids": np.array([f"e{i}" for i in range(n)]), "gold_prob": gold, "loss": -np.log(gold),
            "correct": (gold > 0.5).astype(np.float32)}


def _ctx(dyn: dict, train=None, seed: int = 0) -> Context:
    return Context(task="classification", labels=["a", "b", "c"], train=train, dynamics=dyn, seed=seed)


def test_hard_and_ambiguous_examples_are_exactly_the_planted_ones():
    findings = DataMap().run(_ctx(_dynamics(HARD, AMBIGUOUS), _train()))
    by = {f.kind: f for f in findings}
    assert set(by) == {"hard_to_learn", "ambiguous"}

    hard = by["hard_to_learn"]
    assert set(hard.scores) == {f"e{i}" for i in HARD} and hard.split == "train"
    for s in hard.scores.values():
        assert s == pytest.approx(0.95, abs=0.01)  # 1 - confidence
    assert hard.evidence["count"] == 5
    top = hard.evidence["top_examples"]
    assert {t["id"] for t in top} == set(hard.scores)
    assert all(t["text"] == f"text {t['id'][1:]}" and t["label"] == "abc"[int(t["id"][1:]) % 3] for t in top)
    assert all(t["correctness"] == 0.0 for t in top)
    # 5 of 60 (8%) at 0.95: strong, standing far out from a typical confidence of ~0.85.
    assert hard.severity == pytest.approx(0.95 * min(1, (5 / 60) / 0.05) * 1.0, abs=0.02)

    amb = by["ambiguous"]
    assert set(amb.scores) == {f"e{i}" for i in AMBIGUOUS}
    # The planted flippers share the largest std (0.4 at 5 epochs 0.1/0.9/0.1/0.9/0.1 -> 0.392).
    assert all(s == pytest.approx(1.0) for s in amb.scores.values())
    assert amb.evidence["top_examples"][0]["variability"] == pytest.approx(0.392, abs=0.001)

    regions = hard.evidence["regions"]
    assert regions["hard_to_learn"] == pytest.approx(5 / 60) and regions["ambiguous"] == pytest.approx(5 / 60)
    assert regions["easy"] == pytest.approx(50 / 60) and sum(regions.values()) == pytest.approx(1.0)
    assert hard.evidence["thresholds"]["variability_at_most"] == pytest.approx(hard.evidence["median_variability"])


def test_data_map_numbers():
    m = data_map(_dynamics(HARD, AMBIGUOUS))
    assert len(m["ids"]) == N and m["epochs"] == E
    i = AMBIGUOUS[0]
    assert m["confidence"][i] == pytest.approx(np.mean([0.1, 0.9, 0.1, 0.9, 0.1]), abs=1e-6)
    assert m["variability"][i] == pytest.approx(np.std([0.1, 0.9, 0.1, 0.9, 0.1]), abs=1e-6)
    assert m["correctness"][i] == pytest.approx(0.4)


def test_healthy_run_is_quiet():
    assert DataMap().run(_ctx(_dynamics(), _train())) == []


def test_without_the_training_split_examples_still_have_ids():
    [hard] = [f for f in DataMap().run(_ctx(_dynamics(HARD))) if f.kind == "hard_to_learn"]
    assert hard.evidence["top_examples"][0]["text"] is None and len(hard.scores) == 5


def test_params_change_the_rules():
    # A smaller top quantile for variability keeps the flippers (they are the top 8%) ...
    amb = {f.kind: f for f in DataMap(q_ambiguous=0.05).run(_ctx(_dynamics(HARD, AMBIGUOUS)))}["ambiguous"]
    assert len(amb.scores) == 5
    # ... and a variability floor above their std removes them.
    assert {f.kind for f in DataMap(min_variability=0.45).run(_ctx(_dynamics(HARD, AMBIGUOUS)))} == {"hard_to_learn"}
    check = DataMap(q_hard=0.2, top_k=3)
    assert check.params()["q_hard"] == 0.2 and json.dumps(check.params())
    assert len(check.run(_ctx(_dynamics(HARD)))[0].evidence["top_examples"]) == 3


def test_needs_two_epochs_and_some_examples():
    with pytest.raises(Skip, match="at least 2 epochs"):
        DataMap().run(_ctx(_dynamics(n=10, epochs=1)))
    with pytest.raises(Skip, match="at least 2 epochs"):  # record_dynamics = false: arrays with no rows
        DataMap().run(_ctx({"ids": np.array(["a"]), "gold_prob": np.zeros((0, 1)), "loss": np.zeros((0, 1)),
                            "correct": np.zeros((0, 1))}))
    with pytest.raises(Skip, match="no training example"):
        DataMap().run(_ctx(_dynamics(n=0)))
    with pytest.raises(Skip, match="needs dynamics"):
        DataMap().run(Context(task="classification", labels=["a"]))


def test_unlearned_model_is_not_blamed_on_the_data():
    dyn = _dynamics()
    dyn["gold_prob"][:] = 0.33  # chance for 3 classes, every epoch
    with pytest.raises(Skip, match="did not learn"):
        DataMap().run(_ctx(dyn))


def test_examples_never_recorded_are_dropped():
    dyn = _dynamics(HARD)
    dyn["gold_prob"][:, 0] = np.nan
    findings = DataMap().run(_ctx(dyn))
    assert findings[0].evidence["examples"] == N - 1 and "e0" not in findings[0].scores


@pytest.mark.parametrize("kw", [dict(), dict(n=0), dict(classes=("a",)), dict(task="ner"), dict(epochs=1), dict(n=1)])
def test_synthetic_contexts_do_not_crash_and_findings_round_trip(kw):
    ctx = make_context(**kw)
    try:
        findings = DataMap().run(ctx)
    except Skip:
        return
    for f in findings:
        assert 0 <= f.severity <= 1 and f.check == "dynamics" and f.summary
        assert all(0 <= s <= 1 for s in (f.scores or {}).values())
        again = Finding.from_json(json.loads(json.dumps(f.to_json())))
        assert again == f


def test_deterministic_for_a_seed():
    a = [f.to_json() for f in DataMap().run(make_context(seed=3))]
    b = [f.to_json() for f in DataMap().run(make_context(seed=3))]
    assert a == b and a


def test_real_run_flags_flipped_labels_as_hard_to_learn(tiny_config, tmp_path):
    # Flip 10 of 240 labels; the word-based task is otherwise easy, so after 6 epochs the model has
    # learned the typical example and the flipped ones stay at low gold-label probability.
    from reflectlm.data import load_splits
    from reflectlm.train import train

    rows = make_cls_rows(240)
    other = {"pos": "neg", "neg": "pos", "neu": "pos"}
    flipped = set()
    for i in range(0, 240, 24):
        rows[i] = (rows[i][0], other[rows[i][1]])
        flipped.add(rows[i][0])
    path = tmp_path / "noisy.csv"
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    cfg = tiny_config(path, epochs=6, telemetry_every=0)
    run = train(cfg, tmp_path / "run").run_dir
    splits = load_splits(cfg.data, cfg.train.seed)
    with np.load(run / "dynamics.npz") as d:
        ctx = Context(task="classification", labels=splits.labels, train=splits.train,
                      dynamics={k: d[k] for k in d.files})
    noisy = {i for i, t in zip(splits.train.ids, splits.train.texts) if t in flipped}
    assert len(noisy) >= 4  # the flipped rows that landed in the training split

    hard = {f.kind: f for f in DataMap().run(ctx)}["hard_to_learn"]
    caught = set(hard.scores) & noisy
    assert len(caught) >= len(noisy) - 1, "flipped labels are found"
    assert len(caught) >= 0.8 * len(hard.scores), "and little else is"
    flagged = {t["id"]: t for t in hard.evidence["top_examples"]}
    some = next(iter(caught))
    assert flagged[some]["text"] in flipped and flagged[some]["confidence"] < 0.5
