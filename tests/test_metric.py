"""One Metric for early stopping, the A/B gate, reflect's headroom and the stop rules; every
train.metric value either runs through the loop, judged by itself, or is refused before round 0."""

from __future__ import annotations

import json

import pytest
from conftest import make_cls_rows, make_ner_sentences

from reflectlm.config import ConfigError, load_config
from reflectlm.metric import METRICS, get_metric


def test_better_reached_and_headroom_follow_the_direction():
    f1, loss = get_metric("macro_f1"), get_metric("loss")
    assert f1.better(0.6, 0.5) and not f1.better(0.5, 0.5) and f1.better(0.1, None)
    assert loss.better(0.4, 0.5) and not loss.better(0.6, 0.5)
    assert f1.reached(0.8, 0.8) and not f1.reached(0.79, 0.8) and not f1.reached(0.99, None)
    assert loss.reached(0.2, 0.3) and not loss.reached(0.4, 0.3)
    assert f1.headroom(0.75) == pytest.approx(0.25) and loss.headroom(0.75) == 1.0 and f1.headroom(None) == 1.0


def test_every_metric_the_config_accepts_is_known():
    from typing import get_args

    from reflectlm.config import TrainConfig

    def names(t):
        return {t} if isinstance(t, str) else {n for a in get_args(t) for n in names(a)}

    accepted = names(TrainConfig.model_fields["metric"].annotation)
    assert accepted == set(METRICS)
    with pytest.raises(ValueError, match="valid metrics: accuracy"):
        get_metric("recall")


def _tree(tmp_path, tiny_bert_dir, task: str, metric: str) -> dict:
    if task == "ner":
        train = tmp_path / "ner.conll"
        train.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in make_ner_sentences(60)))
    else:
        train = tmp_path / "cls.csv"
        train.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in make_cls_rows(90)), encoding="utf-8")
    return {"data": {"task": task, "train": str(train), "selection_fraction": 0.25, "test_fraction": 0.2},
            "model": {"name": str(tiny_bert_dir)},
            "train": {"epochs": 1, "batch_size": 16, "lr": 1e-2, "head_lr": 0.0, "telemetry_every": 4,
                      "precision": "fp32", "threads": 1, "metric": metric},
            "run": {"quiet": True, "output_dir": str(tmp_path / "runs")},
            # prune is proposed whenever it is listed: a round that needs no finding and no training
            "loop": {"rounds": 2, "patience": 2, "report": False, "checks": ["fit"], "n_bootstrap": 100,
                     "actions": ["prune"]}}


@pytest.mark.parametrize("task, metric", [("classification", "accuracy"), ("classification", "macro_f1"),
                                          ("ner", "entity_f1")])
def test_a_gated_metric_runs_the_loop_and_judges_by_itself(tmp_path, tiny_bert_dir, task, metric):
    from reflectlm.loop import improve

    res = improve(load_config(tree=_tree(tmp_path, tiny_bert_dir, task, metric)))
    assert res.summary["selection_metric"] == metric and len(res.summary["rounds"]) >= 2
    cmp = json.loads((res.run_dir / "rounds" / "01" / "compare.json").read_text())
    decision = json.loads((res.run_dir / "rounds" / "01" / "decision.json").read_text())
    assert cmp["metric"] == metric and decision["decided_by"] == metric
    metrics = json.loads((res.run_dir / "rounds" / "01" / "metrics.json").read_text())
    assert decision["selection"] == pytest.approx(metrics["selection"][metric])


@pytest.mark.parametrize("task, metric", [("classification", "weighted_f1"), ("classification", "loss"),
                                          ("ner", "loss")])
def test_a_metric_the_gate_cannot_test_is_refused_before_round_0(tmp_path, tiny_bert_dir, task, metric):
    from reflectlm.loop import improve

    tree = _tree(tmp_path, tiny_bert_dir, task, metric)
    tree["loop"]["target"] = 0.1  # (a loss target once made the stop rule compare a loss with an F1 gate)
    use = "entity_f1" if task == "ner" else "macro_f1"
    with pytest.raises(ConfigError, match=rf"train.metric = '{metric}' cannot decide promotions.*'{use}'"):
        improve(load_config(tree=tree))
    assert not (tmp_path / "runs").exists()  # refused before anything was written or trained
