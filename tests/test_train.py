"""The training loop: run-directory contents, training dynamics, gradient telemetry,
reproducibility, freezing, schedules and early stopping, on a tiny BERT in seconds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reflectlm import runtime
from reflectlm.modeling import layer_groups, load_bundle
from reflectlm.train import RUN_FILES, LengthGroupedBatches, RunError, param_groups, train

EXPECTED_FILES = {
    "config.toml", "run.json", "metrics.json", "dynamics.npz", "gradients.npz", "model/config.json",
    "model/model.safetensors", "model/reflectlm.json", "model/tokenizer.json", "model/tokenizer_config.json",
}


def files_in(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


@pytest.fixture
def cls_run(tiny_config, cls_csv, tmp_path):
    cfg = tiny_config(cls_csv, epochs=3)
    return train(cfg, tmp_path / "run")


def test_run_directory_has_exactly_the_documented_files(cls_run):
    run = cls_run.run_dir
    assert files_in(run) == EXPECTED_FILES
    assert {f.rstrip("/") for f in RUN_FILES} == {p.name for p in run.iterdir()}
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["kind"] == "train"
    assert set(info["files"]) == set(RUN_FILES)
    assert info["data"]["train"]["examples"] == 144 and info["data"]["selection"]["examples"] == 48
    assert info["labels"] == ["neg", "neu", "pos"]


def test_metrics_json_has_selection_test_and_history(cls_run):
    m = json.loads((cls_run.run_dir / "metrics.json").read_text())
    assert m["selection_metric"] == "macro_f1"
    assert len(m["history"]) == 3 and [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert set(m["test"]) >= {"accuracy", "macro_f1", "weighted_f1", "per_class", "confusion", "loss"}
    assert m["test"]["n"] == 48
    assert np.array(m["test"]["confusion"]).sum() == 48
    rec = m["recording_seconds"]  # the cost of dynamics + telemetry, measured inside training time
    assert set(rec) == {"telemetry", "dynamics"} and all(0 < v < m["train_seconds"] for v in rec.values())
    # The reported selection metrics are the best epoch's.
    best = max(h["selection_macro_f1"] for h in m["history"])
    assert m["selection"]["macro_f1"] == pytest.approx(best)
    assert m["history"][m["best_epoch"] - 1]["selection_macro_f1"] == pytest.approx(best)
    # The synthetic task is learnable: well above chance (1/3) after 3 epochs of a tiny random BERT.
    assert m["test"]["accuracy"] > 0.55


def test_dynamics_arrays_are_right(cls_run):
    d = np.load(cls_run.run_dir / "dynamics.npz")
    n = 144
    assert set(d.files) == {"ids", "loss", "gold_prob", "correct"}
    for k in ("loss", "gold_prob", "correct"):
        assert d[k].shape == (3, n) and d[k].dtype == np.float32
        assert not np.isnan(d[k]).any(), "every example is seen once per epoch"
    # loss is the cross-entropy of the gold label, so it equals -log(gold_prob) for the same logits.
    np.testing.assert_allclose(d["loss"], -np.log(d["gold_prob"]), rtol=1e-4, atol=1e-5)
    assert set(np.unique(d["correct"])) <= {0.0, 1.0}
    assert ((d["gold_prob"] > 0) & (d["gold_prob"] < 1)).all()
    # Examples are recorded under their own index: ids line up with the training split.
    from reflectlm.config import load_config
    from reflectlm.data import load_splits

    cfg = load_config(cls_run.run_dir / "config.toml")  # the resolved config reproduces the split
    assert list(d["ids"]) == load_splits(cfg.data, cfg.train.seed).train.ids
    hist = json.loads((cls_run.run_dir / "metrics.json").read_text())["history"]
    np.testing.assert_allclose(d["correct"].mean(1), [h["train_accuracy"] for h in hist], atol=1e-6)
    np.testing.assert_allclose(d["loss"].mean(1), [h["train_loss"] for h in hist], rtol=1e-5)
    assert d["gold_prob"][-1].mean() > d["gold_prob"][0].mean(), "the model learns: gold probability rises"


def test_gradient_telemetry_shapes_and_values(cls_run):
    g = np.load(cls_run.run_dir / "gradients.npz")
    layers = list(g["layers"])
    assert layers == ["embeddings", "layer.0", "layer.1", "head"]
    steps_per_epoch = math.ceil(144 / 16)
    total = steps_per_epoch * 3
    assert list(g["step"]) == list(range(2, total + 1, 2))
    S, L = len(g["step"]), len(layers)
    for k in ("grad_norm", "weight_norm", "update_ratio"):
        assert g[k].shape == (S, L)
        assert np.isfinite(g[k]).all()
    assert (g["grad_norm"] > 0).all() and (g["weight_norm"] > 0).all()
    assert (g["update_ratio"] > 0).all() and (g["update_ratio"] < 1.0).all()
    assert g["update_ratio"][-1].max() < g["update_ratio"][0].max(), "updates shrink as the rate decays"
    assert g["lr"].shape == (S,) and (g["lr"] > 0).all()
    assert g["loss"].shape == (S,) and (g["loss"] > 0).all()


def test_telemetry_weight_norm_matches_final_weights(tiny_config, cls_csv, tmp_path):
    # One epoch, a record at every step: the last record's weight norms are the final weights'.
    cfg = tiny_config(cls_csv, epochs=1, telemetry_every=1)
    result = train(cfg, tmp_path / "run")
    g = np.load(result.run_dir / "gradients.npz")
    assert len(g["step"]) == math.ceil(144 / 16)
    model = load_bundle(result.run_dir).model
    for j, (name, params) in enumerate(layer_groups(model)):
        norm = math.sqrt(sum(float(p.detach().double().norm() ** 2) for _, p in params))
        assert g["weight_norm"][-1, j] == pytest.approx(norm, rel=1e-4), name


def test_head_only_freezing_shows_no_encoder_updates(tiny_config, cls_csv, tmp_path):
    cfg = tiny_config(cls_csv, epochs=1, freeze="head_only")
    g = np.load(train(cfg, tmp_path / "run").run_dir / "gradients.npz")
    head = list(g["layers"]).index("head")
    encoder = [j for j in range(len(g["layers"])) if j != head]
    assert (g["update_ratio"][:, encoder] == 0).all() and (g["grad_norm"][:, encoder] == 0).all()
    assert (g["update_ratio"][:, head] > 0).all()


def test_same_seed_same_run_other_seed_other_run(tiny_config, cls_csv, tmp_path):
    a = train(tiny_config(cls_csv, seed=7), tmp_path / "a")
    b = train(tiny_config(cls_csv, seed=7), tmp_path / "b")
    c = train(tiny_config(cls_csv, seed=8), tmp_path / "c")
    da, db, dc = (np.load(r.run_dir / "dynamics.npz") for r in (a, b, c))
    np.testing.assert_array_equal(da["loss"], db["loss"])
    assert a.metrics["test"] == b.metrics["test"]
    assert not np.array_equal(da["loss"], dc["loss"])


def test_gradient_accumulation_halves_optimizer_steps(tiny_config, cls_csv, tmp_path):
    r = train(tiny_config(cls_csv, epochs=1, telemetry_every=1, grad_accum=2, batch_size=8), tmp_path / "run")
    g = np.load(r.run_dir / "gradients.npz")
    assert len(g["step"]) == math.ceil(math.ceil(144 / 8) / 2)


def test_early_stopping_stops_and_keeps_the_best_epoch(tiny_config, cls_csv, tmp_path):
    # A learning rate this small barely moves the selection metric, so patience 1 stops early.
    cfg = tiny_config(cls_csv, epochs=6, lr=1e-9, early_stopping_patience=1, metric="loss", warmup_ratio=0.0)
    r = train(cfg, tmp_path / "run")
    hist = r.metrics["history"]
    assert len(hist) < 6 and json.loads((r.run_dir / "run.json").read_text())["stopped_early"]
    best = min(h["selection_loss"] for h in hist)
    assert r.metrics["selection"]["loss"] == pytest.approx(best)


@pytest.mark.parametrize("optimizer,schedule", [("adamw", "cosine"), ("adafactor", "constant"), ("adamw", "linear")])
def test_optimizers_and_schedules_learn(tiny_config, cls_csv, tmp_path, optimizer, schedule):
    r = train(tiny_config(cls_csv, epochs=3, optimizer=optimizer, schedule=schedule), tmp_path / "run")
    g = np.load(r.run_dir / "gradients.npz")
    assert r.metrics["history"][-1]["train_loss"] < r.metrics["history"][0]["train_loss"]
    if schedule == "constant":
        assert np.allclose(g["lr"][g["step"] > 3], 1e-2)
    else:
        assert g["lr"][-1] < g["lr"][len(g["lr"]) // 2]


def test_layerwise_lr_decay_and_last_n_freezing(tiny_bert_dir):
    from reflectlm.config import TrainConfig
    from reflectlm.modeling import build
    from reflectlm.config import ModelConfig

    model = build(ModelConfig(name=str(tiny_bert_dir)), "classification", ["a", "b"]).model
    groups = param_groups(model, TrainConfig(lr=1.0, layerwise_lr_decay=0.5, head_lr=2.0))
    lr = {g["group"]: g["lr"] for g in groups}
    assert lr == {"head": 2.0, "layer.1": 1.0, "layer.0": 0.5, "embeddings": 0.25}
    model = build(ModelConfig(name=str(tiny_bert_dir)), "classification", ["a", "b"]).model
    groups = param_groups(model, TrainConfig(freeze="last_n", unfreeze_last_n=1))
    assert {g["group"] for g in groups} == {"head", "layer.1"}
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all("layer.1." not in n and "classifier" not in n for n in frozen)


def test_length_grouped_batches_cover_every_example_once_and_group_lengths():
    lengths = list(np.random.default_rng(0).integers(1, 100, size=1000))
    s = LengthGroupedBatches(lengths, 10, seed=1)
    batches = list(s)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000)) and len(batches) == len(s) == 100
    pad_grouped = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    plain = list(LengthGroupedBatches(lengths, 10, seed=1, group_by_length=False))
    pad_plain = sum(max(lengths[i] for i in b) * len(b) for b in plain)
    assert pad_grouped < 0.7 * pad_plain
    s.set_epoch(1)
    assert list(s) != batches, "each epoch has its own order"
    s.set_epoch(0)
    assert list(s) == batches, "and the order is reproducible"


def test_ner_run_records_sentence_dynamics_and_entity_metrics(tiny_config, ner_conll, tmp_path):
    r = train(tiny_config(ner_conll, task="ner", epochs=3, lr=3e-3), tmp_path / "run")
    d = np.load(r.run_dir / "dynamics.npz")
    assert d["loss"].shape == (3, 72)
    assert ((d["correct"] >= 0) & (d["correct"] <= 1)).all()
    assert r.metrics["selection_metric"] == "entity_f1"
    assert {"entity_precision", "entity_recall", "entity_f1", "per_type"} <= set(r.metrics["test"])
    assert set(r.metrics["test"]["per_type"]) == {"location", "person"}
    assert r.metrics["test"]["entity_f1"] > 0.5


def test_lstm_baseline_trains_from_scratch(tiny_config, cls_csv, tmp_path):
    from reflectlm.config import load_config

    cfg = tiny_config(cls_csv, epochs=4, lr=1e-2)
    cfg = load_config(tree={**cfg.model_dump(), "model": {"kind": "lstm", "lstm": {"embedding_dim": 16, "hidden_size": 16}}})
    r = train(cfg, tmp_path / "run")
    assert files_in(r.run_dir) >= {"model/vocab.json", "model/model.safetensors", "model/reflectlm.json"}
    assert r.metrics["test"]["accuracy"] > 0.55
    assert list(np.load(r.run_dir / "gradients.npz")["layers"]) == ["embeddings", "layer.0", "head"]


@pytest.mark.skipif(not runtime.cpu_has_bf16(), reason="CPU without native bf16")
def test_bf16_autocast_trains(tiny_config, cls_csv, tmp_path):
    r = train(tiny_config(cls_csv, epochs=3, precision="bf16"), tmp_path / "run")
    assert r.metrics["precision"] == "bf16"
    assert r.metrics["test"]["accuracy"] > 0.55


def test_refuses_to_overwrite_a_run(tiny_config, cls_csv, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "something").write_text("x")
    with pytest.raises(RunError, match="already exists"):
        train(tiny_config(cls_csv), tmp_path / "run")


def test_early_learning_regularisation_trains_keeps_plain_losses_and_shares_targets(tiny_config, cls_csv, tmp_path):
    """train.early_learning adds lambda * log(1 - <p, t>) to what is minimised; the dynamics still
    record the plain cross-entropy (the label checks read them), and NER is refused with the fix."""
    from types import SimpleNamespace

    from reflectlm.config import ConfigError
    from reflectlm.remedies import EarlyLearning, Setting
    from reflectlm.tasks import get_task

    plain = train(tiny_config(cls_csv, epochs=2, seed=3), tmp_path / "plain")
    elr = train(tiny_config(cls_csv, epochs=2, seed=3, early_learning=3.0), tmp_path / "elr")
    d, dp = np.load(elr.run_dir / "dynamics.npz"), np.load(plain.run_dir / "dynamics.npz")
    assert (d["loss"] >= 0).all() and np.isfinite(d["loss"]).all()
    assert not np.array_equal(d["loss"][1], dp["loss"][1])  # the first epoch's targets changed the second's updates
    assert elr.metrics["history"][-1]["train_loss"] < elr.metrics["history"][0]["train_loss"]
    # Targets: zero until seen, then beta t + (1 - beta) q per visit.
    tc = tiny_config(cls_csv, early_learning=3.0, early_learning_beta=0.5).train
    one = SimpleNamespace(num_processes=1)

    def setting(task):
        return Setting(get_task(task), ["a", "b", "c"], 4, "cpu", one, None)

    r = EarlyLearning.open(tc, setting("classification"))
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    r.step(logits, np.array([1, 3]), one)
    q = logits.softmax(-1)
    assert torch.allclose(r.targets[[1, 3]], 0.5 * q, atol=1e-4) and r.targets[[0, 2]].abs().sum() == 0
    r.step(logits, np.array([1, 3]), one)
    assert torch.allclose(r.targets[[1, 3]], 0.75 * q, atol=1e-4)
    assert EarlyLearning.open(tiny_config(cls_csv).train, setting("classification")) is None
    with pytest.raises(ConfigError, match="leave train.early_learning at its default"):
        EarlyLearning.open(tc, setting("ner"))
