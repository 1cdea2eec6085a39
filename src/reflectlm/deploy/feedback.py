"""Production -> the next run: `reflectlm run CONFIG --feedback STORE` (a path or a database URL).

The store's corrections become verified labels (a gold-label round: a correction of an input that
is already in the training data replaces its label; a new input is added), and the predictions
nobody corrected become the unlabelled pool for active learning and self-training (low-confidence
texts first). Corrections of inputs that are in the selection or test split are left out: they
would leak the held-out data into training. What a correction is (a class, one tag per word, an
answer in its context) is the task's (task.corrected_example).

The run directory describes itself: the splits actually used are written to <run>/feedback/
(train.jsonl with the corrections, selection.jsonl, test.jsonl, pool.txt), the run's config.toml
points at them, and <run>/feedback/feedback.json (and run.json's "feedback") record what was used
and what it changed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .. import rundir
from ..atomic import write_text


def read_store(store_path: str | Path, task: str, labels: list[str]) -> tuple[list[dict], list, dict]:
    """(corrections as the task's training examples {id, key, label, record, changed}, the inputs
    nobody corrected, counts) from a production store (a path or a database URL; counts["store"]
    names it without its password). Corrections that do not fit this task's labels are skipped and counted."""
    from ..tasks import get_task
    from .store import open_store

    spec = get_task(task)
    store = open_store(store_path)
    try:
        corrections, unlabelled, meta = store.corrections(), store.unlabelled(), store.meta()
    finally:
        store.close()
    if meta.get("task") and meta["task"] != spec.name:
        from ..data import DataError

        raise DataError(f"{store.name} holds {meta['task']} feedback but this run's data.task is {spec.name!r}; "
                        "pass the store of a model trained on the same task")
    out, unknown = [], 0
    for c in corrections:
        example = spec.corrected_example({**c, "text": spec.stored_input(c["text"])}, labels)
        if example is None:
            unknown += 1
        else:
            out.append(example)
    pool = [spec.stored_input(u["text"]) for u in unlabelled]
    counts = {"store": store.name, "corrections": len(corrections), "unknown_labels": unknown,
              "corrected_model_errors": sum(bool(c["changed"]) for c in out), "unlabelled": len(pool),
              "low_confidence": sum(u["low_confidence"] for u in unlabelled)}
    return out, pool, counts


def attach_feedback(cfg, run_dir: Path, store_path: str | Path):
    """Write the run's data with the store's corrections into run_dir/feedback/ and return the
    config that points at it (also written to run_dir/config.toml)."""
    from ..config import dump_toml, validate_tree
    from ..data import load_splits
    from ..tasks import get_task

    task = get_task(cfg.data.task)
    run_dir = Path(run_dir)
    splits = load_splits(cfg.data, cfg.train.seed, cfg.open_set)
    corrections, pool_items, counts = read_store(store_path, cfg.data.task, splits.labels)
    merged = _merge(task, splits, corrections)
    out = run_dir / rundir.FEEDBACK
    out.mkdir(parents=True, exist_ok=True)
    train = merged["train"]
    rows = [task.to_record(train, i) for i in range(len(train))]
    extra = {k: 1.0 for k, arr in (("weight", train.weights), ("confidence", train.confidence)) if arr is not None}
    rows += [{**c["record"], **extra} for c in merged["added"]]
    _write_jsonl(out / rundir.TRAIN_DATA, rows)
    for name, ds in (("selection", splits.selection), ("test", splits.test)):
        _write_jsonl(out / f"{name}.jsonl", [task.to_record(ds, i) for i in range(len(ds))])

    tree = cfg.model_dump()
    pool_new, pool_note = _pool(cfg, task, out, tree, pool_items, merged["seen"])
    tree["data"].update(train=str((out / rundir.TRAIN_DATA).resolve()), selection=str((out / "selection.jsonl").resolve()),
                        test=str((out / "test.jsonl").resolve()), format="jsonl", sample=None, id_column="id",
                        **task.record_columns(),
                        weight_column="weight" if train.weights is not None else None,
                        confidence_column="confidence" if train.confidence is not None else None)
    new_cfg = validate_tree(tree)
    # counts["store"]: the SQLite file, or the URL with its password masked
    record = {**counts, "used": len(merged["added"]) + len(merged["relabelled"]) + merged["same"],
              "added": len(merged["added"]), "relabelled": len(merged["relabelled"]), "already_right": merged["same"],
              "skipped_held_out": merged["skipped"], "pool_texts_added": len(pool_new), "pool_note": pool_note,
              "added_labels": (dict(Counter(c["label"] for c in merged["added"]))
                               if all(isinstance(c["label"], str) for c in merged["added"]) else None),
              "relabelled_examples": merged["relabelled"][:200], "train_examples": len(rows)}
    write_text(out / rundir.FEEDBACK_RECORD, json.dumps(record, indent=2))
    info = rundir.read_json(run_dir / rundir.RUN)
    info["feedback"] = {k: v for k, v in record.items() if k != "relabelled_examples"}
    write_text(run_dir / rundir.RUN, json.dumps(info, indent=2))
    write_text(run_dir / rundir.CONFIG, dump_toml(new_cfg))
    return new_cfg


def _merge(task, splits, corrections: list[dict]) -> dict:
    """The training split with the corrections: relabelled where the input is in it, else added;
    never an input of the selection or test split."""
    held_out = {_norm(k) for ds in (splits.selection, splits.test) if ds is not None for k in task.keys(ds)}
    train = splits.train
    keys = task.keys(train)
    index = {_norm(k): i for i, k in enumerate(keys)}
    labels, added, relabelled, skipped, same = list(train.labels), [], [], 0, 0
    for c in reversed(corrections):  # latest first: of two corrections of the same input the latest wins
        key = _norm(c["key"])
        if key in held_out:
            skipped += 1
            continue
        if key in index:
            i = index[key]
            if i < 0:
                continue
            if labels[i] != c["label"]:
                relabelled.append({"id": train.ids[i], "from": labels[i], "to": c["label"]})
                labels[i] = c["label"]
            else:
                same += 1
        else:
            added.append(c)
            index[key] = -1  # an older correction of the same new input is not added again
    fixed = train.subset(range(len(train)))
    fixed.labels = labels
    seen = held_out | {_norm(k) for k in keys} | {_norm(c["key"]) for c in added}
    return {"train": fixed, "added": added, "relabelled": relabelled, "skipped": skipped, "same": same, "seen": seen}


def _pool(cfg, task, out: Path, tree: dict, pool_items: list, seen: set) -> tuple[list, str | None]:
    """The production inputs nobody corrected, added to the run's pool (pool.txt) when they are texts
    and the pool is not answered by an oracle; returns (what was added, a note when nothing could be)."""
    if task.input_fields != ("text",):
        return [], (f"{len(pool_items)} production inputs were not added to the pool: a pool of "
                    f"{'/'.join(task.input_fields)} inputs is a data file of the task's format (loop.pool)")
    pool_new = list(dict.fromkeys(t for t in (" ".join(p.split()) for p in pool_items) if t and _norm(t) not in seen))
    if cfg.loop.pool and cfg.loop.oracle != "none":
        return [], (f"loop.pool is answered by the {cfg.loop.oracle!r} oracle; the {len(pool_new)} production texts "
                    "were not added to it")
    existing = []
    if cfg.loop.pool:
        from ..data import load

        try:
            existing = list(load(cfg.loop.pool, task.name, text_column=cfg.data.text_column).texts)
        except Exception:  # noqa: BLE001 - a text-only pool: one text per line
            existing = [ln.strip() for ln in Path(cfg.loop.pool).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if pool_new or existing:
        (out / rundir.POOL_TEXTS).write_text("".join(f"{t}\n" for t in dict.fromkeys(existing + pool_new)),
                                             encoding="utf-8")
        tree["loop"]["pool"] = str((out / rundir.POOL_TEXTS).resolve())
    return pool_new, None


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
