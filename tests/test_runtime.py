"""precision = "auto": fp32 or bf16 chosen by timing both on this machine, kept per machine."""

from __future__ import annotations

import json

import pytest
import torch

from reflectlm import runtime


@pytest.fixture
def fake_timing(monkeypatch, tmp_path):
    """A private cache and a stand-in for the timing run: seconds[purpose][precision]."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "_chosen", {})
    seconds = {"train": {"fp32": 1.0, "bf16": 0.5}, "infer": {"fp32": 1.0, "bf16": 2.0}}
    calls = []

    def timer(purpose):
        calls.append(purpose)
        return dict(seconds[purpose])

    monkeypatch.setattr(runtime, "time_precisions", timer)
    return seconds, calls


def test_auto_takes_the_faster_precision_per_purpose(fake_timing):
    _, calls = fake_timing
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("auto", cpu, purpose="train") == "bf16"  # 2x faster
    assert runtime.resolve_precision("auto", cpu, purpose="infer") == "fp32"  # bf16 2x slower here
    train, infer = runtime.choose_precision("train", cpu), runtime.choose_precision("infer", cpu)
    assert "2.00x as fast" in train.reason and "2.00x slower" in infer.reason
    assert train.seconds == {"fp32": 1.0, "bf16": 0.5} and train.source == "measured"
    assert calls == ["train", "infer"]  # measured once each in this process


def test_a_near_tie_keeps_fp32(fake_timing):
    seconds, _ = fake_timing
    seconds["train"] = {"fp32": 1.0, "bf16": 0.97}  # bf16 only 1.03x as fast
    choice = runtime.choose_precision("train", torch.device("cpu"))
    assert choice.precision == "fp32" and "only 1.03x" in choice.reason


def test_the_decision_is_stored_per_machine_and_read_back(fake_timing, monkeypatch):
    _, calls = fake_timing
    runtime.choose_precision("train", torch.device("cpu"))
    path = runtime.precision_cache_path()
    stored = json.loads(path.read_text())
    assert stored["train"]["precision"] == "bf16" and stored["train"]["seconds"] == {"fp32": 1.0, "bf16": 0.5}
    assert stored["torch"] == torch.__version__ and stored["cpu"] == runtime.cpu_info()

    monkeypatch.setattr(runtime, "_chosen", {})  # a new process on the same machine
    again = runtime.choose_precision("train", torch.device("cpu"))
    assert again.precision == "bf16" and again.source == "cache" and calls == ["train"]
    # Another torch version (or CPU) is another machine: its own file, measured afresh.
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    monkeypatch.setattr(runtime, "_chosen", {})
    assert runtime.precision_cache_path() != path
    runtime.choose_precision("train", torch.device("cpu"))
    assert calls == ["train", "train"]


def test_a_corrupt_cache_file_is_measured_again(fake_timing):
    _, calls = fake_timing
    path = runtime.precision_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert runtime.choose_precision("infer", torch.device("cpu")).precision == "fp32"
    assert calls == ["infer"] and json.loads(path.read_text())["infer"]["precision"] == "fp32"


def test_explicit_precisions_are_forced_without_measuring(fake_timing):
    _, calls = fake_timing
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("fp32", cpu, purpose="train") == "fp32"
    assert runtime.resolve_precision("bf16", cpu, purpose="infer") == "bf16"
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        runtime.resolve_precision("fp16", cpu)
    report = runtime.precision_report("fp32", cpu)
    assert report["train"]["precision"] == report["infer"]["precision"] == "fp32"
    assert report["train"]["source"] == "config" and calls == []
    with pytest.raises(ValueError, match="train, infer"):
        runtime.choose_precision("serve", cpu)


def test_the_real_workload_times_both_precisions_quickly():
    seconds = runtime.time_precisions("infer")
    assert set(seconds) == {"fp32", "bf16"} and all(0 < s < 1.0 for s in seconds.values())


def test_run_json_and_info_show_the_choice_and_why(fake_timing, tiny_config, cls_csv, tmp_path):
    from typer.testing import CliRunner

    from reflectlm.cli import app
    from reflectlm.config import load_config
    from reflectlm.train import train

    cfg = tiny_config(cls_csv, epochs=1)
    cfg = load_config(tree={**cfg.model_dump(), "train": {**cfg.train.model_dump(), "precision": "auto"}})
    r = train(cfg, tmp_path / "run")
    info = json.loads((r.run_dir / "run.json").read_text())
    assert info["precision"]["train"]["precision"] == "bf16" == r.metrics["precision"]
    assert "as fast as fp32" in info["precision"]["train"]["reason"] and info["cpu"]["model"]

    out = CliRunner().invoke(app, ["info", "--json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)
    assert shown["precision"]["infer"]["precision"] == "fp32" and shown["cpu"] == runtime.cpu_info()
    text = CliRunner().invoke(app, ["info"]).output
    assert "precision = auto for train: bf16" in text and "slower than fp32 for infer" in text
