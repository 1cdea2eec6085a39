"""A step of a round is a function of one Round object, testable alone: here `judge`, with
made-up model outputs, for both tasks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from reflectlm.actions import Recipe, get_action
from reflectlm.config import load_config
from reflectlm.data import Dataset, Splits
from reflectlm.loop.round import Round, judge
from reflectlm.loop.state import State


def _round(tmp_path, task: str, selection: Dataset, labels: list[str], plan: list) -> Round:
    cfg = load_config(tree={"data": {"task": task, "train": "x"}, "loop": {"n_bootstrap": 200}})
    state = State([{"round": 0, "promoted": True, "selection": 0.5, "champion_round": 0, "examples_trained": 1,
                    "seconds": 1.0}], 0, Recipe(cfg, selection), 1, 0, {})
    rnd = Round(1, tmp_path, cfg, Splits(selection, selection, None, labels, []), state, plan=plan)
    rnd.dir.mkdir(parents=True)
    return rnd


def test_judge_tests_the_challenger_against_the_champion_by_the_selection_metric(tmp_path):
    labels = ["a", "b"]
    y = ["a", "b"] * 40
    ds = Dataset(task="classification", ids=[str(i) for i in range(80)], labels=y, texts=["t"] * 80, tokens=None)
    right = np.eye(2)[[labels.index(v) for v in y]]
    half = right.copy()
    half[::2] = half[::2, ::-1]  # the champion says "b" for everything
    rnd = _round(tmp_path, "classification", ds, labels, [get_action("regularize")])
    rnd.champ_out = rnd.base_out = SimpleNamespace(probs=half, metrics={"macro_f1": 0.5})
    rnd.chall_out = SimpleNamespace(probs=right, metrics={"macro_f1": 1.0})
    judge(rnd)
    saved = json.loads((rnd.dir / "compare.json").read_text())
    assert saved["metric"] == "macro_f1" and saved["mode"] == "superiority" and saved["seed"] == rnd.cfg.train.seed + 1
    assert saved["difference"] == pytest.approx(1 - 1 / 3)  # macro-F1: 1 against (0 + 2/3) / 2
    assert rnd.promoted and saved["promote"]
    assert not rnd.chained and rnd.reason == saved["reason"]


def test_judge_resamples_sentences_for_ner(tmp_path):
    labels = ["O", "B-per", "I-per"]
    tags = [["B-per", "O"], ["O", "O"]] * 15
    ds = Dataset(task="ner", ids=[str(i) for i in range(30)], labels=tags, texts=["w w"] * 30,
                 tokens=[["w", "w"]] * 30)
    exact = [np.eye(3)[[labels.index(t) for t in s]] for s in tags]
    rnd = _round(tmp_path, "ner", ds, labels, [get_action("calibrate")])
    rnd.champ_out = rnd.base_out = SimpleNamespace(probs=exact, metrics={"entity_f1": 1.0})
    rnd.chall_out = SimpleNamespace(probs=exact, metrics={"entity_f1": 1.0})
    judge(rnd)
    saved = json.loads((rnd.dir / "compare.json").read_text())
    assert saved["metric"] == "entity_f1" and saved["n"] == 30 and saved["mode"] == "non_inferiority"
    assert saved["difference"] == 0.0 and rnd.promoted  # the same tagger is not worse than itself


def test_judge_rejects_a_post_step_that_refused_itself_out_of_sample(tmp_path):
    labels = ["a", "b"]
    y = ["a", "b"] * 40
    ds = Dataset(task="classification", ids=[str(i) for i in range(80)], labels=y, texts=["t"] * 80, tokens=None)
    same = np.eye(2)[[labels.index(v) for v in y]]
    rnd = _round(tmp_path, "classification", ds, labels, [get_action("calibrate")])
    rnd.champ_out = rnd.base_out = SimpleNamespace(probs=same, metrics={"macro_f1": 1.0})
    rnd.chall_out = SimpleNamespace(probs=same, metrics={"macro_f1": 1.0})  # a temperature changes no prediction
    rnd.metrics = {"post": {"calibrate": {"temperature": 1.3, "refused": "cross-fitted log-loss does not improve"}}}
    judge(rnd)
    saved = json.loads((rnd.dir / "compare.json").read_text())
    assert not rnd.promoted and not saved["promote"]  # non-inferior on its own examples, refused out of sample
    assert saved["reason"].endswith("; but calibrate: cross-fitted log-loss does not improve; rejected")
    assert "promoted" not in saved["reason"]
    rnd.metrics = {"post": {"calibrate": {"temperature": 1.3}}}  # not refused: the test decides
    judge(rnd)
    assert rnd.promoted


def test_a_round_that_only_adds_verified_labels_is_judged_by_non_inferiority(tmp_path):
    labels = ["a", "b"]
    y = ["a", "b"] * 40
    ds = Dataset(task="classification", ids=[str(i) for i in range(80)], labels=y, texts=["t"] * 80, tokens=None)
    probs = np.eye(2)[[labels.index(v) for v in y]]
    probs[:10] = probs[:10, ::-1]  # both models wrong on the same 10: the new labels changed nothing here
    out = SimpleNamespace(probs=probs, metrics={"macro_f1": 0.875})
    rnd = _round(tmp_path, "classification", ds, labels, [get_action("active_learning")])
    rnd.champ_out = rnd.base_out = rnd.chall_out = out
    judge(rnd)
    saved = json.loads((rnd.dir / "compare.json").read_text())
    assert saved["mode"] == "non_inferiority" and saved["margin"] == rnd.cfg.loop.margin
    assert rnd.promoted and "non-inferior" in saved["reason"]  # verified labels are kept unless they hurt
    # The same outcome under an action that must prove a gain (pseudo-labels) is rejected.
    rnd2 = _round(tmp_path / "s", "classification", ds, labels, [get_action("self_training")])
    rnd2.champ_out = rnd2.base_out = rnd2.chall_out = out
    judge(rnd2)
    assert not rnd2.promoted and json.loads((rnd2.dir / "compare.json").read_text())["mode"] == "superiority"


def test_a_round_built_on_a_rejected_challenger_is_judged_for_superiority(tmp_path):
    """Its base carries an unproven change: a non-inferiority plan on top (here a calibration whose
    predictions equal the champion's) must still prove a gain over the champion, and says why."""
    labels = ["a", "b"]
    y = ["a", "b"] * 40
    ds = Dataset(task="classification", ids=[str(i) for i in range(80)], labels=y, texts=["t"] * 80, tokens=None)
    same = np.eye(2)[[labels.index(v) for v in y]]
    rnd = _round(tmp_path, "classification", ds, labels, [get_action("calibrate")])
    rnd.state.decisions.append({"round": 1, "promoted": False, "selection": 0.55, "champion_round": 0,
                                "examples_trained": 1, "seconds": 1.0})
    rnd.state.base, rnd.r = 1, 2  # built on round 1, rejected but promising; the champion is round 0
    rnd.dir.mkdir(parents=True, exist_ok=True)
    rnd.champ_out = SimpleNamespace(probs=same, metrics={"macro_f1": 1.0})
    rnd.base_out = rnd.chall_out = SimpleNamespace(probs=same, metrics={"macro_f1": 1.0})
    rnd.metrics = {"post": {"calibrate": {"temperature": 1.3}}}
    judge(rnd)
    saved = json.loads((rnd.dir / "compare.json").read_text())
    assert saved["mode"] == "superiority" and not rnd.promoted
    assert "judged for superiority, not non-inferiority: it builds on round 1" in saved["reason"]
