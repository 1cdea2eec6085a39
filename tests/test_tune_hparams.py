"""tune_hparams on a local Ray cluster: it finds a better learning rate than a bad starting one,
scores trials on a split carved from the training data only, records every trial, and keeps the
recipe's own settings (with ASHA stopping the hopeless trials) when nothing beats them."""

from __future__ import annotations

import json

import pytest

from reflectlm.actions import ACTIONS, ActionInputs, Recipe, get_action

pytest.importorskip("ray.tune", reason="needs Ray Tune: pip install reflectlm[distributed]")


@pytest.fixture
def splits(tiny_config, cls_csv):
    from reflectlm.data import Dataset, load_splits

    cfg = tiny_config(cls_csv)
    s = load_splits(cfg.data, cfg.train.seed)
    # copies of some training texts (other case and spacing): a carved split must keep each text on one side
    k = list(range(0, 30, 3))
    dup = Dataset(task="classification", ids=[f"dup{i}" for i in k], labels=[s.train.labels[i] for i in k],
                  texts=["  " + s.train.texts[i].upper() for i in k], tokens=None)
    from reflectlm.actions.base import concat

    s.train = concat(s.train, dup)
    return s


def _inputs(splits, tmp_path, seed=0):
    return ActionInputs(task="classification", labels=splits.labels, seed=seed, work_dir=tmp_path)


def test_tune_hparams_finds_a_better_learning_rate_than_a_bad_one(ray_local, tiny_config, cls_csv, splits, tmp_path):
    from reflectlm.dataset import _norm

    cfg = tiny_config(cls_csv, lr=1e-7, epochs=3, telemetry_every=0, record_dynamics=False)
    recipe = Recipe(cfg, train=splits.train)
    action = get_action("tune_hparams", trials=4, lr_min=1e-3, lr_max=3e-2, epochs_min=2, epochs_max=3)
    out = action.apply(recipe, _inputs(splits, tmp_path))
    change = out.changes[-1]
    record = json.loads((tmp_path / "tune.json").read_text())
    trials = record["trials"]
    # trial 0 is the recipe's own settings; the chosen one scores better on the carved split
    assert trials[0]["config"]["lr"] == pytest.approx(1e-7) and trials[0]["config"]["epochs"] == 3
    assert change["chosen"] != 0 and change["held_score"] > change["own_held_score"] + 0.2
    assert out.get("train.lr") != pytest.approx(1e-7) and 1e-3 <= out.get("train.lr") <= 3e-2
    assert out.get("train.lr") == pytest.approx(trials[change["chosen"]]["config"]["lr"])
    assert out.get("train.epochs") == trials[change["chosen"]]["config"]["epochs"]
    assert out.get("train.weight_decay") == pytest.approx(trials[change["chosen"]]["config"]["weight_decay"])
    assert recipe.get("train.lr") == pytest.approx(1e-7)  # the recipe it was given is unchanged
    # every trial recorded: settings, a score per epoch it ran, where it stopped
    assert len(trials) == 4 and all(t["error"] is None for t in trials)
    for t in trials:
        assert len(t["scores"]) == t["stopped_at_epoch"] <= t["config"]["epochs"]
        assert t["stopped_early"] == (t["stopped_at_epoch"] < t["config"]["epochs"])
        assert t["best_score"] == max(t["scores"])
    assert out.extra_examples == sum(t["epochs_run"] for t in trials) * record["fit_examples"]
    # the carved split: from the training data only, never a selection example, no text on both sides
    held = set(record["held_ids"])
    assert held and held <= set(splits.train.ids) and not held & set(splits.selection.ids)
    assert len(held) == round(0.2 * len(splits.train)) and record["fit_examples"] == len(splits.train) - len(held)
    texts = dict(zip(splits.train.ids, splits.train.texts))
    assert not {_norm(texts[i]) for i in held} & {_norm(texts[i]) for i in set(texts) - held}
    held_labels = {y for i, y in zip(splits.train.ids, splits.train.labels) if i in held}
    assert held_labels == set(splits.labels)  # stratified: every class scored


def test_tune_hparams_keeps_good_settings_and_asha_stops_hopeless_trials(ray_local, tiny_config, cls_csv, splits,
                                                                          tmp_path):
    # The recipe's own rate trains; every sampled one (1e-7 .. 1e-6) cannot. One trial at a time,
    # so ASHA sees the recipe's score at the first rung before the others and stops each of them there.
    cfg = tiny_config(cls_csv, lr=1e-2, epochs=3, telemetry_every=0, record_dynamics=False)
    action = get_action("tune_hparams", trials=3, lr_min=1e-7, lr_max=1e-6, epochs_min=3, epochs_max=3,
                        grace_period=1, reduction_factor=3, max_concurrent=1)
    out = action.apply(Recipe(cfg, train=splits.train), _inputs(splits, tmp_path))
    trials = json.loads((tmp_path / "tune.json").read_text())["trials"]
    assert out.changes[-1]["chosen"] == 0 and out.get("train.lr") == pytest.approx(1e-2)
    assert trials[0]["stopped_at_epoch"] == 3 and not trials[0]["stopped_early"]
    assert all(t["stopped_early"] and t["stopped_at_epoch"] == 1 for t in trials[1:])
    assert out.changes[-1]["stopped_early"] == 2


def test_tune_hparams_validates_its_parameters_and_prices_the_search():
    from reflectlm.config import ConfigError, load_config
    from reflectlm.loop.planner import plan_cost, validate_actions

    with pytest.raises(ConfigError, match=r"lr_min = 0.1, lr_max = 0.001: need 0 < lr_min <= lr_max"):
        get_action("tune_hparams", lr_min=0.1, lr_max=1e-3)
    with pytest.raises(ConfigError, match=r"reduction_factor = 1.0 must be above 1.*loop.action_params.tune_hparams"):
        get_action("tune_hparams", reduction_factor=1.0)
    bad = load_config(tree={"data": {"train": "x.csv"}, "loop": {"action_params": {"tune_hparams": {"holdout": 1.5}}}})
    with pytest.raises(ConfigError, match=r"holdout = 1.5 must be in \(0, 1\)"):
        validate_actions(bad)
    # trials x epochs x examples (the fitted part), then the challenger's own training
    from reflectlm.data import Dataset

    train = Dataset(task="classification", ids=[str(i) for i in range(100)], labels=["a", "b"] * 50,
                    texts=[f"t{i}" for i in range(100)], tokens=None)
    recipe = Recipe({"data": {"train": "x.csv"}, "train": {"epochs": 3}}, train=train)
    action = get_action("tune_hparams", trials=5, epochs_max=4, holdout=0.2)
    assert plan_cost([action], recipe) == 5 * 4 * 80 + 100 * 4


def test_without_ray_the_planner_says_how_to_install_it(monkeypatch):
    import importlib.util

    from reflectlm.actions import unavailable

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("ray") else real(name, *a))
    assert "pip install reflectlm[distributed]" in unavailable("tune_hparams")
    from reflectlm.data import Dataset

    train = Dataset(task="classification", ids=[str(i) for i in range(40)], labels=["a", "b"] * 20,
                    texts=[f"t{i}" for i in range(40)], tokens=None)
    recipe = Recipe({"data": {"train": "x.csv"}}, train=train)
    inputs = ActionInputs(task="classification", labels=["a", "b"])
    assert ACTIONS["tune_hparams"].propose(inputs, recipe) is None
    out = get_action("tune_hparams").apply(recipe, inputs)
    assert "pip install reflectlm[distributed]" in out.changes[-1]["skipped"] and out.train.ids == train.ids
