"""Inference throughput: our predict path vs the Hugging Face text-classification pipeline, one run.

    python benchmarks/infer_throughput.py               # prints one JSON object
    python benchmarks/infer_throughput.py --run RUN     # use a trained run's model instead

The model is MiniLM (all-MiniLM-L6-v2) with a 77-way head, fine-tuned for one epoch on 2,000
BANKING77 training examples (in a child process, so every set-up below sees the same weights and
predictions have real margins), unless --run names a run directory. All set-ups predict the
BANKING77 test split (3,080 texts) from raw text to labels, in this process, one after another
after a warm-up on 64 texts:
  ours          reflectlm.evaluate.bundle_probs: batches of 128 sorted by length, precision
                "auto" for inference (fp32 or bf16, whichever this machine measured faster);
  ours_fp32     the same with precision fp32 (what the length sorting alone gives);
  pipeline      transformers.pipeline("text-classification") at its defaults (one text a call);
  pipeline_b32  the same pipeline called with batch_size=32;
  pipeline_bf16, pipeline_b32_bf16  the two pipeline set-ups under bf16 autocast (as ours runs
                when "auto" chose bf16), measured only where ours chose bf16.
Texts/s = 3,080 / wall time of the call, tokenising included. Agreement = share of texts whose
label equals the fp32 pipeline's. The peer is the fastest pipeline set-up at ours' precision
(`ratio_vs_peer`); `fp32_ratio_vs_peer` is the like-for-like fp32 ratio, ours_fp32 over the faster
fp32 pipeline set-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import REPO, Provenance  # noqa: E402

N_TRAIN, SEED = 2000, 0


def _split(name: str):
    from reflectlm.config import data_root
    from reflectlm.data import load

    path = data_root() / "banking77" / f"{name}.csv"
    if not path.is_file():
        sys.exit(f"BANKING77 not found at {path}: set REFLECTLM_DATA to the shared data folder")
    return load(str(path), "classification")


def train_model(out_dir: str) -> None:
    """One epoch of ours on 2,000 training examples; the bundle saved to out_dir."""
    from reflectlm.config import ModelConfig, TrainConfig
    from reflectlm.data import stratified_sample
    from reflectlm.modeling import build, save_bundle
    from reflectlm.tasks import get_task
    from reflectlm.train import FitInputs, fit

    full = _split("train")
    labels = sorted(set(full.labels))
    train = stratified_sample(full, N_TRAIN, SEED)
    bundle = build(ModelConfig(), "classification", labels)
    task = get_task("classification")
    l2i = {n: i for i, n in enumerate(labels)}
    feats = task.encode(bundle.tokenizer, train, l2i, 128)
    fit(bundle.model, FitInputs(task, labels, feats, (train.subset(range(200)), feats[:200]),
                                bundle.tokenizer.pad_token_id, "accuracy"), TrainConfig(epochs=1, seed=SEED), quiet=True)
    save_bundle(bundle, out_dir)


def _timed(fn, texts: list[str]) -> tuple[list[str], float]:
    fn(texts[:64])  # warm-up: the first calls pay for kernel selection and allocation
    t0 = time.perf_counter()
    labels = fn(texts)
    return labels, time.perf_counter() - t0


def measure(model_dir: str) -> dict:
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from reflectlm import runtime
    from reflectlm.evaluate import bundle_probs
    from reflectlm.modeling import load_bundle

    hf_logging.set_verbosity_error()
    bundle = load_bundle(model_dir)
    texts = list(_split("test").texts)
    names = bundle.labels

    def ours(precision):
        return lambda xs: [names[i] for i in bundle_probs(bundle, xs, precision=precision).argmax(1)]

    # The pipeline gets the same weights; it names labels by the model config's id2label, which
    # reflectlm.modeling.build sets to the class names.
    pipe = pipeline("text-classification", model=bundle.model, tokenizer=bundle.tokenizer, device=torch.device("cpu"))
    assert set(bundle.model.config.id2label.values()) == set(names), "id2label must hold the class names"

    def pipe_fn(batch_size, bf16=False):
        kw = {} if batch_size is None else {"batch_size": batch_size}

        def run(xs):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return [o["label"] for o in pipe(xs, truncation=True, max_length=128, **kw)]
        return run

    ours_precision = runtime.resolve_precision("auto", purpose="infer")
    sides = [("pipeline", pipe_fn(None)), ("pipeline_b32", pipe_fn(32)), ("ours", ours("auto")),
             ("ours_fp32", ours("fp32"))]
    if ours_precision == "bf16":
        sides += [("pipeline_bf16", pipe_fn(None, True)), ("pipeline_b32_bf16", pipe_fn(32, True))]
    results, preds = {}, {}
    for name, fn in sides:
        labels, seconds = _timed(fn, texts)
        preds[name] = labels
        results[name] = {"texts_per_s": len(texts) / seconds, "seconds": seconds}
        print(f"{name}: {results[name]}", file=sys.stderr)
    ref = preds["pipeline"]
    for name in results:
        results[name]["agreement"] = float(np.mean([a == b for a, b in zip(preds[name], ref)]))
    fp32_peer = max(("pipeline", "pipeline_b32"), key=lambda k: results[k]["texts_per_s"])
    same = ("pipeline_bf16", "pipeline_b32_bf16") if ours_precision == "bf16" else ("pipeline", "pipeline_b32")
    peer = max(same, key=lambda k: results[k]["texts_per_s"])
    return {
        "ours_texts_per_s": round(results["ours"]["texts_per_s"], 1),
        "ours_precision": ours_precision,
        "ours_fp32_texts_per_s": round(results["ours_fp32"]["texts_per_s"], 1),
        "pipeline_texts_per_s": round(results["pipeline"]["texts_per_s"], 1),
        "pipeline_b32_texts_per_s": round(results["pipeline_b32"]["texts_per_s"], 1),
        **{f"{k}_texts_per_s": round(results[k]["texts_per_s"], 1) for k in ("pipeline_bf16", "pipeline_b32_bf16")
           if k in results},
        "peer_setup": peer,
        "ratio_vs_peer": round(results["ours"]["texts_per_s"] / results[peer]["texts_per_s"], 2),
        "fp32_peer_setup": fp32_peer,
        "fp32_ratio_vs_peer": round(results["ours_fp32"]["texts_per_s"] / results[fp32_peer]["texts_per_s"], 2),
        "agreement_with_pipeline": {k: round(v["agreement"], 4) for k, v in results.items()},
        "precision_choice": runtime.choose_precision("infer").to_json(),
        "setting": {"model": "all-MiniLM-L6-v2", "texts": len(texts), "labels": len(names),
                    "threads": torch.get_num_threads()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a run directory (or model bundle) to load instead of training one")
    ap.add_argument("--train-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "infer_throughput.json")
    args = ap.parse_args()
    if args.train_child:
        train_model(args.train_child)
        return
    prov = Provenance(seeds=[SEED])
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.run
        if model_dir is None:
            model_dir = os.path.join(tmp, "model")
            out = subprocess.run([sys.executable, __file__, "--train-child", model_dir], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"training the benchmark's model failed:\n{out.stderr[-3000:]}")
        result = {**measure(model_dir), "provenance": prov.block()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
