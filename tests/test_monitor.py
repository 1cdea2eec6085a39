"""Drift: quiet on held-out data from the same distribution, alerts on shifted traffic (another
kind of text, a class-skewed sample), in the server's gauges and from `reflectlm monitor`."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from reflectlm.config import MonitorConfig, load_config
from reflectlm.data import load_splits
from reflectlm.deploy.monitor import confidence_psi, domain_auc, drift, label_psi, psi, reference_sample, sample_of
from reflectlm.deploy.predictor import load_predictor

CFG = MonitorConfig(min_samples=30, window=500)


@pytest.fixture(scope="module")
def served(tiny_cls_run):
    predictor = load_predictor(tiny_cls_run)
    cfg = load_config(tiny_cls_run / "config.toml")
    splits = load_splits(cfg.data, cfg.train.seed)
    return predictor, reference_sample(predictor, tiny_cls_run), splits


def test_psi_and_auc_behave_on_known_inputs():
    assert psi([10, 10], [10, 10]) == pytest.approx(0.0)
    assert psi([50, 50], [90, 10]) > 0.2
    assert label_psi(list("aabb"), list("abab")) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    a = rng.uniform(size=500)
    assert confidence_psi(a, rng.uniform(size=500)) < 0.1 and confidence_psi(a, a ** 4) > 0.2
    same = domain_auc(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)))
    moved = domain_auc(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 1.0)
    assert 0.35 < same < 0.65 and moved > 0.9


def test_quiet_on_held_out_data(served):
    predictor, reference, splits = served
    current = sample_of(predictor, list(splits.test.texts))
    result = drift(reference, current, CFG, 0.5)
    assert result["status"] == "ok", result
    assert set(result["checks"]) == {"label_psi", "confidence_psi", "confidence_ks", "low_confidence", "embedding_auc",
                                     "input_length_psi", "input_length_ks"}


def test_alerts_on_longer_inputs(served):
    """The same kind of text, several times as long: the input-length checks see it."""
    predictor, reference, splits = served
    texts = list(splits.test.texts)
    longer = [" ".join(texts[(i + j) % len(texts)] for j in range(4)) for i in range(60)]
    result = drift(reference, sample_of(predictor, longer), CFG, 0.5)
    lengths = result["checks"]["input_length_psi"]
    assert lengths["alert"] and result["checks"]["input_length_ks"]["alert"], result
    assert lengths["median"] > 3 * lengths["reference_median"]


def test_input_words_counts_every_text_field():
    from reflectlm.deploy.monitor import input_words

    assert input_words("a b  c") == 3
    assert input_words({"question": "who is it", "context": "it is me", "n": 3}) == 6


def test_alerts_on_another_kind_of_text(served):
    predictor, reference, _ = served
    rng = random.Random(0)
    words = ["Paris", "Berlin", "John", "Smith", "Mary", "New", "York", "London", "Lee"]
    other = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + f" {i}" for i in range(80)]
    result = drift(reference, sample_of(predictor, other), CFG, 0.5)
    assert result["alert"] and "embedding_auc" in result["alerts"], result
    assert result["checks"]["embedding_auc"]["value"] > 0.9


def test_alerts_on_a_class_skewed_sample(served):
    predictor, reference, splits = served
    pos = [t for t, y in zip(list(splits.train.texts), splits.train.labels) if y == "pos"][:60]
    result = drift(reference, sample_of(predictor, pos), CFG, 0.5)
    assert result["checks"]["label_psi"]["alert"], result


def test_too_few_predictions_give_no_verdict(served):
    predictor, reference, splits = served
    result = drift(reference, sample_of(predictor, list(splits.test.texts)[:5]), CFG, 0.5)
    assert result["status"] == "insufficient data" and not result["alert"] and "min_samples" in result["reason"]


def test_the_server_raises_a_gauge_a_log_line_and_a_webhook_and_monitor_prints_it(tiny_cls_run, tmp_path, caplog):
    """Shifted traffic through the service: the alert gauge turns on, the log says so, the webhook
    (a loopback server started here) receives the alert, and `reflectlm monitor` reports drift."""
    pytest.importorskip("fastapi")
    import http.server
    import threading
    import time

    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from reflectlm.cli import app as cli
    from reflectlm.config import load_deploy_config
    from reflectlm.deploy.serve.app import create_app

    got = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    store = tmp_path / "serving.sqlite"
    settings = load_deploy_config(None, [f'serve.store="{store}"', "serve.auth=false", "monitor.min_samples=30",
                                         "monitor.every=60", f'monitor.webhook="http://127.0.0.1:{hook.server_port}/"'])
    texts = [f"Paris Berlin London John Mary York {i}" for i in range(60)]
    try:
        app = create_app(tiny_cls_run, settings)
        with TestClient(app) as c:
            assert c.post("/v1/predict", json={"texts": texts[:30]}).status_code == 200
            assert c.post("/v1/predict", json={"texts": texts[30:]}).status_code == 200
            for _ in range(100):  # the check runs on a background thread
                if app.state.reflectlm.monitor.last is not None and got:
                    break
                time.sleep(0.1)
            metrics = c.get("/metrics").text
        assert 'reflectlm_drift_alert{check="embedding_auc"} 1.0' in metrics
        assert "drift alert" in caplog.text
        assert got and got[0]["event"] == "drift_alert" and "embedding_auc" in got[0]["alerts"]
    finally:
        hook.shutdown()
    r = CliRunner().invoke(cli, ["monitor", str(store), "--set", "monitor.min_samples=30", "--json"])
    assert r.exit_code == 0, r.output
    state = json.loads(r.output)
    assert state["status"] == "drift" and state["counts"]["predictions"] == 60 and state["n_current"] == 60
