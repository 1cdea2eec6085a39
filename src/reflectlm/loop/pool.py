"""The loop's data: the splits it trains and selects on, the unlabelled pool and the oracle that
labels pool examples. Training data and pool enter the loop here and nowhere else (`load_data`),
so another source of examples (e.g. corrections from production) is one more argument here.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..actions.oracle import ColumnOracle, QueueOracle
from ..config import Config
from ..data import DataError, Dataset, Splits


@dataclass
class LoopData:
    splits: Splits  # train and selection; its test is None: no round ever sees the test split
    test: Dataset | None  # read once, by the engine, after every round is decided
    pool: Dataset | None  # unlabelled examples (labels blanked), de-duplicated against every split
    hidden: dict | None  # loop.oracle = "column": the pool's labels, which only the oracle reads


def load_data(cfg: Config, quiet: bool = True, describe=None) -> LoopData:
    """The splits, the pool and what the oracle may answer. `describe(splits)` is called once the
    splits are loaded, before the pool adds its warnings (the engine records the data in run.json)."""
    from ..data import load_splits

    splits = load_splits(cfg.data, cfg.train.seed, cfg.open_set)
    if describe is not None:
        describe(splits)
    pool, hidden = load_pool(cfg, splits, quiet) or (None, None)  # (de-duplicated against train, selection and test)
    return LoopData(Splits(splits.train, splits.selection, None, splits.labels, splits.warnings), splits.test, pool,
                    hidden)


def load_pool(cfg: Config, splits: Splits, quiet: bool = True):
    """(pool Dataset, hidden labels or None), or None without loop.pool. The pool's labels are never
    given to training, and pool examples that repeat a train, selection or test example are removed
    (a test text pulled into training by active learning would leak the test split)."""
    from ..data import COLUMNS, load
    from ..tasks import get_task

    lc = cfg.loop
    if not lc.pool:
        return None
    task = get_task(cfg.data.task)
    cols = {k: getattr(cfg.data, k) for k in COLUMNS if k not in ("weight_column", "confidence_column")}
    label_col = lc.pool_label_column or cfg.data.label_column
    try:
        ds = load(lc.pool, cfg.data.task, format=cfg.data.format, **{**cols, "label_column": label_col})
        hidden = dict(zip(ds.ids, ds.labels)) if lc.oracle == "column" else None
    except DataError as e:
        if lc.oracle == "column":
            raise DataError(f"{e}\nloop.oracle = 'column' needs the pool's label column ({label_col!r}); set "
                            "loop.pool_label_column") from None
        ds = _text_only(lc.pool, cfg)
        hidden = None
    if cfg.data.min_confidence is not None and ds.confidence is not None:
        # The labels data.min_confidence does not trust in training, the oracle must not answer with.
        from ..data import keep_confident

        ds, note = keep_confident(ds, cfg.data.min_confidence)
        splits.warnings.append(f"loop.pool: {note}")
        hidden = {i: hidden[i] for i in ds.ids} if hidden is not None else None
    if lc.oracle == "column" and hidden:
        unknown = sorted(task.unknown_labels(ds, set(task.label_names_of(splits.labels))))
        if unknown:
            raise DataError(f"{lc.pool}: pool labels {unknown[:5]} are not among the training labels")
    # The pool's own labels must not leak: keep only the inputs (and the ids the oracle answers for).
    ds.labels = task.blank_labels(ds)
    seen_ids, seen_keys = set(), set()
    for other in (splits.train, splits.selection, splits.test):
        if other is not None:
            seen_ids.update(other.ids)
            seen_keys.update(" ".join(t.lower().split()) for t in task.keys(other))
    keep = [k for k, (i, t) in enumerate(zip(ds.ids, task.keys(ds)))
            if i not in seen_ids and " ".join(t.lower().split()) not in seen_keys]
    if len(keep) < len(ds):
        msg = (f"{lc.pool}: {len(ds) - len(keep)} pool examples repeat a train, selection or test example; "
               "left out of the pool")
        splits.warnings.append(msg)
        if not quiet:
            print(f"warning: {msg}", flush=True)
        ds = ds.subset(keep)
    return ds, hidden


def _text_only(path: str, cfg: Config) -> Dataset:
    """An unlabelled pool: one text per line (.txt) or a CSV / JSONL with the text column only."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"loop.pool = {path!r} does not exist; point it at a file of unlabelled texts")
    if p.suffix == ".jsonl":
        texts = [json.loads(line)[cfg.data.text_column] for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif p.suffix in (".csv", ".tsv"):
        with p.open(newline="", encoding="utf-8") as fh:
            texts = [r[cfg.data.text_column] for r in csv.DictReader(fh, delimiter="\t" if p.suffix == ".tsv" else ",")]
    else:
        texts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    from ..tasks import get_task

    texts = [t for t in texts if t and t.strip()]
    ds = get_task(cfg.data.task).from_inputs(texts)
    ds.ids = [f"pool-{hashlib.sha1(t.encode()).hexdigest()[:12]}" for t in texts]
    ds.source = str(p)
    return ds


def make_oracle(cfg: Config, run_dir: Path, hidden: dict | None):
    """Who answers labels for pool examples: the pool's hidden column, a person (label_queue.csv), or nobody."""
    from ..rundir import RunError

    if cfg.loop.oracle == "column":
        if hidden is None:
            raise RunError("loop.oracle = 'column' needs loop.pool with a label column")
        return ColumnOracle(hidden)
    if cfg.loop.oracle == "queue":
        return QueueOracle(run_dir)
    return None
