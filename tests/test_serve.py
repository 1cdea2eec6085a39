"""The service through FastAPI's TestClient: every endpoint and every error, one JSON error shape."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from fastapi.testclient import TestClient  # noqa: E402

from reflectlm.config import load_deploy_config  # noqa: E402
from reflectlm.deploy.serve.app import create_app  # noqa: E402
from reflectlm.deploy.serve.auth import KeyRing, add_key, revoke_key  # noqa: E402

A = {"Authorization": "Bearer key-alice"}


def settings(tmp_path, *extra):
    return load_deploy_config(None, [f"serve.store=\"{tmp_path / 'store.sqlite'}\"", "monitor.min_samples=10",
                                     "monitor.every=10", *extra])


@pytest.fixture
def client(tiny_cls_run, tmp_path):
    keys = KeyRing(env="alice:key-alice,bob:key-bob")
    with TestClient(create_app(tiny_cls_run, settings(tmp_path, "serve.max_texts=4", "serve.max_text_chars=50"),
                               keys)) as c:
        yield c


def assert_error(r, status: int, code: str):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["status"] == status
    assert body["error"]["message"] and "Traceback" not in r.text
    return body["error"]["message"]


def test_predict_returns_labels_probabilities_and_ids(client):
    r = client.post("/v1/predict", json={"texts": ["great good love", "awful bad hate"]}, headers=A)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2 and len({p["id"] for p in preds}) == 2
    for p in preds:
        assert p["label"] in ("neg", "neu", "pos")
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-4
        assert p["confidence"] == pytest.approx(max(p["probabilities"].values()), abs=1e-6)
        assert isinstance(p["low_confidence"], bool)
    # X-API-Key works as well as Bearer
    assert client.post("/v1/predict", json={"texts": ["nice"]}, headers={"X-API-Key": "key-bob"}).status_code == 200


def test_feedback_is_stored_for_a_past_prediction(client, tmp_path):
    pid = client.post("/v1/predict", json={"texts": ["very happy"]}, headers=A).json()["predictions"][0]["id"]
    r = client.post("/v1/feedback", json={"prediction_id": pid, "label": "pos"}, headers=A)
    assert r.status_code == 201 and r.json()["prediction_id"] == pid
    db = sqlite3.connect(tmp_path / "store.sqlite")
    assert db.execute("SELECT label, api_key FROM feedback WHERE prediction_id = ?", (pid,)).fetchone() == ("pos", "alice")


@pytest.mark.parametrize("headers,code", [({}, "missing_key"), ({"Authorization": "Bearer nope"}, "invalid_key"),
                                          ({"X-API-Key": ""}, "missing_key")])
def test_no_key_or_a_bad_key_is_401(client, headers, code):
    r = client.post("/v1/predict", json={"texts": ["hi"]}, headers=headers)
    assert_error(r, 401, code)
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("body,status,code", [
    ({"texts": []}, 422, "invalid_request"),  # empty batch
    ({"texts": ["a"] * 5}, 413, "too_many_texts"),
    ({"texts": ["x" * 51]}, 413, "text_too_long"),
    ({"texts": "just a string"}, 422, "invalid_request"),  # wrong types
    ({"texts": [1, 2]}, 422, "invalid_request"),
    ({"text": ["a"]}, 422, "invalid_request"),
    ({"texts": ["   "]}, 422, "empty_text"),
])
def test_bad_predict_requests_get_clear_4xx(client, body, status, code):
    msg = assert_error(client.post("/v1/predict", json=body, headers=A), status, code)
    if code == "too_many_texts":
        assert "limit is 4" in msg
    if code == "text_too_long":
        assert "51 characters" in msg and "50" in msg


def test_malformed_json_and_a_huge_body(client):
    assert_error(client.post("/v1/predict", content=b"{not json", headers={**A, "Content-Type": "application/json"}),
                 422, "invalid_request")
    big = json.dumps({"texts": ["a" * 1000] * 1100}).encode()
    assert_error(client.post("/v1/predict", content=big, headers={**A, "Content-Type": "application/json"}),
                 413, "body_too_large")


@pytest.mark.parametrize("body,status,code", [
    ({"prediction_id": "p-nope", "label": "pos"}, 404, "unknown_prediction"),
    ({"prediction_id": "PID", "label": "nonsense"}, 422, "unknown_label"),
    ({"prediction_id": "PID"}, 422, "invalid_feedback"),
    ({"prediction_id": "PID", "entities": []}, 422, "invalid_request"),  # not a field of a classifier's correction
    ({"label": "pos"}, 422, "invalid_request"),
])
def test_bad_feedback_gets_clear_4xx(client, body, status, code):
    pid = client.post("/v1/predict", json={"texts": ["good"]}, headers=A).json()["predictions"][0]["id"]
    body = {k: (pid if v == "PID" else v) for k, v in body.items()}
    assert_error(client.post("/v1/feedback", json=body, headers=A), status, code)


def test_unknown_route_and_method_use_the_same_shape(client):
    assert_error(client.get("/v2/nothing"), 404, "not_found")
    assert_error(client.get("/v1/predict", headers=A), 405, "method_not_allowed")


def test_health_ready_model_docs_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    info = client.get("/v1/model", headers=A).json()
    assert info["task"] == "classification" and info["labels"] == ["neg", "neu", "pos"] and info["max_texts"] == 4
    assert client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "/v1/predict" in page.text and "<script>" in page.text


def test_metrics_count_requests_batches_labels_and_errors(client):
    client.post("/v1/predict", json={"texts": ["good", "bad", "table"]}, headers=A)
    client.post("/v1/predict", json={"texts": ["x"]}, headers={"Authorization": "Bearer wrong"})
    text = client.get("/metrics").text
    assert 'reflectlm_requests_total{route="/v1/predict",status="200"} 1.0' in text
    assert 'reflectlm_requests_total{route="/v1/predict",status="401"} 1.0' in text
    assert 'reflectlm_errors_total{code="invalid_key"} 1.0' in text
    assert "reflectlm_batch_size_count" in text and "reflectlm_request_latency_seconds_bucket" in text
    assert "reflectlm_predictions_total 3.0" in text
    labels = sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("reflectlm_predicted_label_total{"))
    assert labels == 3.0
    assert "reflectlm_low_confidence_total" in text


def test_rate_limit_per_key_answers_429_with_retry_after(tiny_cls_run, tmp_path):
    keys = KeyRing(env="alice:key-alice,bob:key-bob")
    app = create_app(tiny_cls_run, settings(tmp_path, "serve.rate_burst=2", "serve.rate_limit_per_minute=6"), keys)
    with TestClient(app) as c:
        ok = [c.post("/v1/predict", json={"texts": ["hi"]}, headers=A).status_code for _ in range(2)]
        r = c.post("/v1/predict", json={"texts": ["hi"]}, headers=A)
        assert ok == [200, 200]
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
        # the limit is per key: bob is not affected by alice's requests
        assert c.post("/v1/predict", json={"texts": ["hi"]}, headers={"X-API-Key": "key-bob"}).status_code == 200


def _eventually(condition, seconds: float = 10.0) -> bool:
    """Poll `condition` until it holds or the deadline passes (no fixed sleep)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_keys_from_a_file_are_hashed_rotate_and_revoke_without_restart(tiny_cls_run, tmp_path):
    path = tmp_path / "keys.toml"
    k1 = add_key(path, "ci")
    assert k1 not in path.read_text()  # stored hashed only
    with TestClient(create_app(tiny_cls_run, settings(tmp_path, f'serve.api_keys_file="{path}"'))) as c:
        assert c.post("/v1/predict", json={"texts": ["hi"]}, headers={"X-API-Key": k1}).status_code == 200
        k2 = add_key(path, "ci")  # rotation: a new key under the same name replaces the old one
        # The file is re-checked at most once a second: wait until the new key is taken, with a deadline.
        assert _eventually(lambda: c.post("/v1/predict", json={"texts": ["hi"]},
                                          headers={"X-API-Key": k2}).status_code == 200)
        assert_error(c.post("/v1/predict", json={"texts": ["hi"]}, headers={"X-API-Key": k1}), 401, "invalid_key")
        revoke_key(path, "ci")
        assert _eventually(lambda: c.post("/v1/predict", json={"texts": ["hi"]},
                                          headers={"X-API-Key": k2}).status_code == 401)
        msg = assert_error(c.post("/v1/predict", json={"texts": ["hi"]}, headers={"X-API-Key": k2}), 401, "revoked_key")
        assert "'ci'" in msg


def test_auth_on_without_keys_refuses_to_start_and_says_how(tiny_cls_run, tmp_path, monkeypatch):
    monkeypatch.delenv("REFLECTLM_API_KEYS", raising=False)
    with pytest.raises(ValueError, match="REFLECTLM_API_KEYS"):
        create_app(tiny_cls_run, settings(tmp_path))


def test_an_unexpected_error_is_a_500_without_a_trace(tiny_cls_run, tmp_path, caplog):
    app = create_app(tiny_cls_run, settings(tmp_path, "serve.auth=false"))
    with TestClient(app, raise_server_exceptions=False) as c:
        state = app.state.reflectlm

        def boom(*a, **k):
            raise RuntimeError("secret internals at /home/x/model.py line 12")
        state.predictor.scored = boom
        r = c.post("/v1/predict", json={"texts": ["hi"]})
        msg = assert_error(r, 500, "internal_error")
        assert "secret internals" not in r.text and "request id" in msg
        assert r.json()["error"]["request_id"] in caplog.text  # the log has it, the client does not
        assert c.get("/healthz").status_code == 200  # and the server goes on


def test_personal_data_is_masked_in_the_store_and_the_log(tiny_cls_run, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="reflectlm.serve")
    app = create_app(tiny_cls_run, settings(tmp_path, "serve.auth=false", "serve.low_confidence=1.0"))
    text = "refund to jane.doe@example.com card 4111 1111 1111 1111 from 10.0.0.7"
    with TestClient(app) as c:
        assert c.post("/v1/predict", json={"texts": [text]}).status_code == 200
    stored = sqlite3.connect(tmp_path / "store.sqlite").execute("SELECT text FROM predictions").fetchone()[0]
    assert stored == "refund to [EMAIL] card [CARD] from [IP]"
    assert "low confidence" in caplog.text and "[EMAIL]" in caplog.text
    assert "jane.doe" not in caplog.text and "4111" not in caplog.text


def test_masking_can_be_turned_off(tiny_cls_run, tmp_path):
    app = create_app(tiny_cls_run, settings(tmp_path, "serve.auth=false", "serve.mask_pii=false"))
    with TestClient(app) as c:
        c.post("/v1/predict", json={"texts": ["mail jane@example.com"]})
    assert sqlite3.connect(tmp_path / "store.sqlite").execute("SELECT text FROM predictions").fetchone()[0] == \
        "mail jane@example.com"


def test_ner_predictions_have_character_offsets_and_span_feedback(tiny_ner_run, tmp_path):
    app = create_app(tiny_ner_run, settings(tmp_path, "serve.auth=false"))
    text = "the  so  John Smith was"
    with TestClient(app) as c:
        p = c.post("/v1/predict", json={"texts": [text]}).json()["predictions"][0]
        assert "label" not in p and isinstance(p["entities"], list)
        for e in p["entities"]:
            assert text[e["start"]:e["end"]] == e["text"]
        r = c.post("/v1/feedback", json={"prediction_id": p["id"], "entities": [{"type": "person", "start": 9, "end": 19}]})
        assert r.status_code == 201, r.text
        assert_error(c.post("/v1/feedback", json={"prediction_id": p["id"],
                                                  "entities": [{"type": "person", "start": 9, "end": 99}]}),
                     422, "invalid_span")
        assert_error(c.post("/v1/feedback", json={"prediction_id": p["id"],
                                                  "entities": [{"type": "animal", "start": 0, "end": 3}]}),
                     422, "unknown_label")
    tags = sqlite3.connect(tmp_path / "store.sqlite").execute("SELECT tags FROM feedback").fetchone()[0]
    assert json.loads(tags) == ["O", "O", "B-person", "I-person", "O"]


def test_concurrent_requests_are_micro_batched(tiny_cls_run, tmp_path):
    import asyncio

    import httpx

    app = create_app(tiny_cls_run, settings(tmp_path, "serve.auth=false", "serve.max_wait_ms=50", "serve.max_batch=16"))

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                rs = await asyncio.gather(*[c.post("/v1/predict", json={"texts": [f"good {i}"]}) for i in range(16)])
                metrics = (await c.get("/metrics")).text
        return rs, metrics

    rs, metrics = asyncio.run(go())
    assert all(r.status_code == 200 for r in rs)
    count = float(next(ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("reflectlm_batch_size_count")))
    total = float(next(ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("reflectlm_batch_size_sum")))
    assert total == 16 and count < 16  # 16 single-text requests took fewer forwards than 16
