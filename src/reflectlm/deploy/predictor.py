"""One inference interface over whatever is deployed: a run directory (its champion), a model
bundle, or an export directory (PyTorch fp32 / bf16 / int8, or ONNX Runtime fp32 / int8).

A Predictor turns raw texts into probabilities and the encoder's pooled embedding (the drift
monitor's input) with one forward pass, and into readable predictions: a label with its
probabilities, or, for NER, entity spans with character offsets into the text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

EXPORT_FILE = "export.json"
_WORD = re.compile(r"\S+")


@dataclass
class Predictor:
    task: str
    labels: list[str]
    tokenizer: object
    max_length: int
    # (input_ids (B, T) int64, attention_mask (B, T) int64) -> (logits (B, C) | (B, T, C), pooled (B, H) | None)
    forward: Callable
    info: dict = field(default_factory=dict)  # what was loaded: path, format, precision
    batch_size: int = 64

    def run(self, texts: list[str]) -> tuple[list | np.ndarray, np.ndarray | None]:
        """Probabilities ((N, C), or per sentence (n_words, C) for NER) and pooled embeddings (N, H)."""
        from ..evaluate import _pad_id, length_sorted_batches, text_dataset
        from ..tasks import collate, get_task

        task = get_task(self.task)
        ds = text_dataset(list(texts), self.task)
        feats = task.encode(self.tokenizer, ds, None, self.max_length)
        logits: list = [None] * len(feats)
        pooled: np.ndarray | None = None
        for idx in length_sorted_batches(feats, self.batch_size):
            batch = collate([feats[i] for i in idx], _pad_id(self.tokenizer))
            ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy()
            out, emb = self.forward(ids, mask)
            out = np.asarray(out, dtype=np.float32)
            lengths = mask.sum(1)
            for j, i in enumerate(idx):
                logits[i] = out[j, : lengths[j]] if out.ndim == 3 else out[j]
            if emb is not None:
                if pooled is None:
                    pooled = np.zeros((len(feats), emb.shape[1]), dtype=np.float32)
                pooled[idx] = emb
        return task.probs_from_logits(feats, logits), pooled

    def readable(self, texts: list[str], probs) -> list[dict]:
        """Predictions in the API's shape: label + probabilities, or entities with char offsets."""
        if self.task == "ner":
            from ..tasks.ner import decode, spans

            out = []
            for text, p in zip(texts, probs):
                words = list(_WORD.finditer(text))  # the same whitespace words the model saw
                tags = decode(p, self.labels)
                ents = []
                for kind, s, e in spans(tags):
                    score = float(np.mean([p[s + k, self.labels.index(t)] for k, t in enumerate(tags[s:e])]))
                    start, end = words[s].start(), words[e - 1].end()
                    ents.append({"type": kind, "start": start, "end": end, "text": text[start:end], "score": score})
                conf = float(np.min(p.max(1))) if len(p) else 1.0  # the least sure word
                out.append({"entities": ents, "confidence": conf})
            return out
        top = probs.argmax(1)
        return [{"label": self.labels[k], "confidence": float(probs[i, k]),
                 "probabilities": {lab: float(v) for lab, v in zip(self.labels, probs[i])}} for i, k in enumerate(top)]

    def confidence(self, probs) -> np.ndarray:
        """(N,) confidence per text: the top probability; NER: the least sure word's top probability."""
        if self.task == "ner":
            return np.array([float(p.max(1).min()) if len(p) else 1.0 for p in probs])
        return np.asarray(probs).max(1) if len(probs) else np.zeros(0)

    def predict(self, texts: list[str]) -> list[dict]:
        probs, _ = self.run(texts)
        return self.readable(texts, probs)


# --------------------------------------------------------------------------- backends


def torch_forward(model, precision: str = "fp32") -> Callable:
    """Forward of a PyTorch model: logits and the masked mean of the last hidden state."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else None

    @torch.inference_mode()
    def forward(ids: np.ndarray, mask: np.ndarray):
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        transformer = hasattr(model, "config")
        out = model(input_ids=ids_t, attention_mask=mask_t, **({"output_hidden_states": True} if transformer else {}))
        pooled = None
        if transformer and getattr(out, "hidden_states", None) is not None:
            h = out.hidden_states[-1].float()  # (B, T, H)
            m = mask_t[..., None].float()
            pooled = ((h * m).sum(1) / m.sum(1).clamp(min=1.0)).numpy()  # (B, H)
        logits = out.logits
        return (logits.float() if dtype is not None or logits.dtype != torch.float32 else logits).numpy(), pooled

    return forward


def onnx_forward(path: Path, threads: int | None = None) -> Callable:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # no warnings about unused initialisers on stdout
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def forward(ids: np.ndarray, mask: np.ndarray):
        logits, pooled = session.run(["logits", "pooled"], {"input_ids": ids.astype(np.int64),
                                                             "attention_mask": mask.astype(np.int64)})
        return logits, pooled

    return forward


def resolve_model_dir(path: str | Path) -> Path:
    """A run directory -> its champion's model/ (a loop run) or its model/ (a train run); a bundle
    directory as it is. Raises ModelError saying what to pass otherwise."""
    from ..modeling import BUNDLE_FILE, ModelError

    path = Path(path)
    for candidate in (path / "champion" / "model", path / "model", path):
        if (candidate / BUNDLE_FILE).is_file():
            return candidate
    raise ModelError(f"{path} holds no model: pass a run directory (from `reflectlm run` or `reflectlm train`), "
                     f"a model bundle, or an export directory from `reflectlm export` (with {EXPORT_FILE})")


def load_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """Load a run (its champion), a bundle, or an export directory."""
    path = Path(path)
    if (path / EXPORT_FILE).is_file():
        return load_export(path, threads)
    from ..modeling import load_bundle

    model_dir = resolve_model_dir(path)
    bundle = load_bundle(model_dir)
    return Predictor(bundle.task, bundle.labels, bundle.tokenizer, bundle.meta["max_length"], torch_forward(bundle.model),
                     {"path": str(model_dir), "format": "torch", "precision": "fp32"})


def load_export(path: Path, threads: int | None = None) -> Predictor:
    from ..modeling import ModelError, load_bundle

    info = json.loads((path / EXPORT_FILE).read_text(encoding="utf-8"))
    if info.get("status") != "accepted":
        raise ModelError(f"{path} is a refused export ({info.get('reason', 'no reason recorded')}); serve the run "
                         "itself or export again with a remedy (see export.json)")
    bundle = load_bundle(path / "model")
    variant = info["variant"]
    if variant["format"] == "onnx":
        forward = onnx_forward(path / variant["artifact"], threads)
    else:
        from .compress import apply_precision

        forward = torch_forward(apply_precision(bundle.model, variant["precision"], variant.get("quantization")),
                                variant["precision"])
    return Predictor(bundle.task, bundle.labels, bundle.tokenizer, bundle.meta["max_length"], forward,
                     {"path": str(path), **{k: variant[k] for k in ("format", "precision")}})
