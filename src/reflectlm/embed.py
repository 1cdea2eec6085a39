"""Frozen-encoder embeddings, cached on disk: the cheap representation behind fast
cross-validation, near-duplicate search and active learning.

    X = embed_texts(ds.texts)                 # (N, 384) unit vectors from all-MiniLM-L6-v2
    W = embed_words(ds.tokens)                # per sentence (n_words, 384), for NER

Texts are mean-pooled over the attention mask and L2-normalised, as all-MiniLM-L6-v2 was trained
(sentence-transformers: Transformer -> mean Pooling -> Normalize). Words take the last hidden
state at their first sub-token, the position the NER head reads. Results are saved under
`cache_dir` (default $REFLECTLM_CACHE, else ~/.cache/reflectlm/embeddings) in a file named by
the sha256 of the model and the inputs, so the second call with the same texts is a file read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from . import rundir

__all__ = ["cache_path", "default_cache_dir", "embed_texts", "embed_words"]

# all-MiniLM-L6-v2's sentence_bert_config says max_seq_length = 256: longer inputs were never
# seen in its training, so truncating there loses nothing the model could use.
MAX_LENGTH = 256
_FORMAT = 1  # bump when the way vectors are computed changes, so stale cache files are not read


def default_cache_dir() -> Path:
    env = os.environ.get("REFLECTLM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "reflectlm" / "embeddings"


def _model_key(path: Path) -> dict:
    # The path alone is not enough: a directory can be overwritten with other weights (a new
    # fine-tune saved to the same place), so the weight files' sizes and times are part of the key.
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin")) if path.is_dir() else []
    return {"path": str(path.resolve()), "weights": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]}


def cache_path(kind: str, model_path: Path, items, precision: str, max_length: int, cache_dir=None) -> Path:
    """The file that holds (or will hold) these embeddings: sha256 of model + inputs + settings."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": _FORMAT, "kind": kind, "model": _model_key(model_path), "precision": precision,
                         "max_length": max_length}, sort_keys=True).encode("utf-8"))
    for item in items:
        h.update(json.dumps(item, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"{kind}-{h.hexdigest()[:32]}.npy"


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file


def _load_encoder(model: str):
    """(encoder, tokenizer, path) for a model name / directory, offline, in eval mode."""
    import torch  # noqa: F401  (imported here so `import reflectlm.embed` stays light)
    from transformers import AutoModel, AutoTokenizer

    from .modeling import ModelError, _quiet_transformers, resolve

    path = resolve(model)
    meta_file = path / rundir.BUNDLE
    if meta_file.is_file() and json.loads(meta_file.read_text(encoding="utf-8")).get("kind") == "lstm":
        raise ModelError(f"{path} is an LSTM baseline, which has no sentence encoder to embed with; "
                         "embed with model='minilm' or a transformer run directory")
    _quiet_transformers()
    # AutoModel loads the bare encoder; from a fine-tuned classification bundle it keeps the
    # encoder weights and drops the head, which is what embedding wants.
    encoder = AutoModel.from_pretrained(path)
    encoder.eval()
    return encoder, AutoTokenizer.from_pretrained(path), path


def _precision() -> str:
    from . import runtime

    # The faster of fp32 and bf16 for inference, as measured on this machine (runtime.choose_precision).
    return runtime.resolve_precision("auto", purpose="infer")


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    # Longest first, neighbours of similar length: padding stays small. Order does not matter
    # for inference; results are written back by index.
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _run(encoder, input_ids: list[list[int]], pad_id: int, batch_size: int, precision: str, quiet: bool,
         what: str, reduce):
    """Forward every sequence in length-sorted batches; reduce(hidden (B, T, D), mask (B, T), idx) per batch."""
    import torch

    from . import runtime
    from .ui import progress

    dev = runtime.device()
    encoder.to(dev)
    with torch.inference_mode(), progress(len(input_ids), what, quiet) as bar:
        for idx in _batches([len(x) for x in input_ids], batch_size):
            width = max(len(input_ids[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)  # (B, T)
            mask = torch.zeros((len(idx), width), dtype=torch.long)  # (B, T)
            for j, i in enumerate(idx):
                ids[j, : len(input_ids[i])] = torch.tensor(input_ids[i])
                mask[j, : len(input_ids[i])] = 1
            with runtime.compute(precision, "infer", dev):
                hidden = encoder(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state  # (B, T, D)
            reduce(hidden.float().cpu(), mask, idx)
            bar.advance(len(idx))


def embed_texts(texts: list[str], model: str = "minilm", batch_size: int = 128, cache_dir: str | Path | None = None,
                quiet: bool = True, max_length: int = MAX_LENGTH) -> np.ndarray:
    """(N, D) float32 unit vectors: the encoder's last hidden state mean-pooled over real tokens."""
    from .modeling import resolve

    texts = [str(t) for t in texts]
    precision = _precision()
    path = cache_path("texts", resolve(model), texts, precision, max_length, cache_dir)
    if path.is_file():
        return np.load(path)
    encoder, tok, _ = _load_encoder(model)
    dim = encoder.config.hidden_size
    out = np.zeros((len(texts), dim), dtype=np.float32)
    if texts:
        input_ids = tok(texts, truncation=True, max_length=max_length)["input_ids"]

        def reduce(hidden, mask, idx):
            m = mask[..., None].float()  # (B, T, 1)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, D)
            out[idx] = pooled.numpy()

        _run(encoder, input_ids, tok.pad_token_id or 0, batch_size, precision, quiet, "embed", reduce)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    _save(path, out)
    return out


def embed_words(tokens: list[list[str]], model: str = "minilm", batch_size: int = 128,
                cache_dir: str | Path | None = None, quiet: bool = True, max_length: int = MAX_LENGTH) -> list[np.ndarray]:
    """Per sentence an (n_words, D) float32 array: the last hidden state at each word's first
    sub-token (not normalised). A word lost to truncation gets a zero vector."""
    from .modeling import resolve

    tokens = [[str(w) for w in sent] for sent in tokens]
    precision = _precision()
    path = cache_path("words", resolve(model), tokens, precision, max_length, cache_dir)
    sizes = [len(s) for s in tokens]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    if path.is_file():
        flat = np.load(path)
    else:
        encoder, tok, _ = _load_encoder(model)
        flat = np.zeros((int(offsets[-1]), encoder.config.hidden_size), dtype=np.float32)  # (total words, D)
        todo = [i for i, s in enumerate(tokens) if s]  # an empty sentence has nothing to embed
        if todo:
            enc = tok([tokens[i] for i in todo], is_split_into_words=True, truncation=True, max_length=max_length)
            starts = []  # per encoded sentence: (word index, first sub-token position)
            for k in range(len(todo)):
                seen, pairs = set(), []
                for pos, w in enumerate(enc.word_ids(k)):
                    if w is not None and w not in seen:
                        seen.add(w)
                        pairs.append((w, pos))
                starts.append(pairs)

            def reduce(hidden, mask, idx):
                arr = hidden.numpy()  # (B, T, D)
                for j, k in enumerate(idx):
                    base = offsets[todo[k]]
                    for w, pos in starts[k]:
                        flat[base + w] = arr[j, pos]

            _run(encoder, enc["input_ids"], tok.pad_token_id or 0, batch_size, precision, quiet, "embed words", reduce)
        _save(path, flat)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(tokens))]
