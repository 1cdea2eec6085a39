"""reflectlm.cli: train -> evaluate -> predict through the command line, and every bad input exits 2
with a message that says what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reflectlm.cli import COMMANDS, app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_threads():
    # `train.threads` sets torch's thread count for the whole process; give it back afterwards.
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def write_config(tmp_path: Path, train: Path, model: Path, task: str = "classification", name: str = "tiny.toml",
                 **train_kw) -> Path:
    # One thread: these models are too small to gain from more, and a busy machine slows threads down a lot.
    settings = {"epochs": 3, "batch_size": 32, "lr": 1e-3, "precision": "fp32", "telemetry_every": 0, "threads": 1,
                **train_kw}
    lines = ["[data]", f'task = "{task}"', f'train = "{train}"', "max_length = 32", "",
             "[model]", f'name = "{model}"', "", "[train]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Rich wraps long messages at the console width; compare with whitespace collapsed."""
    return " ".join(text.split())


def assert_bad_input(result, *fragments: str) -> None:
    out = flat(result.output)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    for f in fragments:
        assert flat(f) in out, (f, out)


# --------------------------------------------------------------------------- the happy path


def test_train_evaluate_predict_classification(tmp_path, cls_csv, tiny_bert_dir):
    config = write_config(tmp_path, cls_csv, tiny_bert_dir)  # epochs = 3 in the file
    run = tmp_path / "runs" / "cls"
    result = invoke("train", config, "--output-dir", run, "--set", "train.epochs=1", "--quiet")
    assert result.exit_code == 0, result.output
    assert f"run directory: {run}" in result.output
    assert "selection" in result.output and "macro_f1" in result.output
    # --set took effect: one epoch ran, and the stored config says so.
    saved = tomllib.loads((run / "config.toml").read_text(encoding="utf-8"))
    assert saved["train"]["epochs"] == 1
    assert saved["run"]["quiet"] is True
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert len(metrics["history"]) == 1 and metrics["best_epoch"] == 1
    assert (run / "model" / "reflectlm.json").is_file()

    result = invoke("evaluate", run, "--data", cls_csv, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["n"] == 240
    assert 0.0 <= m["accuracy"] <= 1.0
    assert set(m["per_class"]) == {"neg", "neu", "pos"}
    assert sum(map(sum, m["confusion"])) == 240
    assert m["loss"] > 0

    result = invoke("evaluate", run, "--data", cls_csv, "--quiet")  # the table
    assert result.exit_code == 0 and "accuracy" in result.output and "cls.csv" in result.output

    result = invoke("predict", run, "great good love", "awful bad hate")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, ("great good love", "awful bad hate")):
        label, score, echoed = line.split("\t")
        assert label in {"neg", "neu", "pos"}
        assert 1 / 3 - 1e-3 <= float(score) <= 1.0  # the top of three probabilities
        assert echoed == text

    texts = tmp_path / "texts.txt"
    texts.write_text("so happy\n\nthe chair\n", encoding="utf-8")
    result = invoke("predict", run, "--file", texts, "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(ln) for ln in result.stdout.strip().splitlines()]
    assert [r["input"] for r in rows] == ["so happy", "the chair"]  # blank lines skipped
    assert all(r["label"] in {"neg", "neu", "pos"} and 0 < r["confidence"] <= 1 for r in rows)
    assert all(r["confidence"] == pytest.approx(max(r["probabilities"].values())) for r in rows)

    # The same run directory again: refused, nothing overwritten.
    result = invoke("train", config, "--output-dir", run, "--quiet")
    assert_bad_input(result, f"run directory {run} already exists and is not empty", "--output-dir")


def test_train_and_predict_ner(tmp_path, ner_conll, tiny_bert_dir):
    config = write_config(tmp_path, ner_conll, tiny_bert_dir, task="ner", epochs=4, lr=1e-2, batch_size=16)
    run = tmp_path / "ner-run"
    result = invoke("train", config, "-o", run, "-q")
    assert result.exit_code == 0, result.output
    assert f"run directory: {run}" in result.output
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["selection_metric"] == "entity_f1"
    assert metrics["selection"]["entity_f1"] >= 0.8  # the synthetic entities are easy to learn

    sentence = "the so it John Smith was and"  # shaped like the training sentences
    result = invoke("predict", run, sentence)
    assert result.exit_code == 0, result.output
    ents, confidence, echoed = result.stdout.strip().split("\t")
    assert echoed == sentence and 0 < float(confidence) <= 1
    assert ents == "person: John Smith"

    result = invoke("predict", run, sentence, "the and", "--json")
    assert result.exit_code == 0, result.output
    first, second = (json.loads(ln) for ln in result.stdout.strip().splitlines())
    assert first["tags"] == ["O", "O", "O", "B-person", "I-person", "O", "O"]
    (ent,) = first["entities"]
    # Character offsets into the text, as the API gives them.
    assert (ent["type"], ent["text"]) == ("person", "John Smith") and sentence[ent["start"]:ent["end"]] == "John Smith"
    assert 0 < ent["score"] <= 1
    assert len(second["tags"]) == 2

    result = invoke("evaluate", run, "--data", ner_conll, "--json", "-q")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["n"] == 120 and m["entity_f1"] >= 0.8
    assert set(m["per_type"]) == {"location", "person"}


# --------------------------------------------------------------------------- bad input exits 2


def test_missing_config_file(tmp_path):
    result = invoke("train", tmp_path / "nope.toml", "-q")
    assert_bad_input(result, "error:", f"config file {tmp_path / 'nope.toml'} does not exist")


def test_invalid_config_value(tmp_path, cls_csv, tiny_bert_dir):
    config = write_config(tmp_path, cls_csv, tiny_bert_dir, optimizer="sgd")
    result = invoke("train", config, "-q")
    assert_bad_input(result, "train.optimizer", "'adamw' or 'adafactor'", "'sgd'")


def test_invalid_override_value(tmp_path, cls_csv, tiny_bert_dir):
    config = write_config(tmp_path, cls_csv, tiny_bert_dir)
    result = invoke("train", config, "--set", "train.epochs=0", "-q")
    assert_bad_input(result, "train.epochs", "greater than or equal to 1")


def test_unknown_override_key(tmp_path, cls_csv, tiny_bert_dir):
    config = write_config(tmp_path, cls_csv, tiny_bert_dir)
    result = invoke("train", config, "--set", "train.lrr=1e-4", "-q")
    assert_bad_input(result, "train.lrr: unknown key", "did you mean 'lr'?")


def test_malformed_override(tmp_path, cls_csv, tiny_bert_dir):
    config = write_config(tmp_path, cls_csv, tiny_bert_dir)
    result = invoke("train", config, "--set", "train.lr", "-q")
    assert_bad_input(result, "'train.lr' must look like KEY=VALUE")


def test_data_file_missing(tmp_path, tiny_bert_dir):
    missing = tmp_path / "absent.csv"
    config = write_config(tmp_path, missing, tiny_bert_dir)
    result = invoke("train", config, "-q", "-o", tmp_path / "run")
    assert_bad_input(result, str(missing), "file not found")
    assert not (tmp_path / "run").exists()  # nothing written before the data was checked


def test_unknown_model(tmp_path, cls_csv):
    config = write_config(tmp_path, cls_csv, tmp_path / "no-model-here")
    result = invoke("train", config, "-q", "-o", tmp_path / "run")
    assert_bad_input(result, "is not a local model directory", "cannot be downloaded")


def test_existing_output_dir(tmp_path, cls_csv, tiny_bert_dir):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "something.txt").write_text("x")
    config = write_config(tmp_path, cls_csv, tiny_bert_dir)
    result = invoke("train", config, "-o", out, "-q")
    assert_bad_input(result, f"run directory {out} already exists and is not empty")
    assert [p.name for p in out.iterdir()] == ["something.txt"]


def test_predict_without_texts(tmp_path):
    result = invoke("predict", tmp_path)
    assert_bad_input(result, "give texts as arguments or --file FILE")


def test_predict_or_evaluate_not_a_model(tmp_path, cls_csv):
    result = invoke("predict", tmp_path, "hello")
    assert_bad_input(result, "is not a reflectlm model", "no reflectlm.json")
    result = invoke("evaluate", tmp_path, "--data", cls_csv)
    assert_bad_input(result, "is not a reflectlm model")


# --------------------------------------------------------------------------- the installed command


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_console_script_help():
    exe = Path(sys.executable).with_name("reflectlm")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "reflectlm.cli"]
    proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert name in proc.stdout
    proc = subprocess.run([*cmd, "train", "/nonexistent/x.toml"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "does not exist" in flat(proc.stderr)


def _commands(group, path=()):
    for name, cmd in getattr(group, "commands", {}).items():
        yield (*path, name), cmd
        yield from _commands(cmd, (*path, name))


def test_every_help_text_is_shown_as_written():
    # Rich reads "[loop]" in a help string as a markup tag and silently drops it ("TOML config
    # with a  section"); a help text that means a literal bracket must escape it as "\[".
    import typer.main

    for path, cmd in _commands(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
        assert result.exit_code == 0, (path, result.output)
        for param in cmd.params:
            text = getattr(param, "help", None)
            if text:
                shown = flat(text.replace("\\[", "["))
                assert shown in flat(result.output), f"`reflectlm {' '.join(path)} --help` mangles {text!r}"


def test_an_unexpected_error_is_exit_1_and_shows_its_traceback_under_debug(monkeypatch, tmp_path):
    """Only our own bad-input errors are exit 2; a bug (here a ValueError from inside a command) is
    a failure, exit 1, with the traceback when REFLECTLM_DEBUG=1."""
    import traceback

    import reflectlm.report as report

    def boom(run):
        raise ValueError("an internal bug, not bad input")

    monkeypatch.setattr(report, "show", boom)
    printed = []
    monkeypatch.setattr(traceback, "print_exc", lambda: printed.append(True))
    monkeypatch.delenv("REFLECTLM_DEBUG", raising=False)
    result = invoke("show", tmp_path)
    assert result.exit_code == 1 and "ValueError: an internal bug" in flat(result.output) and not printed
    assert "REFLECTLM_DEBUG=1" in flat(result.output)
    monkeypatch.setenv("REFLECTLM_DEBUG", "1")
    assert invoke("show", tmp_path).exit_code == 1 and printed == [True]
    # ... while a bad config is still bad input
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\ntrain = "x.csv"\n[loop]\nactions = ["fix_label"]\n', encoding="utf-8")
    assert_bad_input(invoke("run", bad), "unknown actions ['fix_label']")


def test_run_output_says_what_would_prove_a_rejected_gain(capsys, tmp_path):
    from types import SimpleNamespace

    from reflectlm.cli import _print_loop
    from reflectlm.compare import detectable_effect

    d = detectable_effect(0.009, 1000, 0.05, observed=0.008)
    row = {"round": 1, "actions": ["fix_labels"], "selection": 0.91, "promoted": False, "difference": 0.008,
           "ci_low": -0.01, "ci_high": 0.026, "p_mcnemar": 0.3, "detectable": d}
    base = {**row, "round": 0, "actions": [], "difference": None, "p_mcnemar": None, "detectable": None, "promoted": True}
    kept = {**row, "round": 2, "actions": ["active_learning"], "promoted": True, "detectable": None}
    summary = {"selection_metric": "macro_f1", "rounds": [base, row, kept], "stop_reason": "rounds",
               "champion_round": 2, "round0_test": {"macro_f1": 0.70, "accuracy": 0.71},
               "test": {"macro_f1": 0.7325, "accuracy": 0.74}}
    _print_loop(SimpleNamespace(summary=summary, run_dir=tmp_path))
    out = capsys.readouterr().out
    assert "what changed: test macro_f1 0.7000 -> 0.7325 (+0.0325); round 2 active_learning" in out
    assert (f"round 1: +0.0080 is not proven; 1,000 selection examples detect about {d['effect']:+.4f} "
            f"(80% power at alpha 0.05); about {d['examples_needed']:,} would resolve +0.0080") in out
