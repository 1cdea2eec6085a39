"""data.simulated_label_noise: a stated share of training labels flipped on purpose, said so in
the warnings and run.json, and the report counts how many a label check found."""

from __future__ import annotations

import json

import pytest

from conftest import make_cls_rows


def write(path, rows):
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


def test_flips_the_stated_share_of_training_labels_only(tmp_path):
    from reflectlm.config import load_config
    from reflectlm.data import load_splits

    rows = make_cls_rows(200)
    cfg = load_config(tree={"data": {"train": str(write(tmp_path / "t.csv", rows)), "simulated_label_noise": 0.2,
                                     "simulated_noise_seed": 3}})
    clean = load_config(tree={"data": {"train": str(tmp_path / "t.csv")}})
    noisy, plain = load_splits(cfg.data, 0), load_splits(clean.data, 0)
    flipped = noisy.simulated["flipped"]
    assert len(flipped) == round(0.2 * len(noisy.train)) and noisy.simulated["fraction"] == 0.2
    assert noisy.selection.labels == plain.selection.labels and noisy.test.labels == plain.test.labels
    truth = dict(zip(plain.train.ids, plain.train.labels))
    for i, y in zip(noisy.train.ids, noisy.train.labels):
        if i in flipped:
            assert flipped[i]["true"] == truth[i] != y == flipped[i]["given"]
        else:
            assert y == truth[i]
    assert any("flipped on purpose" in w for w in noisy.warnings)
    assert load_splits(cfg.data, 0).simulated == noisy.simulated  # the same seed flips the same labels


def test_only_for_class_labels(tmp_path, ner_conll):
    from reflectlm.config import load_config
    from reflectlm.data import DataError, load_splits

    cfg = load_config(tree={"data": {"task": "ner", "train": str(ner_conll), "simulated_label_noise": 0.1}})
    with pytest.raises(DataError, match="flips class labels"):
        load_splits(cfg.data, 0)


def test_the_run_says_so_and_the_report_counts_what_was_found(tmp_path, tiny_bert_dir):
    from reflectlm.config import load_config
    from reflectlm.loop import improve
    from reflectlm.report import write_report

    tree = {"data": {"train": str(write(tmp_path / "t.csv", make_cls_rows(240))), "selection_fraction": 0.2,
                     "test_fraction": 0.2, "simulated_label_noise": 0.15},
            "model": {"name": str(tiny_bert_dir), "dropout": 0.1},
            "train": {"epochs": 3, "batch_size": 16, "lr": 1e-2, "head_lr": 0.0, "telemetry_every": 0,
                      "precision": "fp32", "threads": 1},
            "run": {"quiet": True, "output_dir": str(tmp_path / "runs")},
            "loop": {"rounds": 1, "report": False, "checks": ["performance", "label_issues"], "n_bootstrap": 200}}
    res = improve(load_config(tree=tree))
    info = json.loads((res.run_dir / "run.json").read_text())["simulated_label_noise"]
    assert info["count"] == len(info["flipped"]) == round(0.15 * 144)
    page = write_report(res.run_dir).read_text(encoding="utf-8")
    assert "simulated label errors found" in page and f"of {info['count']}" in page
    flagged = set()
    for f in json.loads((res.run_dir / "rounds" / "01" / "findings.json").read_text())["findings"]:
        if f["kind"] == "label_issues":
            flagged |= set(f["evidence"].get("flagged") or [])
    assert f"{len(flagged & set(info['flipped']))} of {info['count']}" in page


def test_the_test_gain_is_the_paired_difference_with_its_interval(tmp_path):
    import numpy as np

    from reflectlm.config import load_config
    from reflectlm.data import load_splits
    from reflectlm.evaluate import Outputs
    from reflectlm.loop.engine import test_gain

    cfg = load_config(tree={"data": {"train": str(write(tmp_path / "t.csv", make_cls_rows(300)))},
                            "train": {"metric": "accuracy"}})
    test = load_splits(cfg.data, 0).test
    labels = sorted(set(test.labels))
    y = np.array([labels.index(v) for v in test.labels])
    right = np.eye(len(labels))[y]
    wrong = np.eye(len(labels))[(y + 1) % len(labels)]
    half = np.where((np.arange(len(y)) % 2 == 0)[:, None], right, wrong)  # round 0: half right
    g = test_gain(Outputs(half, None, None), Outputs(right, None, None), test, cfg, labels)  # champion: all right
    assert g["metric"] == "accuracy" and g["n"] == len(y)
    assert g["difference"] == pytest.approx(g["champion"] - g["round0"]) == pytest.approx(1 - (y.size + 1) // 2 / y.size)
    assert 0 < g["ci_low"] <= g["difference"] <= g["ci_high"]


def test_min_confidence_keeps_the_agreed_labels_before_splitting(tmp_path):
    from reflectlm.config import load_config
    from reflectlm.data import DataError, load_splits

    rows = make_cls_rows(200)
    path = tmp_path / "c.csv"
    path.write_text("text,label,conf\n" + "".join(f"{t},{y},{1.0 if i % 4 else 0.6}\n" for i, (t, y) in enumerate(rows)),
                    encoding="utf-8")
    tree = {"data": {"train": str(path), "confidence_column": "conf", "min_confidence": 1.0}}
    splits = load_splits(load_config(tree=tree).data, 0)
    kept = {t for i, (t, _) in enumerate(rows) if i % 4}
    assert len(splits.train) + len(splits.selection) + len(splits.test) == len(kept) == 150
    assert set(splits.train.texts) | set(splits.selection.texts) | set(splits.test.texts) == kept
    assert any("keeps 150 of 200 examples" in w for w in splits.warnings)
    tree["data"]["min_confidence"] = 0.0
    everything = load_splits(load_config(tree=tree).data, 0)
    assert len(everything.train) + len(everything.selection) + len(everything.test) == 200
    with pytest.raises(DataError, match="has none. Fix: name the confidence column"):
        load_splits(load_config(tree={"data": {"train": str(write(tmp_path / "t.csv", rows)),
                                               "min_confidence": 0.9}}).data, 0)
