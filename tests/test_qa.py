"""Extractive QA as a task like the others: SQuAD-layout data validated line by line and split by
article, windows over long contexts, n-best span decoding, the official EM / F1, error kinds, the
paired test of per-question F1, training and the loop on a tiny BERT, and the shipping path
(predict, serve with its page, export, monitor, feedback)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import QA_DATA, make_qa_rows, write_jsonl

from reflectlm.data import DataError, load, load_splits
from reflectlm.tasks import get_task
from reflectlm.tasks.qa import (answers_from_logits, best_over, encode, error_kind, exact_match, normalize_answer,
                                question_type, token_f1)

QA = get_task("qa")


# --------------------------------------------------------------------------- the official metric


def test_normalisation_and_scores_against_hand_computed_cases():
    assert normalize_answer("The  Cat!") == "cat" and normalize_answer("a, an; THE end.") == "end"
    assert normalize_answer("theatre") == "theatre"  # an article only as a whole word
    assert exact_match("the Denver Broncos", "Denver Broncos!") == 1.0 and exact_match("Broncos", "Denver") == 0.0
    # "the big red dog" -> [big, red, dog]; "red dog" -> [red, dog]: P 2/3, R 1, F1 0.8
    assert token_f1("the big red dog", "red dog") == pytest.approx(0.8)
    # a repeated token counts as often as both sides have it: [a? no: "x x y"] vs "x y y": common x1 y1
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("", "anything") == 0.0 and token_f1("the", "a") == 0.0  # both normalise to nothing shared
    # the best over the references
    assert best_over(token_f1, "Denver", ["Denver Broncos", "Denver"]) == 1.0
    assert best_over(exact_match, "x", []) == 0.0


@pytest.mark.parametrize("question,kind", [
    ("How many people live there?", "how many"), ("how much did it cost", "how much"),
    ("In what year did it end?", "what"), ("Who wrote Hamlet?", "who"), ("Whose idea was it?", "who"),
    ("When was it built?", "when"), ("Why did they leave?", "why"), ("How did it start?", "how"),
    ("The capital of France is?", "other"), ("Which team won?", "which"), ("Where is it?", "where")])
def test_question_types(question, kind):
    assert question_type(question) == kind


# --------------------------------------------------------------------------- data


def test_squad_layout_loads_with_contexts_titles_and_answers(tmp_path):
    rows = make_qa_rows(12)
    rows[1]["answers"] = [{"text": t, "answer_start": s} for t, s in
                          zip(rows[1]["answers"]["text"], rows[1]["answers"]["answer_start"])]  # the list layout
    ds = load(write_jsonl(tmp_path / "q.jsonl", rows), "qa", id_column="id")
    assert len(ds) == 12 and ds.ids[0] == "q0" and ds.texts[0] == rows[0]["question"]
    assert ds.fields["context"][3] == rows[3]["context"] and ds.fields["title"][3] == rows[3]["title"]
    assert ds.labels[1] == {"text": [rows[1]["answers"][0]["text"]],
                            "answer_start": [rows[1]["answers"][0]["answer_start"]]}
    for ans, c in zip(ds.labels, ds.fields["context"]):
        assert c[ans["answer_start"][0]:][: len(ans["text"][0])] == ans["text"][0]


def _error(tmp_path, rows, **kw) -> str:
    with pytest.raises(DataError) as e:
        load(write_jsonl(tmp_path / "bad.jsonl", rows), "qa", **kw)
    return str(e.value)


def test_bad_qa_input_names_the_line_and_the_fix(tmp_path):
    rows = make_qa_rows(3)
    moved = [dict(r) for r in rows]
    moved[2] = {**moved[2], "answers": {"text": moved[2]["answers"]["text"], "answer_start": [0]}}
    msg = _error(tmp_path, moved)
    assert "bad.jsonl:3" in msg and "is not at offset 0 of the context" in msg and "occurs at offset" in msg
    assert "character offset" in msg
    msg = _error(tmp_path, [{**rows[0], "question": "  "}])
    assert "bad.jsonl:1" in msg and "the question ('question') is empty" in msg
    msg = _error(tmp_path, [{**rows[0], "context": ""}])
    assert "the context ('context') is empty" in msg
    msg = _error(tmp_path, [{k: v for k, v in rows[0].items() if k != "answers"}])
    assert "'answers' is missing or not of the SQuAD layout" in msg and "answer_start" in msg
    msg = _error(tmp_path, [{**rows[0], "answers": {"text": ["x", "y"], "answer_start": [1]}}])
    assert "2 texts and 1 offsets" in msg
    msg = _error(tmp_path, [{k: v for k, v in rows[0].items() if k != "context"}])
    assert "'context' (data.context_key) not found" in msg
    csv = tmp_path / "q.csv"
    csv.write_text("question,context\na,b\n")
    with pytest.raises(DataError, match="JSON lines in the SQuAD layout"):
        load(csv, "qa")


def test_the_selection_split_is_cut_by_article(tmp_path):
    from reflectlm.config import DataConfig

    rows = make_qa_rows(200, articles=20)
    cfg = DataConfig(task="qa", train=str(write_jsonl(tmp_path / "q.jsonl", rows)), selection_fraction=0.2,
                     test_fraction=0.2, **QA_DATA)
    s = load_splits(cfg, seed=0)
    titles = {name: set(ds.fields["title"]) for name, ds in (("train", s.train), ("selection", s.selection),
                                                              ("test", s.test))}
    assert not titles["train"] & titles["selection"] and not titles["train"] & titles["test"]
    assert not titles["selection"] & titles["test"] and s.labels == []
    assert 30 <= len(s.selection) <= 50 and len(s.train) + len(s.selection) + len(s.test) == 200
    # Without titles the paragraph is the group.
    no_title = [{k: v for k, v in r.items() if k != "title"} for r in rows]
    cfg = cfg.model_copy(update={"train": str(write_jsonl(tmp_path / "n.jsonl", no_title))})
    s = load_splits(cfg, seed=0)
    assert not set(s.train.fields["context"]) & set(s.selection.fields["context"])


# --------------------------------------------------------------------------- windows and decoding


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from reflectlm.modeling import packaged_minilm

    return AutoTokenizer.from_pretrained(packaged_minilm())


def test_long_contexts_become_windows_that_carry_the_answer(tmp_path, minilm_tokenizer):
    rows = make_qa_rows(8, long_every=2)
    ds = load(write_jsonl(tmp_path / "q.jsonl", rows), "qa")
    feats = encode(minilm_tokenizer, ds, {}, max_length=48, doc_stride=16)
    by = {}
    for f in feats:
        by.setdefault(f["index"], []).append(f)
    assert len(feats) > len(ds) and any(len(v) > 1 for v in by.values())  # the long paragraphs need several
    for i, fs in by.items():
        assert sum(f["record"] for f in fs) == 1  # one window speaks for a question in the dynamics
        ans, start = ds.labels[i]["text"][0], ds.labels[i]["answer_start"][0]
        inside = [f for f in fs if f["labels"][0] > 0]
        assert inside, "some window holds every (short) answer"
        for f in inside:
            s, e = f["labels"]
            assert f["offsets"][s][0] == start and f["offsets"][e][1] == start + len(ans)
        for f in fs:
            if f["labels"][0] == 0:  # a window without the answer points at [CLS]
                assert f["labels"] == [0, 0]
        assert next(f for f in fs if f["record"]) in inside
        assert all(len(f["input_ids"]) <= 48 for f in fs)
    unlabelled = encode(minilm_tokenizer, ds, None, max_length=48, doc_stride=16)
    assert all(f["labels"] == [-100, -100] for f in unlabelled)


def _feature(offsets, index=0, labels=(0, 0), record=True):
    return {"offsets": offsets, "index": index, "labels": list(labels), "record": record}


def test_decoding_takes_the_best_valid_span_over_all_windows():
    context = "alpha beta gamma delta"
    spans = [(0, 5), (6, 10), (11, 16), (17, 22)]
    offsets = [None] + spans + [None]  # [CLS] w w w w [SEP]
    a = np.full((6, 2), -5.0, dtype=np.float32)
    a[1, 0], a[2, 1] = 3.0, 3.0  # window 1: "alpha beta" scores 6
    b = np.full((6, 2), -5.0, dtype=np.float32)
    b[3, 0], b[4, 1] = 4.0, 4.0  # window 2: "gamma delta" scores 8
    b[4, 0], b[1, 1] = 9.0, 9.0  # an end before its start: never a candidate
    b[0, 0], b[0, 1] = 20.0, 20.0  # [CLS] is outside the context: never an answer
    (out,) = answers_from_logits([_feature(offsets), _feature(offsets, labels=(3, 4))], [a, b], 1, [context],
                                 max_answer_tokens=30, n_best=20)
    assert (out["text"], out["start"], out["end"]) == ("delta", 17, 22)  # 9 + 4: start 4, end 4
    assert 0 < out["score"] <= 1 and out["candidates"][0][0] == "delta"
    probs = [c[3] for c in out["candidates"]]
    assert sum(probs) == pytest.approx(1.0) and probs == sorted(probs, reverse=True)
    assert 0 < out["gold_prob"] < 1  # the labelled window's gold span (3, 4)
    # A one-token maximum keeps only single-token answers.
    (short,) = answers_from_logits([_feature(offsets)], [a], 1, [context], max_answer_tokens=1)
    assert short["text"] in ("alpha", "beta")


@pytest.mark.parametrize("pred,kind", [((0, 22), "too_long"), ((6, 8), "too_short"), ((8, 20), "partial"),
                                       ((30, 35), "wrong_sentence"), ((17, 22), "no_overlap")])
def test_error_kinds(pred, kind):
    context = "alpha beta gamma delta. Second sentence here."
    assert error_kind(pred, [(6, 16)], context) == kind


def test_the_paired_test_of_per_question_f1():
    from reflectlm.compare import compare_scores

    rng = np.random.default_rng(0)
    n = 400
    a = rng.uniform(0, 1, n).round(2)
    b = np.clip(a + np.where(rng.random(n) < 0.3, 0.3, 0.0), 0, 1)  # better on 30 % of the questions
    ea, eb = a > 0.8, b > 0.8
    r = compare_scores(a, b, ea, eb, metric="f1", n_bootstrap=500)
    assert r.promote and r.difference == pytest.approx(float(b.mean() - a.mean())) and r.ci_low > 0
    same = compare_scores(a, a, ea, ea, metric="f1", n_bootstrap=500)
    assert not same.promote and same.difference == 0.0
    # A question type that got worse blocks the promotion (unless allowed).
    groups = np.array(["who"] * 60 + ["what"] * (n - 60))
    b2, eb2 = b.copy(), eb.copy()
    b2[:60], eb2[:60] = 0.0, False
    ea2 = ea.copy()
    ea2[:60] = True
    blocked = compare_scores(a, b2, ea2, eb2, metric="f1", groups=groups, n_bootstrap=500)
    assert blocked.guardrail["worse_classes"] and blocked.guardrail["worse_classes"][0]["class"] == "who"
    if blocked.ci_low > 0:
        assert not blocked.promote and "guardrail" in blocked.reason
    with pytest.raises(ValueError, match="scores in \\[0, 1\\]"):
        compare_scores(a * 100, b, ea, eb)


# --------------------------------------------------------------------------- train, evaluate, predict


def test_a_tiny_bert_learns_to_answer_and_predicts_spans(tiny_config, qa_jsonl, tmp_path):
    from reflectlm.evaluate import predict
    from reflectlm.train import train

    res = train(tiny_config(qa_jsonl, "qa", epochs=4), tmp_path / "run")
    m = res.metrics
    assert m["selection_metric"] == "f1" and {"exact_match", "f1", "per_question_type", "loss"} <= set(m["test"])
    # The fact's value, wherever the paragraph's filler puts it (a quarter of them past the first window).
    assert m["test"]["f1"] > 0.9 and m["selection"]["f1"] > 0.9
    meta = json.loads((res.run_dir / "model" / "reflectlm.json").read_text())
    assert meta["task"] == "qa" and meta["labels"] == [] and meta["options"] == {
        "doc_stride": 24, "max_answer_tokens": 30, "n_best": 20}
    ctx = "so it the animal is cat2 . a"
    (p,) = predict(res.run_dir, [{"question": "what is the animal ?", "context": ctx}])
    assert p["answer"] == "cat2"
    assert ctx[p["start"]:p["end"]] == p["answer"] and 0 < p["confidence"] <= 1 and p["confidence"] == p["score"]
    dyn = np.load(res.run_dir / "dynamics.npz")
    n_train = json.loads((res.run_dir / "run.json").read_text())["data"]["train"]["examples"]
    assert dyn["gold_prob"].shape == (4, n_train) and np.isfinite(dyn["gold_prob"]).all()  # one window per question
    with pytest.raises(ValueError, match="an object with a question and a context"):
        predict(res.run_dir, ["just a text"])


def test_a_qa_round_diagnoses_plans_and_judges_with_what_applies(tiny_config, qa_jsonl, tmp_path):
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    cfg = tiny_config(qa_jsonl, "qa", epochs=2, lr=2e-3)
    tree = cfg.model_dump()
    tree["loop"].update(rounds=1, report=False, checks=["performance", "crossval", "label_issues", "fit", "calibration"])
    result = improve(load_config(tree=tree), tmp_path / "loop")
    rd = result.run_dir / "rounds" / "01"
    findings = json.loads((rd / "findings.json").read_text())
    assert {"check": "crossval", "reason": "does not apply to data.task = 'qa': needs fast_cv (tasks/base.py "
            "capabilities)"} in findings["skipped"]
    assert not findings["failed"], findings["failed"]
    assert {f["check"] for f in findings["findings"]} >= {"performance", "fit", "calibration", "label_issues"}
    plan = json.loads((rd / "plan.json").read_text())
    tried = {row["action"] for row in plan["ranking"]}
    assert not tried & {"fix_labels", "calibrate", "correct_noise", "early_learning", "self_training",
                        "reweight_classes"}, "actions that need class labels are never offered for QA"
    cmp = json.loads((rd / "compare.json").read_text())
    n_selection = json.loads((result.run_dir / "run.json").read_text())["data"]["selection"]["examples"]
    assert cmp["metric"] == "f1" and cmp["n"] == n_selection  # paired over the selection questions
    assert result.summary["test"]["f1"] >= 0 and "exact_match" in result.summary["round0_test"]


# --------------------------------------------------------------------------- shipping


def test_serve_answers_questions_and_keeps_answer_corrections(tiny_qa_run, tmp_path):
    import sqlite3

    from fastapi.testclient import TestClient

    from reflectlm.config import load_deploy_config
    from reflectlm.deploy.serve.app import create_app

    store = tmp_path / "serving.sqlite"
    settings = load_deploy_config(None, [f'serve.store="{store}"', "serve.auth=false", "serve.max_text_chars=400"])
    ctx = "a so the place is lake3 . the colour is red1 . the animal is bird8 . it"
    with TestClient(create_app(tiny_qa_run, settings)) as c:
        info = c.get("/v1/model").json()
        assert info["task"] == "qa" and info["input_fields"] == ["question", "context"]
        r = c.post("/v1/predict", json={"inputs": [{"question": "what is the colour ?", "context": ctx}]})
        assert r.status_code == 200, r.text
        (p,) = r.json()["predictions"]
        assert set(p) >= {"id", "answer", "start", "end", "score", "confidence", "low_confidence"}
        assert ctx[p["start"]:p["end"]] == p["answer"]
        one = c.post("/v1/predict", json={"question": "what is the animal ?", "context": ctx}).json()["predictions"]
        assert len(one) == 1
        bad = c.post("/v1/predict", json={"texts": ["a text"]})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
        missing = c.post("/v1/predict", json={"question": "what?"})
        assert missing.status_code == 422 and "context" in missing.json()["error"]["message"]
        long = c.post("/v1/predict", json={"inputs": [{"question": "q", "context": "x " * 300}]})
        assert long.status_code == 413 and "input 0's context" in long.json()["error"]["message"]
        ok = c.post("/v1/feedback", json={"prediction_id": p["id"], "answer": "red1"})
        assert ok.status_code == 201, ok.text
        wrong = c.post("/v1/feedback", json={"prediction_id": p["id"], "answer": "purple9"})
        assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid_span"
        assert c.post("/v1/feedback", json={"prediction_id": p["id"], "label": "x"}).status_code == 422
        page = c.get("/").text
        assert 'id="context"' in page and "createElement('mark')" in page  # the answer is marked in the context
    row = sqlite3.connect(store).execute("SELECT text, output FROM predictions").fetchone()
    assert json.loads(row[0]) == {"question": "what is the colour ?", "context": ctx}
    assert set(json.loads(row[1])) == {"answer", "start", "end", "score"}
    tags = sqlite3.connect(store).execute("SELECT tags FROM feedback").fetchone()[0]
    assert json.loads(tags) == {"text": "red1", "answer_start": ctx.index("red1")}


def test_answer_corrections_become_training_questions(tiny_qa_run, tmp_path):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from reflectlm.cli import app as cli
    from reflectlm.config import load_deploy_config
    from reflectlm.deploy.serve.app import create_app

    store = tmp_path / "serving.sqlite"
    settings = load_deploy_config(None, [f'serve.store="{store}"', "serve.auth=false", "serve.max_text_chars=400"])
    ctx = "it the animal is horse5 . the place is town2 . the colour is green0 . so"
    with TestClient(create_app(tiny_qa_run, settings)) as c:
        pid = c.post("/v1/predict", json={"question": "what is the place ?", "context": ctx}).json()["predictions"][0]["id"]
        assert c.post("/v1/feedback", json={"prediction_id": pid, "answer": "town2"}).status_code == 201
    out = tmp_path / "next"
    r = CliRunner().invoke(cli, ["run", str(tiny_qa_run / "config.toml"), "--feedback", str(store), "-o", str(out),
                                 "--set", "loop.rounds=0", "--set", "loop.report=false", "-q"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(ln) for ln in (out / "rounds" / "00" / "train.jsonl").read_text().splitlines()]
    mine = [row for row in rows if row["context"] == ctx]
    assert len(mine) == 1 and mine[0]["answers"] == {"text": ["town2"], "answer_start": [ctx.index("town2")]}
    info = json.loads((out / "run.json").read_text())["feedback"]
    assert info["added"] == 1 and "pool" in (info["pool_note"] or "")


def test_export_keeps_the_span_head_behind_the_parity_gate(tiny_qa_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from reflectlm.deploy.export import export
    from reflectlm.deploy.predictor import load_predictor

    info = export(tiny_qa_run, tmp_path / "onnx", onnx=True, repeats=2)
    assert info["status"] == "accepted" and info["metric"] == "f1" and info["attempts"][0]["agreement"] > 0.9
    import onnx

    names = {i.name for i in onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph.input}
    assert names == {"input_ids", "attention_mask", "token_type_ids"}
    ctx = "so the colour is white2 . the animal is dog4 . the place is hill6 . a"
    items = [{"question": "what is the colour ?", "context": ctx}]
    got, ref = load_predictor(tmp_path / "onnx").predict(items), load_predictor(tiny_qa_run).predict(items)
    assert got[0]["answer"] == ref[0]["answer"] and got[0]["score"] == pytest.approx(ref[0]["score"], abs=1e-3)


def test_monitor_reads_the_selection_questions_as_its_reference(tiny_qa_run):
    from reflectlm.deploy.monitor import reference_sample
    from reflectlm.deploy.predictor import load_predictor

    p = load_predictor(tiny_qa_run)
    ref = reference_sample(p, tiny_qa_run)
    sel = load_splits(__import__("reflectlm.config", fromlist=["load_config"]).load_config(
        tiny_qa_run / "config.toml").data, 42).selection
    assert len(ref.labels) == len(sel) and ref.embeddings.shape[0] == len(sel)
    assert set(ref.labels) <= {"1 word", "2-3 words", "4+ words", "(no answer)"}
    assert ((0 <= ref.confidence) & (ref.confidence <= 1)).all()


# --------------------------------------------------------------------------- the real data


def test_a_slice_of_squad_loads_splits_by_article_and_fits_its_windows(minilm_tokenizer):
    from reflectlm.config import data_root

    path = data_root() / "squad_v1.1" / "train.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is not here (REFLECTLM_DATA)")
    ds = load(path, "qa", id_column="id")
    ds = ds.subset([i for i, t in enumerate(ds.fields["title"]) if t in set(ds.fields["title"][:1] + ["Beyoncé"])])
    assert len(set(ds.fields["title"])) == 2 and len(ds) > 300
    feats = encode(minilm_tokenizer, ds, {}, max_length=384, doc_stride=128)
    assert len(feats) >= len(ds)
    held = {f["index"] for f in feats if f["labels"][0] > 0}
    assert len(held) / len(ds) > 0.99  # every answer but a rare tokenisation edge is in some window
    for f in feats[:200]:
        if f["labels"][0] > 0:
            i, (s, e) = f["index"], f["labels"]
            start = ds.labels[i]["answer_start"][0]
            assert f["offsets"][s][0] == start
            assert ds.fields["context"][i][f["offsets"][s][0]:f["offsets"][e][1]].strip() == \
                ds.labels[i]["text"][0].strip()
