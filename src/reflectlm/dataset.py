"""Datasets and the task-agnostic mechanics of reading them: the Dataset every stage passes around,
the error a bad file raises, the readers of CSV / JSONL / Parquet records, stable example ids,
sampling and held-out splits.

What a record means (a text and its class, words and their tags, a question with its context and
answers) is the task's business (reflectlm.tasks); `reflectlm.data.load` joins the two. Nothing
here knows a task: sampling and splitting take the strata, groups and example keys the task gives.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["DataError", "Dataset", "Splits", "assemble", "error", "split", "stratified_sample"]

# Some CSV cells (long documents) exceed the default 128 KiB field limit; sys.maxsize overflows a C
# long on some platforms, so use the largest 32-bit value.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class DataError(ValueError):
    """A data file is unusable; the message names the file (and line) and says how to fix it."""


def error(where: str, problem: str, fix: str) -> DataError:
    return DataError(f"{where}: {problem}. Fix: {fix}.")


# --------------------------------------------------------------------------- the dataset


@dataclass
class Dataset:
    task: str  # the data.task it was read for (a reflectlm.tasks.TASKS key)
    ids: list[str]  # stable: id column, else sha1(input)[:12] with #2, #3 for repeats
    labels: list  # what the task predicts: class names; BIO tags per sentence; answers per question
    texts: list[str]  # what a person reads and the text checks look at: the text; " ".join(words); the question
    tokens: list[list[str]] | None  # the words of a word-tagging task, else None
    weights: np.ndarray | None = None  # (N,) float, >= 0
    confidence: np.ndarray | None = None  # (N,) float in [0, 1]
    source: str = ""  # file path, or "builtin:tweets"
    lines: list[int] = field(default_factory=list)  # 1-based line of each example in `source`
    warnings: list[str] = field(default_factory=list)  # problems found while loading (not errors)
    # Per-example inputs beyond the text, by name (a question's "context" and "title"); every list
    # has one entry per example and follows the examples through subset and concat.
    fields: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices: Iterable[int] | np.ndarray) -> Dataset:
        idx = np.asarray(indices)
        if idx.dtype == bool:  # a mask: taking int(True) as index 1 would be a silent bug
            idx = np.flatnonzero(idx)
        idx = [int(i) for i in idx.reshape(-1)]
        return Dataset(
            task=self.task,
            ids=[self.ids[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            texts=[self.texts[i] for i in idx],
            tokens=None if self.tokens is None else [self.tokens[i] for i in idx],
            weights=None if self.weights is None else self.weights[idx],
            confidence=None if self.confidence is None else self.confidence[idx],
            source=self.source,
            lines=[self.lines[i] for i in idx] if self.lines else [],
            warnings=list(self.warnings),
            fields={k: [v[i] for i in idx] for k, v in self.fields.items()},
        )

    def fingerprint(self) -> str:
        """sha256 over ids, inputs (words, or the text and the other fields) and labels; the same
        content gives the same hex."""
        h = hashlib.sha256()
        content = self.tokens if self.tokens is not None else self.texts
        names = sorted(self.fields)
        for k, (i, x, y) in enumerate(zip(self.ids, content, self.labels)):
            row = [i, x, y] + [self.fields[n][k] for n in names]
            h.update(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()[:16]


@dataclass
class Splits:
    train: Dataset
    selection: Dataset  # decides early stopping and promotions
    test: Dataset | None  # reported only; load_splits always fills it (loaded or carved)
    labels: list[str]  # the model's label list (the task's label_list of train; [] for span answers)
    warnings: list[str]
    # data.simulated_label_noise: {"fraction", "seed", "flipped": {id: {"true", "given"}}}, or None
    simulated: dict | None = None


# --------------------------------------------------------------------------- reading files


def decode(data: bytes, where: str, lenient: bool = False) -> str:
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM (Excel writes one)
        data = data[3:]
    if lenient:
        return data.decode("utf-8", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise error(
            f"{where}:{line}",
            f"byte 0x{data[e.start]:02x} at column {column} is not valid UTF-8 (the file is in another encoding)",
            "re-save the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 in.csv > out.csv`, or 'Save as: CSV UTF-8')",
        ) from None


def read_text(path: Path, lenient: bool = False) -> str:
    data = path.read_bytes()
    text = decode(data, str(path), lenient)
    if not text.strip():
        raise error(str(path), "the file is empty", "add examples to it, or point the config at the right file")
    return text


def csv_rows(text: str, where: str, delimiter: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (first line of the record, fields) rows; line numbers count physical lines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            if not row:  # a blank line
                start = reader.line_num + 1
                continue
            if header is None:
                header = [c.strip() for c in row]
            else:
                rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as e:
        raise error(
            f"{where}:{start}",
            f"cannot parse this record ({e})",
            "wrap fields that contain the delimiter, a quote or a line break in double quotes, "
            'and double the quotes inside ("")',
        ) from None
    assert header is not None  # the text is not blank, so there is a first row
    for line, row in rows:
        if len(row) != len(header):
            raise error(
                f"{where}:{line}",
                f"this record has {len(row)} fields but the header has {len(header)} ({', '.join(header)})",
                "quote the text if it contains the delimiter, or add/remove fields so every row matches the header",
            )
    return header, rows


def jsonl_records(text: str, where: str) -> list[tuple[int, dict]]:
    if text.lstrip().startswith("["):
        raise error(
            where,
            "this is a JSON array, not JSON Lines",
            "write one JSON object per line (JSON Lines), e.g. with "
            "`python -c 'import json,sys; [print(json.dumps(r)) for r in json.load(sys.stdin)]' < in.json > out.jsonl`",
        )
    records = []
    # split("\n") rather than splitlines(): JSON strings may legally contain U+2028 etc.
    for no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(
                f"{where}:{no}",
                f"not valid JSON ({e.msg} at column {e.colno})",
                "fix the JSON on this line or delete it",
            ) from None
        if not isinstance(rec, dict):
            raise error(
                f"{where}:{no}",
                f"expected a JSON object, got {type(rec).__name__}",
                'write one object per line, e.g. {"text": "...", "label": "..."}',
            )
        records.append((no, rec))
    return records


def parquet_records(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    import pyarrow.parquet as pq  # only Parquet users pay for the import

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise error(
            str(path),
            f"cannot read it as Parquet ({e})",
            "re-export it with pandas.DataFrame.to_parquet, or fix data.format",
        ) from None
    rows = table.to_pylist()
    return list(table.column_names), [(i + 1, row) for i, row in enumerate(rows)]


# --------------------------------------------------------------------------- cells -> values


def is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def text_cell(value: Any, where: str, column: str) -> str:
    if isinstance(value, (dict, list)):
        raise error(
            where,
            f"{column!r} must be a string, got {type(value).__name__}",
            "store the text as a plain string",
        )
    if is_blank(value):
        raise error(where, f"the text ({column!r}) is empty", "fill in the text or delete the example")
    return value if isinstance(value, str) else str(value)


def label_cell(value: Any, where: str, column: str) -> str:
    if isinstance(value, (dict, list)):
        raise error(
            where,
            f"the label ({column!r}) must be a single class name, got {type(value).__name__}",
            "store one class name per example",
        )
    if is_blank(value):
        raise error(where, f"the label ({column!r}) is missing or empty", "add the class name, or delete the example")
    return str(value).strip()


def number_cell(value: Any, where: str, column: str, kind: str) -> float | None:
    """A weight / confidence cell; None for a blank cell (the caller fills the default)."""
    if is_blank(value):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if kind == "weight":
        if not math.isfinite(x) or x < 0:
            raise error(
                where,
                f"weight ({column!r}) is {value!r}; it must be a number >= 0",
                "write a non-negative number (1.0 is the neutral weight) or leave it blank",
            )
    elif not (0.0 <= x <= 1.0):  # also false for nan
        raise error(
            where,
            f"confidence ({column!r}) is {value!r}; it must be a number in [0, 1]",
            "write the annotator confidence as a fraction between 0 and 1 (e.g. 0.85, not 85%) or leave it blank",
        )
    return x


def column_error(where: str, column: str, setting: str, available: list[str], per_record: bool = False) -> DataError:
    near = difflib.get_close_matches(column, available, n=1, cutoff=0.75)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    has = "this record has keys" if per_record else "the file has columns"
    return error(
        where,
        f"column {column!r} ({setting}) not found; {has}: {', '.join(map(repr, available)) or '(none)'}",
        f"set {setting} to one of them{hint}, or rename the column in the file",
    )



# --------------------------------------------------------------------------- records -> Dataset

# What the example-level columns are called in data.* (the task's own columns come on top).
OPTIONAL_COLUMNS = ("id_column", "weight_column", "confidence_column")


def parse_records(records: list[tuple[int, dict]], where: str, cols: dict[str, str | None], needed: list[tuple[str, str]],
                  parse, per_record: bool, unit: str = "line") -> dict:
    """Validate records (dicts from CSV / JSONL / Parquet) into the parallel lists of a Dataset.

    needed: the (column, config key) pairs every record must have; parse(rec, at) -> the task's
    part of one example ({"text", "label"} and optionally "tokens", "fields", "key"), or None to
    skip it (with a warning the task adds); `unit` is "line" for text files and "row" for Parquet.
    The example-level columns (id, weight, confidence) are read here for every task.
    """
    out: dict[str, list] = defaultdict(list)
    needed = needed + [(cols[k], f"data.{k}") for k in OPTIONAL_COLUMNS if cols.get(k) is not None]
    for line, rec in records:
        at = f"{where}:{line}" if unit == "line" else f"{where} row {line}"
        if per_record:  # JSONL: each line may have its own keys
            for column, setting in needed:
                if column not in rec and setting not in ("data.weight_column", "data.confidence_column"):
                    raise column_error(at, column, setting, list(rec), per_record=True)
        one = parse(rec, at)
        if one is None:
            out["skipped"].append(line)
            continue
        add_example(out, one, line)
        if cols.get("id_column") is not None:
            value = rec[cols["id_column"]]
            if is_blank(value):
                raise error(at, f"the id ({cols['id_column']!r}) is empty",
                            "give every example an id, or unset data.id_column to use generated ids")
            out["given_ids"].append(str(value).strip())
        for key, kind in (("weight_column", "weight"), ("confidence_column", "confidence")):
            if cols.get(key) is not None:
                out[kind].append(number_cell(rec.get(cols[key]), at, cols[key], kind))
    return out


def add_example(out: dict, one: dict, line: int) -> None:
    """Append one parsed example (parse_records' `parse` result) to the parallel lists."""
    out["texts"].append(one["text"])
    out["labels"].append(one["label"])
    out["lines"].append(line)
    out["keys"].append(one.get("key", one["text"]))
    if "tokens" in one:
        out["tokens"].append(one["tokens"])
    for name, value in one.get("fields", {}).items():
        out.setdefault("fields", {}).setdefault(name, []).append(value)


def assemble(parts: dict, task: str, source: str, where: str, cols: dict) -> Dataset:
    """The Dataset of parsed parts: ids (given, or from each example's key), weights and confidence."""
    texts, lines = parts["texts"], parts["lines"]
    if not texts:
        raise error(where, "no examples found (only a header, blank lines or empty sentences)", "add examples to the file")
    warnings = list(parts.get("warnings", []))
    if cols.get("id_column") is not None:
        ids = parts["given_ids"]
        first: dict[str, int] = {}
        for i, line in zip(ids, lines):
            if i in first:
                raise error(f"{where}:{line}", f"id {i!r} is already used at line {first[i]}",
                            "make the ids unique, or unset data.id_column to use generated ids")
            first[i] = line
    else:
        # Content-derived ids survive reordering and re-loading; repeats get #2, #3 in file order.
        seen: Counter[str] = Counter()
        ids = []
        for t in parts.get("keys") or texts:
            h = hashlib.sha1(t.encode("utf-8")).hexdigest()[:12]
            seen[h] += 1
            ids.append(h if seen[h] == 1 else f"{h}#{seen[h]}")

    arrays = {}
    for kind, default in (("weight", 1.0), ("confidence", 1.0)):
        column = cols.get(f"{kind}_column")
        if column is None:
            arrays[kind] = None
            continue
        values = parts[kind]
        blank = sum(v is None for v in values)
        if blank == len(values):
            raise error(where, f"the {kind} column {column!r} is empty in every example",
                        f"fill it in, or unset data.{kind}_column")
        if blank:
            # A blank cell means "not given": the example counts as if the column did not exist.
            warnings.append(f"{where}: {blank} of {len(values)} examples have no {kind} ({column!r}); using {default}")
        arrays[kind] = np.array([default if v is None else v for v in values], dtype=np.float64)

    return Dataset(task=task, ids=ids, labels=parts["labels"], texts=texts, tokens=parts.get("tokens") or None,
                   weights=arrays["weight"], confidence=arrays["confidence"], source=source, lines=lines,
                   warnings=warnings, fields=dict(parts.get("fields") or {}))


# --------------------------------------------------------------------------- sampling and splits


def where_of(ds: Dataset, i: int) -> str:
    return f"{ds.source}:{ds.lines[i]}" if ds.lines else f"{ds.source}#{i}"


def stratified_sample(ds: Dataset, n: int, seed: int, *, strata: Sequence | None = None,
                      min_per_class: int = 1) -> Dataset:
    """n examples with the proportions of `strata` (one key per example, e.g. the class; None:
    uniformly at random), in file order.

    Each stratum keeps at least `min_per_class` examples (when it has them and n allows), so a rare
    class is not sampled away and later splits can still be stratified.
    """
    if n >= len(ds):
        return ds
    rng = np.random.default_rng(seed)
    if strata is None:
        return ds.subset(np.sort(rng.choice(len(ds), size=n, replace=False)))
    by_class: dict = defaultdict(list)
    for i, y in enumerate(strata):
        by_class[y].append(i)
    classes = sorted(by_class)
    counts = np.array([len(by_class[c]) for c in classes])
    floor = np.minimum(counts, min_per_class)
    if floor.sum() > n:
        floor = np.minimum(counts, 1) if len(classes) <= n else np.zeros_like(counts)
    # Largest-remainder allocation keeps the proportions exact up to rounding ...
    exact = n * counts / counts.sum()
    take = np.floor(exact).astype(int)
    take[np.argsort(-(exact - take), kind="stable")[: n - take.sum()]] += 1
    # ... then classes below their floor are topped up, paid for by the classes with most to spare.
    short = np.maximum(floor - take, 0)
    take += short
    for _ in range(int(short.sum())):
        take[np.argmax(take - floor)] -= 1
    chosen = [i for c, k in zip(classes, take) for i in rng.choice(by_class[c], size=int(k), replace=False)]
    return ds.subset(sorted(chosen))


def check_class_counts(ds: Dataset, strata: Sequence | None, need: int, what: str) -> None:
    """Every stratum must have `need` examples to be carved stratified (no strata: nothing to check)."""
    if strata is None:
        return
    small = sorted((c, k) for c, k in Counter(strata).items() if k < need)
    if small:
        listed = ", ".join(f"{c!r} ({k})" for c, k in small)
        raise error(ds.source, f"{len(small)} class(es) have too few examples to carve {what} stratified by class "
                               f"(need at least {need} each): {listed}",
                    "add examples of these classes, remove them, or provide data.selection / data.test files")


def split(ds: Dataset, n_held: int, seed: int, what: str = "a held-out split", *, strata: Sequence | None = None,
          groups: Sequence | None = None, keys: Sequence[str] | None = None) -> tuple[Dataset, Dataset]:
    """(rest, held_out) with n_held examples held out.

    groups (one per example, e.g. a question's article): whole groups are held out, about n_held
    examples of them, so nothing of a group is on both sides. strata (e.g. the class): held out in
    proportion, exactly n_held. Neither: at random, exactly n_held. Without groups, a held-out
    example whose key (its normalised input; default the text) also occurs in the rest goes back
    and one of the same stratum takes its place (see _keep_duplicates_together).
    """
    n = len(ds)
    if n < 2 or not 1 <= n_held < n:
        raise error(ds.source, f"cannot carve {what} of {n_held} examples out of {n}",
                    "add examples, change the fractions, or provide data.selection / data.test files")
    if groups is not None:
        rest, held = _group_split(groups, n_held, seed, ds, what)
        return ds.subset(rest), ds.subset(held)
    keys = [_norm(t) for t in (keys if keys is not None else ds.texts)]
    if strata is None:
        perm = np.random.default_rng(seed).permutation(n)
        rest, held = _keep_duplicates_together(keys, None, perm[n_held:], perm[:n_held], seed)
        return ds.subset(rest), ds.subset(held)
    from sklearn.model_selection import train_test_split

    check_class_counts(ds, strata, 2, what)
    k = len(set(strata))
    if n_held < k or n - n_held < k:
        raise error(ds.source, f"{what} of {n_held} examples (and a remainder of {n - n_held}) cannot hold all {k} "
                               "classes",
                    f"hold out a fraction of at least {k / n:.3f} (data.selection_fraction / data.test_fraction), "
                    "add examples, or provide data.selection / data.test files")
    rest, held = train_test_split(np.arange(n), test_size=n_held, stratify=list(strata), random_state=seed)
    rest, held = _keep_duplicates_together(keys, strata, rest, held, seed)
    return ds.subset(rest), ds.subset(held)


def _group_split(groups: Sequence, n_held: int, seed: int, ds: Dataset, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Whole groups in a random order go to the held-out side while that brings its size closer to
    n_held; at least one group on each side."""
    members: dict = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    names = sorted(members, key=str)
    if len(names) < 2:
        raise error(ds.source, f"all {len(ds)} examples belong to one group ({names[0]!r}), so {what} cannot be "
                               "carved without putting part of it on both sides",
                    "provide data.selection / data.test files, or data from more than one article / context")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    held: list[int] = []
    for g in order[:-1]:  # the last group always stays on the training side
        if held and abs(len(held) + len(members[g]) - n_held) >= abs(len(held) - n_held):
            continue
        held += members[g]
        if len(held) >= n_held:
            break
    held_set = set(held)
    return (np.array(sorted(set(range(len(ds))) - held_set), dtype=int), np.array(sorted(held_set), dtype=int))


def _keep_duplicates_together(keys: list[str], strata: Sequence | None, rest: np.ndarray, held: np.ndarray,
                              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Move every held-out example whose key also occurs in `rest` back to `rest`, and in its place
    hold out an example of the same stratum (none: any) whose key occurs once - so a carved split
    never scores the model on an input it trained on, and keeps its size and class mix. Returns
    sorted index arrays."""
    rest_keys = Counter(keys[i] for i in rest)
    leaked = [int(i) for i in held if rest_keys[keys[i]]]
    if not leaked:
        return np.sort(rest), np.sort(held)
    counts = Counter(keys)
    label = (lambda i: strata[i]) if strata is not None else (lambda i: None)
    rng = np.random.default_rng([seed, 1])
    spare: dict = defaultdict(list)  # stratum -> rest examples with a unique key, in random order
    for i in rng.permutation(rest):
        if counts[keys[i]] == 1:
            spare[label(int(i))].append(int(i))
    out_rest, out_held = set(int(i) for i in rest), set(int(i) for i in held)
    for i in leaked:
        out_held.discard(i)
        out_rest.add(i)
        if spare[label(i)]:
            j = spare[label(i)].pop()
            out_rest.discard(j)
            out_held.add(j)
    return np.array(sorted(out_rest), dtype=int), np.array(sorted(out_held), dtype=int)


def fraction_size(n: int, fraction: float) -> int:
    """round(fraction * n), at least 1 and at most n - 1."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction {fraction} is outside (0, 1). Fix: use e.g. 0.1.")
    return min(max(int(round(fraction * n)), 1), n - 1)


def _norm(text: str) -> str:
    # Duplicate / leakage checks ignore case and spacing: "Hi  there" and "hi there" are the same example.
    return " ".join(text.split()).casefold()


def _short(label: Any) -> str:
    text = repr(label) if isinstance(label, str) else json.dumps(label, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def duplicate_warning(ds: Dataset, keys: Sequence[str] | None = None) -> str | None:
    """A warning naming examples whose input (key; default the text) occurs more than once."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(keys if keys is not None else ds.texts):
        groups[_norm(t)].append(i)
    dups = [g for g in groups.values() if len(g) > 1]
    if not dups:
        return None
    extra = sum(len(g) - 1 for g in dups)
    shown = "; ".join(
        f"{ds.texts[g[0]][:50]!r} at lines {', '.join(str(ds.lines[i]) for i in g[:4])}" for g in dups[:2]
    )
    msg = f"{ds.source}: {extra} duplicate text(s) in train ({len(dups)} texts repeated), e.g. {shown}"
    conflicting = [g for g in dups if len({json.dumps(ds.labels[i]) for i in g}) > 1]
    if conflicting:
        g = conflicting[0]
        a, b = (_short(ds.labels[i]) for i in g[:2])
        msg += (f"; {len(conflicting)} of them carry conflicting labels, "
                f"e.g. line {ds.lines[g[0]]} {a} vs line {ds.lines[g[1]]} {b} — fix or drop one")
    return msg


def leakage_warning(a: Dataset, a_name: str, b: Dataset, b_name: str, a_keys: Sequence[str] | None = None,
                    b_keys: Sequence[str] | None = None) -> str | None:
    """A warning when inputs (keys; default the texts) of split b also occur in split a."""
    seen = {_norm(t): i for i, t in enumerate(a_keys if a_keys is not None else a.texts)}
    hits = [(j, seen[_norm(t)]) for j, t in enumerate(b_keys if b_keys is not None else b.texts) if _norm(t) in seen]
    if not hits:
        return None
    j, i = hits[0]
    return (f"{len(hits)} of {len(b)} {b_name} texts also appear in {a_name} (e.g. {where_of(b, j)} = "
            f"{where_of(a, i)}); their {b_name} scores are optimistic — remove them from one side")
