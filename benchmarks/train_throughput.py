"""Training throughput: our loop vs the Hugging Face Trainer, same model, same data, one run.

    python benchmarks/train_throughput.py            # prints one JSON object

MiniLM (all-MiniLM-L6-v2) trains for 3 epochs on the same 2,000 BANKING77 training examples
(a stratified sample) and is scored on the same 1,000 held-out examples, four ways, each in
its own process so peak memory is its own:
  ours       reflectlm's fit() with its defaults (dropout off, precision "auto" = measured),
             training dynamics and gradient telemetry ON;
  trainer    Trainer as a user sets it up: its defaults, DataCollatorWithPadding;
  fp32_b32   Trainer, fp32, length-grouped batches of 32 (transformers 5 spells it
             train_sampling_strategy="group_by_length"; 4.x had group_by_length=True);
  tuned      Trainer, bf16=True, length-grouped batches of 32.
The peer is the fastest of the three Trainer set-ups. Samples/s = training examples processed /
wall time of the training call (Trainer evaluates nothing during training, so ours is also timed
without its per-epoch selection pass; the time with it is ours_samples_per_s_incl_eval).
Accuracy is the last epoch's model on the held-out 1,000, scored by the same function for all.

Utilisation: the same run times a 2048^3 matmul in fp32 and in bf16 (this machine's GEMM peak
for each) and divides ours' useful model FLOP/s by the peak of the precision ours ran in.
Useful work counts real (non-padding) tokens only: per sequence of t tokens and each of the
L layers of width d, 6 x the non-embedding parameters x t plus the attention score and value
products, 2 x 2 x t^2 x d forward, x 3 with the backward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

N_TRAIN, N_SELECTION, EPOCHS, SEED = 2000, 1000, 3, 0


def _data():
    from reflectlm.config import data_root
    from reflectlm.data import load, stratified_sample, stratified_split

    path = data_root() / "banking77" / "train.csv"
    if not path.is_file():
        sys.exit(f"BANKING77 not found at {path}: set REFLECTLM_DATA to the shared data folder")
    pool = stratified_sample(load(str(path), "classification"), N_TRAIN + N_SELECTION, SEED)
    train, selection = stratified_split(pool, N_SELECTION / (N_TRAIN + N_SELECTION), SEED)
    labels = sorted(set(pool.labels))
    return train, selection, labels


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def model_flops(lengths, non_embedding_params: int, layers: int, hidden: int) -> float:
    """Useful training FLOPs of one pass over sequences of these real lengths (see the docstring)."""
    t = np.asarray(lengths, dtype=np.float64)
    return float((6.0 * non_embedding_params * t + 3 * 4.0 * layers * hidden * t**2).sum())


def model_shape(model) -> dict:
    """Non-embedding parameters, layers and hidden width of a BERT-style classifier."""
    cfg = model.config
    emb = sum(p.numel() for n, p in model.named_parameters() if ".embeddings." in f".{n}")
    total = sum(p.numel() for p in model.parameters())
    return {"non_embedding_params": int(total - emb), "layers": int(cfg.num_hidden_layers),
            "hidden": int(cfg.hidden_size)}


def gemm_peak(n: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of an n x n x n matmul in fp32 and bf16, best of `repeats` after a warm-up."""
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        out[name] = 2.0 * n**3 / best / 1e9
    return out


def run_ours(dropout: str | None = None, overrides: dict | None = None) -> dict:
    from reflectlm.config import ModelConfig, TrainConfig
    from reflectlm.modeling import build
    from reflectlm.tasks import get_task
    from reflectlm.train import FitInputs, fit

    train, selection, labels = _data()
    tc = TrainConfig(epochs=EPOCHS, seed=SEED, **(overrides or {}))  # our defaults; dynamics + telemetry on
    assert tc.record_dynamics and tc.telemetry_every > 0
    mc = ModelConfig() if dropout is None else ModelConfig(dropout=dropout)
    bundle = build(mc, "classification", labels)
    task = get_task("classification")
    l2i = {n: i for i, n in enumerate(labels)}
    feats = task.encode(bundle.tokenizer, train, l2i, 128)
    sel = task.encode(bundle.tokenizer, selection, l2i, 128)
    shape = model_shape(bundle.model)
    t0 = time.perf_counter()
    result = fit(bundle.model, FitInputs(task, labels, feats, (selection, sel), bundle.tokenizer.pad_token_id,
                                         "accuracy"), tc, quiet=True)
    wall = time.perf_counter() - t0
    epochs_run = result.examples_seen / len(feats)
    flops = epochs_run * model_flops([len(f["input_ids"]) for f in feats], **shape)
    return {"samples_per_s": result.examples_seen / result.train_seconds,
            "model_gflops": flops / result.train_seconds / 1e9, "shape": shape,
            "samples_per_s_incl_eval": result.examples_seen / wall,
            "accuracy": result.history[-1]["selection_accuracy"], "peak_rss_mb": _peak_rss_mb(),
            "precision": result.precision, "attention": result.attention, "overrides": overrides or {},
            "dropout": mc.dropout, "telemetry_records": int(len(result.telemetry["step"])),
            "recording_pct": 100 * sum(result.overhead_seconds.values()) / result.train_seconds}


# Trainer set-ups: name -> TrainingArguments a user would add. use_cpu=True: transformers 5
# refuses bf16 on a machine without a GPU unless told so.
TRAINER_SETUPS = {
    "trainer": {},
    "fp32_b32": {"use_cpu": True, "train_sampling_strategy": "group_by_length", "per_device_train_batch_size": 32},
    "tuned": {"bf16": True, "use_cpu": True, "train_sampling_strategy": "group_by_length",
              "per_device_train_batch_size": 32},
}


def run_trainer(setup: str) -> dict:
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)
    from transformers.utils import logging as hf_logging

    from reflectlm.evaluate import evaluate_features
    from reflectlm.modeling import packaged_minilm
    from reflectlm.tasks import get_task

    hf_logging.set_verbosity_error()
    train, selection, labels = _data()
    l2i = {n: i for i, n in enumerate(labels)}
    path = packaged_minilm()
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    enc = tok(list(train.texts), truncation=True, max_length=128)
    rows = [{"input_ids": ids, "attention_mask": am, "labels": l2i[y]}
            for ids, am, y in zip(enc["input_ids"], enc["attention_mask"], train.labels)]
    extra = TRAINER_SETUPS[setup]
    shape = model_shape(model)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=EPOCHS, report_to=[], save_strategy="no",
                                 seed=SEED, disable_tqdm=True, **extra)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tok))
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    task = get_task("classification")
    sel = task.encode(tok, selection, l2i, 128)
    acc = evaluate_features(trainer.model.eval(), selection, sel, task=task, labels=labels, pad_id=tok.pad_token_id,
                            precision="fp32").metrics["accuracy"]
    flops = EPOCHS * model_flops([len(r["input_ids"]) for r in rows], **shape)
    return {"samples_per_s": len(rows) * EPOCHS / wall, "accuracy": acc, "peak_rss_mb": _peak_rss_mb(),
            "batch_size": args.per_device_train_batch_size, "lr": args.learning_rate,
            "precision": "bf16" if args.bf16 else "fp32", "model_gflops": flops / wall / 1e9}


def child(which: str, dropout: str | None, overrides: dict) -> dict:
    return run_ours(dropout, overrides) if which == "ours" else run_trainer(which)


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string, e.g. precision=fp32
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=["ours", *TRAINER_SETUPS], help=argparse.SUPPRESS)
    ap.add_argument("--dropout", default=None,
                    help='ours only: model.dropout (default: ours\' default, 0; "pretrained" = the model\'s 0.1)')
    ap.add_argument("--only-ours", action="store_true", help="measure only our loop (e.g. to compare --dropout values)")
    ap.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE",
                    help="ours only: a train.* setting, e.g. --ours batch_size=64 --ours lr=1e-4 --ours precision=fp32")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dropout, _overrides(args.ours))))
        return
    if args.only_ours:
        cmd = [sys.executable, __file__, "--child", "ours"] + (["--dropout", args.dropout] if args.dropout else [])
        cmd += [f"--ours={pair}" for pair in args.ours]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"ours failed:\n{out.stderr[-3000:]}")
        print(out.stdout.strip().splitlines()[-1])
        return
    from reflectlm import runtime

    res = {}
    peak = gemm_peak()
    print(f"gemm peak GFLOP/s: {peak}", file=sys.stderr)
    for which in ("ours", *TRAINER_SETUPS):
        cmd = [sys.executable, __file__, "--child", which] + (["--dropout", args.dropout] if args.dropout else [])
        cmd += [f"--ours={pair}" for pair in args.ours] if which == "ours" else []
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{which} failed:\n{out.stderr[-3000:]}")
        res[which] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{which}: {res[which]}", file=sys.stderr)
    o, t, u = res["ours"], res["trainer"], res["tuned"]
    peer_setup = max(TRAINER_SETUPS, key=lambda k: res[k]["samples_per_s"])
    peer = res[peer_setup]
    print(json.dumps({
        "ours_samples_per_s": round(o["samples_per_s"], 1),
        "trainer_samples_per_s": round(t["samples_per_s"], 1),
        "ratio": round(o["samples_per_s"] / t["samples_per_s"], 2),
        "ours_accuracy": round(o["accuracy"], 4),
        "trainer_accuracy": round(t["accuracy"], 4),
        "tuned_samples_per_s": round(u["samples_per_s"], 1),
        "ratio_vs_tuned": round(o["samples_per_s"] / u["samples_per_s"], 2),
        "tuned_accuracy": round(u["accuracy"], 4),
        "ours_peak_rss_mb": round(o["peak_rss_mb"], 1),
        "trainer_peak_rss_mb": round(t["peak_rss_mb"], 1),
        "tuned_peak_rss_mb": round(u["peak_rss_mb"], 1),
        "ours_samples_per_s_incl_eval": round(o["samples_per_s_incl_eval"], 1),
        "ours_precision": o["precision"],
        "ours_attention": o["attention"],
        "ours_dropout": o["dropout"],  # off by default (docs/benchmarks.md); the Trainer keeps the model's 0.1
        "ours_telemetry_records": o["telemetry_records"],
        # Time inside training spent recording dynamics and gradient telemetry, as a share of it.
        "ours_recording_overhead_pct": round(o["recording_pct"], 2),
        "peer_setup": peer_setup,
        "peer_samples_per_s": round(peer["samples_per_s"], 1),
        "peer_accuracy": round(peer["accuracy"], 4),
        "ratio_vs_peer": round(o["samples_per_s"] / peer["samples_per_s"], 2),
        "fp32_b32_samples_per_s": round(res["fp32_b32"]["samples_per_s"], 1),
        "fp32_b32_accuracy": round(res["fp32_b32"]["accuracy"], 4),
        "gemm_gflops": {k: round(v, 1) for k, v in peak.items()},
        "gemm_peak_gflops": round(peak[o["precision"] if o["precision"] in peak else "fp32"], 1),
        "ours_model_gflops": round(o["model_gflops"], 1),
        "utilisation": round(o["model_gflops"] / peak[o["precision"] if o["precision"] in peak else "fp32"], 3),
        "model_gflops": {k: round(r["model_gflops"], 1) for k, r in res.items()},
        "cpu": runtime.cpu_info(),
        "setting": {"model": "all-MiniLM-L6-v2", "train_examples": N_TRAIN, "selection_examples": N_SELECTION,
                    "epochs": EPOCHS, "threads": os.cpu_count(),
                    "trainer_batch_size": t["batch_size"], "trainer_lr": t["lr"], **o["shape"]},
    }, indent=2))


if __name__ == "__main__":
    main()
