"""The real server (uvicorn in a subprocess, on 127.0.0.1): overload answers 429 / 503 with
Retry-After and recovers; a kill -9 during a stream of feedback loses no acknowledged row."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from _server import kill_mid_feedback, start, stop  # noqa: E402


def test_overload_is_answered_with_429_or_503_and_retry_after_then_recovers(tiny_cls_run, tmp_path):
    proc, url = start(tiny_cls_run, tmp_path / "s.sqlite", "serve.max_queue_texts=8", "serve.max_batch=4",
                      "serve.max_wait_ms=20", "serve.rate_burst=25", "serve.rate_limit_per_minute=60",
                      env={"REFLECTLM_API_KEYS": "load:k1"})
    try:
        results, lock = [], threading.Lock()

        def client():
            with httpx.Client(timeout=20, headers={"X-API-Key": "k1"}) as c:
                for _ in range(3):
                    r = c.post(url + "/v1/predict", json={"texts": ["good day", "bad day", "a chair", "nice"]})
                    with lock:
                        results.append((r.status_code, r.headers.get("retry-after"), r.json()))

        threads = [threading.Thread(target=client) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        statuses = [s for s, _, _ in results]
        assert len(results) == 72  # every request got an answer: no timeouts, no dropped connections
        assert set(statuses) <= {200, 429, 503}, set(statuses)
        assert 200 in statuses and 503 in statuses and 429 in statuses
        for s, retry, body in results:
            if s != 200:
                assert int(retry) >= 1 and body["error"]["code"] in ("overloaded", "rate_limited")
        assert proc.poll() is None  # still up
        # Load drops and the key's bucket refills one request a second: poll until served, with a deadline.
        deadline, r = time.monotonic() + 20, None
        while time.monotonic() < deadline:
            r = httpx.post(url + "/v1/predict", json={"texts": ["good day"]}, headers={"X-API-Key": "k1"}, timeout=10)
            if r.status_code == 200:
                break
            time.sleep(0.2)
        assert r.status_code == 200 and httpx.get(url + "/readyz").status_code == 200
    finally:
        stop(proc)


def test_kill_9_during_feedback_loses_no_acknowledged_row(tiny_cls_run, tmp_path):
    store = tmp_path / "s.sqlite"
    proc, url = start(tiny_cls_run, store, "serve.auth=false")
    acked: list[int] = []
    try:
        ids = [p["id"] for p in httpx.post(url + "/v1/predict", json={"texts": [f"good {i}" for i in range(60)]},
                                           timeout=30).json()["predictions"]]
        acked = kill_mid_feedback(proc, url, ids)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 40
    db = sqlite3.connect(store)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r[0] for r in db.execute("SELECT id FROM feedback")}
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged feedback rows lost"
    db.close()
    proc, url = start(tiny_cls_run, store, "serve.auth=false")  # and the server starts again on that store
    try:
        r = httpx.post(url + "/v1/feedback", json={"prediction_id": ids[0], "label": "neg"}, timeout=10)
        assert r.status_code == 201 and r.json()["feedback_id"] > max(acked)
    finally:
        stop(proc)
