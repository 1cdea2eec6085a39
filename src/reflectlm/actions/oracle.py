"""Who answers active-learning queries.

- ColumnOracle: the pool file has a label column that training never reads; asking reveals it
  (benchmarks, simulations).
- QueueOracle: a person. Asking writes the examples to `<run>/label_queue.csv` (id,text,label
  with label empty); the person fills in labels and runs `reflectlm label import RUN FILE`, which
  validates them into `<run>/labels_imported.csv`; the next round adds the answered examples.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .. import rundir
from ..atomic import replacing
from ..data import DataError

QUEUE = rundir.LABEL_QUEUE
IMPORTED = "labels_imported.csv"


class ColumnOracle:
    kind = "column"

    def __init__(self, answers: dict[str, str]):
        self.answers = dict(answers)

    def ask(self, ids: list[str], texts: list[str]) -> dict[str, str]:
        return {i: self.answers[i] for i in ids if i in self.answers}

    def answered(self) -> dict[str, str]:
        return {}  # answers come back at once; nothing waits between rounds


class QueueOracle:
    kind = "queue"

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def ask(self, ids: list[str], texts: list[str]) -> dict[str, str]:
        """Queue the examples for a person; return those already answered."""
        done = self.answered()
        queued = _read(self.run_dir / QUEUE)
        rows = [r for r in queued.values()] + [{"id": i, "text": t, "label": ""} for i, t in zip(ids, texts)
                                                  if i not in queued and i not in done]
        with replacing(self.run_dir / QUEUE, newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
            w.writeheader()
            w.writerows(rows)
        return {i: done[i] for i in ids if i in done}

    def answered(self) -> dict[str, str]:
        return {i: r["label"] for i, r in _read(self.run_dir / IMPORTED).items() if r.get("label")}


def _read(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {r["id"]: r for r in csv.DictReader(fh)}


def import_labels(run_dir: str | Path, file: str | Path, labels: list[str]) -> dict:
    """Validate a filled-in queue (id,text,label) and merge it into the run's imported labels.
    Rows with an empty label are skipped; an unknown label or id is an error that names the line."""
    run_dir, file = Path(run_dir), Path(file)
    queue = _read(run_dir / QUEUE)
    if not queue:
        raise FileNotFoundError(f"{run_dir / QUEUE} does not exist: this run has not queued any examples "
                                "(set loop.oracle = 'queue' and loop.pool)")
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; pass the filled-in copy of {run_dir / QUEUE}")
    known = set(labels)
    merged = {i: r for i, r in _read(run_dir / IMPORTED).items()}
    added = 0
    with file.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{file}: missing column(s) {sorted(missing)}; keep the header id,text,label of the queue")
        for line, r in enumerate(reader, start=2):
            lab = (r.get("label") or "").strip()
            if not lab:
                continue
            if r["id"] not in queue:
                raise DataError(f"{file}:{line}: id {r['id']!r} was not queued by this run; keep the ids as written")
            if lab not in known:
                raise DataError(f"{file}:{line}: unknown label {lab!r}; use one of: {', '.join(sorted(known))}")
            added += r["id"] not in merged
            merged[r["id"]] = {"id": r["id"], "text": queue[r["id"]]["text"], "label": lab}
    with replacing(run_dir / IMPORTED, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        w.writeheader()
        w.writerows(merged.values())
    return {"imported": added, "total": len(merged), "queued": len(queue)}
