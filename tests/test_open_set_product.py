"""Out-of-scope detection through the product: a tiny BERT trained with open_set.enabled on three
intents, whose selection and test files hold messages of no intent ("oos"). Train, metrics,
predict, serve (page included), export (ONNX too) behind the parity gate, the monitor and
feedback each see "out of scope"."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import FILLER, make_cls_rows

OOS_WORDS = ["football", "weather", "pizza", "guitar", "rocket", "volcano", "piano", "tennis"]


def oos_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(" ".join(rng.sample(OOS_WORDS, 3) + rng.sample(FILLER, 1)) + f" o{seed}x{i}", "oos") for i in range(n)]


def write_csv(path: Path, rows) -> Path:
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def open_run(tmp_path_factory, tiny_bert_dir) -> Path:
    from reflectlm.config import load_config
    from reflectlm.train import train

    root = tmp_path_factory.mktemp("open-run")
    rows = make_cls_rows(420, seed=3)
    train_csv = write_csv(root / "train.csv", rows[:300])
    sel_csv = write_csv(root / "selection.csv", rows[300:360] + oos_rows(20, 1))
    test_csv = write_csv(root / "test.csv", rows[360:] + oos_rows(20, 2))
    tree = {"data": {"task": "classification", "train": str(train_csv), "selection": str(sel_csv),
                     "test": str(test_csv)},
            "model": {"name": str(tiny_bert_dir), "dropout": 0.1},
            "train": {"epochs": 4, "batch_size": 16, "lr": 1e-2, "head_lr": 0.0, "telemetry_every": 0,
                      "precision": "fp32", "record_dynamics": False},
            "open_set": {"enabled": True},
            "run": {"quiet": True}}
    return train(load_config(tree=tree), root / "run").run_dir


def test_training_fits_the_detector_on_selection_and_reports_open_set_metrics(open_run):
    metrics = json.loads((open_run / "metrics.json").read_text())
    assert json.loads((open_run / "run.json").read_text())["labels"] == ["neg", "neu", "oos", "pos"]
    assert (open_run / "model" / "open_set.json").is_file() and (open_run / "model" / "open_set.npz").is_file()
    chosen = metrics["open_set"]
    assert chosen["detector"] in ("msp", "energy", "mahalanobis", "knn") and 0 <= chosen["threshold"] <= 1
    assert "highest AUROC on the selection split's 20 out-of-scope examples" in chosen["chosen_by"]
    assert set(chosen["selection"]) == {"msp", "energy", "mahalanobis", "knn"}
    test = metrics["test"]["open_set"]
    assert test["n_out_of_scope"] == 20 and test["auroc"] > 0.9 and test["oos_recall"] >= 0.8
    # the threshold keeps in-scope selection accuracy within open_set.max_accuracy_drop (0.01)
    sel = metrics["selection"]["open_set"]
    assert sel["in_scope_accuracy"] >= sel["in_scope_accuracy_without_detector"] - 0.01 - 1e-9
    # out of scope is a class of the ordinary metrics too (what the loop's A/B test judges)
    assert "oos" in metrics["test"]["per_class"]


def test_predict_says_out_of_scope_with_its_score(open_run):
    from reflectlm.evaluate import evaluate, predict

    preds = predict(open_run, ["great good love n1", "pizza guitar rocket the"])
    assert preds[0]["out_of_scope"] is False and preds[0]["label"] == "pos"
    assert preds[1]["out_of_scope"] is True and preds[1]["label"] is None
    assert preds[1]["out_of_scope_score"] > preds[0]["out_of_scope_score"]
    got = evaluate(open_run, open_run.parent / "test.csv")
    assert got["open_set"]["n_out_of_scope"] == 20


def test_the_cli_prints_out_of_scope(open_run):
    from typer.testing import CliRunner

    from reflectlm.cli import app

    r = CliRunner().invoke(app, ["predict", str(open_run), "pizza guitar rocket the"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("(out of scope)\t")


def test_serve_answers_out_of_scope_and_the_page_shows_it(open_run, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from reflectlm.config import load_deploy_config
    from reflectlm.deploy.serve.app import create_app

    settings = load_deploy_config(None, [f'serve.store="{tmp_path / "s.sqlite"}"', "serve.auth=false",
                                         "monitor.min_samples=10", "monitor.every=10000"])
    with TestClient(create_app(open_run, settings)) as c:
        r = c.post("/v1/predict", json={"texts": ["awful bad hate n2", "pizza guitar rocket the"]})
        assert r.status_code == 200, r.text
        inside, outside = r.json()["predictions"]
        assert inside["out_of_scope"] is False and inside["label"] == "neg"
        assert outside["out_of_scope"] is True and outside["label"] is None
        assert 0.5 < outside["out_of_scope_score"] <= 1.0 and outside["confidence"] >= 0.5
        # a correction to "out of scope" is a label like any other: the next run trains on it
        fb = c.post("/v1/feedback", json={"prediction_id": inside["id"], "label": "oos"})
        assert fb.status_code == 201, fb.text
        bad = c.post("/v1/feedback", json={"prediction_id": inside["id"], "label": "nonsense"})
        assert bad.status_code == 422 and "oos" in bad.json()["error"]["message"]
        metrics = c.get("/metrics").text
        assert 'label="(out of scope)"' in metrics
        assert "out of scope" in c.get("/").text


def test_a_configured_fallback_label_is_answered_instead_of_null(open_run, tmp_path):
    import shutil

    from reflectlm import open_set as O
    from reflectlm.evaluate import predict
    from reflectlm.modeling import load_bundle, save_bundle

    bundle = load_bundle(open_run)
    bundle.open_set.fallback = "human_agent"
    save_bundle(bundle, tmp_path / "model")
    assert O.load(tmp_path / "model").fallback == "human_agent"
    pred = predict(tmp_path / "model", ["pizza guitar rocket the"])[0]
    assert pred["out_of_scope"] is True and pred["label"] == "human_agent"
    shutil.rmtree(tmp_path / "model")


def test_export_keeps_the_detector_behind_the_parity_gate(open_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from reflectlm.deploy.export import export
    from reflectlm.deploy.predictor import load_predictor

    texts = ["great good love n1", "pizza guitar rocket the", "table chair n5", "weather tennis a so"]
    torch_preds = load_predictor(open_run).predict(texts)
    info = export(open_run, tmp_path / "onnx", onnx=True)
    assert info["status"] == "accepted" and info["open_set"]["detector"] == json.loads(
        (open_run / "metrics.json").read_text())["open_set"]["detector"]
    assert (tmp_path / "onnx" / "model" / "open_set.json").is_file()
    onnx = load_predictor(tmp_path / "onnx")
    assert onnx.info["format"] == "onnx"
    onnx_preds = onnx.predict(texts)
    assert [p["out_of_scope"] for p in onnx_preds] == [p["out_of_scope"] for p in torch_preds] == [
        False, True, False, True]
    np.testing.assert_allclose([p["out_of_scope_score"] for p in onnx_preds],
                               [p["out_of_scope_score"] for p in torch_preds], atol=0.05)


def test_the_monitor_alerts_on_a_rise_in_out_of_scope_traffic(open_run):
    from reflectlm.config import MonitorConfig
    from reflectlm.deploy.monitor import drift, reference_sample, sample_of
    from reflectlm.deploy.predictor import load_predictor

    predictor = load_predictor(open_run)
    reference = reference_sample(predictor, open_run)
    assert "(out of scope)" in reference.labels  # the selection split's 20 out-of-scope messages
    cfg = MonitorConfig(min_samples=10)
    same = sample_of(predictor, [t for t, _ in make_cls_rows(40, seed=7)])
    shifted = sample_of(predictor, [t for t, _ in make_cls_rows(20, seed=8) + oos_rows(20, 9)])
    calm, alarm = drift(reference, same, cfg, 0.5), drift(reference, shifted, cfg, 0.5)
    assert calm["checks"]["out_of_scope_rate"]["alert"] is False
    check = alarm["checks"]["out_of_scope_rate"]
    assert check["alert"] is True and check["value"] > check["reference"] + cfg.out_of_scope_increase


def test_out_of_scope_settings_are_checked(tiny_config, cls_csv):
    from reflectlm.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="threshold"):
        load_config(tree={"data": {"train": str(cls_csv)}, "open_set": {"threshold": 1.5}})
    with pytest.raises(ConfigError, match="odin"):
        load_config(tree={"data": {"train": str(cls_csv)}, "open_set": {"detectors": ["odin"]}})
    with pytest.raises(ConfigError, match="one class per example"):
        load_config(tree={"data": {"task": "ner", "train": str(cls_csv)}, "open_set": {"enabled": True}})


def test_a_fallback_that_is_an_intent_is_refused_before_training(tiny_config, tmp_path):
    from reflectlm import open_set as O
    from reflectlm.config import load_config
    from reflectlm.train import train

    rows = make_cls_rows(120)
    cfg = tiny_config(write_csv(tmp_path / "t.csv", rows), epochs=1)
    cfg = load_config(tree={**cfg.model_dump(), "open_set": {"enabled": True, "fallback": "pos"}})
    with pytest.raises(O.OpenSetError, match="fallback label 'pos' is also an intent"):
        train(cfg, tmp_path / "run")


def test_the_loop_finds_absorbed_out_of_scope_messages_and_promotes_a_detector(tmp_path, tiny_bert_dir):
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    rows = make_cls_rows(420, seed=4)
    tree = {"data": {"task": "classification", "train": str(write_csv(tmp_path / "train.csv", rows[:300])),
                     "selection": str(write_csv(tmp_path / "sel.csv", rows[300:360] + oos_rows(40, 3))),
                     "test": str(write_csv(tmp_path / "test.csv", rows[360:] + oos_rows(20, 4)))},
            "model": {"name": str(tiny_bert_dir), "dropout": 0.1},
            "train": {"epochs": 4, "batch_size": 16, "lr": 1e-2, "head_lr": 0.0, "telemetry_every": 0,
                      "precision": "fp32", "threads": 1},
            "run": {"quiet": True, "output_dir": str(tmp_path / "runs")},
            "loop": {"rounds": 1, "report": False, "checks": ["performance", "out_of_scope"], "n_bootstrap": 200,
                     "actions": ["detect_out_of_scope"]}}
    res = improve(load_config(tree=tree))
    r1 = res.run_dir / "rounds" / "01"
    found = [f for f in json.loads((r1 / "findings.json").read_text())["findings"] if f["kind"] == "out_of_scope"]
    assert found and found[0]["evidence"]["n_out_of_scope"] == 40 and found[0]["severity"] > 0.5
    assert sum(v["count"] for v in found[0]["evidence"]["absorbed_by"].values()) == 40 - found[0]["evidence"]["caught"]
    plan = json.loads((r1 / "plan.json").read_text())
    assert [a["action"] for a in plan["actions"]] == ["detect_out_of_scope"]
    chosen = json.loads((r1 / "out_of_scope.json").read_text())
    assert "refused" not in chosen, chosen
    assert chosen["cross_fitted"]["with_detector"] > chosen["cross_fitted"]["without_detector"]
    decision = json.loads((r1 / "decision.json").read_text())
    assert decision["promoted"], decision
    assert res.summary["champion_round"] == 1
    assert load_config(r1 / "config.toml").open_set.enabled  # later challengers fit their own detector
    assert (r1 / "model" / "open_set.json").is_file()
    assert res.summary["test"]["open_set"]["n_out_of_scope"] == 20
    from reflectlm.report import write_report

    page = write_report(res.run_dir).read_text(encoding="utf-8")
    assert "test out of scope caught" in page and "test in-scope accuracy" in page
    gain = res.summary["test_gain"]  # the promotion on test, paired with round 0, and its interval
    assert gain["ci_low"] <= gain["difference"] <= gain["ci_high"] and gain["n"] == 80
    assert 'id="test-gain"' in page and "paired 95 % CI" in page
    assert json.loads((r1 / "compare.json").read_text())["open_set"]["challenger"]["n_out_of_scope"] == 40


def test_the_detector_and_its_threshold_never_read_the_test_split(open_run, tmp_path):
    from reflectlm.config import load_config
    from reflectlm.train import train

    cfg = load_config(open_run / "config.toml")
    other = write_csv(tmp_path / "test.csv", make_cls_rows(30, seed=11) + oos_rows(5, 12))  # another test split
    again = train(load_config(tree={**cfg.model_dump(), "data": {**cfg.data.model_dump(), "test": str(other)},
                                    "run": {"quiet": True}}), tmp_path / "run").run_dir
    assert json.loads((again / "model" / "open_set.json").read_text()) == json.loads(
        (open_run / "model" / "open_set.json").read_text())
    with np.load(again / "model" / "open_set.npz") as a, np.load(open_run / "model" / "open_set.npz") as b:
        assert set(a.files) == set(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_the_cli_evaluate_prints_the_out_of_scope_numbers(open_run):
    from typer.testing import CliRunner

    from reflectlm.cli import app

    r = CliRunner().invoke(app, ["evaluate", str(open_run), "--data", str(open_run.parent / "test.csv"), "-q"])
    assert r.exit_code == 0, r.output
    assert "out of scope" in r.output and "f1 open" in r.output
