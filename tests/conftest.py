"""Shared fixtures: a tiny BERT (2 layers, hidden 32) saved as a local model directory, and small
synthetic classification / NER datasets whose labels a model can learn in a few epochs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = {
    "pos": ["great", "good", "love", "happy", "nice", "excellent"],
    "neg": ["bad", "awful", "hate", "sad", "poor", "terrible"],
    "neu": ["table", "chair", "blue", "walk", "paper", "window"],
}
FILLER = ["the", "a", "it", "was", "and", "so", "very", "this"]


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # Tiny models gain nothing from a second thread, and two busy processes on two cores make
    # OpenMP threads spin against each other (a 30x slow-down was seen here).
    import torch

    torch.set_num_threads(1)


def _tokenizer():
    from transformers import BertTokenizerFast

    from reflectlm.modeling import packaged_minilm

    return BertTokenizerFast.from_pretrained(packaged_minilm())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT encoder with the MiniLM vocabulary, random weights, saved like a hub model."""
    import torch
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tinybert")
    tok = _tokenizer()
    tok.save_pretrained(out)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(out)
    return out


def make_cls_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        y = list(WORDS)[i % 3]
        words = [rng.choice(WORDS[y]) for _ in range(rng.randint(2, 4))] + rng.sample(FILLER, rng.randint(0, 2))
        rng.shuffle(words)
        rows.append((" ".join(words) + f" n{i}", y))
    return rows


@pytest.fixture
def cls_csv(tmp_path) -> Path:
    path = tmp_path / "cls.csv"
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in make_cls_rows(240)), encoding="utf-8")
    return path


def make_ner_sentences(n: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    people = [["John", "Smith"], ["Mary"], ["Ann", "Lee"]]
    places = [["Paris"], ["New", "York"], ["Berlin"]]
    sents = []
    for _ in range(n):
        sent = [(w, "O") for w in rng.sample(FILLER, 3)]
        ent, kind = (rng.choice(people), "person") if rng.random() < 0.5 else (rng.choice(places), "location")
        sent += [(w, ("B-" if k == 0 else "I-") + kind) for k, w in enumerate(ent)]
        sent += [(w, "O") for w in rng.sample(FILLER, 2)]
        sents.append(sent)
    return sents


@pytest.fixture
def ner_conll(tmp_path) -> Path:
    path = tmp_path / "ner.conll"
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in make_ner_sentences(120)), encoding="utf-8")
    return path


@pytest.fixture
def tiny_config(tiny_bert_dir):
    """Build a validated Config for the tiny model: tiny_config(train_path, task, **train_overrides)."""
    from reflectlm.config import load_config

    def make(train: Path, task: str = "classification", **train_kw):
        tree = {
            "data": {"task": task, "train": str(train), "selection_fraction": 0.2, "test_fraction": 0.2},
            "model": {"name": str(tiny_bert_dir)},
            "train": {"epochs": 2, "batch_size": 16, "lr": 1e-2, "head_lr": 0.0, "telemetry_every": 2, "precision": "fp32",
                      **train_kw},
            "run": {"quiet": True},
        }
        return load_config(tree=tree)

    return make
