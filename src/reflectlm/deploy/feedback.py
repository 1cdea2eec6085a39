"""Production -> the next run: `reflectlm run CONFIG --feedback STORE` (a path or a database URL).

The store's corrections become verified labels (a gold-label round: a correction of a text that
is already in the training data replaces its label; a new text is added), and the predictions
nobody corrected become the unlabelled pool for active learning and self-training (low-confidence
texts first). Corrections of texts that are in the selection or test split are left out: they
would leak the held-out data into training.

The run directory describes itself: the splits actually used are written to <run>/feedback/
(train.jsonl with the corrections, selection.jsonl, test.jsonl, pool.txt), the run's config.toml
points at them, and <run>/feedback/feedback.json (and run.json's "feedback") record what was used
and what it changed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..atomic import write_text


def read_store(store_path: str | Path, task: str, labels: list[str]) -> tuple[list[dict], list[str], dict]:
    """(corrections as {id, text, label | tags}, pool texts, counts) from a production store (a
    path or a database URL; counts["store"] names it without its password).
    Corrections with labels this task does not know are skipped and counted."""
    from .store import open_store

    store = open_store(store_path)
    try:
        corrections, unlabelled, meta = store.corrections(), store.unlabelled(), store.meta()
    finally:
        store.close()
    if meta.get("task") and meta["task"] != task:
        from ..data import DataError

        raise DataError(f"{store.name} holds {meta['task']} feedback but this run's data.task is {task!r}; "
                         "pass the store of a model trained on the same task")
    known = set(labels)
    out, unknown, changed = [], 0, 0
    for c in corrections:
        if task == "ner":
            tags = c["tags"]
            words = c["text"].split()
            if tags is None or len(tags) != len(words) or not set(tags) <= known:
                unknown += 1
                continue
            out.append({"id": f"fb-{c['prediction_id']}", "text": c["text"], "tokens": words, "tags": tags})
            served = {(e["type"], e["start"], e["end"]) for e in c["served"].get("entities", [])}
            changed += bool(served) or any(t != "O" for t in tags)  # NER: counted as a change when either has spans
        else:
            if c["label"] not in known:
                unknown += 1
                continue
            out.append({"id": f"fb-{c['prediction_id']}", "text": c["text"], "label": c["label"]})
            changed += c["served"].get("label") != c["label"]
    pool = [u["text"] for u in unlabelled]
    counts = {"store": store.name, "corrections": len(corrections), "unknown_labels": unknown, "corrected_model_errors": changed,
              "unlabelled": len(pool), "low_confidence": sum(u["low_confidence"] for u in unlabelled)}
    return out, pool, counts


def attach_feedback(cfg, run_dir: Path, store_path: str | Path):
    """Write the run's data with the store's corrections into run_dir/feedback/ and return the
    config that points at it (also written to run_dir/config.toml)."""
    from ..config import dump_toml, validate_tree
    from ..data import load_splits

    run_dir = Path(run_dir)
    splits = load_splits(cfg.data, cfg.train.seed)
    corrections, pool_texts, counts = read_store(store_path, cfg.data.task, splits.labels)
    norm = _norm
    held_out = {norm(t) for ds in (splits.selection, splits.test) if ds is not None for t in ds.texts}
    train = splits.train
    index = {norm(t): i for i, t in enumerate(train.texts)}
    labels, added, relabelled, skipped, same = list(train.labels), [], [], 0, 0
    for c in reversed(corrections):  # latest first: of two corrections of the same text the latest wins
        key = norm(c["text"])
        if key in held_out:
            skipped += 1
            continue
        value = c["tags"] if cfg.data.task == "ner" else c["label"]
        if key in index:
            i = index[key]
            if i < 0:
                continue
            if labels[i] != value:
                relabelled.append({"id": train.ids[i], "from": labels[i], "to": value})
                labels[i] = value
            else:
                same += 1
        else:
            added.append(c)
            index[key] = -1  # an older correction of the same new text is not added again
    out = run_dir / "feedback"
    out.mkdir(parents=True, exist_ok=True)
    task = cfg.data.task
    rows = [_row(task, train.ids[i], train.texts[i], train.tokens[i] if train.tokens else None, labels[i],
                 None if train.weights is None else float(train.weights[i]),
                 None if train.confidence is None else float(train.confidence[i])) for i in range(len(train))]
    rows += [_row(task, c["id"], c["text"], c.get("tokens"), c["tags"] if task == "ner" else c["label"],
                  1.0 if train.weights is not None else None, 1.0 if train.confidence is not None else None)
             for c in added]
    _write_jsonl(out / "train.jsonl", rows)
    for name, ds in (("selection", splits.selection), ("test", splits.test)):
        _write_jsonl(out / f"{name}.jsonl", [_row(task, ds.ids[i], ds.texts[i], ds.tokens[i] if ds.tokens else None,
                                                  ds.labels[i], None, None) for i in range(len(ds))])

    seen = held_out | {norm(t) for t in train.texts} | {norm(c["text"]) for c in added}
    pool_new = list(dict.fromkeys(t for t in (" ".join(p.split()) for p in pool_texts) if t and norm(t) not in seen))
    tree = cfg.model_dump()
    pool_note = None
    if cfg.loop.pool and cfg.loop.oracle != "none":
        pool_note = (f"loop.pool is answered by the {cfg.loop.oracle!r} oracle; the {len(pool_new)} production texts "
                     "were not added to it")
        pool_new = []
    else:
        existing = []
        if cfg.loop.pool:
            from ..data import load

            try:
                existing = list(load(cfg.loop.pool, task, text_column=cfg.data.text_column).texts)
            except Exception:  # noqa: BLE001 - a text-only pool: one text per line
                existing = [ln.strip() for ln in Path(cfg.loop.pool).read_text(encoding="utf-8").splitlines() if ln.strip()]
        if pool_new or existing:
            (out / "pool.txt").write_text("".join(f"{t}\n" for t in dict.fromkeys(existing + pool_new)), encoding="utf-8")
            tree["loop"]["pool"] = str((out / "pool.txt").resolve())
    tree["data"].update(train=str((out / "train.jsonl").resolve()), selection=str((out / "selection.jsonl").resolve()),
                        test=str((out / "test.jsonl").resolve()), format="jsonl", sample=None, id_column="id",
                        text_column="text", label_column="label", tokens_key="tokens", tags_key="tags",
                        weight_column="weight" if train.weights is not None else None,
                        confidence_column="confidence" if train.confidence is not None else None)
    new_cfg = validate_tree(tree)
    # counts["store"]: the SQLite file, or the URL with its password masked
    record = {**counts, "used": len(added) + len(relabelled) + same,
              "added": len(added), "relabelled": len(relabelled), "already_right": same, "skipped_held_out": skipped,
              "pool_texts_added": len(pool_new), "pool_note": pool_note,
              "added_labels": dict(Counter(c["label"] for c in added)) if task != "ner" else None,
              "relabelled_examples": relabelled[:200], "train_examples": len(rows)}
    write_text(out / "feedback.json", json.dumps(record, indent=2))
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info["feedback"] = {k: v for k, v in record.items() if k != "relabelled_examples"}
    write_text(info_path, json.dumps(info, indent=2))
    write_text(run_dir / "config.toml", dump_toml(new_cfg))
    return new_cfg


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _row(task, id_, text, tokens, label, weight, confidence) -> dict:
    row = {"id": id_}
    if task == "ner":
        row.update(tokens=list(tokens if tokens is not None else text.split()), tags=list(label))
    else:
        row.update(text=text, label=label)
    if weight is not None:
        row["weight"] = weight
    if confidence is not None:
        row["confidence"] = confidence
    return row


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

