"""The full round trip: a trained tiny model is served, gets predictions and corrections, and
`reflectlm run CONFIG --feedback STORE` trains on the corrections and pools the rest."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from reflectlm.cli import app as cli  # noqa: E402
from reflectlm.config import load_config, load_deploy_config  # noqa: E402
from reflectlm.data import load_splits  # noqa: E402
from reflectlm.deploy.serve.app import create_app  # noqa: E402


def test_corrections_from_production_become_the_next_runs_training_data(tiny_cls_run, tmp_path):
    store = tmp_path / "serving.sqlite"
    cfg = load_config(tiny_cls_run / "config.toml")
    splits = load_splits(cfg.data, cfg.train.seed)
    held_out_text = splits.selection.texts[0]
    train_text, train_label = splits.train.texts[0], splits.train.labels[0]
    new = {"wonderful fantastic evening zz1": "pos", "dreadful horrible morning zz2": "neg",
           "mail me at ann@example.com about the lamp zz3": "neu"}
    unlabelled = ["some sofa and a lamp zz4", "a cushion zz5"]
    settings = load_deploy_config(None, [f'serve.store="{store}"', "serve.auth=false"])
    with TestClient(create_app(tiny_cls_run, settings)) as c:
        texts = list(new) + [held_out_text, train_text] + unlabelled
        preds = c.post("/v1/predict", json={"texts": texts}).json()["predictions"]
        by_text = dict(zip(texts, preds))
        for t, y in new.items():
            assert c.post("/v1/feedback", json={"prediction_id": by_text[t]["id"], "label": y}).status_code == 201
        other = next(lab for lab in ("neg", "neu", "pos") if lab != train_label)
        for t, y in ((held_out_text, "pos"), (train_text, other)):
            assert c.post("/v1/feedback", json={"prediction_id": by_text[t]["id"], "label": y}).status_code == 201
    out = tmp_path / "next"
    r = CliRunner().invoke(cli, ["run", str(tiny_cls_run / "config.toml"), "--feedback", str(store), "-o", str(out),
                                 "--set", "loop.rounds=0", "--set", "loop.report=false", "-q"])
    assert r.exit_code == 0, r.output
    assert "production feedback: 4 corrections used (3 new texts, 1 relabelled" in r.output

    info = json.loads((out / "run.json").read_text())["feedback"]
    assert info["corrections"] == 5 and info["added"] == 3 and info["relabelled"] == 1
    assert info["skipped_held_out"] == 1  # a selection text must not train the model it selects
    assert info["pool_texts_added"] == 2
    # The round's own record of its training data holds the corrections with their verified labels.
    rows = [json.loads(ln) for ln in (out / "rounds" / "00" / "train.jsonl").read_text().splitlines()]
    got = {row["text"]: row["label"] for row in rows}
    assert got["wonderful fantastic evening zz1"] == "pos" and got["dreadful horrible morning zz2"] == "neg"
    assert got["mail me at [EMAIL] about the lamp zz3"] == "neu"  # stored masked, trained masked
    assert got[train_text] == other
    assert held_out_text not in got
    assert len(rows) == len(splits.train) + 3
    # The run describes itself: its config points at the files it wrote; selection is unchanged.
    run_cfg = load_config(out / "config.toml")
    assert run_cfg.data.train.endswith("feedback/train.jsonl") and run_cfg.loop.pool.endswith("feedback/pool.txt")
    assert load_splits(run_cfg.data, run_cfg.train.seed).selection.ids == splits.selection.ids
    assert (out / "feedback" / "pool.txt").read_text().splitlines() == unlabelled


def test_feedback_with_resume_and_a_missing_store_say_what_to_do(tiny_cls_run, tmp_path):
    r = CliRunner().invoke(cli, ["run", str(tiny_cls_run / "config.toml"), "--feedback", str(tmp_path / "x.sqlite"),
                                 "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not a production store" in r.output
    r = CliRunner().invoke(cli, ["run", str(tiny_cls_run / "config.toml"), "--feedback", str(tmp_path), "--resume"])
    assert r.exit_code == 2 and "resumes from its own config" in r.output


def test_the_report_says_how_many_production_corrections_were_used(tmp_path):
    from reflectlm.report import write_report
    from reflectlm.report.synthetic import make_synthetic_run

    run = make_synthetic_run(tmp_path / "run", classes=3, n_train=60, n_eval=30, rounds=1, steps=10)
    info = json.loads((run / "run.json").read_text())
    info["feedback"] = {"store": "/srv/serving.sqlite", "used": 7, "added": 5, "relabelled": 2,
                        "corrected_model_errors": 4, "skipped_held_out": 1, "pool_texts_added": 30,
                        "added_labels": {"pos": 3, "neg": 2}}
    (run / "run.json").write_text(json.dumps(info))
    html = write_report(run).read_text()
    assert "Production feedback" in html
    assert ("7 corrections from /srv/serving.sqlite used: 5 new training texts (neg 2, pos 3), 2 training labels "
            "replaced, 4 where the served model had been wrong") in html


def test_ner_span_corrections_become_tagged_training_sentences(tiny_ner_run, tmp_path):
    store = tmp_path / "serving.sqlite"
    settings = load_deploy_config(None, [f'serve.store="{store}"', "serve.auth=false"])
    text = "so the Berlin and Mary Lee was"
    with TestClient(create_app(tiny_ner_run, settings)) as c:
        pid = c.post("/v1/predict", json={"texts": [text, "the a it"]}).json()["predictions"][0]["id"]
        spans = [{"type": "location", "start": 7, "end": 13}, {"type": "person", "start": 18, "end": 26}]
        assert c.post("/v1/feedback", json={"prediction_id": pid, "entities": spans}).status_code == 201
    out = tmp_path / "next"
    r = CliRunner().invoke(cli, ["run", str(tiny_ner_run / "config.toml"), "--feedback", str(store), "-o", str(out),
                                 "--set", "loop.rounds=0", "--set", "loop.report=false", "-q"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(ln) for ln in (out / "rounds" / "00" / "train.jsonl").read_text().splitlines()]
    mine = [row for row in rows if row["text"] == text]
    assert len(mine) == 1 and mine[0]["tags"] == ["O", "O", "B-location", "O", "B-person", "I-person", "O"]
    assert json.loads((out / "run.json").read_text())["feedback"]["added"] == 1
    assert (out / "feedback" / "pool.txt").read_text().splitlines() == ["the a it"]


def test_keys_command_prints_a_key_once_and_revokes_it(tmp_path):
    keys = tmp_path / "keys.toml"
    r = CliRunner().invoke(cli, ["keys", "add", "ci", "--file", str(keys)])
    assert r.exit_code == 0
    key = r.stdout.strip().splitlines()[0]
    assert key.startswith("rlm_") and key not in keys.read_text()
    from reflectlm.deploy.serve.auth import KeyRing

    assert KeyRing(keys, env="").verify(key) == "ci"
    assert CliRunner().invoke(cli, ["keys", "revoke", "ci", "--file", str(keys)]).exit_code == 0
    with pytest.raises(Exception, match="revoked"):
        KeyRing(keys, env="").verify(key)
    bad = CliRunner().invoke(cli, ["keys", "revoke", "nobody", "--file", str(keys)])
    assert bad.exit_code == 2 and "no key named 'nobody'" in bad.output
