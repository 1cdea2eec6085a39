"""reflectlm.modeling: locating weights, the word tokenizer and LSTM baseline, building models,
bundles that reload to identical outputs, and layer groups."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from reflectlm.config import LSTMConfig, ModelConfig
from reflectlm.modeling import (
    BUNDLE_FILE,
    LSTMModel,
    ModelError,
    WordTokenizer,
    build,
    layer_groups,
    load_bundle,
    packaged_minilm,
    resolve,
    save_bundle,
)
from reflectlm.tasks import get_task

CLS_LABELS = ["neg", "neu", "pos"]
NER_LABELS = ["O", "B-loc", "I-loc", "B-per", "I-per"]
TEXTS = ["I love this great movie", "awful, bad film!", "the table is blue", "good good good", "sad and poor"]
TOKENS = [["John", "Smith", "went", "to", "Paris"], ["Mary", "likes", "New", "York"], ["the", "end"]]


def cls_ds():
    return SimpleNamespace(texts=TEXTS, labels=["pos", "neg", "neu", "pos", "neg"], tokens=None)


def ner_ds():
    return SimpleNamespace(texts=[" ".join(t) for t in TOKENS], tokens=TOKENS,
                           labels=[["B-per", "I-per", "O", "O", "B-loc"], ["B-per", "O", "B-loc", "I-loc"], ["O", "O"]])


def lstm_cfg(**kw) -> ModelConfig:
    return ModelConfig(kind="lstm", lstm=LSTMConfig(embedding_dim=8, hidden_size=6, dropout=0.3, **kw))


def batch_logits(bundle, ds, task: str) -> torch.Tensor:
    tmod = get_task(task)
    feats = tmod.encode(bundle.tokenizer, ds, None, bundle.meta["max_length"])
    pad = getattr(bundle.tokenizer, "pad_token_id", 0) or 0
    b = tmod.collate(feats, pad)
    bundle.model.eval()
    with torch.no_grad():
        return bundle.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


# --------------------------------------------------------------------------- resolve


def test_resolve_minilm_is_the_packaged_model():
    for name in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        path = resolve(name)
        assert path == packaged_minilm()
        assert (path / "config.json").is_file()
    assert json.loads((path / "config.json").read_text())["num_hidden_layers"] == 6


def test_resolve_local_dirs(tiny_bert_dir, tmp_path):
    assert resolve(str(tiny_bert_dir)) == tiny_bert_dir
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / BUNDLE_FILE).write_text("{}")
    assert resolve(str(run)) == run / "model"  # a run directory means its bundle


def test_resolve_unknown_name_says_no_download(tmp_path):
    with pytest.raises(ModelError) as e:
        resolve("bert-base-uncased")
    msg = str(e.value)
    assert "'bert-base-uncased'" in msg
    assert "cannot be downloaded" in msg
    assert 'model.name = "minilm"' in msg and "save_pretrained" in msg
    with pytest.raises(ModelError, match="no config.json"):
        resolve(str(tmp_path))  # an existing directory that is not a model


# --------------------------------------------------------------------------- word tokenizer


def test_word_tokenizer_fit_is_deterministic_and_ranked():
    texts = ["b a c", "a b", "a", "Z z"]
    tok = WordTokenizer.fit(texts)
    assert tok.vocab == WordTokenizer.fit(list(reversed(texts))).vocab
    # counts: a 3, b 2, z 2 (lowercased), c 1; ties alphabetical
    assert list(tok.vocab) == ["[PAD]", "[UNK]", "a", "b", "z", "c"]
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1 and len(tok) == 6
    assert list(WordTokenizer.fit(texts, min_freq=2).vocab) == ["[PAD]", "[UNK]", "a", "b", "z"]
    assert list(WordTokenizer.fit(texts, max_size=4).vocab) == ["[PAD]", "[UNK]", "a", "b"]
    cased = WordTokenizer.fit(texts, lowercase=False)
    assert "Z" in cased.vocab and "z" in cased.vocab


def test_word_tokenizer_encodes_unknown_words_and_word_ids():
    tok = WordTokenizer.fit(["hello world", "hello there"])
    enc = tok(["Hello, unseen world", ""])
    # punctuation is its own word; unseen words (and the comma) map to [UNK]
    assert enc["input_ids"][0] == [tok.vocab["hello"], 1, 1, tok.vocab["world"]]
    assert enc.word_ids(0) == [0, 1, 2, 3]
    assert enc["input_ids"][1] == [1] and enc.word_ids(1) == [None]  # empty text keeps one position
    words = tok([["World", "zzz", "hello"]], is_split_into_words=True)
    assert words["input_ids"] == [[tok.vocab["world"], 1, tok.vocab["hello"]]]
    assert words.word_ids(0) == [0, 1, 2]
    assert tok(["a b c d e"], max_length=2).word_ids(0) == [0, 1]


def test_word_tokenizer_fits_on_word_lists():
    tok = WordTokenizer.fit([["New", "York"], ["new"]])
    assert list(tok.vocab) == ["[PAD]", "[UNK]", "new", "york"]


def test_word_tokenizer_save_load(tmp_path):
    tok = WordTokenizer.fit(TEXTS, lowercase=False)
    tok.save_pretrained(tmp_path)
    back = WordTokenizer.from_pretrained(tmp_path)
    assert back.vocab == tok.vocab and back.lowercase is False
    assert back(TEXTS)["input_ids"] == tok(TEXTS)["input_ids"]


# --------------------------------------------------------------------------- LSTM model


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_lstm_shapes_and_padding_invariance(task):
    torch.manual_seed(0)
    model = LSTMModel(vocab_size=20, num_labels=4, head=get_task(task).head, embedding_dim=8, hidden_size=5,
                      num_layers=2, bidirectional=True, dropout=0.5).eval()
    seqs = [[3, 4, 5], [6, 7, 8, 9, 10, 11], [12]]
    b = get_task(task).collate([{"input_ids": s, "labels": 0 if task == "classification" else [0] * len(s), "index": i}
                                for i, s in enumerate(seqs)], pad_id=0)
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert out.shape == ((3, 4) if task == "classification" else (3, 6, 4))
    for i, s in enumerate(seqs):
        alone = model(input_ids=torch.tensor([s]), attention_mask=torch.ones(1, len(s), dtype=torch.long)).logits
        if task == "classification":
            torch.testing.assert_close(out[i], alone[0], atol=1e-6, rtol=1e-5)
        else:
            torch.testing.assert_close(out[i, : len(s)], alone[0], atol=1e-6, rtol=1e-5)
    # The padded positions' token ids do not matter either.
    b2 = dict(b, input_ids=b["input_ids"].masked_fill(b["attention_mask"] == 0, 17))
    torch.testing.assert_close(model(**b2).logits, out)


def test_lstm_dropout_only_in_train_mode():
    torch.manual_seed(0)
    model = LSTMModel(20, 3, "classification", 8, 5, dropout=0.5)
    x = {"input_ids": torch.tensor([[3, 4, 5, 6]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    model.eval()
    torch.testing.assert_close(model(**x).logits, model(**x).logits)
    model.train()
    assert not torch.allclose(model(**x).logits, model(**x).logits)


# --------------------------------------------------------------------------- build


@pytest.mark.parametrize("task, labels", [("classification", CLS_LABELS), ("ner", NER_LABELS)])
def test_build_transformer(tiny_bert_dir, task, labels):
    torch.manual_seed(0)
    bundle = build(ModelConfig(name=str(tiny_bert_dir), dropout=0.25), task, labels, max_length=64)
    cfg = bundle.model.config
    assert cfg.num_labels == len(labels)
    assert cfg.id2label == dict(enumerate(labels))
    assert cfg.label2id == {n: i for i, n in enumerate(labels)}
    assert cfg.hidden_dropout_prob == 0.25 and cfg.attention_probs_dropout_prob == 0.25
    drops = [m for m in bundle.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(m.p == 0.25 for m in drops)  # hidden, attention (sdpa reads .p) and classifier
    assert bundle.meta == {"format_version": 1, "task": task, "labels": labels, "max_length": 64, "options": {},
                           "kind": "transformer", "base_model": str(tiny_bert_dir)}
    assert bundle.labels == labels and bundle.task == task
    ds = cls_ds() if task == "classification" else ner_ds()
    logits = batch_logits(bundle, ds, task)
    assert logits.shape[0] == len(ds.texts) and logits.shape[-1] == len(labels)
    assert logits.ndim == (2 if task == "classification" else 3)


def test_build_lstm_needs_training_data():
    with pytest.raises(ModelError, match="pass train_ds"):
        build(lstm_cfg(), "classification", CLS_LABELS)


@pytest.mark.parametrize("task, labels", [("classification", CLS_LABELS), ("ner", NER_LABELS)])
def test_build_lstm(task, labels):
    ds = cls_ds() if task == "classification" else ner_ds()
    bundle = build(lstm_cfg(num_layers=2), task, labels, ds, max_length=32)
    assert isinstance(bundle.model, LSTMModel)
    assert bundle.meta["kind"] == "lstm" and bundle.meta["lstm"]["num_layers"] == 2
    assert bundle.model.classifier.out_features == len(labels)
    assert ("john" if task == "ner" else "great") in bundle.tokenizer.vocab  # vocabulary from train_ds
    logits = batch_logits(bundle, ds, task)
    assert logits.shape[-1] == len(labels)


# --------------------------------------------------------------------------- bundles


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_transformer_bundle_round_trip(tiny_bert_dir, tmp_path, task):
    labels = CLS_LABELS if task == "classification" else NER_LABELS
    ds = cls_ds() if task == "classification" else ner_ds()
    torch.manual_seed(0)
    bundle = build(ModelConfig(name=str(tiny_bert_dir)), task, labels, max_length=64)
    before = batch_logits(bundle, ds, task)
    path = save_bundle(bundle, tmp_path / "model")
    assert {"reflectlm.json", "config.json", "model.safetensors"} <= {p.name for p in path.iterdir()}
    back = load_bundle(path)
    assert back.meta == bundle.meta
    assert back.model.training is False
    torch.testing.assert_close(batch_logits(back, ds, task), before, atol=1e-6, rtol=1e-5)
    # A run directory (with model/ inside) loads the same bundle.
    again = load_bundle(tmp_path)
    torch.testing.assert_close(batch_logits(again, ds, task), before, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_lstm_bundle_round_trip(tmp_path, task):
    labels = CLS_LABELS if task == "classification" else NER_LABELS
    ds = cls_ds() if task == "classification" else ner_ds()
    torch.manual_seed(0)
    bundle = build(lstm_cfg(bidirectional=False), task, labels, ds, max_length=32)
    before = batch_logits(bundle, ds, task)
    save_bundle(bundle, tmp_path / "run" / "model")
    back = load_bundle(tmp_path / "run")
    assert back.meta == bundle.meta and back.tokenizer.vocab == bundle.tokenizer.vocab
    assert back.model.training is False
    torch.testing.assert_close(batch_logits(back, ds, task), before)


def test_transfer_from_bundle(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    bundle = build(ModelConfig(name=str(tiny_bert_dir)), "classification", CLS_LABELS)
    save_bundle(bundle, tmp_path / "run" / "model")
    prior = build(ModelConfig(name=str(tmp_path / "run")), "classification", CLS_LABELS)
    torch.testing.assert_close(batch_logits(prior, cls_ds(), "classification"),
                               batch_logits(bundle, cls_ds(), "classification"), atol=1e-6, rtol=1e-5)
    with pytest.raises(ModelError, match="same task and label set"):
        build(ModelConfig(name=str(tmp_path / "run")), "classification", ["a", "b"])


def test_load_bundle_without_meta_is_a_helpful_error(tiny_bert_dir, tmp_path):
    for path in (tmp_path, tiny_bert_dir):  # an empty dir; a plain Hugging Face model dir
        with pytest.raises(ModelError) as e:
            load_bundle(path)
        msg = str(e.value)
        assert str(path) in msg
        assert "no reflectlm.json" in msg
        assert "run directory" in msg and "reflectlm train" in msg


# --------------------------------------------------------------------------- layer groups


def check_cover(model, groups):
    names = [n for _, ps in groups for n, _ in ps]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))  # every parameter exactly once


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_layer_groups_tiny_bert(tiny_bert_dir, task):
    bundle = build(ModelConfig(name=str(tiny_bert_dir)), task, CLS_LABELS)
    groups = layer_groups(bundle.model)
    assert [n for n, _ in groups] == ["embeddings", "layer.0", "layer.1", "head"]
    check_cover(bundle.model, groups)
    g = dict(groups)
    assert all(".embeddings." in n for n, _ in g["embeddings"])
    assert all(".layer.1." in n for n, _ in g["layer.1"])
    head = {n for n, _ in g["head"]}
    assert {"classifier.weight", "classifier.bias"} <= head
    if task == "classification":
        assert "bert.pooler.dense.weight" in head


def test_layer_groups_lstm():
    model = LSTMModel(30, 3, "ner", embedding_dim=8, hidden_size=5, num_layers=2, bidirectional=True)
    groups = layer_groups(model)
    assert [n for n, _ in groups] == ["embeddings", "layer.0", "layer.1", "head"]
    check_cover(model, groups)
    g = {k: {n for n, _ in ps} for k, ps in groups}
    assert g["embeddings"] == {"embeddings.weight"}
    assert g["layer.0"] == {f"lstm.{w}_l0{s}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                            for s in ("", "_reverse")}
    assert g["head"] == {"classifier.weight", "classifier.bias"}


def test_dropout_default_off_and_applied_on_transfer(tiny_bert_dir, tmp_path):
    # off by default (measured faster at equal accuracy); "pretrained" keeps the model's own; a saved
    # bundle used as the starting point (transfer) still takes the configured dropout.
    bundle = build(ModelConfig(name=str(tiny_bert_dir)), "classification", CLS_LABELS, max_length=64)
    assert all(m.p == 0.0 for m in bundle.model.modules() if isinstance(m, torch.nn.Dropout))
    kept = build(ModelConfig(name=str(tiny_bert_dir), dropout="pretrained"), "classification", CLS_LABELS, max_length=64)
    from transformers import AutoConfig

    pretrained = AutoConfig.from_pretrained(tiny_bert_dir).hidden_dropout_prob
    assert kept.model.config.hidden_dropout_prob == pretrained
    save_bundle(bundle, tmp_path / "b")
    again = build(ModelConfig(name=str(tmp_path / "b"), dropout=0.3), "classification", CLS_LABELS, max_length=64)
    assert again.model.config.hidden_dropout_prob == 0.3
    assert all(m.p == 0.3 for m in again.model.modules() if isinstance(m, torch.nn.Dropout))
