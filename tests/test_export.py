"""reflectlm export: every variant is gated against the champion on the selection split, records
its evidence in export.json, and loads back as a Predictor that agrees with the champion."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from reflectlm.deploy.export import ExportRefused, export  # noqa: E402
from reflectlm.deploy.predictor import load_predictor  # noqa: E402

TEXTS = ["great good love n1", "awful bad hate so n2", "the table chair window", "very happy and nice"]


@pytest.mark.parametrize("kw", [{"onnx": True}, {"onnx": True, "quantize": "int8"}, {"quantize": "int8"},
                                {"quantize": "bf16"}, {"prune": 0.3}], ids=lambda kw: "-".join(map(str, kw.values())))
def test_each_variant_is_gated_measured_and_agrees_with_the_champion(tiny_cls_run, tmp_path, kw):
    info = export(tiny_cls_run, tmp_path / "out", repeats=2, **kw)
    saved = json.loads((tmp_path / "out" / "export.json").read_text())
    assert saved["status"] == "accepted" and saved["comparison"]["mode"] == "non_inferiority"
    assert saved["comparison"]["ci_low"] > -saved["margin"]
    for side in ("candidate", "champion"):
        m = saved[side]
        assert m["size_bytes"] > 0 and m["latency_ms_batch1"] > 0 and m["latency_ms_batch32"] > 0
        assert m["throughput_texts_per_s"] > 0
    assert abs(saved["candidate"]["selection_metric"] - saved["champion"]["selection_metric"]) < saved["margin"] + 0.05
    if kw.get("quantize") in ("int8", "bf16"):
        assert saved["candidate"]["size_bytes"] < saved["champion"]["size_bytes"]
    champ, cand = load_predictor(tiny_cls_run), load_predictor(info["output"])
    assert cand.info["format"] == ("onnx" if kw.get("onnx") else "torch")
    p0, _ = champ.run(TEXTS)
    p1, emb = cand.run(TEXTS)
    assert p1.shape == p0.shape and np.allclose(p1.sum(1), 1, atol=1e-3)
    assert (p1.argmax(1) == p0.argmax(1)).mean() >= 0.75
    if not kw.get("quantize") and not kw.get("prune"):  # fp32 ONNX: the same function
        np.testing.assert_allclose(p1, p0, atol=1e-4)
    assert emb is not None and emb.shape[0] == len(TEXTS)


def test_onnx_has_dynamic_batch_and_sequence_axes(tiny_cls_run, tmp_path):
    import onnx

    info = export(tiny_cls_run, tmp_path / "o", onnx=True, repeats=1)
    graph = onnx.load(str(tmp_path / "o" / "model.onnx")).graph
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
    assert dims == [["batch", "sequence"], ["batch", "sequence"]]
    pred = load_predictor(info["output"])
    long = ["good " * 60, "bad"]  # different lengths in one batch, and 1 vs 2 rows
    assert len(pred.predict(long)) == 2 and len(pred.predict(["nice"])) == 1


def test_ner_export_gives_entity_spans_with_character_offsets(tiny_ner_run, tmp_path):
    info = export(tiny_ner_run, tmp_path / "n", onnx=True, quantize="int8", repeats=1)
    assert info["metric"] == "entity_f1" and info["status"] == "accepted"
    pred = load_predictor(info["output"])
    text = "the  so  John Smith  was very"
    out = pred.predict([text])[0]
    champ = load_predictor(tiny_ner_run).predict([text])[0]
    assert [e["text"] for e in out["entities"]] == [e["text"] for e in champ["entities"]]
    for e in out["entities"]:
        assert text[e["start"]:e["end"]] == e["text"]


def test_a_refused_export_says_why_and_leaves_no_model(tiny_cls_run, tmp_path):
    with pytest.raises(ExportRefused, match="worse than the champion by more than the margin"):
        export(tiny_cls_run, tmp_path / "r", prune=0.95, margin=0.0, repeats=1)
    saved = json.loads((tmp_path / "r" / "export.json").read_text())
    assert saved["status"] == "refused" and "smaller --prune" in saved["reason"]
    assert saved["attempts"][0]["passed"] is False and saved["attempts"][0]["difference"] < 0
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["export.json"]
    with pytest.raises(Exception, match="refused export"):
        load_predictor(tmp_path / "r")


def test_int8_tries_its_remedies_in_order_until_one_passes(tiny_cls_run, tmp_path):
    """margin 0 refuses everything (the CI cannot lie above 0 for equal models), so every remedy runs."""
    with pytest.raises(ExportRefused):
        export(tiny_cls_run, tmp_path / "q", onnx=True, quantize="int8", margin=0.0, repeats=1)
    tried = [a["remedy"] for a in json.loads((tmp_path / "q" / "export.json").read_text())["attempts"]]
    assert len(tried) == 3 and "per-tensor" in tried[0] and "MatMul only" in tried[1] and "kept fp32" in tried[2]
    last = json.loads((tmp_path / "q" / "export.json").read_text())["attempts"][2]
    assert last["quantization"]["excluded_nodes"]  # the last layer's and the head's nodes stayed fp32


def test_bad_requests_say_how_to_fix_them(tiny_cls_run, tmp_path):
    with pytest.raises(ValueError, match="nothing to export"):
        export(tiny_cls_run, tmp_path / "a")
    with pytest.raises(ValueError, match="bf16"):
        export(tiny_cls_run, tmp_path / "b", onnx=True, quantize="bf16")
    with pytest.raises(ValueError, match="int8 or bf16"):
        export(tiny_cls_run, tmp_path / "c", quantize="int4")


def test_cli_export_exit_codes(tiny_cls_run, tmp_path):
    from typer.testing import CliRunner

    from reflectlm.cli import app

    ok = CliRunner().invoke(app, ["export", str(tiny_cls_run), "--quantize", "int8", "-o", str(tmp_path / "e"), "-q"])
    assert ok.exit_code == 0, ok.output
    assert "accepted" in ok.output and (tmp_path / "e" / "export.json").is_file()
    bad = CliRunner().invoke(app, ["export", str(tiny_cls_run), "--prune", "0.95", "--margin", "0", "-o",
                                   str(tmp_path / "f"), "-q"])
    assert bad.exit_code == 1 and "refused" in bad.output
    usage = CliRunner().invoke(app, ["export", str(tiny_cls_run), "--quantize", "int4", "-o", str(tmp_path / "g")])
    assert usage.exit_code == 2 and "int8 or bf16" in usage.output  # bad input, not a failure


def test_int8_onnx_export_leaves_the_process_logging_as_it_was(tiny_cls_run, tmp_path):
    import logging

    root = logging.getLogger()
    before = root.level
    export(tiny_cls_run, tmp_path / "l", onnx=True, quantize="int8", repeats=1)
    assert root.level == before  # a regression once silenced every warning after an export


def test_head_pruning_removes_whole_heads(tiny_cls_run, tmp_path):
    # margin 1: this test is about what pruning does, not whether the tiny model tolerates it
    info = export(tiny_cls_run, tmp_path / "h", prune=0.5, prune_method="heads", margin=1.0, repeats=1)
    assert info["prune"]["method"] == "heads" and info["prune"]["removed"] == 2  # 1 of 2 heads in each of 2 layers
    from reflectlm.modeling import load_bundle

    q = load_bundle(tmp_path / "h" / "model").model.bert.encoder.layer[0].attention.self.query.weight  # (32, 32)
    heads = [int(h) for h in info["prune"]["heads_removed"]["0"]]
    assert all(float(q[h * 16:(h + 1) * 16].detach().abs().sum()) == 0.0 for h in heads)
