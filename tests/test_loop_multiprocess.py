"""`reflectlm run` under `accelerate launch --num_processes 2` (DDP, gloo on CPU) against one process.

The main process decides (diagnosis, plans, A/B tests) and writes the run directory; both processes
train every challenger (loop/processes.py). 144 training examples at batch 8 on two processes make
9 steps of 16, the single process's steps at batch 16 with no padded batch (test_train_multiprocess
explains the correspondence), so the models agree to float precision and every round decides alike.
The launched run stops after round 1 and is resumed, launched again, for round 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from test_loop import _toml, loop_tree, noisy_csv
from test_train_multiprocess import SRC, _free_port


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch built without torch.distributed / gloo: no multi-process training on this machine")
def test_two_processes_run_the_loop_like_one(tmp_path, tiny_bert_dir):
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    tree = loop_tree(noisy_csv(tmp_path / "cls.csv", n=240), tiny_bert_dir, tmp_path / "unused", rounds=2)
    tree["train"]["group_by_length"] = False
    tree["model"]["dropout"] = 0.0  # no per-process dropout masks
    config = tmp_path / "loop.toml"
    config.write_text(_toml(tree), encoding="utf-8")
    # Each run in its own workspace: a run's recorded action values rightly change the next run's plans.
    one = improve(load_config(config), tmp_path / "alone" / "one")

    runs = tmp_path / "launched"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def launch(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(_free_port()), "-m", "reflectlm.cli", "run", str(config), "-o", str(runs / "two"),
               "--set", "train.batch_size=8", "-q", *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert proc.stdout.count("run directory:") == 1, "only the main process reports"
        return proc

    launch("--set", "loop.rounds=1")
    two = runs / "two"
    assert json.loads((two / "summary.json").read_text())["stop_reason"] == "round budget spent (1 rounds)"
    launch("--resume")  # loop.rounds = 2 again: one more round, every process training it

    # One run directory, written by one process: the loop's files, each round's decision once.
    assert [p.name for p in runs.iterdir()] == ["two"]
    assert {p.name for p in two.iterdir()} == {"config.toml", "run.json", "store.sqlite", "champion", "summary.json",
                                               "rounds"}
    assert sorted(p.name for p in (two / "rounds").iterdir()) == ["00", "01", "02"]
    info = json.loads((two / "run.json").read_text())
    assert info["status"] == "finished" and info["resumed"] == 1
    from reflectlm import store

    assert [r["round"] for r in store.rounds(two)] == [0, 1, 2]

    # The same decisions as one process: plans, promotions, numbers within float tolerance.
    got = json.loads((two / "summary.json").read_text())["rounds"]
    want = one.summary["rounds"]
    assert [(r["actions"], r["promoted"], r["examples_trained"]) for r in got] == \
           [(r["actions"], r["promoted"], r["examples_trained"]) for r in want]
    for g, w in zip(got, want):
        assert g["selection"] == pytest.approx(w["selection"], abs=1e-3)
    for r in ("01", "02"):
        p1 = json.loads((one.run_dir / "rounds" / r / "plan.json").read_text())
        p2 = json.loads((two / "rounds" / r / "plan.json").read_text())
        assert p2["actions"] == p1["actions"] and [x["action"] for x in p2["ranking"]] == \
               [x["action"] for x in p1["ranking"]]


def test_what_the_loop_cannot_do_under_several_processes_is_refused(monkeypatch, tiny_config, cls_csv):
    from reflectlm.config import ConfigError
    from reflectlm.loop import processes

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = tiny_config(cls_csv)
    processes.validate(cfg)  # the default loop: fine
    with pytest.raises(ConfigError, match="loop.cv = 'full'"):
        processes.validate(cfg.model_copy(update={"loop": cfg.loop.model_copy(update={"cv": "full"})}))
    with pytest.raises(ConfigError, match="loop.backend = 'ray' under accelerate launch"):
        processes.validate(cfg.model_copy(update={"loop": cfg.loop.model_copy(update={"backend": "ray"})}))
