"""train under `accelerate launch --num_processes 2` (DDP, gloo on CPU) against one process.

Two processes with batch 8 take the same optimizer steps as one process with batch 16 when
batches are not length-grouped: step k joins batches 2k and 2k + 1 of one shuffled order, which
is the single process's batch k, and DDP's average of two batch means is the mean of the 16.
134 training examples make 17 batches of 8, so the second process's last batch is a repeat
(padding) and only that last step of epoch 1 differs. Hence: epoch-1 dynamics and the first
telemetry records agree with one process to float precision, every example is recorded exactly
once, later numbers agree within a tolerance, and only one run directory is written."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_cls_rows
from reflectlm.config import dump_toml
from reflectlm.train import LengthGroupedBatches, ShardedBatches, train
from test_train import EXPECTED_FILES, files_in

SRC = Path(__file__).resolve().parents[1] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharded_batches_split_one_order_and_mark_the_padding():
    base = LengthGroupedBatches(list(np.random.default_rng(0).integers(1, 50, size=134)), 8, seed=3)
    whole = list(base)  # 17 batches, the last of 6
    shards = [ShardedBatches(base, 2, r) for r in (0, 1)]
    got = [list(s) for s in shards]
    assert [len(g) for g in got] == [len(s) for s in shards] == [9, 9]
    assert got[0] == whole[0::2] and got[1] == whole[1::2] + [whole[0]]
    assert [j for j in range(9) if shards[1].is_padding(j)] == [8] and not any(shards[0].is_padding(j) for j in range(9))
    real = [i for s, g in zip(shards, got) for j, b in enumerate(g) if not s.is_padding(j) for i in b]
    assert sorted(real) == list(range(134)), "without the padding, every example exactly once"
    one = ShardedBatches(base, 1, 0)
    assert list(one) == whole and not any(one.is_padding(j) for j in range(len(one)))
    for s in shards:
        s.set_epoch(1)
    assert list(shards[0]) == list(base)[0::2] != got[0], "every process draws the same order per epoch"
    tiny = LengthGroupedBatches([3, 4, 5], 8, seed=0)  # fewer batches than processes: the one batch, twice padding
    tiny_shards = [ShardedBatches(tiny, 3, r) for r in range(3)]
    assert all(list(s) == list(tiny) for s in tiny_shards)
    assert [s.is_padding(0) for s in tiny_shards] == [False, True, True]


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch built without torch.distributed / gloo: no multi-process training on this machine")
def test_two_processes_train_like_one(tiny_config, tmp_path):
    csv = tmp_path / "cls.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in make_cls_rows(222)), encoding="utf-8")
    cfg = tiny_config(csv, epochs=2, batch_size=16, group_by_length=False, telemetry_every=1, threads=1)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"dropout": 0.0})})  # no per-process dropout masks
    config = tmp_path / "cfg.toml"
    config.write_text(dump_toml(cfg), encoding="utf-8")
    one = train(cfg, tmp_path / "one")

    runs = tmp_path / "launched"
    runs.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # --multi_gpu picks accelerate's torchrun launcher; on a machine without GPUs fit asks for
    # the CPU, so the processes join with gloo. (--cpu alone would start a single process.)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "reflectlm.cli", "train", str(config), "-o", str(runs / "two"), "--set", "train.batch_size=8", "-q"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1, "only the main process reports"

    # One run directory, written once, with the documented files.
    assert [p.name for p in runs.iterdir()] == ["two"]
    two = runs / "two"
    assert files_in(two) == EXPECTED_FILES
    info = json.loads((two / "run.json").read_text())
    assert info["status"] == "finished" and info["data"]["train"]["examples"] == 134

    # Dynamics: every example exactly once per epoch, under its own id; epoch 1 as one process.
    d1, d2 = np.load(one.run_dir / "dynamics.npz"), np.load(two / "dynamics.npz")
    assert list(d2["ids"]) == list(d1["ids"]) and d2["loss"].shape == (2, 134)
    for k in ("loss", "gold_prob", "correct"):
        assert not np.isnan(d2[k]).any()
    np.testing.assert_allclose(d2["loss"][0], d1["loss"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d2["gold_prob"][0], d1["gold_prob"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d2["loss"][1], d1["loss"][1], rtol=0.1, atol=0.02)

    # Telemetry: DDP all-reduces the gradients, so the main process's record is the global one.
    g1, g2 = np.load(one.run_dir / "gradients.npz"), np.load(two / "gradients.npz")
    steps = 2 * math.ceil(134 / 16)
    assert list(g2["step"]) == list(g1["step"]) == list(range(1, steps + 1))
    for k in ("grad_norm", "weight_norm", "update_ratio"):
        np.testing.assert_allclose(g2[k][:8], g1[k][:8], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(g2["lr"], g1["lr"], rtol=1e-6)

    # Metrics: the history's train numbers come from the joined records; selection and test
    # are evaluated on the whole splits, within a tolerance of one process.
    m1, m2 = one.metrics, json.loads((two / "metrics.json").read_text())
    assert m2["examples_trained"] == m1["examples_trained"] == 2 * 134
    h1, h2 = m1["history"], m2["history"]
    assert h2[0]["train_loss"] == pytest.approx(h1[0]["train_loss"], rel=1e-4)
    assert h2[0]["train_accuracy"] == pytest.approx(h1[0]["train_accuracy"], abs=1e-6)
    np.testing.assert_allclose(d2["loss"].mean(1), [h["train_loss"] for h in h2], rtol=1e-5)
    for split in ("selection", "test"):
        assert m2[split]["n"] == m1[split]["n"]
        assert m2[split]["loss"] == pytest.approx(m1[split]["loss"], rel=0.05)
        assert abs(m2[split]["accuracy"] - m1[split]["accuracy"]) <= 0.1
