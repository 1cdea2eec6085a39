"""Frozen-encoder embeddings: mean pooling over the mask, unit norm, per-word vectors, the disk cache."""

from __future__ import annotations


import numpy as np
import pytest

from reflectlm import embed
from reflectlm.embed import embed_texts, embed_words

TEXTS = ["the card has not arrived", "hi", "how do I top up my account with a bank transfer from abroad", "hi"]


def _manual(model_dir, text: str) -> np.ndarray:
    """Mean of the last hidden states over the real tokens, in fp32, then unit norm."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    enc = tok([text], return_tensors="pt")
    with torch.inference_mode():
        h = model(**enc).last_hidden_state[0]  # (T, D)
    v = h.mean(0).numpy()
    return v / np.linalg.norm(v)


def test_texts_shape_norm_and_mean_pooling(tiny_bert_dir, tmp_path):
    X = embed_texts(TEXTS, model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert X.shape == (4, 32) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(X[1], X[3])  # same text, same vector (whatever batch it sat in)
    # Batched with longer texts (padding) it equals the unpadded single-text computation; bf16
    # autocast (when the CPU has it) costs a little precision, hence cosine rather than equality.
    for i in (0, 1, 2):
        assert float(X[i] @ _manual(tiny_bert_dir, TEXTS[i])) > 0.995
    assert float(X[0] @ X[2]) < 0.9999  # different texts differ


def test_second_call_reads_the_cache(tiny_bert_dir, tmp_path, monkeypatch):
    first = embed_texts(TEXTS, model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("texts-*.npy"))) == 1

    def no_model(*a, **k):
        raise AssertionError("the cached call must not load the model")

    monkeypatch.setattr(embed, "_load_encoder", no_model)
    second = embed_texts(TEXTS, model=str(tiny_bert_dir), cache_dir=tmp_path)
    np.testing.assert_array_equal(first, second)
    # Other texts are another file: the key covers the inputs.
    monkeypatch.undo()
    embed_texts(TEXTS[:2], model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("texts-*.npy"))) == 2


def test_cache_dir_from_environment(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("REFLECTLM_CACHE", str(tmp_path / "env"))
    embed_texts(["a b c"], model=str(tiny_bert_dir))
    assert len(list((tmp_path / "env").glob("texts-*.npy"))) == 1


def test_words_one_vector_per_word_at_its_first_subtoken(tiny_bert_dir, tmp_path):
    sents = [["John", "Smith", "visited", "Paris"], ["unbelievably", "x"], []]
    W = embed_words(sents, model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert [w.shape for w in W] == [(4, 32), (2, 32), (0, 32)]
    assert all(w.dtype == np.float32 for w in W)
    assert np.abs(W[0]).sum(1).min() > 0  # every word got a vector
    # Cached: identical on the second call.
    again = embed_words(sents, model=str(tiny_bert_dir), cache_dir=tmp_path)
    for a, b in zip(W, again):
        np.testing.assert_array_equal(a, b)

    # The vector of a word is the hidden state at its first sub-token (fp32 reference).
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    enc = tok([sents[1]], is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        h = model(**enc).last_hidden_state[0].numpy()  # (T, D)
    first = enc.word_ids(0).index(0)
    assert np.allclose(W[1][0], h[first], atol=0.05 * np.abs(h[first]).max())


def test_empty_input(tiny_bert_dir, tmp_path):
    assert embed_texts([], model=str(tiny_bert_dir), cache_dir=tmp_path).shape == (0, 32)
    assert embed_words([], model=str(tiny_bert_dir), cache_dir=tmp_path) == []


def test_unknown_model_says_what_to_do(tmp_path):
    from reflectlm.modeling import ModelError

    with pytest.raises(ModelError, match="not a local model directory"):
        embed_texts(["x"], model=str(tmp_path / "nope"), cache_dir=tmp_path)
