"""POST /v1/generate through FastAPI's TestClient: a tiny translator's output as JSON and as
server-sent events, the same keys, limits, masking, store and metrics as /v1/predict, and no such
route for a classifier."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
pytest.importorskip("peft")

from fastapi.testclient import TestClient  # noqa: E402

from reflectlm.config import load_deploy_config  # noqa: E402
from reflectlm.deploy.serve.app import create_app  # noqa: E402
from reflectlm.deploy.serve.auth import KeyRing  # noqa: E402

A = {"Authorization": "Bearer key-alice"}
NUMBERS = {"one": "eins", "two": "zwei", "three": "drei", "four": "vier", "five": "fünf", "six": "sechs"}
TEXT = "one two"


@pytest.fixture(scope="module")
def mt_run(tiny_lm_dir, tmp_path_factory):
    """A run directory of the tiny LM trained (LoRA) a few epochs to translate number words."""
    from reflectlm.config import load_config
    from reflectlm.train import train

    root = tmp_path_factory.mktemp("mt-run")
    files = {}
    for name, n in (("train", 48), ("selection", 8), ("test", 8)):
        rng = random.Random(n)
        rows = [rng.choices(list(NUMBERS), k=rng.randint(2, 4)) for _ in range(n)]
        files[name] = root / f"{name}.tsv"
        files[name].write_text("en\tde\n" + "".join(f"{' '.join(r)}\t{' '.join(NUMBERS[w] for w in r)}\n"
                                                    for r in rows), encoding="utf-8")
    tree = {"data": {"task": "translation", **{k: str(v) for k, v in files.items()}, "max_new_tokens": 12},
            "model": {"name": str(tiny_lm_dir)},
            "train": {"epochs": 6, "batch_size": 8, "eval_batch_size": 8, "lr": 3e-3, "precision": "fp32"},
            "run": {"quiet": True}}
    return train(load_config(tree=tree), root / "run", quiet=True).run_dir


def settings(tmp_path, *extra):
    return load_deploy_config(None, [f"serve.store=\"{tmp_path / 'store.sqlite'}\"", "monitor.min_samples=10",
                                     "monitor.every=10", "serve.max_text_chars=50", *extra])


@pytest.fixture
def client(mt_run, tmp_path):
    with TestClient(create_app(mt_run, settings(tmp_path), KeyRing(env="alice:key-alice"))) as c:
        yield c


def served_output(run, text: str) -> str:
    from reflectlm.evaluate import predict

    # The service runs the bundle as it is (GET /v1/model: torch-fp32); predict's "auto" may pick bf16 here.
    return predict(run, [text], precision="fp32")[0]["output"]


def sse(body: str) -> list[tuple[str, dict]]:
    """(event type, data) per server-sent event of a response body."""
    out = []
    for block in body.split("\n\n"):
        lines = block.splitlines()
        if not lines:
            continue
        kind = next((ln[6:].strip() for ln in lines if ln.startswith("event:")), "message")
        out.append((kind, json.loads("".join(ln[5:].strip() for ln in lines if ln.startswith("data:")))))
    return out


def stream(c, body: dict, headers: dict = A):
    with c.stream("POST", "/v1/generate", json=body, headers=headers) as r:
        return r, "".join(r.iter_text())


def assert_error(r, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["status"] == status
    return body["error"]["message"]


def test_generate_answers_what_predict_gives_and_the_output_can_be_corrected(client, mt_run, tmp_path):
    want = served_output(mt_run, TEXT)
    r = client.post("/v1/generate", json={"text": TEXT}, headers=A)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    got = r.json()
    assert got["output"] == want and got["tokens"] >= 2 and got["seconds"] > 0 and got["model"] == "torch-fp32"
    same = client.post("/v1/predict", json={"texts": [TEXT]}, headers=A).json()["predictions"][0]
    assert same["output"] == want and same["tokens"] == got["tokens"] and same["id"] != got["id"]
    fb = client.post("/v1/feedback", json={"prediction_id": got["id"], "output": "eins zwei"}, headers=A)
    assert fb.status_code == 201, fb.text
    db = sqlite3.connect(tmp_path / "store.sqlite")
    assert db.execute("SELECT label, api_key FROM feedback WHERE prediction_id = ?", (got["id"],)).fetchone() == \
        ("eins zwei", "alice")
    assert client.get("/v1/model", headers=A).json()["generates"] is True


def test_streamed_tokens_join_to_the_output_and_the_last_event_carries_it(client, mt_run, tmp_path):
    want = served_output(mt_run, TEXT)
    r, body = stream(client, {"text": TEXT, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse(body)
    tokens = [d["token"] for kind, d in events[:-1]]
    assert all(kind == "message" for kind, _ in events) and len(tokens) >= 2 and all(tokens)
    kind, done = events[-1]
    assert done["done"] is True and "".join(tokens) == done["output"] == want
    assert done["tokens"] >= len(tokens) and done["id"].startswith("p-") and done["seconds"] > 0
    # Accept: text/event-stream streams as well; the streamed prediction is stored, its text masked
    r, body = stream(client, {"text": "one mail jane@example.com"}, {**A, "Accept": "text/event-stream"})
    pid = sse(body)[-1][1]["id"]
    db = sqlite3.connect(tmp_path / "store.sqlite")
    assert db.execute("SELECT text, api_key FROM predictions WHERE id = ?", (pid,)).fetchone() == \
        ("one mail [EMAIL]", "alice")
    assert client.post("/v1/feedback", json={"prediction_id": pid, "output": "eins"}, headers=A).status_code == 201


def test_keys_and_limits_are_those_of_predict(client):
    for body in ({"text": TEXT}, {"text": TEXT, "stream": True}):
        r = client.post("/v1/generate", json=body)
        assert_error(r, 401, "missing_key")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_error(client.post("/v1/generate", json=body, headers={"X-API-Key": "nope"}), 401, "invalid_key")
    long = "x" * 51
    want = assert_error(client.post("/v1/predict", json={"texts": [long]}, headers=A), 413, "text_too_long")
    for stream_ in (False, True):  # refused before any event: the usual JSON error
        r = client.post("/v1/generate", json={"text": long, "stream": stream_}, headers=A)
        assert assert_error(r, 413, "text_too_long") == want and "51 characters" in want
        assert_error(client.post("/v1/generate", json={"text": "  ", "stream": stream_}, headers=A), 422,
                     "empty_text")
    assert_error(client.post("/v1/generate", json={"texts": [TEXT]}, headers=A), 422, "invalid_request")


def test_an_error_mid_stream_is_an_error_event_without_a_trace(client, monkeypatch, caplog):
    from reflectlm.deploy import generate

    def broken(predictor, text, streamer):
        streamer.on_finalized_text("eins")  # one piece out, then the model fails
        streamer.end()
        raise RuntimeError("secret internals at /home/x/model.py line 12")

    monkeypatch.setattr(generate, "generate_streamed", broken)
    r, body = stream(client, {"text": TEXT, "stream": True})
    events = sse(body)
    assert r.status_code == 200 and events[0] == ("message", {"token": "eins"})
    kind, err = events[-1]
    assert kind == "error" and err["error"]["code"] == "internal_error" and err["error"]["status"] == 500
    assert "secret" not in body and "Traceback" not in body and err["error"]["request_id"] in caplog.text


def test_metrics_count_generate_requests(client):
    client.post("/v1/generate", json={"text": TEXT}, headers=A)
    stream(client, {"text": TEXT, "stream": True})
    client.post("/v1/generate", json={"text": TEXT})
    text = client.get("/metrics").text
    assert 'reflectlm_requests_total{route="/v1/generate",status="200"} 2.0' in text
    assert 'reflectlm_requests_total{route="/v1/generate",status="401"} 1.0' in text
    assert 'reflectlm_errors_total{code="missing_key"} 1.0' in text
    assert "reflectlm_predictions_total 2.0" in text
    assert "reflectlm_request_latency_seconds_count{route=\"/v1/generate\"} 3.0" in text


def test_the_page_streams_for_a_model_that_generates(client):
    page = client.get("/").text
    assert "/v1/generate" in page and "getReader" in page and "text/event-stream" in page


def test_a_classifier_has_no_generate_route(tiny_cls_run, tmp_path):
    with TestClient(create_app(tiny_cls_run, settings(tmp_path, "serve.auth=false"))) as c:
        msg = assert_error(c.post("/v1/generate", json={"text": "good"}), 404, "not_found")
        assert "/v1/predict" in msg and "classification" in msg
        assert "/v1/generate" not in c.get("/openapi.json").json()["paths"]
        assert c.get("/v1/model").json()["generates"] is False


def test_trimmed_pieces_join_to_the_stripped_text():
    from reflectlm.deploy.generate import trimmed

    pieces = ["", "  ", "\nHal", "lo ", "", " Welt", "  \n"]
    got = list(trimmed(pieces))
    assert got == ["Hal", "lo", "  Welt"] and "".join(got) == "".join(pieces).strip()
    assert list(trimmed(["", " \n"])) == []
