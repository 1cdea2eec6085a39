"""The production store: one SQLite file with every served prediction (low-confidence ones
flagged), the corrections people sent for them, and what was served.

Durability: WAL journal; a feedback row is committed with synchronous=FULL (fsync) before the
HTTP answer goes out, so a 2xx means the row survives a kill -9 (the fault test counts them)
and a power cut. Predictions are committed once per micro-batch with synchronous=NORMAL.
Texts are stored as the service masked them (deploy/masking.py) unless masking is off.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from ..data import DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY, created REAL NOT NULL, api_key TEXT, text TEXT NOT NULL,
    output TEXT NOT NULL,            -- JSON: {"label": ...} or {"entities": [...], "tags": [...]}
    confidence REAL NOT NULL, low_confidence INTEGER NOT NULL,
    words TEXT                       -- NER: JSON [[start, end], ...] of the text's words
);
CREATE INDEX IF NOT EXISTS predictions_created ON predictions (created);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, prediction_id TEXT NOT NULL REFERENCES predictions (id),
    created REAL NOT NULL, api_key TEXT,
    label TEXT,                      -- classification: the correct label
    tags TEXT                        -- NER: JSON list, one BIO tag per word
);
CREATE INDEX IF NOT EXISTS feedback_prediction ON feedback (prediction_id);
"""


class StoreError(DataError):
    """A store cannot be opened or read; the message says what to do."""


class ProductionStore:
    """Thread-safe (one connection behind a lock): the server writes from its batch worker and
    from request threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> ProductionStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        self._db = db
        return self

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                self._db.close()
                self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        return self._db

    @contextlib.contextmanager
    def _tx(self):
        """One explicit transaction (the connection is in autocommit mode, where executemany
        would commit - and fsync - every row on its own). Call with the lock held."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def set_meta(self, **values) -> None:
        with self._lock:
            with self._tx() as db:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               [(k, json.dumps(v)) for k, v in values.items()])

    def meta(self) -> dict:
        with self._lock:
            return {k: json.loads(v) for k, v in self._conn().execute("SELECT key, value FROM meta")}

    def add_predictions(self, rows: list[dict], api_key: str | None = None) -> list[str]:
        """rows: {text, output, confidence, low_confidence, words?} -> their new ids (one transaction)."""
        now = time.time()
        ids = [f"p-{uuid.uuid4().hex[:20]}" for _ in rows]
        with self._lock:
            # NORMAL: in WAL mode a commit is durable against a process kill (the OS holds it), only a power
            # cut may lose the last ones - acceptable for predictions, not for feedback (FULL, below).
            self._conn().execute("PRAGMA synchronous=NORMAL")
            with self._tx() as db:
                db.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               [(i, now, api_key, r["text"], json.dumps(r["output"]), float(r["confidence"]),
                                 int(r["low_confidence"]), json.dumps(r.get("words")) if r.get("words") else None)
                                for i, r in zip(ids, rows)])
        return ids

    def prediction(self, prediction_id: str) -> dict | None:
        with self._lock:
            row = self._conn().execute("SELECT id, text, output, confidence, words FROM predictions WHERE id = ?",
                                       (prediction_id,)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "text": row[1], "output": json.loads(row[2]), "confidence": row[3],
                "words": json.loads(row[4]) if row[4] else None}

    def add_feedback(self, prediction_id: str, label: str | None = None, tags: list[str] | None = None,
                     api_key: str | None = None) -> int:
        with self._lock:
            self._conn().execute("PRAGMA synchronous=FULL")
            with self._tx() as db:  # committed (and, with synchronous=FULL, on disk) before the caller answers
                cur = db.execute("INSERT INTO feedback (prediction_id, created, api_key, label, tags) VALUES (?, ?, ?, ?, ?)",
                                 (prediction_id, time.time(), api_key, label, json.dumps(tags) if tags else None))
        return int(cur.lastrowid)

    def counts(self) -> dict:
        with self._lock:
            db = self._conn()
            p, low = db.execute("SELECT COUNT(*), COALESCE(SUM(low_confidence), 0) FROM predictions").fetchone()
            f = db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
        return {"predictions": int(p), "low_confidence": int(low), "feedback": int(f)}

    def recent(self, n: int) -> list[dict]:
        """The n most recent predictions (text, output, confidence), oldest first."""
        with self._lock:
            rows = self._conn().execute("SELECT text, output, confidence FROM predictions ORDER BY created DESC, rowid DESC "
                                        "LIMIT ?", (int(n),)).fetchall()
        return [{"text": t, "output": json.loads(o), "confidence": c} for t, o, c in reversed(rows)]

    def corrections(self) -> list[dict]:
        """The latest correction per prediction, with the prediction's text and what was served."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT p.id, p.text, p.output, f.label, f.tags FROM feedback f JOIN predictions p ON p.id = f.prediction_id "
                "WHERE f.id IN (SELECT MAX(id) FROM feedback GROUP BY prediction_id) ORDER BY f.id").fetchall()
        return [{"prediction_id": i, "text": t, "served": json.loads(o), "label": lab,
                 "tags": json.loads(tags) if tags else None} for i, t, o, lab, tags in rows]

    def unlabelled(self) -> list[dict]:
        """Predictions without feedback (low-confidence ones first): the next run's unlabelled pool."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT text, low_confidence FROM predictions WHERE id NOT IN (SELECT prediction_id FROM feedback) "
                "ORDER BY low_confidence DESC, created").fetchall()
        return [{"text": t, "low_confidence": bool(lc)} for t, lc in rows]

    def integrity(self) -> str:
        with self._lock:
            return self._conn().execute("PRAGMA integrity_check").fetchone()[0]


def open_store(path: str | Path, must_exist: bool = True) -> ProductionStore:
    path = Path(path)
    if path.is_dir():
        path = path / "serving.sqlite"
    if must_exist and not path.is_file():
        raise StoreError(f"{path} is not a production store: pass the serving.sqlite that `reflectlm serve` writes "
                         "(by default in the served directory), or the directory that holds it")
    return ProductionStore(path).open()
