"""The ACTIONS contract (every entry) and one test per action on a case it should help."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import WORDS, make_cls_rows
from reflectlm.actions import ACTIONS, NON_INFERIORITY, SUPERIORITY, ActionInputs, Recipe, from_plan, get_action
from reflectlm.actions.oracle import ColumnOracle
from reflectlm.tasks import applies, get_task
from reflectlm.data import Dataset
from reflectlm.diagnose.base import Finding

LABELS = ["neg", "neu", "pos"]


def cls_dataset(n: int = 60, prefix: str = "e", seed: int = 0, classes=LABELS) -> Dataset:
    rows = [r for r in make_cls_rows(n, seed) if r[1] in classes] if classes != LABELS else make_cls_rows(n, seed)
    return Dataset(task="classification", ids=[f"{prefix}{i}" for i in range(len(rows))],
                   labels=[y for _, y in rows], texts=[t for t, _ in rows], tokens=None)


def truth_probs(texts: list[str], labels=LABELS) -> np.ndarray:
    """A sure, right 'champion': the class whose cue words the text holds."""
    out = np.full((len(texts), len(labels)), 0.02)
    for i, t in enumerate(texts):
        words = set(t.split())
        k = next((j for j, c in enumerate(labels) if words & set(WORDS[c])), 0)
        out[i, k] = 0.96
    return out / out.sum(1, keepdims=True)


def findings_for(train: Dataset, flipped: dict[str, str]) -> list[Finding]:
    """The findings a diagnosis of a run on `train` with `flipped` ids (id -> true label) gives."""
    sugg = {i: [y, 0.9, 0.05] for i, y in flipped.items()}
    return [
        Finding("label_issues", "label_issues", 0.8, "suspects", {"flagged": list(flipped), "suggested": sugg},
                scores={i: (0.9 if i in flipped else 0.1) for i in train.ids}, split="train"),
        Finding("dynamics", "hard_to_learn", 0.5, "hard", {"count": len(flipped)}, scores={i: 0.8 for i in flipped},
                split="train"),
        Finding("performance", "high_error_class", 0.6, "neu is bad", {"class": "neu"}),
        Finding("robustness", "noise_sensitivity", 0.5, "typos hurt", {"worst": "typos"}),
        Finding("fit", "overfitting", 0.4, "over", {}),
        Finding("descent", "lr_too_high", 0.7, "too high", {}),
        Finding("gradients", "vanishing_updates", 0.5, "tiny", {}),
        Finding("calibration", "miscalibration", 0.4, "over-confident", {}),
        Finding("fit", "underfitting", 0.4, "under", {}),
    ]


@pytest.fixture
def case(tmp_path, tiny_bert_dir):
    """A noisy training set (every 6th label wrong), a pool with hidden labels, a sure champion."""
    clean = cls_dataset(60)
    flipped = {}
    noisy = list(clean.labels)
    for k in range(0, 60, 6):
        flipped[clean.ids[k]] = clean.labels[k]
        noisy[k] = LABELS[(LABELS.index(clean.labels[k]) + 1) % 3]
    train = Dataset(task="classification", ids=clean.ids, labels=noisy, texts=clean.texts, tokens=None)
    pool = cls_dataset(90, prefix="p", seed=5)
    hidden = dict(zip(pool.ids, pool.labels))
    pool.labels = [None] * len(pool)
    tree = {"data": {"task": "classification", "train": "x.csv"}, "model": {"name": str(tiny_bert_dir)},
            "train": {"epochs": 4, "lr": 1e-4, "head_lr": 2e-3, "weight_decay": 0.01, "freeze": "head_only",
                      "layerwise_lr_decay": 1.0, "warmup_ratio": 0.06}}
    history = [{"epoch": e, "selection_macro_f1": v, "selection_loss": 1.0} for e, v in enumerate([0.5, 0.7, 0.6, 0.55], 1)]
    inputs = ActionInputs(task="classification", labels=LABELS, seed=3, findings=findings_for(train, flipped),
                          selection_metrics={"per_class": {"neg": {"f1": 0.9}, "neu": {"f1": 0.4}, "pos": {"f1": 0.8}}},
                          history=history, predict=lambda texts: truth_probs(texts),
                          embed=lambda texts: np.eye(8)[[hash(t) % 8 for t in texts]].astype(np.float32),
                          oracle=ColumnOracle(hidden), champion_model=tmp_path / "champ", work_dir=tmp_path)
    return Recipe(tree, train=train, pool=pool), inputs, flipped, hidden


def _proposed(name, recipe, inputs):
    a = ACTIONS[name].propose(inputs, recipe)
    return a if a is not None else ACTIONS[name]()


def _cheap(action):
    # The contract runs every action; MLM pre-training runs two steps here (its own test runs more).
    if action.name == "domain_pretraining":
        return get_action("domain_pretraining", **{**action.params(), "steps": 2, "batch_size": 4})
    if action.name == "tune_hparams":  # one more trial than the recipe's own, one at a time: repeats exactly
        return get_action("tune_hparams", **{**action.params(), "trials": 2, "epochs_max": 1, "max_concurrent": 1})
    return action


def _snapshot(r: Recipe) -> str:
    return json.dumps({"tree": r.tree, "ids": r.train.ids, "labels": r.train.labels, "texts": r.train.texts,
                       "weights": None if r.train.weights is None else r.train.weights.tolist(),
                       "pool": None if r.pool is None else r.pool.ids, "post": r.post, "init": r.init_from, "only": r.round_only,
                       "changes": r.changes, "labels_used": r.labels_used}, sort_keys=True, default=str)


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", list(ACTIONS))
def test_contract(name, case, tmp_path, request):
    recipe, inputs, _, _ = case
    if name == "tune_hparams":
        request.getfixturevalue("ray_local")  # its trials run on Ray Tune
    cls = ACTIONS[name]
    assert cls.name == name and cls.mode in (SUPERIORITY, NON_INFERIORITY) and isinstance(cls.retrains, bool)
    assert cls.addresses and all(isinstance(k, str) for k in cls.addresses)
    action = _cheap(_proposed(name, recipe, inputs))
    # params are JSON and rebuild the same action (plan.json replays a round)
    params = json.loads(json.dumps(action.params()))
    assert from_plan([{"action": name, "params": params}])[0] == action
    # deterministic, and never changes the recipe it was given
    before = _snapshot(recipe)
    a = action.apply(recipe, inputs)
    (tmp_path / "adapted").exists() and __import__("shutil").rmtree(tmp_path / "adapted")
    b = action.apply(recipe, inputs)
    assert _snapshot(recipe) == before
    assert _snapshot(a) == _snapshot(b)
    assert a.changes and a.changes[-1]["action"] == name  # every action says what it did
    json.dumps(a.changes)
    # copes with an empty pool and one-class data
    one = cls_dataset(30, classes=["pos"])
    empty_pool = Dataset(task="classification", ids=[], labels=[], texts=[], tokens=None)
    small = Recipe(recipe.config, train=one, pool=empty_pool)
    one_inputs = ActionInputs(task="classification", labels=["pos"], seed=1, findings=[],
                              selection_metrics={"per_class": {"pos": {"f1": 1.0}}}, history=inputs.history,
                              predict=lambda texts: np.ones((len(texts), 1)), embed=inputs.embed, oracle=inputs.oracle,
                              champion_model=inputs.champion_model, work_dir=tmp_path / "one")
    (tmp_path / "one").mkdir(exist_ok=True)
    out = action.apply(small, one_inputs)
    assert set(out.train.labels) <= {"pos"} and len(out.train) >= len(one) * (1 - action.params().get("max_fraction", 0))


def test_unknown_action_names_the_valid_ones():
    with pytest.raises(ValueError,
                       match="unknown action 'fix_label'; did you mean 'fix_labels'\\? valid actions: active_learning, "):
        get_action("fix_label")
    with pytest.raises(ValueError, match="its parameters are"):
        get_action("tune_lr", factr=2)


@pytest.mark.parametrize("name", list(ACTIONS))
def test_every_action_declares_what_the_planner_reads(name):
    """The planner holds no action names: what it knows of an action is this declaration."""
    from reflectlm.compare import MODES
    from reflectlm.findings import KINDS

    cls = ACTIONS[name]
    assert cls.name == name
    assert isinstance(cls.addresses, dict) and cls.addresses, "addresses: {finding kind: rank or None}"
    assert set(cls.addresses) <= KINDS, set(cls.addresses) - KINDS
    assert all(r is None or (isinstance(r, int) and r >= 0) for r in cls.addresses.values())
    assert cls.mode in MODES and isinstance(cls.retrains, bool)
    conflicts = getattr(cls, "conflicts", ())
    assert set(conflicts) <= set(ACTIONS) and name not in conflicts
    if hasattr(cls, "unprompted"):
        when, kind = cls.unprompted
        assert when in ("listed", "oracle") and kind in KINDS
    if hasattr(cls, "record"):
        from reflectlm.loop import ROUND_FILES

        assert cls.record in ROUND_FILES and not cls.retrains


def test_remedies_follow_the_declared_ranks():
    from reflectlm.actions import remedies

    found = remedies()
    assert found["label_issues"] == ["correct_noise", "fix_labels", "drop_suspects", "early_learning"]
    for kind, names in found.items():
        ranks = [ACTIONS[n].addresses[kind] for n in names]
        assert ranks == sorted(ranks) and None not in ranks, kind


# --------------------------------------------------------------------------- one case each


def test_fix_labels_restores_flipped_labels_and_records_the_original(case):
    recipe, inputs, flipped, _ = case
    out = get_action("fix_labels").apply(recipe, inputs)
    new = dict(zip(out.train.ids, out.train.labels))
    assert all(new[i] == y for i, y in flipped.items())  # every wrong label put right
    rel = out.changes[-1]["relabels"]
    assert {r["id"] for r in rel} == set(flipped)
    assert all(r["given"] != r["new"] for r in rel)  # the original label stays in the record
    # cautious: a suggestion the evidence does not back strongly is left alone
    weak = ActionInputs(**{**inputs.__dict__, "findings": [Finding(
        "label_issues", "label_issues", 0.5, "", {"flagged": list(flipped),
                                                  "suggested": {i: [y, 0.25, 0.3] for i, y in flipped.items()}})]})
    assert get_action("fix_labels", use_hard_to_learn=False).apply(recipe, weak).changes[-1]["relabelled"] == 0


def test_drop_suspects_removes_the_flagged_examples_only(case):
    recipe, inputs, flipped, _ = case
    out = get_action("drop_suspects").apply(recipe, inputs)
    assert set(recipe.train.ids) - set(out.train.ids) == set(flipped)
    # after fix_labels in the same plan, the relabelled ones are kept
    fixed = get_action("fix_labels").apply(recipe, inputs)
    assert len(get_action("drop_suspects").apply(fixed, inputs).train) == len(recipe.train)


def test_a_plan_fixes_labels_before_it_drops_suspects_whatever_their_rank(case, tmp_path):
    """Seen in the loop benchmark (seed 1): drop_suspects ranked first, dropped every suspect, and
    fix_labels after it had nothing left to relabel. A plan applies in the ACTIONS table's order."""
    from reflectlm.actions import apply_order
    from reflectlm.config import load_config
    from conftest import first_plan
    from reflectlm.reflect import Target

    recipe, inputs, flipped, _ = case
    targets = [Target("hard_to_learn", "dynamics", ["drop_suspects"], 0.5, 0.05, "", ""),
               Target("label_issues", "label_issues", ["fix_labels", "drop_suspects"], 0.4, 0.04, "", "")]
    cfg = load_config(tree={"data": {"train": "x.csv"}, "loop": {"exploration": "greedy", "max_actions": 2,
                                                                 "actions": ["fix_labels", "drop_suspects"]}})
    plan, ranking, _ = first_plan(targets, inputs, recipe, cfg, tmp_path, set(), 1)
    assert [r["action"] for r in ranking[:2]] == ["drop_suspects", "fix_labels"]  # ranked: drop first
    assert [a.name for a in plan] == ["fix_labels", "drop_suspects"]  # applied: fix first
    out = recipe
    for action in plan:
        out = action.apply(out, inputs)
    assert out.changes[0]["relabelled"] == len(flipped) and out.changes[1]["dropped"] == 0
    assert len(out.train) == len(recipe.train)
    order = list(ACTIONS)
    assert [a.name for a in apply_order([get_action(n) for n in reversed(order)])] == order


def test_reweight_classes_weights_the_worst_class_most(case):
    """The per-class error comes from where the performance check read its classes (the training data's
    out-of-fold predictions), not from the selection split the challenger is judged on."""
    import dataclasses

    recipe, inputs, _, _ = case
    shaping = Finding("performance", "selection_performance", 0.0, "selection", {
        "shaping": {"split": "train", "per_class_f1": {"neg": 0.9, "neu": 0.4, "pos": 0.8}}}, split="selection")
    # on the selection split "pos" looks worst: that must not decide the weights
    inputs = dataclasses.replace(inputs, findings=inputs.findings + [shaping],
                                 selection_metrics={"per_class": {"neg": {"f1": 0.9}, "neu": {"f1": 0.9},
                                                                  "pos": {"f1": 0.2}}})
    action = ACTIONS["reweight_classes"].propose(inputs, recipe)
    assert action.basis == "error"
    out = action.apply(recipe, inputs)
    w = out.tree["train"]["class_weights"]
    assert w[LABELS.index("neu")] == max(w) and np.mean(w) == pytest.approx(1.0, abs=1e-3)
    # 1 - F1 + 0.02, normalised to mean 1: 0.12 : 0.62 : 0.22
    raw = np.array([0.12, 0.62, 0.22])
    assert w == pytest.approx(list(raw / raw.mean()), abs=1e-3)
    # no out-of-sample per-class error: class frequencies, never the selection split's F1
    bare = dataclasses.replace(inputs, findings=[f for f in inputs.findings if f.kind != "selection_performance"])
    assert ACTIONS["reweight_classes"].propose(bare, recipe).basis == "frequency"


def test_reweight_classes_raises_minority_recall(tmp_path, tiny_config):
    """Imbalanced data (5% of one class): the minority class's selection recall goes up."""
    from reflectlm.data import load_splits
    from reflectlm.train import train

    rows = make_cls_rows(600)
    rows = [r for k, r in enumerate(rows) if r[1] != "neg" or k % 20 == 0]
    path = tmp_path / "imb.csv"
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    cfg = tiny_config(path, epochs=2, lr=3e-3)
    splits = load_splits(cfg.data, cfg.train.seed)
    base = train(cfg, tmp_path / "a", splits=splits).metrics["selection"]["per_class"]["neg"]["recall"]
    recipe = Recipe(cfg, train=splits.train)
    inputs = ActionInputs(task="classification", labels=splits.labels)
    weighted = get_action("reweight_classes", basis="frequency", power=1.0, max_weight=10).apply(recipe, inputs)
    from reflectlm.config import validate_tree

    rec = train(validate_tree(weighted.tree), tmp_path / "b", splits=splits).metrics["selection"]["per_class"]["neg"]
    assert rec["recall"] > base


def test_active_learning_asks_for_the_least_certain_and_adds_true_labels(case):
    recipe, inputs, _, hidden = case
    # the champion is unsure exactly about the pool examples whose id ends in 7
    sure = inputs.predict

    def predict(texts):
        p = sure(texts)
        for k, t in enumerate(texts):
            if t.endswith("7"):
                p[k] = [0.34, 0.33, 0.33]
        return p

    inputs.predict = predict
    action = get_action("active_learning", size=5, diversity=False)
    out = action.apply(recipe, inputs)
    added = [i for i in out.train.ids if i.startswith("p")]
    assert len(added) == 5 and all(recipe.pool.texts[recipe.pool.ids.index(i)].endswith("7") for i in added)
    got = dict(zip(out.train.ids, out.train.labels))
    assert all(got[i] == hidden[i] for i in added)  # the oracle's labels, not the model's guesses
    assert out.labels_used == 5 and not set(added) & set(out.pool.ids)


def test_active_learning_strategies_and_diversity():
    from reflectlm.tasks.base import row_uncertainty as uncertainty

    p = np.array([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [0.4, 0.3, 0.3]])
    assert np.argmax(uncertainty(p, "margin")) == 0
    assert np.argmax(uncertainty(p, "entropy")) == 2
    assert np.argmax(uncertainty(p, "least_confidence")) == 2
    with pytest.raises(ValueError, match="use margin, entropy or least_confidence"):
        uncertainty(p, "random")


def test_active_learning_diversity_spreads_the_batch(case):
    recipe, inputs, _, _ = case
    inputs.predict = lambda texts: np.tile([0.34, 0.33, 0.33], (len(texts), 1))  # all equally unsure
    # two tight clusters of embeddings: a diverse batch of 2 takes one from each
    inputs.embed = lambda texts: np.array([[1.0, 0.0] if "great" in t or "good" in t else [0.0, 1.0] for t in texts])
    idx = get_action("active_learning", size=2, diversity=True).select(recipe.pool, inputs)
    kinds = {("great" in recipe.pool.texts[i] or "good" in recipe.pool.texts[i]) for i in idx}
    assert len(idx) == 2 and kinds == {True, False}


def test_self_training_adds_confident_pseudo_labels_with_lower_weight(case):
    recipe, inputs, _, hidden = case
    out = get_action("self_training", threshold=0.9, cap=30, weight=0.5).apply(recipe, inputs)
    new = [k for k, i in enumerate(out.train.ids) if i.startswith("p")]
    assert len(new) == 30
    assert np.allclose(out.train.weights[new], 0.5) and np.allclose(out.train.weights[:60], 1.0)
    right = np.mean([out.train.labels[k] == hidden[out.train.ids[k]] for k in new])
    assert right >= 0.9  # a sure champion's pseudo-labels are mostly right
    counts = {y: sum(out.train.labels[k] == y for k in new) for y in LABELS}
    assert max(counts.values()) - min(counts.values()) <= 1  # the cap is shared across classes


def test_augment_noise_adds_noisy_copies_with_the_same_labels(case):
    recipe, inputs, _, _ = case
    out = get_action("augment_noise", fraction=1.0, rate=1.0, kinds=("typos",)).apply(recipe, inputs)
    copies = [k for k, i in enumerate(out.train.ids) if i.endswith("~noise")]
    assert len(copies) == len(recipe.train)
    changed = sum(out.train.texts[k] != recipe.train.texts[k - len(recipe.train)] for k in copies)
    assert changed >= 0.9 * len(copies)
    assert [out.train.labels[k] for k in copies] == recipe.train.labels
    # NER: tags still line up with the words
    ner = Dataset(task="ner", ids=["s"], labels=[["B-per", "O"]], texts=["John runs"], tokens=[["John", "runs"]])
    o = get_action("augment_noise", fraction=1.0, rate=1.0).apply(Recipe({"data": {"task": "ner", "train": "x.conll"}}, train=ner),
                                                                  ActionInputs(task="ner", labels=["O", "B-per", "I-per"]))
    assert [len(t) for t in o.train.tokens] == [2, 2] and o.train.labels[1] == ["B-per", "O"]


def test_config_actions_move_the_right_knobs(case):
    recipe, inputs, _, _ = case
    t = get_action("tune_lr", factor=0.5, warmup_ratio=0.1).apply(recipe, inputs).tree["train"]
    assert t["lr"] == pytest.approx(5e-5) and t["head_lr"] == pytest.approx(1e-3) and t["warmup_ratio"] == 0.1
    assert ACTIONS["tune_lr"].propose(inputs, recipe).factor == 0.5  # lr_too_high outranks slowness
    assert get_action("unfreeze", freeze="last_n", unfreeze_last_n=2).apply(recipe, inputs).tree["train"]["freeze"] == "last_n"
    assert ACTIONS["unfreeze"].propose(inputs, recipe.set("train.freeze", "none")) is None  # nothing frozen
    assert get_action("layerwise_lr", decay=0.8).apply(recipe, inputs).tree["train"]["layerwise_lr_decay"] == 0.8
    r = get_action("regularize").apply(recipe, inputs).tree
    assert r["train"]["weight_decay"] == 0.05 and r["train"]["label_smoothing"] == 0.1 and r["model"]["dropout"] == 0.15
    # dropout rises from wherever it is: off (the default) or the model's own 0.1 -> 0.15; 0.2 -> 0.25
    assert ACTIONS["regularize"].propose(inputs, recipe.set("model.dropout", 0.0)).dropout == 0.15
    assert ACTIONS["regularize"].propose(inputs, recipe.set("model.dropout", "pretrained")).dropout == 0.15
    assert ACTIONS["regularize"].propose(inputs, recipe.set("model.dropout", 0.2)).dropout == 0.25
    # the champion peaked at epoch 2 of 4: early_stop proposes 2 epochs, more_epochs declines
    assert ACTIONS["early_stop"].propose(inputs, recipe).epochs == 2
    assert ACTIONS["more_epochs"].propose(inputs, recipe) is None
    assert get_action("more_epochs").apply(recipe, inputs).tree["train"]["epochs"] == 6
    assert get_action("adversarial_training", epsilon=0.5).apply(recipe, inputs).tree["train"]["adversarial_epsilon"] == 0.5
    tr = get_action("transfer", epochs=2).apply(recipe, inputs)
    assert tr.init_from == str(inputs.champion_model) and tr.round_only["train.epochs"] == 2
    assert tr.round_only["train.lr"] == pytest.approx(5e-5)
    assert tr.tree == recipe.tree  # a warm start's schedule is not inherited by later challengers


def test_tune_lr_rescues_a_diverging_run(tmp_path, tiny_config, cls_csv):
    """lr = 1.0 diverges (lr_too_high / divergence); the action's lower rate trains."""
    from reflectlm.config import validate_tree
    from reflectlm.data import load_splits
    from reflectlm.train import train

    cfg = tiny_config(cls_csv, lr=1.0, epochs=2)
    splits = load_splits(cfg.data, cfg.train.seed)
    bad = train(cfg, tmp_path / "a", splits=splits).metrics["selection"]["macro_f1"]
    inputs = ActionInputs(task="classification", labels=splits.labels,
                          findings=[Finding("descent", "divergence", 1.0, "diverges", {})])
    action = ACTIONS["tune_lr"].propose(inputs, Recipe(cfg, splits.train))
    tree = Recipe(cfg, splits.train)
    for _ in range(3):  # three rounds of the same finding: 1.0 -> 0.027
        tree = action.apply(tree, inputs)
    good = train(validate_tree(tree.tree), tmp_path / "b", splits=splits).metrics["selection"]["macro_f1"]
    assert action.factor == 0.3 and good > bad + 0.2


def test_adversarial_training_trains_and_restores_the_embeddings(tmp_path, tiny_config, cls_csv):
    import torch

    from reflectlm.modeling import build
    from reflectlm.remedies import Adversarial, Setting
    from reflectlm.tasks import get_task

    cfg = tiny_config(cls_csv, adversarial_epsilon=1.0)
    bundle = build(cfg.model, "classification", LABELS)
    fgm = Adversarial.open(cfg.train, Setting(get_task("classification"), LABELS, 10, "cpu", None, bundle.model))
    w0 = fgm.weight.detach().clone()
    fgm.weight.grad = torch.randn_like(fgm.weight)
    with fgm.perturbed():
        moved = (fgm.weight - w0).norm().item()
    assert moved == pytest.approx(1.0, rel=1e-3)
    assert torch.equal(fgm.weight.detach(), w0)  # restored exactly
    from reflectlm.train import train

    res = train(tiny_config(cls_csv, adversarial_epsilon=0.5, epochs=3), tmp_path / "r")
    # it learns (three balanced classes: chance is 0.33) with the perturbed second pass in every step
    assert res.metrics["selection"]["macro_f1"] > 0.5 and np.isfinite(res.metrics["history"][-1]["train_loss"])


def test_calibrate_lowers_ece_and_keeps_predictions(tiny_config, cls_csv, tmp_path):
    import torch

    from reflectlm.actions.calibrate import reliability
    from reflectlm.data import load_splits
    from reflectlm.loop.challenger import PostInputs as _PostInputs
    from reflectlm.train import train

    cfg = tiny_config(cls_csv, epochs=4, lr=3e-2)  # a high rate: over-confident
    splits = load_splits(cfg.data, cfg.train.seed)
    bundle = train(cfg, tmp_path / "r", splits=splits).bundle
    post = _PostInputs(bundle, splits, cfg)
    before = post.selection_logits(bundle.model)
    info = get_action("calibrate").transform(bundle.model, post)
    after = post.selection_logits(bundle.model)
    assert (before.argmax(1) == after.argmax(1)).all()
    assert np.allclose(after, before / info["temperature"], atol=1e-3)
    assert info["ece_after"] <= info["ece_before"] + 1e-9
    sm = torch.softmax(torch.tensor(after), 1).numpy()
    assert reliability(sm, post.selection_targets)[0] == pytest.approx(info["ece_after"], abs=1e-4)
    cv = info["cross_fitted"]  # every example scored with a temperature fitted on the other folds
    assert cv["folds"] == 5 and len(cv["temperatures"]) == 5
    assert ("refused" in info) == (cv["nll_after"] >= cv["nll_before"])


def test_calibration_is_cross_fitted_and_refused_when_it_does_not_carry():
    from reflectlm.actions.calibrate import cross_fitted

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 3)) * 2.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])  # labels drawn from the model: already calibrated
    over = cross_fitted(logits * 3.0, y, seed=0)  # the same model, over-confident
    assert over["nll_after"] < over["nll_before"] and all(t > 2 for t in over["temperatures"])
    fine = cross_fitted(logits, y, seed=0)
    assert abs(fine["nll_after"] - fine["nll_before"]) < 0.01 and all(0.8 < t < 1.25 for t in fine["temperatures"])
    assert cross_fitted(logits[:1], y[:1], seed=0)["nll_after"] is None  # one example: nothing to cross-fit


def test_prune_zeroes_the_asked_share_and_keeps_predictions_close(tiny_config, cls_csv, tmp_path):
    import torch

    from reflectlm.data import load_splits
    from reflectlm.loop.challenger import PostInputs as _PostInputs
    from reflectlm.train import train

    cfg = tiny_config(cls_csv, epochs=3)
    splits = load_splits(cfg.data, cfg.train.seed)
    bundle = train(cfg, tmp_path / "r", splits=splits).bundle
    post = _PostInputs(bundle, splits, cfg)
    before = post.selection_logits(bundle.model).argmax(1)
    info = get_action("prune", method="magnitude", amount=0.2).transform(bundle.model, post)
    assert info["sparsity"] == pytest.approx(0.2, abs=0.01)
    agree = (post.selection_logits(bundle.model).argmax(1) == before).mean()
    assert agree >= 0.9
    heads = get_action("prune", method="heads", amount=0.5).transform(bundle.model, post)
    assert heads["removed"] == 2  # 1 of 2 heads in each of 2 layers
    q = bundle.model.base_model.encoder.layer[0].attention.self.query.weight
    assert (q.abs().sum(1) == 0).sum().item() == 16  # one head's 16 rows are zero
    assert not torch.isnan(torch.tensor(post.selection_logits(bundle.model))).any()


def test_transfer_starts_from_the_champion(tiny_config, cls_csv, tmp_path):
    """From the champion's weights the first epoch is already good; from scratch it is not."""
    from reflectlm.config import validate_tree
    from reflectlm.data import load_splits
    from reflectlm.train import train

    cfg = tiny_config(cls_csv, epochs=3)
    splits = load_splits(cfg.data, cfg.train.seed)
    champ = train(cfg, tmp_path / "champ", splits=splits)
    inputs = ActionInputs(task="classification", labels=splits.labels, champion_model=tmp_path / "champ" / "model")
    r = get_action("transfer", epochs=1).apply(Recipe(cfg, splits.train), inputs)
    tree = r.tree
    tree["model"]["name"] = r.init_from
    tree["train"].update({k.split(".")[1]: v for k, v in r.round_only.items()})
    warm = train(validate_tree(tree), tmp_path / "warm", splits=splits).metrics["history"][0]["selection_macro_f1"]
    cold = champ.metrics["history"][0]["selection_macro_f1"]
    assert warm > cold


def test_domain_pretraining_lowers_mlm_loss_and_saves_an_encoder(case, tmp_path):
    recipe, inputs, _, _ = case
    out = get_action("domain_pretraining", steps=30, batch_size=16, lr=1e-3).apply(recipe, inputs)
    ch = out.changes[-1]
    assert ch["mlm_loss"][1] < ch["mlm_loss"][0]
    enc = tmp_path / "adapted"
    assert out.tree["model"]["name"] == str(enc) and (enc / "config.json").is_file() and (enc / "tokenizer.json").is_file()
    assert out.extra_examples == 30 * 16
    from reflectlm.config import load_config
    from reflectlm.modeling import build

    cfg = load_config(tree={"data": {"train": "x.csv"}, "model": {"name": str(enc)}})
    build(cfg.model, "classification", LABELS)  # the adapted encoder fine-tunes like any model directory


def test_mlm_loss_on_masked_positions_equals_the_models_own(tiny_bert_dir):
    # domain_pretraining projects only the masked positions onto the vocabulary: the loss must be
    # the one the model's full forward computes
    import torch
    from transformers import AutoModelForMaskedLM

    from reflectlm.actions.domain_pretraining import mlm_loss

    torch.manual_seed(0)
    mlm = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir).eval()
    ids = torch.randint(5, mlm.config.vocab_size, (3, 9))
    am = torch.ones_like(ids)
    am[2, 6:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 1], labels[1, 4], labels[1, 7], labels[2, 0] = 11, 12, 13, 14
    ours = mlm_loss(mlm, ids, am, labels)
    theirs = mlm(input_ids=ids, attention_mask=am, labels=labels).loss
    assert torch.allclose(ours, theirs, atol=1e-5)
    ours.backward()  # and it trains the encoder
    assert mlm.base_model.embeddings.word_embeddings.weight.grad is not None


def test_a_bad_value_fails_when_the_action_applies_not_in_training(case):
    """The recipe carries a validated Config: an action's bad value is refused at apply time,
    naming the key, and the recipe it was applied to is unchanged."""
    from reflectlm.config import ConfigError

    recipe, inputs, _, _ = case
    with pytest.raises(ConfigError, match=r"train.lr = -0.0001 is not valid"):
        get_action("tune_lr", factor=-1.0).apply(recipe, inputs)
    with pytest.raises(ConfigError, match=r"train.epochs = 0 is not valid"):
        recipe.set("train.epochs", 0)
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'; valid keys here: epochs"):
        recipe.get("train.epoch")
    assert recipe.get("train.lr") == 1e-4 and recipe.config.train.epochs == 4
    assert recipe.set("train.epochs", 6).config.train.epochs == 6 and recipe.config.train.epochs == 4


def test_correct_noise_trains_through_the_estimated_noise():
    """correct_noise turns the label_issues finding's noise rates into train.noise_transition (rows:
    true class, summing to 1), keeps every example, and conflicts with relabelling / dropping."""
    from reflectlm.actions import conflict
    from reflectlm.diagnose.label_issues import noise_rates, noise_transition, transition_from

    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, 600)
    given = true.copy()
    flip = rng.random(600) < 0.3
    given[flip & (true == 0)] = 1  # class 0 is given as class 1 30 % of the time
    P = np.full((600, 3), 0.05)
    P[np.arange(600), true] = 0.9  # out-of-fold probabilities that know the truth
    T = noise_transition(given, P, 3)
    assert T[0, 1] == pytest.approx(0.3, abs=0.07) and T[1, 1] > 0.95 and np.allclose(T.sum(1), 1.0)
    rates = noise_rates(T, LABELS)
    assert rates[0]["true"] == "neg" and rates[0]["given"] == "neu"
    assert np.allclose(transition_from(rates, LABELS), T, atol=0.01)

    train = cls_dataset(30)
    f = Finding("label_issues", "label_issues", 0.5, "x", {"flagged": [], "noise_rates": rates}, split="train")
    inputs = ActionInputs(task="classification", labels=LABELS, findings=[f])
    recipe = Recipe({"data": {"train": "x.csv"}}, train)
    action = ACTIONS["correct_noise"].propose(inputs, recipe)
    out = action.apply(recipe, inputs)
    M = np.array(out.tree["train"]["noise_transition"])
    assert M.shape == (3, 3) and np.allclose(M.sum(1), 1.0, atol=1e-4) and M[0, 1] == pytest.approx(T[0, 1], abs=0.01)
    assert out.train.ids == train.ids  # nothing dropped or relabelled
    assert conflict(action, get_action("fix_labels")) and conflict(action, get_action("drop_suspects"))
    # it trains the base's epochs, and records the matrix's margin (the measured "epochs / margin" rule)
    assert out.config.train.epochs == recipe.config.train.epochs
    hand = np.array([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.2, 0.8]])  # margins 0.2, 1.0, 0.6: mean 0.6
    assert ACTIONS["correct_noise"].margin(hand) == pytest.approx(0.6) and ACTIONS["correct_noise"].margin(np.eye(3)) == 1
    assert out.changes[-1]["margin"] == pytest.approx(ACTIONS["correct_noise"].margin(M), abs=1e-3)
    assert not applies(get_task("ner"), ACTIONS["correct_noise"])  # the planner never offers it for NER
    assert ACTIONS["correct_noise"].propose(inputs, out) is None  # already corrected: the same matrix again
    # a later relabelling changes the labels the matrix described: it is cleared
    flagged = Finding("label_issues", "label_issues", 0.5, "x",
                      {"flagged": [train.ids[0]], "suggested": {train.ids[0]: ["pos" if train.labels[0] != "pos"
                                                                               else "neg", 0.9, 0.05]},
                       "noise_rates": rates}, split="train")
    fixed = get_action("fix_labels").apply(out, ActionInputs(task="classification", labels=LABELS, findings=[flagged]))
    assert fixed.changes[-1]["relabelled"] == 1 and fixed.tree["train"]["noise_transition"] == []


def test_a_bad_noise_transition_is_refused_with_how_to_fix_it(tiny_bert_dir):
    from reflectlm.config import ConfigError, load_config
    from reflectlm.remedies import ForwardCorrection, Setting
    from reflectlm.tasks import get_task

    def setting(labels, task="classification"):
        return Setting(get_task(task), labels, 4, "cpu", None, None)

    tc = load_config(tree={"data": {"train": "x.csv"}, "train": {"noise_transition": [[0.5, 0.5], [0.0, 1.0]]}}).train
    with pytest.raises(ConfigError, match="2 x 2 but there are 3 labels; give a 3 x 3 matrix"):
        ForwardCorrection.open(tc, setting(LABELS))
    with pytest.raises(ConfigError, match="leave train.noise_transition at its default"):
        ForwardCorrection.open(tc, setting(["a", "b"], "ner"))
    tc = load_config(tree={"data": {"train": "x.csv"}, "train": {"noise_transition": [[0.5, 0.2], [0.0, 1.0]]}}).train
    with pytest.raises(ConfigError, match="every row summing to 1"):
        ForwardCorrection.open(tc, setting(["a", "b"]))


def test_early_learning_sets_the_regulariser_keeps_every_example_and_is_not_proposed_twice():
    """early_learning (ELR) answers label noise in the loss: it sets train.early_learning and its beta,
    keeps every example, combines with cleaning but not with forward correction, and is for
    classification only."""
    from reflectlm.actions import conflict

    train = cls_dataset(30)
    f = Finding("label_issues", "label_issues", 0.5, "x", {"flagged": [train.ids[0]]}, split="train")
    inputs = ActionInputs(task="classification", labels=LABELS, findings=[f])
    recipe = Recipe({"data": {"train": "x.csv"}}, train)
    action = ACTIONS["early_learning"].propose(inputs, recipe)
    out = action.apply(recipe, inputs)
    assert out.config.train.early_learning == 3.0 and out.config.train.early_learning_beta == 0.7
    assert out.train.ids == train.ids and out.train.labels == train.labels
    assert out.changes[-1] == {"action": "early_learning", "strength": 3.0, "beta": 0.7}
    assert conflict(action, get_action("correct_noise"))
    assert not conflict(action, get_action("fix_labels")) and not conflict(action, get_action("drop_suspects"))
    assert ACTIONS["early_learning"].propose(inputs, out) is None  # already regularised
    # Never with forward correction, either way round (measured: the model ran away).
    corrected = recipe.set("train.noise_transition", [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert ACTIONS["early_learning"].propose(inputs, corrected) is None
    noisy = Finding("label_issues", "label_issues", 0.5, "x",
                    {"flagged": [], "noise_rates": [{"true": "neg", "given": "neu", "rate": 0.2}]}, split="train")
    with_rates = ActionInputs(task="classification", labels=LABELS, findings=[noisy])
    assert ACTIONS["correct_noise"].propose(with_rates, recipe) is not None
    assert ACTIONS["correct_noise"].propose(with_rates, out) is None
    assert not applies(get_task("ner"), ACTIONS["early_learning"])  # the planner never offers it for NER
    assert ACTIONS["early_learning"].propose(ActionInputs(task="classification", labels=LABELS, findings=[]),
                                             recipe) is None
