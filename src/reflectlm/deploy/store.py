"""The production store: every served prediction (low-confidence ones flagged), the corrections
people sent for them, and what was served - in a database reached through SQLAlchemy.

Where it lives (`serve.store`, `reflectlm serve --store`, `run --feedback`, `monitor`):
- a path, or sqlite:///PATH: one SQLite file, the embedded default (<served dir>/serving.sqlite).
  Several processes on one machine share it safely (WAL, BEGIN IMMEDIATE, a 30 s busy timeout);
  processes on several machines cannot (SQLite's locks need one file system's byte-range locks).
- postgresql+psycopg://USER@HOST:PORT/DB (postgresql:// means the same): what replicas on several
  machines share. The password is best left out of the URL (PGPASSWORD or ~/.pgpass; libpq reads
  both); where it is in the URL it is masked in every log line, error and run file we write.

Durability: a feedback row is committed durably before the HTTP answer goes out, so a 2xx means the
row survives a kill -9 of the server (the fault test counts them) and a power cut: SQLite with
synchronous=FULL (fsync), PostgreSQL with synchronous_commit=on whatever the server's default.
Predictions are committed once per micro-batch with the cheaper setting (SQLite synchronous=NORMAL,
PostgreSQL synchronous_commit=off): a kill of the server loses none, a crash of the machine (or of
the database server) may lose the last ones - acceptable for predictions, not for feedback.
Texts are stored as the service masked them (deploy/masking.py) unless masking is off.

The schema is created on first use (under an advisory lock on PostgreSQL, in one BEGIN IMMEDIATE
transaction on SQLite, so replicas starting together do not race) and is the one earlier versions
wrote to SQLite, so existing serving.sqlite files open unchanged.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path

from .. import rundir
from ..data import DataError

BACKENDS = ("sqlite", "postgresql")
_SCHEMA_LOCK = 0x52_4C_4D_53  # pg_advisory_xact_lock key ("RLMS"): one replica creates the schema at a time
_HOW = ("pass a path (a SQLite file, or the served directory that holds serving.sqlite), sqlite:///PATH, or "
        "postgresql+psycopg://USER@HOST:PORT/DATABASE (the password in PGPASSWORD or ~/.pgpass)")


class StoreError(DataError):
    """A store cannot be opened or read; the message says what to do."""


class StoreUnavailable(StoreError):
    """The database went away while serving (the server answers 503 and retries on the next request)."""


# --------------------------------------------------------------------------- where the store is


def is_url(target) -> bool:
    return isinstance(target, str) and "://" in target


def store_url(target: str | Path):
    """A path or a database URL -> a SQLAlchemy URL. A directory means its serving.sqlite."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    if not is_url(target):
        path = Path(target).expanduser()
        if path.is_dir():
            path = path / rundir.SERVING_STORE
        return URL.create("sqlite", database=str(path.resolve()))
    try:
        url = make_url(target)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        scheme = str(target).split("://", 1)[0]
        raise StoreError(f"the store URL {scheme}://... cannot be parsed; {_HOW}") from None  # no echo: it may hold a password
    backend = url.get_backend_name()
    if backend not in BACKENDS:
        raise StoreError(f"the store URL {mask_url(target)} is for {backend!r}; the production store runs on "
                         f"{' or '.join(BACKENDS)}: {_HOW}")
    if backend == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver we install; SQLAlchemy's default is psycopg2
    if backend == "sqlite" and (not url.database or url.database == ":memory:"):
        raise StoreError(f"{target} is an in-memory database: everything in it is lost when the server "
                         "stops; give a file, e.g. sqlite:////srv/reflectlm/serving.sqlite")
    return url


def describe(url) -> str:
    """What logs, errors and run files say: a SQLite store's file path, else the URL with its
    password (in the authority or in the query string) masked."""
    if url.get_backend_name() == "sqlite":
        return url.database
    if "password" in url.query:
        url = url.update_query_dict({"password": "***"})
    return url.render_as_string(hide_password=True)


def mask_url(text: str) -> str:
    """A string that may be a database URL, with the password masked (anything else unchanged)."""
    if not is_url(text):
        return text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return describe(make_url(text))
    except (ArgumentError, ValueError):  # not a URL alone (e.g. serve.store="..." from --set): mask in place
        import re

        text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
        return re.sub(r"(password=)[^&\s\"']*", r"\1***", text)


def _scrub(message: str, url) -> str:
    """A driver's message with any password of the URL taken out (libpq does not echo it, but a
    driver's message is not ours to trust)."""
    for secret in (url.password, url.query.get("password")):
        if secret:
            message = message.replace(str(secret), "***")
    return message


# --------------------------------------------------------------------------- the schema


def _tables(backend: str):
    import sqlalchemy as sa

    md = sa.MetaData()
    meta = sa.Table("meta", md, sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text, nullable=False))
    columns = [
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("api_key", sa.Text),
        # The input as served (masked): the text, or a JSON object of the task's input fields
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("output", sa.Text, nullable=False),  # JSON: what the task keeps of a prediction (task.stored_row)
        sa.Column("confidence", sa.Double, nullable=False),
        sa.Column("low_confidence", sa.Integer, nullable=False),
        sa.Column("words", sa.Text),  # a word-tagging task: JSON [[start, end], ...] of the text's words
    ]
    if backend != "sqlite":
        # Insertion order, for the monitor's window and the pool's order (texts of one micro-batch share
        # `created`). SQLite has it already as the implicit rowid, and older SQLite stores lack this column.
        columns.append(sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False))
    predictions = sa.Table("predictions", md, *columns, sa.Index("predictions_created", "created"))
    feedback = sa.Table(
        "feedback", md,
        # AUTOINCREMENT on SQLite (ids are never reused); BIGINT identity on PostgreSQL
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.Text, sa.ForeignKey("predictions.id"), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("api_key", sa.Text),
        sa.Column("label", sa.Text),  # a correction that is one label (classification)
        sa.Column("tags", sa.Text),  # any other correction, as JSON (NER: one BIO tag per word; QA: the answer)
        sa.Index("feedback_prediction", "prediction_id"),
        sqlite_autoincrement=True)
    return md, meta, predictions, feedback


# --------------------------------------------------------------------------- the store


class ProductionStore:
    """Thread-safe: every call takes a pooled connection for one transaction (the server writes
    from its batch worker and from request threads). Several processes may open the same store."""

    def __init__(self, target: str | Path):
        self.url = store_url(target)
        self.backend = self.url.get_backend_name()
        self.name = describe(self.url)
        self._md, self._meta, self._pred, self._fb = _tables(self.backend)
        self.engine = None

    @property
    def path(self) -> Path | None:
        """The SQLite file (None for a database server)."""
        return Path(self.url.database) if self.backend == "sqlite" else None

    def open(self, create: bool = True) -> ProductionStore:
        """Connect and (create = True) create the schema where it is missing; create = False
        requires a store that `reflectlm serve` has written."""
        import sqlalchemy as sa

        sqlite = self.backend == "sqlite"
        if sqlite:
            if not create and not self.path.is_file():
                raise StoreError(f"{self.path} is not a production store: pass the serving.sqlite that `reflectlm "
                                 "serve` writes (by default in the served directory), or the directory that holds it")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # hide_parameters: a failed statement's error must not carry the texts it was writing
            engine = sa.create_engine(self.url, hide_parameters=True, pool_size=8, max_overflow=16,
                                      **({"connect_args": {"check_same_thread": False, "timeout": 30}} if sqlite
                                         else {"pool_pre_ping": True}))
        except ImportError as e:  # a driver that is not installed
            raise StoreError(f"{self.name}: its database driver is not installed ({e}); use postgresql+psycopg://... "
                             "(psycopg 3 comes with reflectlm[serve]) or install that driver") from None
        except sa.exc.SQLAlchemyError as e:
            raise StoreError(f"{self.name}: {_scrub(str(e), self.url)}; {_HOW}") from None
        if sqlite:
            _sqlite_transactions(engine)
        self.engine = engine
        try:
            with self._tx(write=True) as conn:
                if not sqlite:
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
                if not create and not sa.inspect(conn).has_table("predictions"):
                    raise StoreError(f"{self.name} holds no production store yet: serve a model with "
                                     f"`reflectlm serve RUN --store URL` first")
                self._md.create_all(conn, checkfirst=True)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    @contextlib.contextmanager
    def _tx(self, write: bool = False, durable: bool = True):
        """One transaction on a pooled connection. write: SQLite takes the write lock at BEGIN;
        durable (a write): commit with fsync (SQLite synchronous=FULL, PostgreSQL
        synchronous_commit=on) - the caller acknowledges after it."""
        import sqlalchemy as sa

        if self.engine is None:
            self.open()
        try:
            with self.engine.connect() as conn:
                conn.execution_options(reflectlm_write=write, reflectlm_durable=durable)  # for the SQLite begin hook
                with conn.begin():
                    if write and self.backend == "postgresql":
                        conn.exec_driver_sql(f"SET LOCAL synchronous_commit TO {'ON' if durable else 'OFF'}")
                    yield conn
        except sa.exc.OperationalError as e:  # the server is down, unreachable, or refused us
            hint = ("check that the PostgreSQL server is running and reachable, that the database exists (createdb "
                    "NAME) and the user and password (PGPASSWORD or ~/.pgpass)" if self.backend != "sqlite" else
                    "check that the file is on a local disk and writable, and that no other program holds it locked")
            raise StoreUnavailable(f"production store {self.name}: {_scrub(str(e.orig), self.url).strip()}; "
                                   f"{hint}") from None

    def set_meta(self, **values) -> None:
        if self.backend == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        stmt = insert(self._meta).values([{"key": k, "value": json.dumps(v)} for k, v in values.items()])
        stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value})
        with self._tx(write=True) as conn:
            conn.execute(stmt)

    def meta(self) -> dict:
        import sqlalchemy as sa

        with self._tx() as conn:
            return {k: json.loads(v) for k, v in conn.execute(sa.select(self._meta.c.key, self._meta.c.value))}

    def add_predictions(self, rows: list[dict], api_key: str | None = None) -> list[str]:
        """rows: {text, output, confidence, low_confidence, words?} -> their new ids (one transaction)."""
        now = time.time()
        ids = [f"p-{uuid.uuid4().hex[:20]}" for _ in rows]
        values = [{"id": i, "created": now, "api_key": api_key, "text": r["text"], "output": json.dumps(r["output"]),
                   "confidence": float(r["confidence"]), "low_confidence": int(r["low_confidence"]),
                   "words": json.dumps(r.get("words")) if r.get("words") else None} for i, r in zip(ids, rows)]
        with self._tx(write=True, durable=False) as conn:
            conn.execute(self._pred.insert(), values)
        return ids

    def _order(self):
        """Insertion order of predictions (see _tables)."""
        import sqlalchemy as sa

        return sa.literal_column("predictions.rowid") if self.backend == "sqlite" else self._pred.c.seq

    def prediction(self, prediction_id: str) -> dict | None:
        import sqlalchemy as sa

        p = self._pred
        with self._tx() as conn:
            row = conn.execute(sa.select(p.c.id, p.c.text, p.c.output, p.c.confidence, p.c.words)
                               .where(p.c.id == prediction_id)).first()
        if row is None:
            return None
        return {"id": row[0], "text": row[1], "output": json.loads(row[2]), "confidence": row[3],
                "words": json.loads(row[4]) if row[4] else None}

    def add_feedback(self, prediction_id: str, label: str | None = None, tags=None, api_key: str | None = None) -> int:
        """A correction: `label` when it is one label, else `tags` (any JSON: BIO tags, an answer)."""
        with self._tx(write=True, durable=True) as conn:  # committed durably before the caller answers
            result = conn.execute(self._fb.insert().values(prediction_id=prediction_id, created=time.time(),
                                                           api_key=api_key, label=label,
                                                           tags=json.dumps(tags) if tags else None))
        return int(result.inserted_primary_key[0])

    def counts(self) -> dict:
        import sqlalchemy as sa

        p = self._pred
        with self._tx() as conn:
            n, low = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(p.c.low_confidence), 0))
                                  .select_from(p)).one()
            f = conn.execute(sa.select(sa.func.count()).select_from(self._fb)).scalar_one()
        return {"predictions": int(n), "low_confidence": int(low), "feedback": int(f)}

    def recent(self, n: int) -> list[dict]:
        """The n most recent predictions (text, output, confidence), oldest first."""
        import sqlalchemy as sa

        p = self._pred
        with self._tx() as conn:
            rows = conn.execute(sa.select(p.c.text, p.c.output, p.c.confidence)
                                .order_by(p.c.created.desc(), self._order().desc()).limit(int(n))).all()
        return [{"text": t, "output": json.loads(o), "confidence": c} for t, o, c in reversed(rows)]

    def corrections(self) -> list[dict]:
        """The latest correction per prediction, with the prediction's text and what was served."""
        import sqlalchemy as sa

        p, f = self._pred, self._fb
        latest = sa.select(sa.func.max(f.c.id)).group_by(f.c.prediction_id)
        with self._tx() as conn:
            rows = conn.execute(sa.select(p.c.id, p.c.text, p.c.output, f.c.label, f.c.tags)
                                .select_from(f.join(p, p.c.id == f.c.prediction_id))
                                .where(f.c.id.in_(latest)).order_by(f.c.id)).all()
        return [{"prediction_id": i, "text": t, "served": json.loads(o), "label": lab,
                 "tags": json.loads(tags) if tags else None} for i, t, o, lab, tags in rows]

    def unlabelled(self) -> list[dict]:
        """Predictions without feedback (low-confidence ones first): the next run's unlabelled pool."""
        import sqlalchemy as sa

        p, f = self._pred, self._fb
        with self._tx() as conn:
            rows = conn.execute(sa.select(p.c.text, p.c.low_confidence)
                                .where(p.c.id.not_in(sa.select(f.c.prediction_id)))
                                .order_by(p.c.low_confidence.desc(), p.c.created, self._order())).all()
        return [{"text": t, "low_confidence": bool(lc)} for t, lc in rows]

    def integrity(self) -> str:
        """SQLite's integrity check ("ok"). PostgreSQL checks its own pages: run pg_amcheck."""
        if self.backend != "sqlite":
            raise StoreError(f"{self.name}: integrity() checks a SQLite file; for PostgreSQL run pg_amcheck")
        with self._tx() as conn:
            return conn.exec_driver_sql("PRAGMA integrity_check").scalar_one()


def _sqlite_transactions(engine) -> None:
    """SQLAlchemy's documented recipe for pysqlite: the driver's own implicit BEGIN is turned off
    and we emit BEGIN IMMEDIATE, so a writer takes the write lock at the start of its transaction
    (two deferred transactions that both read, then write, would deadlock into SQLITE_BUSY)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "begin")
    def _begin(conn):
        options = conn.get_execution_options()
        if not options.get("reflectlm_write", True):
            conn.exec_driver_sql("BEGIN")  # a reader: WAL lets it run beside a writer
            return
        # before BEGIN: the setting applies to the commit that ends this transaction
        conn.exec_driver_sql(f"PRAGMA synchronous={'FULL' if options.get('reflectlm_durable', True) else 'NORMAL'}")
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def open_store(target: str | Path, must_exist: bool = True) -> ProductionStore:
    """A store by path (a SQLite file or the directory that holds serving.sqlite) or database URL."""
    return ProductionStore(target).open(create=not must_exist)
