"""precision = "auto": fp32 or bf16 chosen by timing both on this machine, kept per machine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reflectlm import runtime


@pytest.fixture
def fake_timing(monkeypatch, tmp_path):
    """A private cache and a stand-in for the timing run: seconds[purpose][precision]."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "_chosen", {})
    # precision -> attention kernel -> seconds of the workload
    seconds = {"train": {"fp32": {"sdpa": 1.0, "math": 1.2}, "bf16": {"sdpa": 0.9, "math": 0.5}},
               "infer": {"fp32": {"sdpa": 1.0, "math": 1.1}, "bf16": {"sdpa": 2.0, "math": 2.5}}}
    calls = []

    def timer(purpose):
        calls.append(purpose)
        return {p: dict(by) for p, by in seconds[purpose].items()}

    monkeypatch.setattr(runtime, "time_precisions", timer)
    return seconds, calls


def test_auto_takes_the_faster_precision_per_purpose(fake_timing):
    _, calls = fake_timing
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("auto", cpu, purpose="train") == "bf16"  # 2x faster
    assert runtime.resolve_precision("auto", cpu, purpose="infer") == "fp32"  # bf16 2x slower here
    train, infer = runtime.choose_precision("train", cpu), runtime.choose_precision("infer", cpu)
    assert "2.00x as fast" in train.reason and "2.00x slower" in infer.reason
    assert train.seconds == fake_timing[0]["train"] and train.source == "measured"
    # Each precision's faster attention kernel: math for bf16 training, torch's fused SDPA for fp32.
    assert train.attention == "math" and infer.attention == "sdpa"
    assert runtime.attention_for("fp32", "train", cpu) == "sdpa"  # an explicit fp32 gets fp32's faster kernel
    assert calls == ["train", "infer"]  # measured once each in this process


def test_compute_runs_attention_with_the_chosen_kernel(fake_timing):
    import torch.nn.functional as F

    q = torch.randn(2, 2, 5, 4)
    cpu = torch.device("cpu")
    with runtime.compute("bf16", "train", cpu):  # math chosen for bf16 training
        assert torch.is_autocast_enabled("cpu")
        assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
        q2 = F.linear(q, torch.eye(4))  # autocast casts the linear to bf16
        assert F.scaled_dot_product_attention(q2, q2, q2).dtype == torch.bfloat16
    assert torch.backends.cuda.flash_sdp_enabled()  # restored on leaving
    with runtime.compute("fp32", "infer", cpu):  # fp32's faster kernel is torch's fused one
        assert not torch.is_autocast_enabled("cpu") and torch.backends.cuda.flash_sdp_enabled()


def test_a_near_tie_keeps_fp32(fake_timing):
    seconds, _ = fake_timing
    seconds["train"] = {"fp32": {"sdpa": 1.0, "math": 1.1}, "bf16": {"sdpa": 0.97, "math": 1.3}}  # only 1.03x
    choice = runtime.choose_precision("train", torch.device("cpu"))
    assert choice.precision == "fp32" and "only 1.03x" in choice.reason


def test_the_decision_is_stored_per_machine_and_read_back(fake_timing, monkeypatch):
    _, calls = fake_timing
    runtime.choose_precision("train", torch.device("cpu"))
    path = runtime.precision_cache_path()
    stored = json.loads(path.read_text())
    assert stored["train"]["precision"] == "bf16" and stored["train"]["attention"] == "math"
    assert stored["train"]["seconds"]["bf16"] == {"sdpa": 0.9, "math": 0.5}
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


def test_explicit_precisions_are_forced(fake_timing):
    _, calls = fake_timing
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("fp32", cpu, purpose="train") == "fp32"
    assert runtime.resolve_precision("bf16", cpu, purpose="infer") == "bf16"
    assert calls == []  # resolving an explicit precision measures nothing
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        runtime.resolve_precision("fp16", cpu)
    report = runtime.precision_report("fp32", cpu)
    assert report["train"]["precision"] == report["infer"]["precision"] == "fp32"
    assert report["train"]["source"] == "config" and report["train"]["attention"] == "sdpa"
    with pytest.raises(ValueError, match="train, infer"):
        runtime.choose_precision("serve", cpu)


def test_the_real_workload_times_every_precision_and_kernel():
    seconds = runtime.time_precisions("infer")
    assert set(seconds) == {"fp32", "bf16"} and all(set(by) == set(runtime.ATTENTIONS) for by in seconds.values())
    assert all(np.isfinite(s) and s > 0 for by in seconds.values() for s in by.values())  # no speed asserted


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
    assert info["precision"]["train"]["attention"] == "math" == r.metrics["attention"]
    assert "as fast as fp32" in info["precision"]["train"]["reason"] and info["cpu"]["model"]

    out = CliRunner().invoke(app, ["info", "--json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)
    assert shown["precision"]["infer"]["precision"] == "fp32" and shown["cpu"] == runtime.cpu_info()
    text = CliRunner().invoke(app, ["info"]).output
    assert "precision = auto for train: bf16, attention math" in text and "slower than fp32 for infer" in text


def test_a_measurement_inside_autocast_still_times_fp32(monkeypatch, tmp_path):
    # The decision can be first needed during an evaluation inside a bf16 training step; the
    # fp32 timing must not run under the caller's autocast.
    monkeypatch.setattr(runtime, "_chosen", {})
    seen = []
    real_linear = torch.nn.functional.linear

    def spy(x, w, b=None):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real_linear(x, w, b)

    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        runtime._workload("infer", "fp32", "sdpa", repeats=1)
    assert seen and not any(seen)


def test_process_facts_come_from_the_launcher_and_are_no_ops_alone(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                 "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert runtime.num_processes() == 1 and runtime.process_index() == 0 and runtime.is_main_process()
    obj = {"a": 1}
    assert runtime.from_main(obj) is obj and runtime.gather_objects(obj) == [obj]
    runtime.wait_for_everyone()  # alone: returns at once, no process group
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert runtime.num_processes() == 4 and runtime.process_index() == 2 and not runtime.is_main_process()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")  # an MPI launcher
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    assert runtime.num_processes() == 2 and runtime.is_main_process()


def test_half_weights_gives_autocast_outputs_and_puts_the_fp32_weights_back():
    import torch

    from reflectlm import runtime

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(5, 8)
    with torch.inference_mode(), runtime.compute("bf16", "infer"):
        cast_each_call = model(x)
        with runtime.half_weights(model, "bf16"):
            assert model[0].weight.dtype == torch.bfloat16
            cast_once = model(x)
    assert torch.equal(cast_each_call, cast_once)
    assert all(p.dtype == torch.float32 and torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(p.requires_grad for p in model.parameters())
