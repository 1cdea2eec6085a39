"""The run report: report.html from tiny real runs (a loop run built from real training runs, a
plain training run, a half-finished loop, an NER run), TensorBoard events read back with
TensorBoard's own reader, MLflow tracking, and the terminal views and CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from reflectlm.cli import app
from reflectlm.report import SECTIONS, list_runs, load_run, show, write_report, write_tensorboard

LOOP_TOP_FILES = {"config.toml", "run.json", "store.sqlite", "champion", "summary.json", "rounds"}
ROUND_FILES = {"config.toml", "metrics.json", "dynamics.npz", "gradients.npz", "plan.json", "decision.json"}


# --------------------------------------------------------------------------- fixtures: tiny real runs


def _config(tiny_bert_dir, train: Path, task: str = "classification", **train_kw):
    from reflectlm.config import load_config

    tree = {"data": {"task": task, "train": str(train), "selection_fraction": 0.2, "test_fraction": 0.2},
            "model": {"name": str(tiny_bert_dir)},
            "train": {"epochs": 3, "batch_size": 16, "lr": 1e-2, "head_lr": 0.0, "telemetry_every": 2,
                      "precision": "fp32", **train_kw},
            "run": {"quiet": True}}
    return load_config(tree=tree)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("report-ws")


@pytest.fixture(scope="module")
def cls_data(workspace) -> Path:
    from conftest import make_cls_rows

    # Every 20th label flipped to the next class: the report must show real suspected label errors
    # (on clean rows a well-fitted out-of-fold head rightly flags none).
    rows = [(t, ["neg", "neu", "pos"][(["neg", "neu", "pos"].index(y) + 1) % 3] if i % 20 == 7 else y)
            for i, (t, y) in enumerate(make_cls_rows(240))]
    path = workspace.parent / "report-cls.csv"
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def train_run(tiny_bert_dir, cls_data, workspace) -> Path:
    """`reflectlm train` + `reflectlm diagnose`: the plain layout, diagnosed."""
    from reflectlm.diagnose import run_diagnosis
    from reflectlm.reflect import reflect_run
    from reflectlm.train import train

    run = train(_config(tiny_bert_dir, cls_data), workspace / "plain").run_dir
    reflect_run(run, run_diagnosis(run, cv="fast"))  # what `reflectlm diagnose RUN` does
    return run


def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


def build_loop_run(path: Path, rounds: list[Path], diagnosed: Path, promote: list[bool]) -> Path:
    """The loop's run directory (issue 5's format) from real training runs: rounds[k] becomes
    rounds/kk; the diagnosis of `diagnosed` motivates every round's plan; the A/B numbers are
    computed from the runs' real selection metrics."""
    from scipy.stats import binomtest

    path.mkdir(parents=True)
    metric = "macro_f1"
    champion, champ_m, records = 0, None, []
    diag = json.loads((diagnosed / "findings.json").read_text())
    targets = json.loads((diagnosed / "targets.json").read_text())
    plans = [[], [{"action": "fix_labels", "params": {"max_fraction": 0.05}, "addresses": ["label_issues"]},
                  {"action": "reweight_classes", "params": {"power": 0.5}, "addresses": ["high_error_class"]}],
             [{"action": "regularize", "params": {"label_smoothing": 0.1}, "addresses": ["ambiguous", "cv_spread"]}]]
    for k, src in enumerate(rounds):
        d = path / "rounds" / f"{k:02d}"
        d.mkdir(parents=True)
        for name in ("config.toml", "dynamics.npz", "gradients.npz"):
            shutil.copy(src / name, d / name)
        m = json.loads((src / "metrics.json").read_text())
        # The loop trains rounds without the test split (it is read once, at the end: summary.json).
        _write(d / "metrics.json", {k: v for k, v in m.items() if k != "test"})
        sel = m["selection"][metric]
        _write(d / "plan.json", {"actions": plans[k % len(plans)], "ranking": [t["finding_kind"] for t in targets]})
        promoted = k == 0 or promote[k - 1]
        if k > 0:
            (d / "findings.json").write_text(json.dumps(diag), encoding="utf-8")
            (d / "targets.json").write_text(json.dumps(targets), encoding="utf-8")
            diff = sel - champ_m[metric]
            b, c = 9, 4 if diff > 0 else 11
            p = binomtest(min(b, c), b + c, 0.5).pvalue
            reason = ("challenger better: interval above 0" if promoted
                      else f"difference {diff:+.4f} is not significant (McNemar p = {p:.2g})")
            _write(d / "compare.json", {"metric": metric, "mode": "superiority", "champion": champ_m[metric],
                                        "challenger": sel, "difference": diff, "ci_low": diff - 0.05,
                                        "ci_high": diff + 0.05, "p_bootstrap": 0.2,
                                        "mcnemar": {"b": b, "c": c, "p_value": p}, "alpha": 0.05, "margin": 0.0,
                                        "guardrail": {"ok": True, "worst_class_drop": 0.0}, "promote": promoted,
                                        "reason": reason, "n": m["selection"]["n"]})
        if promoted:
            champion, champ_m = k, m["selection"]
            shutil.copytree(src / "model", d / "model")
        _write(d / "decision.json", {"round": k, "promoted": promoted, "reason": "baseline" if k == 0 else reason,
                                     "champion_round": champion, "selection": sel, "seconds": 3.0,
                                     "examples_trained": m["examples_trained"]})
        records.append({"round": k, "actions": [a["action"] for a in plans[k % len(plans)]], "selection": sel,
                        "promoted": promoted, "difference": None if k == 0 else diff,
                        "ci_low": None if k == 0 else diff - 0.05, "ci_high": None if k == 0 else diff + 0.05,
                        "p_mcnemar": None if k == 0 else p, "reason": "baseline" if k == 0 else reason})
    cal = next(f for f in diag["findings"] if f["kind"] == "miscalibration")["evidence"]
    bins = cal["reliability"]
    _write(path / "rounds" / f"{champion:02d}" / "calibration.json",
           {"temperature": cal["temperature"], "ece_before": cal["ece"], "ece_after": cal["ece_after_temperature"],
            "bins_before": bins, "bins_after": [{**b, "accuracy": b["confidence"]} for b in bins]})
    shutil.copy(rounds[0] / "config.toml", path / "config.toml")
    os.symlink(Path("rounds") / f"{champion:02d}", path / "champion")
    info = json.loads((rounds[0] / "run.json").read_text())
    first = json.loads((rounds[0] / "metrics.json").read_text())
    best = json.loads((rounds[champion] / "metrics.json").read_text())
    values = [{"finding_kind": "label_issues", "action": "fix_labels", "n": 1, "mean_gain": 0.02, "promotions": 1},
              {"finding_kind": "ambiguous", "action": "regularize", "n": 1, "mean_gain": -0.01, "promotions": 0}]
    con = sqlite3.connect(path / "store.sqlite")  # store.py's action_values table: one row per round and pair
    con.execute("CREATE TABLE action_values (round INTEGER, finding_kind TEXT, action TEXT, task TEXT, gain REAL, "
                "promoted INTEGER, PRIMARY KEY (round, finding_kind, action))")
    con.executemany("INSERT INTO action_values VALUES (?, ?, ?, 'classification', ?, ?)",
                    [(k + 1, v["finding_kind"], v["action"], v["mean_gain"], v["promotions"]) for k, v in enumerate(values)])
    con.commit()
    con.close()
    _write(path / "summary.json", {"selection_metric": metric, "champion_round": champion,
                                   "selection": records[champion]["selection"], "round0_selection": records[0]["selection"],
                                   "stop_reason": "no promotion in the last round (patience 1)", "wall_seconds": 9.5,
                                   "examples_trained": sum(r["examples_trained"] for r in (first, best)),
                                   "test": best["test"], "round0_test": first["test"], "rounds": records,
                                   "action_values": values})
    _write(path / "run.json", {"kind": "loop", "status": "finished", "task": "classification", "labels": info["labels"],
                               "data": info["data"], "command": ["/venv/bin/reflectlm", "run", "configs/tiny.toml"],
                               "versions": info["versions"], "created": info["created"],
                               "stop_reason": "no promotion in the last round (patience 1)", "wall_seconds": 9.5,
                               "champion_round": champion})
    return path


@pytest.fixture(scope="module")
def loop_run(tiny_bert_dir, cls_data, train_run, workspace, tmp_path_factory) -> Path:
    """Round 0 = the plain run; round 1 (promoted) and round 2 (rejected) are real training runs too."""
    from reflectlm.train import train

    scratch = tmp_path_factory.mktemp("challengers")
    r1 = train(_config(tiny_bert_dir, cls_data, epochs=4, lr=2e-2, seed=1), scratch / "r1").run_dir
    r2 = train(_config(tiny_bert_dir, cls_data, epochs=2, seed=2), scratch / "r2").run_dir
    return build_loop_run(workspace / "loop", [train_run, r1, r2], train_run, promote=[True, False])


def data_images(page: str) -> list[bytes]:
    return [base64.b64decode(m, validate=True) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def assert_self_contained(page: str) -> None:
    # the embedded images' base64 can spell anything ("//cdn" has turned up): look at the rest
    low = re.sub(r"data:[a-z/+.-]+;base64,[a-z0-9+/=]+", "data:", page.lower())
    assert "http:" not in low and "https:" not in low and "//cdn" not in low
    assert "<link" not in low and "@import" not in low and "<iframe" not in low
    assert not re.search(r"<script[^>]*\bsrc\s*=", low)
    assert re.findall(r'\bsrc\s*=\s*"([^"]*)"', page) and all(
        s.startswith("data:image/png;base64,") for s in re.findall(r'\bsrc\s*=\s*"([^"]*)"', page))
    assert all(u.startswith("data:") for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", page))
    assert all(h.startswith("#") for h in re.findall(r'\bhref\s*=\s*"([^"]*)"', page))  # in-page anchors only


def assert_images_decode(page: str, at_least: int) -> None:
    from PIL import Image

    images = data_images(page)
    assert len(images) >= at_least
    for png in images:
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
        with Image.open(io.BytesIO(png)) as im:
            w, h = im.size
            assert w > 100 and h > 100
            assert np.asarray(im.convert("L")).std() > 1  # something is drawn


def section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, flags=re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


# --------------------------------------------------------------------------- the loop run


def test_fixture_has_the_documented_loop_layout(loop_run):
    assert {p.name for p in loop_run.iterdir()} >= LOOP_TOP_FILES
    assert (loop_run / "champion").resolve() == (loop_run / "rounds" / "01").resolve()
    for k in (0, 1, 2):
        assert {p.name for p in (loop_run / "rounds" / f"{k:02d}").iterdir()} >= ROUND_FILES
    assert (loop_run / "rounds" / "01" / "model").is_dir() and not (loop_run / "rounds" / "02" / "model").exists()


def test_loop_report_has_every_section_in_order_with_the_runs_numbers(loop_run):
    path = write_report(loop_run)
    assert path == loop_run / "report.html"
    page = path.read_text(encoding="utf-8")
    positions = [page.index(f'<section id="{sid}">') for sid in SECTIONS]
    assert positions == sorted(positions)
    for heading in SECTIONS.values():
        assert f"<h2>{heading}</h2>" in page
    assert "could not be drawn" not in page
    assert 'http-equiv="refresh"' not in page  # finished: no reload

    summary = json.loads((loop_run / "summary.json").read_text())
    head = section(page, "headline")
    assert "round 1" in head and "no promotion in the last round" in head and "9.5 s" in head
    assert f"{summary['test']['macro_f1']:.4f}" in head
    gain = summary["test"]["macro_f1"] - summary["round0_test"]["macro_f1"]
    assert f"{gain:+.4f}" in head

    dec = section(page, "decisions")
    assert dec.count("b-promote") == 1 and dec.count("b-reject") == 1 and dec.count("b-base") == 1
    assert "fix_labels" in dec and "max_fraction=0.05" in dec and "label_issues" in dec
    for k in (1, 2):
        c = json.loads((loop_run / "rounds" / f"0{k}" / "compare.json").read_text())
        assert f"{c['difference']:+.4f}" in dec and f"{c['ci_low']:.4f}" in dec
        assert f"{c['mcnemar']['p_value']:.2g}" in dec
    assert "is not significant" in dec

    errors = section(page, "errors")
    conf = np.array(summary["test"]["confusion"])
    has_errors = (conf.sum() - np.trace(conf)) > 0
    assert ("Most frequent confusions" if has_errors else "no confusions") in errors and "round 1" in errors
    findings = section(page, "findings")
    assert "label_issues" in findings and "top suspected label errors" in findings
    diag = json.loads((loop_run / "rounds" / "01" / "findings.json").read_text())
    ranked = next(f for f in diag["findings"] if f["kind"] == "label_issues")["evidence"]["ranked"]
    assert ranked[0]["id"] in findings and ranked[0]["suggested"] in findings
    assert "Improvement targets" in findings
    cal = section(page, "calibration")
    assert "temperature scaling ran in round 1" in cal
    values = section(page, "action-values")
    assert "fix_labels" in values and "+0.0200" in values and "-0.0100" in values
    repro = section(page, "reproduce")
    assert "reflectlm run configs/tiny.toml" in repro and "[train]" in repro and "reflectlm report" in repro


def test_loop_report_is_self_contained_and_every_image_decodes(loop_run):
    page = write_report(loop_run).read_text(encoding="utf-8")
    assert_self_contained(page)
    # timeline, confusion, per-class F1, data map, gradients, losses, reliability
    assert_images_decode(page, at_least=7)
    for sid in ("timeline", "errors", "dynamics", "gradients", "calibration"):
        assert "<img" in section(page, sid), sid


def test_images_read_back_with_matplotlib(loop_run):
    import matplotlib.image as mpimg

    page = write_report(loop_run).read_text(encoding="utf-8")
    for png in data_images(page):
        arr = mpimg.imread(io.BytesIO(png), format="png")
        assert arr.ndim == 3 and arr.shape[2] in (3, 4)


def test_half_finished_loop_still_renders_and_reloads(loop_run, tmp_path):
    run = tmp_path / "half"
    shutil.copytree(loop_run, run, symlinks=True)
    (run / "summary.json").unlink()
    (run / "report.html").unlink(missing_ok=True)
    info = json.loads((run / "run.json").read_text())
    info.update(status="running", stop_reason=None, wall_seconds=None, champion_round=None)
    _write(run / "run.json", info)
    r2 = run / "rounds" / "02"
    for name in ("compare.json", "decision.json", "metrics.json", "dynamics.npz", "gradients.npz"):
        (r2 / name).unlink()
    (run / "rounds" / "01" / "findings.json").write_text("{ half a fi", encoding="utf-8")  # torn write
    page = write_report(run).read_text(encoding="utf-8")
    assert 'http-equiv="refresh"' in page and "still going" in page
    assert "could not be drawn" not in page
    assert "b-wait" in section(page, "decisions")  # round 2: pending
    assert "round 1" in section(page, "headline")  # champion from the link / decisions
    assert "still running" in section(page, "headline")
    assert "champion: selection" in section(page, "headline") and "read once" in section(page, "headline")
    values = section(page, "action-values")  # from the stores before summary.json exists
    assert "fix_labels" in values and "+0.0200" in values and "-0.0100" in values
    errors = section(page, "errors")
    assert "on the selection split" in errors and "<img" in errors  # no test metrics before the end
    assert_self_contained(page)
    assert_images_decode(page, at_least=5)


def test_a_run_with_only_round_zero_config_renders(tmp_path):
    run = tmp_path / "fresh"
    (run / "rounds" / "00").mkdir(parents=True)
    _write(run / "run.json", {"kind": "loop", "status": "running", "task": "classification"})
    page = write_report(run).read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert "could not be drawn" not in page and "no round has finished yet" in page


def test_not_a_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        write_report(tmp_path)
    r = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "pass a run directory" in " ".join(r.output.split())


# --------------------------------------------------------------------------- plain training runs


def test_plain_training_run_reads_as_round_zero(train_run):
    run = load_run(train_run)
    assert run.kind == "train" and [r.number for r in run.rounds] == [0] and run.champion_round == 0
    page = write_report(train_run).read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert "could not be drawn" not in page
    assert "a plain training run" in section(page, "timeline")
    assert "no gain to report" in section(page, "headline")
    assert "label_issues" in section(page, "findings")
    assert "from the diagnosis" in section(page, "calibration")  # the calibration check's reliability table
    assert "reflectlm diagnose" in section(page, "reproduce")
    assert_self_contained(page)
    assert_images_decode(page, at_least=5)  # confusion, per-class F1, data map, gradients, losses, reliability


def test_undiagnosed_training_run_says_how_to_diagnose(tiny_bert_dir, cls_data, train_run, tmp_path):
    run = tmp_path / "undiagnosed"
    shutil.copytree(train_run, run)
    for name in ("findings.json", "targets.json"):
        (run / name).unlink()
    page = write_report(run).read_text(encoding="utf-8")
    assert f"reflectlm diagnose {run}" in section(page, "findings")
    assert "could not be drawn" not in page


def test_ner_run_shows_entity_types_and_error_kinds(tiny_bert_dir, tmp_path):
    from conftest import make_ner_sentences

    from reflectlm.diagnose import run_diagnosis
    from reflectlm.train import train

    data = tmp_path / "ner.conll"
    data.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in make_ner_sentences(120)),
                    encoding="utf-8")
    # One epoch at a low rate: the tiny model still misses entities, so there are errors to break down.
    run = train(_config(tiny_bert_dir, data, task="ner", epochs=1, lr=3e-3), tmp_path / "ner").run_dir
    run_diagnosis(run, ["performance"])
    page = write_report(run).read_text(encoding="utf-8")
    errors = section(page, "errors")
    assert "per-entity-type" in errors.lower() or "entity type" in errors
    assert "person" in errors and "location" in errors
    assert "Error kinds" in errors and "<img" in errors and "missed" in errors
    assert "could not be drawn" not in page
    assert_images_decode(page, at_least=4)


def test_77_class_run_stays_small_and_labels_the_worst_classes(tmp_path):
    from reflectlm.report.synthetic import make_synthetic_run

    run = make_synthetic_run(tmp_path / "b77", classes=77, n_train=9000, rounds=3, steps=120)
    page = write_report(run).read_text(encoding="utf-8")
    assert len(page.encode()) < 5_000_000
    assert "could not be drawn" not in page
    m = json.loads((run / "rounds" / "02" / "metrics.json").read_text())
    conf = np.array(m["test"]["confusion"])
    err = 1 - np.diag(conf) / conf.sum(1)
    worst = m["test"]["labels"][int(np.argmax(err))]
    assert worst in section(page, "errors")  # named in the text under the heat map
    assert_images_decode(page, at_least=7)


# --------------------------------------------------------------------------- TensorBoard


def _accumulator(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_events_load_with_tensorboards_reader(loop_run):
    tb = write_tensorboard(loop_run)
    assert tb == loop_run / "tb"
    top = _accumulator(tb)
    tags = top.Tags()
    assert {"round/selection_macro_f1", "round/champion_macro_f1", "round/difference", "round/ci_low",
            "round/ci_high", "round/p_mcnemar", "round/promoted", "champion/test_accuracy"} <= set(tags["scalars"])
    assert "champion/confusion" in tags["images"]
    sel = {e.step: e.value for e in top.Scalars("round/selection_macro_f1")}
    for k in (0, 1, 2):
        m = json.loads((loop_run / "rounds" / f"0{k}" / "metrics.json").read_text())
        assert sel[k] == pytest.approx(m["selection"]["macro_f1"], abs=1e-6)
    assert [e.value for e in top.Scalars("round/promoted")] == [1.0, 0.0]
    img = top.Images("champion/confusion")[0]
    assert img.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and img.width > 100

    r1 = _accumulator(tb / "round_01")
    g = np.load(loop_run / "rounds" / "01" / "gradients.npz")
    layers = [str(x) for x in g["layers"]]
    scalars = set(r1.Tags()["scalars"])
    assert {"train/loss", "train/lr", "epoch/train_loss", "epoch/selection_loss", "epoch/selection_macro_f1"} <= scalars
    assert {f"grad_norm/{layer}" for layer in layers} <= scalars and {f"update_ratio/{layer}" for layer in layers} <= scalars
    steps = [e.step for e in r1.Scalars(f"grad_norm/{layers[0]}")]
    assert steps == [int(s) for s in g["step"]]
    assert [e.value for e in r1.Scalars(f"grad_norm/{layers[0]}")] == pytest.approx(g["grad_norm"][:, 0], rel=1e-5)
    hist = r1.Histograms("grad_norm_per_layer")
    assert len(hist) == len(g["step"]) and hist[0].histogram_value.num == len(layers)
    m1 = json.loads((loop_run / "rounds" / "01" / "metrics.json").read_text())
    assert len(r1.Scalars("epoch/train_loss")) == len(m1["history"])


def test_tensorboard_rewrite_does_not_duplicate_points(loop_run):
    write_tensorboard(loop_run)
    write_tensorboard(loop_run)
    assert len(_accumulator(loop_run / "tb").Scalars("round/selection_macro_f1")) == 3
    assert sorted(p.name for p in (loop_run / "tb").iterdir() if p.is_dir()) == ["round_00", "round_01", "round_02"]


def test_tensorboard_for_a_plain_training_run(train_run):
    tb = write_tensorboard(train_run)
    assert "train/loss" in _accumulator(tb / "round_00").Tags()["scalars"]
    assert "champion/confusion" in _accumulator(tb).Tags()["images"]


# --------------------------------------------------------------------------- MLflow


def test_mlflow_logs_params_metrics_artifacts_and_aliases(loop_run, tmp_path):
    pytest.importorskip("mlflow", reason="mlflow is an optional extra: pip install 'reflectlm[mlflow]'")
    from mlflow.tracking import MlflowClient

    from reflectlm.report import log_mlflow

    ws = tmp_path / "ws"
    ws.mkdir()
    run = ws / "loop"
    shutil.copytree(loop_run, run, symlinks=True)
    write_report(run)
    rid = log_mlflow(run)
    rid2 = log_mlflow(run)  # logged again: replaced, not duplicated
    assert (ws / "mlflow.db").is_file() and (ws / "mlartifacts").is_dir()
    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("reflectlm")
    active = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in active] == [rid2] and rid != rid2
    r = client.get_run(rid2)
    assert r.data.params["train.lr"] == "0.01" and r.data.params["reflectlm.selection_metric"] == "macro_f1"
    hist = client.get_metric_history(rid2, "selection_macro_f1")
    assert sorted(m.step for m in hist) == [0, 1, 2]
    summary = json.loads((run / "summary.json").read_text())
    assert r.data.metrics["test_macro_f1"] == pytest.approx(summary["test"]["macro_f1"])
    arts = {a.path for a in client.list_artifacts(rid2)}
    assert {"report.html", "summary.json", "config.toml", "champion", "challenger"} <= arts
    assert "model.safetensors" in {Path(a.path).name for a in client.list_artifacts(rid2, "champion")}
    champ = client.get_model_version_by_alias("reflectlm-loop", "champion")
    chall = client.get_model_version_by_alias("reflectlm-loop", "challenger")
    assert champ.tags["round"] == "1" and chall.tags["round"] == "2" and chall.tags["weights"] == "False"
    assert champ.run_id == rid2


# --------------------------------------------------------------------------- terminal views and CLI


def test_list_runs_and_show(loop_run, train_run, workspace):
    rows = {r["name"]: r for r in list_runs(workspace)}
    assert {"plain", "loop"} <= set(rows)
    loop = rows["loop"]
    summary = json.loads((loop_run / "summary.json").read_text())
    assert loop["kind"] == "loop" and loop["champion_round"] == 1 and loop["rounds_run"] == 2
    assert loop["test"]["macro_f1"] == pytest.approx(summary["test"]["macro_f1"])
    assert [r["promoted"] for r in loop["rounds"]] == [None, True, False]
    assert rows["plain"]["kind"] == "train" and rows["plain"]["rounds_run"] == 0
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    s = show(loop_run, console=console)
    out = console.export_text()
    assert s["champion_round"] == 1 and "promote" in out and "reject" in out and "fix_labels" in out
    with pytest.raises(FileNotFoundError, match="workspace"):
        list_runs(workspace / "missing")


def test_cli_report_runs_and_show(loop_run, workspace):
    runner = CliRunner()
    r = runner.invoke(app, ["report", str(loop_run)])
    assert r.exit_code == 0, r.output
    assert "report.html" in r.output and (loop_run / "report.html").is_file() and (loop_run / "tb").is_dir()
    r = runner.invoke(app, ["runs", str(workspace)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "loop" in r.output and "plain" in r.output
    r = runner.invoke(app, ["show", str(loop_run)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "champion round 1" in r.output and "promote" in r.output


def test_importing_the_report_package_loads_no_plotting_or_torch():
    code = ("import sys, reflectlm, reflectlm.report; "
            "print(sorted(m for m in ('matplotlib', 'torch', 'mlflow', 'tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
