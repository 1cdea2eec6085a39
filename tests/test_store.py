"""The production store on SQLite (a path) and on a real PostgreSQL server started for the session
(tests/_postgres.py): the same feedback round trip on both, concurrent writers from two processes
lose nothing, a kill -9 loses no acknowledged feedback, bad URLs say how to fix them, and a
password in a URL appears in no log, error or run file."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from reflectlm.cli import app as cli  # noqa: E402
from reflectlm.config import load_deploy_config  # noqa: E402
from reflectlm.deploy.serve.app import create_app  # noqa: E402
from reflectlm.deploy.store import ProductionStore, StoreError, StoreUnavailable, mask_url, open_store  # noqa: E402


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "serving.sqlite")
    return request.getfixturevalue("postgres_db")


def _password(target: str) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(target).password if "://" in target else None


def test_the_feedback_round_trip_is_the_same_on_sqlite_and_postgresql(store_target, tiny_cls_run, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    new = {"wonderful fantastic evening zz1": "pos", "dreadful horrible morning zz2": "neg"}
    unlabelled = ["some sofa and a lamp zz4", "a cushion zz5", "the window zz6"]
    settings = load_deploy_config(None, [f'serve.store="{store_target}"', "serve.auth=false"])
    with TestClient(create_app(tiny_cls_run, settings)) as c:
        texts = list(new) + unlabelled
        preds = c.post("/v1/predict", json={"texts": texts}).json()["predictions"]
        ids = dict(zip(texts, (p["id"] for p in preds)))
        for t, y in new.items():
            r = c.post("/v1/feedback", json={"prediction_id": ids[t], "label": y})
            assert r.status_code == 201, r.text
        r = c.post("/v1/feedback", json={"prediction_id": ids[unlabelled[0]], "label": "nonsense"})
        assert r.status_code == 422
    s = open_store(store_target)
    try:
        assert s.counts() == {"predictions": 5, "low_confidence": sum(p["low_confidence"] for p in preds), "feedback": 2}
        assert [(x["text"], x["label"]) for x in s.corrections()] == list(new.items())
        assert [u["text"] for u in sorted(s.unlabelled(), key=lambda u: texts.index(u["text"]))] == unlabelled
        assert [r["text"] for r in s.recent(3)] == unlabelled  # insertion order within one micro-batch
        assert s.meta()["labels"] == ["neg", "neu", "pos"]
    finally:
        s.close()
    out = tmp_path / "next"
    r = CliRunner().invoke(cli, ["run", str(tiny_cls_run / "config.toml"), "--feedback", store_target, "-o", str(out),
                                 "--set", "loop.rounds=0", "--set", "loop.report=false", "-q"])
    assert r.exit_code == 0, r.output
    rows = {json.loads(ln)["text"]: json.loads(ln)["label"] for ln in (out / "feedback" / "train.jsonl").read_text().splitlines()}
    assert all(rows[t] == y for t, y in new.items())
    pool = (out / "feedback" / "pool.txt").read_text().splitlines()
    assert sorted(pool) == sorted(unlabelled)
    info = json.loads((out / "run.json").read_text())["feedback"]
    assert info["added"] == 2 and info["corrections"] == 2 and info["unlabelled"] == 3
    secret = _password(store_target)
    if secret:  # the store is named in run.json and the log, never with its password
        assert info["store"] == mask_url(store_target) and "***" in info["store"]
        for f in out.rglob("*"):
            if f.is_file() and f.suffix in (".json", ".toml", ".txt", ".jsonl", ".log"):
                assert secret not in f.read_text(errors="replace"), f
        assert secret not in caplog.text and secret not in r.output
    else:
        assert info["store"] == str(Path(store_target).resolve())


_WRITER = r"""
import json, sys
from reflectlm.deploy.store import ProductionStore
store = ProductionStore(sys.argv[1]).open()  # both processes create the schema at once on a fresh database
n, tag = int(sys.argv[2]), sys.argv[3]
preds, fbs = [], []
for i in range(n):
    ids = store.add_predictions([{"text": f"{tag} {i} {k}", "output": {"label": "pos"}, "confidence": 0.9,
                                  "low_confidence": False} for k in range(3)], api_key=tag)
    preds += ids
    fbs.append(store.add_feedback(ids[0], "neg", api_key=tag))
store.set_meta(**{f"writer_{tag}": n, "shared": tag})
store.close()
print(json.dumps({"predictions": preds, "feedback": fbs}))
"""


def test_two_processes_writing_at_once_lose_nothing(store_target):
    n = 40
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, store_target, str(n), tag], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for tag in ("a", "b")]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out))
    s = open_store(store_target)
    try:
        assert s.counts() == {"predictions": 2 * 3 * n, "low_confidence": 0, "feedback": 2 * n}
        acked = [f for o in outs for f in o["feedback"]]
        assert len(set(acked)) == 2 * n  # no id handed out twice
        corrected = {c["prediction_id"] for c in s.corrections()}
        assert corrected == {o["predictions"][3 * i] for o in outs for i in range(n)}
        meta = s.meta()
        assert meta["writer_a"] == n and meta["writer_b"] == n and meta["shared"] in ("a", "b")
    finally:
        s.close()


def test_kill_9_loses_no_acknowledged_feedback_on_postgresql(postgres_db, tiny_cls_run):
    import httpx

    from _server import kill_mid_feedback, start, stop

    proc, url = start(tiny_cls_run, postgres_db, "serve.auth=false")
    acked: list[int] = []
    try:
        ids = [p["id"] for p in httpx.post(url + "/v1/predict", json={"texts": [f"good {i}" for i in range(30)]},
                                           timeout=30).json()["predictions"]]
        acked = kill_mid_feedback(proc, url, ids)
    finally:
        stop(proc)
    assert len(acked) >= 40
    s = open_store(postgres_db)
    try:
        import sqlalchemy as sa

        with s.engine.connect() as conn:
            stored = {r[0] for r in conn.execute(sa.text("SELECT id FROM feedback"))}
    finally:
        s.close()
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged feedback rows lost"


def test_a_store_written_by_the_earlier_sqlite_schema_opens_unchanged(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE predictions (id TEXT PRIMARY KEY, created REAL NOT NULL, api_key TEXT, text TEXT NOT NULL,
            output TEXT NOT NULL, confidence REAL NOT NULL, low_confidence INTEGER NOT NULL, words TEXT);
        CREATE INDEX predictions_created ON predictions (created);
        CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, prediction_id TEXT NOT NULL REFERENCES predictions (id),
            created REAL NOT NULL, api_key TEXT, label TEXT, tags TEXT);
        CREATE INDEX feedback_prediction ON feedback (prediction_id);
        INSERT INTO meta VALUES ('task', '"classification"');
        INSERT INTO predictions VALUES ('p-1', 1.0, NULL, 'old text', '{"label": "pos"}', 0.3, 1, NULL);
        INSERT INTO feedback (prediction_id, created, label) VALUES ('p-1', 2.0, 'neg');
    """)
    db.close()
    s = open_store(path)
    try:
        assert s.meta() == {"task": "classification"}
        assert s.corrections() == [{"prediction_id": "p-1", "text": "old text", "served": {"label": "pos"},
                                    "label": "neg", "tags": None}]
        assert s.add_feedback("p-1", "pos") == 2 and s.integrity() == "ok"
    finally:
        s.close()


def test_bad_store_urls_say_how_to_fix_them_without_the_password(tmp_path):
    cases = {
        "mysql://me:hunter2@db/prod": "runs on sqlite or postgresql",
        "postgresql+psycopg://me:hunter2@host:notaport/db": "cannot be parsed",
        "sqlite://": "in-memory",
    }
    for url, expected in cases.items():
        with pytest.raises(StoreError, match=expected) as e:
            ProductionStore(url).open()
        assert "hunter2" not in str(e.value) and ("postgresql+psycopg://" in str(e.value) or "sqlite" in str(e.value))
    # nothing listens on port 1: the error names the store (masked) and what to check
    with pytest.raises(StoreUnavailable, match="PostgreSQL server is running") as e:
        ProductionStore("postgresql://me:hunter2@127.0.0.1:1/db").open()
    assert "hunter2" not in str(e.value) and "me:***@127.0.0.1:1/db" in str(e.value)
    with pytest.raises(StoreError, match="not a production store"):
        open_store(tmp_path / "missing.sqlite")


def test_a_wrong_password_on_a_real_server_is_a_clear_error(postgres_db):
    from sqlalchemy.engine import make_url

    wrong = make_url(postgres_db).set(password="not-the-password").render_as_string(hide_password=False)
    with pytest.raises(StoreUnavailable, match="password authentication failed") as e:
        open_store(wrong)
    assert "not-the-password" not in str(e.value)
    empty = make_url(postgres_db).set(database="postgres").render_as_string(hide_password=False)
    with pytest.raises(StoreError, match="holds no production store yet"):
        open_store(empty)  # must_exist: a database `reflectlm serve` never wrote to


def test_the_cli_masks_urls_and_refuses_bad_ones(tiny_cls_run, monkeypatch):
    from reflectlm.cli import _mask_argv

    monkeypatch.setattr(sys, "argv", ["reflectlm", "run", "c.toml", "--feedback", "postgresql://u:hunter2@h/db",
                                      "--set", 'serve.store="postgresql+psycopg://u:hunter2@h:5432/db"'])
    _mask_argv()
    assert "hunter2" not in " ".join(sys.argv) and sys.argv[4] == "postgresql://u:***@h/db"
    r = CliRunner().invoke(cli, ["serve", str(tiny_cls_run), "--store", "mysql://u:hunter2@h/db"])
    assert r.exit_code == 2 and "postgresql+psycopg://" in r.output and "hunter2" not in r.output
    r = CliRunner().invoke(cli, ["monitor", "postgresql://u:hunter2@127.0.0.1:1/db"])
    assert r.exit_code == 2 and "PostgreSQL server is running" in r.output and "hunter2" not in r.output
    r = CliRunner().invoke(cli, ["serve", str(tiny_cls_run), "--backend", "ray", "--workers", "2"])
    assert r.exit_code == 2 and "--max-replicas" in r.output
    r = CliRunner().invoke(cli, ["serve", str(tiny_cls_run), "--backend", "ray", "--min-replicas", "3",
                                 "--max-replicas", "2"])
    assert r.exit_code == 2 and "min_replicas (3) is above" in r.output


def test_an_unreachable_store_is_a_503_without_the_password(tiny_cls_run, tmp_path, caplog):
    import sqlalchemy as sa

    settings = load_deploy_config(None, [f'serve.store="{tmp_path / "s.sqlite"}"', "serve.auth=false"])
    app = create_app(tiny_cls_run, settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        pid = c.post("/v1/predict", json={"texts": ["good"]}).json()["predictions"][0]["id"]
        store = app.state.reflectlm.store
        store.engine.dispose()
        # the database goes away: nothing listens on port 1
        store.engine, store.url = sa.create_engine("postgresql+psycopg://u:hunter2@127.0.0.1:1/db"), \
            sa.engine.make_url("postgresql+psycopg://u:hunter2@127.0.0.1:1/db")
        for r in (c.post("/v1/predict", json={"texts": ["good"]}),
                  c.post("/v1/feedback", json={"prediction_id": pid, "label": "pos"})):
            assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
            assert r.headers["retry-after"] == "5" and "hunter2" not in r.text
        assert c.get("/healthz").status_code == 200
    assert "hunter2" not in caplog.text
