"""Training throughput: our loop vs the Hugging Face Trainer, same model, same data, one run.

    python benchmarks/train_throughput.py            # prints one JSON object

MiniLM (all-MiniLM-L6-v2) trains for 3 epochs on the same 2,000 BANKING77 training examples
(a stratified sample) and is scored on the same 1,000 held-out examples, three ways, each in
its own process so peak memory is its own:
  ours     reflectlm's fit() with its defaults (dropout off), training dynamics and gradient
           telemetry ON;
  trainer  Trainer as a user sets it up: its defaults, DataCollatorWithPadding;
  tuned    Trainer with bf16=True and length-grouped batches (transformers 5 spells it
           train_sampling_strategy="group_by_length"; 4.x had group_by_length=True).
Samples/s = training examples processed / wall time of the training call (Trainer evaluates
nothing during training, so ours is also timed without its per-epoch selection pass; the time
with it is reported as ours_samples_per_s_incl_eval). Accuracy is the last epoch's model on
the held-out 1,000, scored by the same function for all three.
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
from pathlib import Path

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


def run_ours(dropout: str | None = None) -> dict:
    from reflectlm.config import ModelConfig, TrainConfig
    from reflectlm.modeling import build
    from reflectlm.tasks import get_task
    from reflectlm.train import fit

    train, selection, labels = _data()
    tc = TrainConfig(epochs=EPOCHS, seed=SEED)  # our defaults; dynamics + telemetry on
    assert tc.record_dynamics and tc.telemetry_every > 0
    mc = ModelConfig() if dropout is None else ModelConfig(dropout=dropout)
    bundle = build(mc, "classification", labels)
    task = get_task("classification")
    l2i = {n: i for i, n in enumerate(labels)}
    feats = task.encode(bundle.tokenizer, train, l2i, 128)
    sel = task.encode(bundle.tokenizer, selection, l2i, 128)
    t0 = time.perf_counter()
    result = fit(bundle.model, feats, (selection, sel), tc, task="classification", labels=labels,
                 pad_id=bundle.tokenizer.pad_token_id, metric="accuracy", quiet=True)
    wall = time.perf_counter() - t0
    return {"samples_per_s": result.examples_seen / result.train_seconds,
            "samples_per_s_incl_eval": result.examples_seen / wall,
            "accuracy": result.history[-1]["selection_accuracy"], "peak_rss_mb": _peak_rss_mb(),
            "precision": result.precision, "dropout": mc.dropout, "telemetry_records": int(len(result.telemetry["step"])),
            "recording_pct": 100 * sum(result.overhead_seconds.values()) / result.train_seconds}


def run_trainer(tuned: bool) -> dict:
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
    # use_cpu=True: transformers 5 refuses bf16 on a machine without a GPU unless told so.
    extra = {"bf16": True, "use_cpu": True, "train_sampling_strategy": "group_by_length"} if tuned else {}
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=EPOCHS, report_to=[], save_strategy="no",
                                 seed=SEED, disable_tqdm=True, **extra)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tok))
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    task = get_task("classification")
    sel = task.encode(tok, selection, l2i, 128)
    acc = evaluate_features(trainer.model.eval(), selection, sel, labels, tok.pad_token_id, "classification",
                            precision="fp32").metrics["accuracy"]
    return {"samples_per_s": len(rows) * EPOCHS / wall, "accuracy": acc, "peak_rss_mb": _peak_rss_mb(),
            "batch_size": args.per_device_train_batch_size, "lr": args.learning_rate}


def child(which: str, dropout: str | None) -> dict:
    return {"ours": lambda: run_ours(dropout), "trainer": lambda: run_trainer(False),
            "tuned": lambda: run_trainer(True)}[which]()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=["ours", "trainer", "tuned"], help=argparse.SUPPRESS)
    ap.add_argument("--dropout", default=None,
                    help='ours only: model.dropout (default: ours\' default, 0; "pretrained" = the model\'s 0.1)')
    ap.add_argument("--only-ours", action="store_true", help="measure only our loop (e.g. to compare --dropout values)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dropout)))
        return
    if args.only_ours:
        cmd = [sys.executable, __file__, "--child", "ours"] + (["--dropout", args.dropout] if args.dropout else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"ours failed:\n{out.stderr[-3000:]}")
        print(out.stdout.strip().splitlines()[-1])
        return
    res = {}
    for which in ("ours", "trainer", "tuned"):
        cmd = [sys.executable, __file__, "--child", which] + (["--dropout", args.dropout] if args.dropout else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{which} failed:\n{out.stderr[-3000:]}")
        res[which] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{which}: {res[which]}", file=sys.stderr)
    o, t, u = res["ours"], res["trainer"], res["tuned"]
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
        "ours_dropout": o["dropout"],  # off by default (docs/benchmarks.md); the Trainer keeps the model's 0.1
        "ours_telemetry_records": o["telemetry_records"],
        # Time inside training spent recording dynamics and gradient telemetry, as a share of it.
        "ours_recording_overhead_pct": round(o["recording_pct"], 2),
        "setting": {"model": "all-MiniLM-L6-v2", "train_examples": N_TRAIN, "selection_examples": N_SELECTION,
                    "epochs": EPOCHS, "threads": os.cpu_count(),
                    "trainer_batch_size": t["batch_size"], "trainer_lr": t["lr"]},
    }, indent=2))


if __name__ == "__main__":
    main()
