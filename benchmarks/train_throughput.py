"""Training throughput: our loop vs the Hugging Face Trainer, same model, same data, one run.

    python benchmarks/train_throughput.py            # prints one JSON object, writes --out

MiniLM (all-MiniLM-L6-v2) trains for 3 epochs on the same training examples and is scored on the
same held-out examples, each side in its own process so peak memory is its own, in two settings:
  short  2,000 BANKING77 training examples (a stratified sample; ~16 tokens each), 1,000 held out;
  long   paragraphs of SQuAD v1.1's training articles with at least 128 tokens, truncated to 128,
         each labelled with its article (26 classes; 700 training, the other 230 held out, stratified):
         inputs long enough that matrix products, not the optimizer, carry the step.
The sides:
  ours          reflectlm's fit() with its defaults (dropout off, precision "auto" = measured,
                body lr 1e-4 and head lr 2e-3, batch 32, length-grouped), training dynamics and
                gradient telemetry ON;
  trainer       Trainer as a user sets it up: its defaults, DataCollatorWithPadding;
  fp32_b32      Trainer, fp32, length-grouped batches of 32 (transformers 5 spells it
                train_sampling_strategy="group_by_length"; 4.x had group_by_length=True);
  tuned         Trainer, bf16=True, length-grouped batches of 32;
  like_for_like Trainer set up as ours is: the same precision and attention kernel, dropout off,
                batch 32, length-grouped, AdamW over the same parameter groups (body 1e-4, head
                2e-3, weight decay 0.01 off biases and norms; reflectlm.train.param_groups), 6 %
                linear warm-up then linear decay, clipping at 1.0.
Every side evaluates the held-out examples after each epoch, as ours does (Trainer:
eval_strategy="epoch", eval batch 128 as ours). Two times per side: train-only (the training call
less its evaluation passes) and end to end (the training call with them). The peer is the fastest
Trainer set-up; `ratio_vs_peer` compares train-only samples/s, `end_to_end_ratio_vs_peer` end to
end. Accuracy is the last epoch's model on the held-out examples, scored by the same function for all.

Utilisation: the same run times a 2048^3 matmul in fp32 and in bf16 (this machine's GEMM peak
for each) and divides a side's useful model FLOP/s (train-only) by the peak of the precision it
ran in: `utilisation` on the short setting, `utilisation_long` on the long one. Useful work counts
real (non-padding) tokens only: per sequence of t tokens and each of the L layers of width d,
6 x the non-embedding parameters x t plus the attention score and value products, 2 x 2 x t^2 x d
forward, x 3 with the backward pass.
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

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import REPO, Provenance  # noqa: E402

EPOCHS, SEED, MAX_LENGTH = 3, 0, 128
SETTINGS = {"short": {"train": 2000, "held_out": 1000}, "long": {"train": 700, "min_tokens": 128}}


def _short():
    from reflectlm.config import data_root
    from reflectlm.data import load, stratified_sample, stratified_split

    path = data_root() / "banking77" / "train.csv"
    if not path.is_file():
        sys.exit(f"BANKING77 not found at {path}: set REFLECTLM_DATA to the shared data folder")
    n, m = SETTINGS["short"]["train"], SETTINGS["short"]["held_out"]
    pool = stratified_sample(load(str(path), "classification"), n + m, SEED)
    return stratified_split(pool, m / (n + m), SEED)


def _long():
    """SQuAD's training paragraphs of >= 128 tokens (MiniLM's tokenizer), labelled by article."""
    from reflectlm.config import data_root
    from reflectlm.data import Dataset, stratified_split
    from reflectlm.modeling import packaged_minilm
    from transformers import AutoTokenizer

    path = data_root() / "squad_v1.1" / "train.jsonl"
    if not path.is_file():
        sys.exit(f"SQuAD v1.1 not found at {path}: set REFLECTLM_DATA to the shared data folder")
    seen: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        seen.setdefault(row["context"], row["title"])
    tok = AutoTokenizer.from_pretrained(packaged_minilm())
    texts = [c for c in seen if len(tok(c)["input_ids"]) >= SETTINGS["long"]["min_tokens"]]
    pool = Dataset(task="classification", ids=[f"p{i}" for i in range(len(texts))], labels=[seen[c] for c in texts],
                   texts=texts, tokens=None, source="squad_v1.1/train.jsonl")
    n = SETTINGS["long"]["train"]
    return stratified_split(pool, 1 - n / len(texts), SEED)


def _data(setting: str):
    train, held_out = _short() if setting == "short" else _long()
    return train, held_out, sorted(set(train.labels) | set(held_out.labels))


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


def _rates(n_seen: int, train_seconds: float, wall: float, flops_per_epoch: float, epochs: float) -> dict:
    return {"samples_per_s": n_seen / train_seconds, "samples_per_s_end_to_end": n_seen / wall,
            "train_seconds": round(train_seconds, 2), "end_to_end_seconds": round(wall, 2),
            "model_gflops": epochs * flops_per_epoch / train_seconds / 1e9}


def run_ours(setting: str, dropout: str | None = None, overrides: dict | None = None) -> dict:
    from reflectlm.config import ModelConfig, TrainConfig
    from reflectlm.modeling import build
    from reflectlm.tasks import get_task
    from reflectlm.train import FitInputs, fit

    train, held_out, labels = _data(setting)
    tc = TrainConfig(epochs=EPOCHS, seed=SEED, **(overrides or {}))  # our defaults; dynamics + telemetry on
    assert tc.record_dynamics and tc.telemetry_every > 0
    mc = ModelConfig() if dropout is None else ModelConfig(dropout=dropout)
    bundle = build(mc, "classification", labels)
    task = get_task("classification")
    l2i = {n: i for i, n in enumerate(labels)}
    feats = task.encode(bundle.tokenizer, train, l2i, MAX_LENGTH)
    sel = task.encode(bundle.tokenizer, held_out, l2i, MAX_LENGTH)
    shape = model_shape(bundle.model)
    t0 = time.perf_counter()
    result = fit(bundle.model, FitInputs(task, labels, feats, (held_out, sel), bundle.tokenizer.pad_token_id,
                                         "accuracy"), tc, quiet=True)
    wall = time.perf_counter() - t0
    lengths = [len(f["input_ids"]) for f in feats]
    return {**_rates(result.examples_seen, result.train_seconds, wall, model_flops(lengths, **shape),
                     result.examples_seen / len(feats)),
            "shape": shape, "mean_tokens": round(float(np.mean(lengths)), 1),
            "accuracy": result.history[-1]["selection_accuracy"], "peak_rss_mb": _peak_rss_mb(),
            "precision": result.precision, "attention": result.attention, "overrides": overrides or {},
            "dropout": mc.dropout, "batch_size": tc.batch_size, "lr": tc.lr, "head_lr": tc.head_lr,
            "telemetry_records": int(len(result.telemetry["step"])),
            "recording_pct": 100 * sum(result.overhead_seconds.values()) / result.train_seconds}


# Trainer set-ups: name -> TrainingArguments a user would add. use_cpu=True: transformers 5
# refuses bf16 on a machine without a GPU unless told so. like_for_like is completed in
# _trainer_args from ours' settings (TrainConfig's defaults) and this machine's precision choice.
TRAINER_SETUPS = {
    "trainer": {},
    "fp32_b32": {"use_cpu": True, "train_sampling_strategy": "group_by_length", "per_device_train_batch_size": 32},
    "tuned": {"bf16": True, "use_cpu": True, "train_sampling_strategy": "group_by_length",
              "per_device_train_batch_size": 32},
    "like_for_like": {"use_cpu": True, "train_sampling_strategy": "group_by_length"},
}


def _trainer_args(setup: str) -> tuple[dict, str, str]:
    """(TrainingArguments extras, precision, attention kernel) of a set-up."""
    from reflectlm import runtime
    from reflectlm.config import TrainConfig

    extra = dict(TRAINER_SETUPS[setup])
    if setup != "like_for_like":
        return extra, "bf16" if extra.get("bf16") else "fp32", "sdpa"
    tc = TrainConfig()
    precision = runtime.resolve_precision(tc.precision, None, "train")
    extra.update(per_device_train_batch_size=tc.batch_size, learning_rate=tc.lr, weight_decay=tc.weight_decay,
                 lr_scheduler_type=tc.schedule, warmup_steps=tc.warmup_ratio, max_grad_norm=tc.max_grad_norm,
                 bf16=precision == "bf16")
    return extra, precision, runtime.attention_for(precision, "train")


def _accuracy(p) -> dict:
    return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}


def run_trainer(setup: str, setting: str) -> dict:
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)
    from transformers.utils import logging as hf_logging

    from reflectlm import runtime
    from reflectlm.config import TrainConfig
    from reflectlm.evaluate import evaluate_features
    from reflectlm.modeling import packaged_minilm
    from reflectlm.tasks import get_task
    from reflectlm.train import param_groups

    hf_logging.set_verbosity_error()
    train, held_out, labels = _data(setting)
    l2i = {n: i for i, n in enumerate(labels)}
    path = packaged_minilm()
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(SEED)
    extra, precision, attention = _trainer_args(setup)
    off = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0}
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), **(off if setup == "like_for_like" else {}))

    def rows(ds):
        enc = tok(list(ds.texts), truncation=True, max_length=MAX_LENGTH)
        return [{"input_ids": ids, "attention_mask": am, "labels": l2i[y]}
                for ids, am, y in zip(enc["input_ids"], enc["attention_mask"], ds.labels)]

    train_rows, held_rows = rows(train), rows(held_out)
    optimizers = (None, None)
    if setup == "like_for_like":  # ours' parameter groups: body lr, head lr, no decay on biases and norms
        groups = [{k: v for k, v in g.items() if k != "group"} for g in param_groups(model, TrainConfig())]
        optimizers = (torch.optim.AdamW(groups), None)
    shape = model_shape(model)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=EPOCHS, report_to=[], save_strategy="no",
                                 seed=SEED, disable_tqdm=True, eval_strategy="epoch", per_device_eval_batch_size=128,
                                 **extra)
        trainer = Trainer(model=model, args=args, train_dataset=train_rows, eval_dataset=held_rows,
                          data_collator=DataCollatorWithPadding(tok), optimizers=optimizers,
                          compute_metrics=_accuracy)
        t0 = time.perf_counter()
        with runtime.attention_context(attention):
            trainer.train()
        wall = time.perf_counter() - t0
    eval_seconds = sum(r["eval_runtime"] for r in trainer.state.log_history if "eval_runtime" in r)
    task = get_task("classification")
    sel = task.encode(tok, held_out, l2i, MAX_LENGTH)
    acc = evaluate_features(trainer.model.eval(), held_out, sel, task=task, labels=labels, pad_id=tok.pad_token_id,
                            precision="fp32").metrics["accuracy"]
    lengths = [len(r["input_ids"]) for r in train_rows]
    return {**_rates(len(train_rows) * EPOCHS, wall - eval_seconds, wall, model_flops(lengths, **shape), EPOCHS),
            "accuracy": acc, "peak_rss_mb": _peak_rss_mb(), "batch_size": args.per_device_train_batch_size,
            "lr": args.learning_rate, "precision": precision, "attention": attention,
            "dropout": 0.0 if setup == "like_for_like" else "pretrained (0.1)"}


def child(which: str, setting: str, dropout: str | None, overrides: dict) -> dict:
    return run_ours(setting, dropout, overrides) if which == "ours" else run_trainer(which, setting)


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string, e.g. precision=fp32
    return out


def _run_child(which: str, setting: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--setting", setting]
    cmd += ["--dropout", args.dropout] if args.dropout and which == "ours" else []
    cmd += [f"--ours={pair}" for pair in args.ours] if which == "ours" else []
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{which} ({setting}) failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{which} ({setting}): {res}", file=sys.stderr, flush=True)
    return res


def _peak_of(side: dict, peak: dict) -> float:
    return peak[side["precision"] if side["precision"] in peak else "fp32"]


def summarise(res: dict, long: dict, peak: dict) -> dict:
    """The results file from the sides' measurements (res: short setting by side; long: by side)."""
    o, t, u, like = res["ours"], res["trainer"], res["tuned"], res["like_for_like"]
    peer_setup = max(TRAINER_SETUPS, key=lambda k: res[k]["samples_per_s"])
    e2e_setup = max(TRAINER_SETUPS, key=lambda k: res[k]["samples_per_s_end_to_end"])
    peer, e2e = res[peer_setup], res[e2e_setup]
    r = lambda x, n=1: round(x, n)  # noqa: E731
    return {
        "ours_samples_per_s": r(o["samples_per_s"]),
        "trainer_samples_per_s": r(t["samples_per_s"]),
        "ratio": r(o["samples_per_s"] / t["samples_per_s"], 2),
        "ours_accuracy": r(o["accuracy"], 4),
        "trainer_accuracy": r(t["accuracy"], 4),
        "tuned_samples_per_s": r(u["samples_per_s"]),
        "ratio_vs_tuned": r(o["samples_per_s"] / u["samples_per_s"], 2),
        "tuned_accuracy": r(u["accuracy"], 4),
        "like_for_like_samples_per_s": r(like["samples_per_s"]),
        "like_for_like_accuracy": r(like["accuracy"], 4),
        "ratio_vs_like_for_like": r(o["samples_per_s"] / like["samples_per_s"], 2),
        "ours_peak_rss_mb": r(o["peak_rss_mb"]),
        "trainer_peak_rss_mb": r(t["peak_rss_mb"]),
        "tuned_peak_rss_mb": r(u["peak_rss_mb"]),
        "ours_samples_per_s_end_to_end": r(o["samples_per_s_end_to_end"]),
        "ours_precision": o["precision"],
        "ours_attention": o["attention"],
        "ours_dropout": o["dropout"],
        "ours_telemetry_records": o["telemetry_records"],
        # Time inside training spent recording dynamics and gradient telemetry, as a share of it.
        "ours_recording_overhead_pct": r(o["recording_pct"], 2),
        "peer_setup": peer_setup,
        "peer_samples_per_s": r(peer["samples_per_s"]),
        "peer_accuracy": r(peer["accuracy"], 4),
        "ratio_vs_peer": r(o["samples_per_s"] / peer["samples_per_s"], 2),
        "end_to_end_peer_setup": e2e_setup,
        "end_to_end_peer_samples_per_s": r(e2e["samples_per_s_end_to_end"]),
        "end_to_end_ratio_vs_peer": r(o["samples_per_s_end_to_end"] / e2e["samples_per_s_end_to_end"], 2),
        "fp32_b32_samples_per_s": r(res["fp32_b32"]["samples_per_s"]),
        "fp32_b32_accuracy": r(res["fp32_b32"]["accuracy"], 4),
        "gemm_gflops": {k: r(v) for k, v in peak.items()},
        "gemm_peak_gflops": r(_peak_of(o, peak)),
        "ours_model_gflops": r(o["model_gflops"]),
        "utilisation": r(o["model_gflops"] / _peak_of(o, peak), 3),
        "model_gflops": {k: r(x["model_gflops"]) for k, x in res.items()},
        "utilisation_long": r(long["ours"]["model_gflops"] / _peak_of(long["ours"], peak), 3),
        "long": {"ours_samples_per_s": r(long["ours"]["samples_per_s"]),
                 "like_for_like_samples_per_s": r(long["like_for_like"]["samples_per_s"]),
                 "ratio_vs_like_for_like": r(long["ours"]["samples_per_s"] / long["like_for_like"]["samples_per_s"], 2),
                 "end_to_end_ratio_vs_like_for_like": r(long["ours"]["samples_per_s_end_to_end"]
                                                        / long["like_for_like"]["samples_per_s_end_to_end"], 2),
                 "ours_accuracy": r(long["ours"]["accuracy"], 4),
                 "like_for_like_accuracy": r(long["like_for_like"]["accuracy"], 4),
                 "ours_model_gflops": r(long["ours"]["model_gflops"]),
                 "like_for_like_model_gflops": r(long["like_for_like"]["model_gflops"]),
                 "like_for_like_utilisation": r(long["like_for_like"]["model_gflops"]
                                                / _peak_of(long["like_for_like"], peak), 3),
                 "mean_tokens": long["ours"]["mean_tokens"]},
        "sides": {"short": res, "long": long},
        "setting": {"model": "all-MiniLM-L6-v2", "epochs": EPOCHS, "max_length": MAX_LENGTH, "threads": os.cpu_count(),
                    "short": {**SETTINGS["short"], "data": "banking77/train.csv"},
                    "long": {**SETTINGS["long"], "data": "squad_v1.1/train.jsonl", "label": "article title"},
                    **o["shape"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=["ours", *TRAINER_SETUPS], help=argparse.SUPPRESS)
    ap.add_argument("--setting", choices=list(SETTINGS), default="short", help=argparse.SUPPRESS)
    ap.add_argument("--dropout", default=None,
                    help='ours only: model.dropout (default: ours\' default, 0; "pretrained" = the model\'s 0.1)')
    ap.add_argument("--only-ours", action="store_true", help="measure only our loop (e.g. to compare --dropout values)")
    ap.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE",
                    help="ours only: a train.* setting, e.g. --ours batch_size=64 --ours lr=1e-4 --ours precision=fp32")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_throughput.json")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.setting, args.dropout, _overrides(args.ours))))
        return
    if args.only_ours:
        print(json.dumps(_run_child("ours", args.setting, args)))
        return
    prov = Provenance(seeds=[SEED])
    peak = gemm_peak()
    print(f"gemm peak GFLOP/s: {peak}", file=sys.stderr)
    res = {which: _run_child(which, "short", args) for which in ("ours", *TRAINER_SETUPS)}
    long = {which: _run_child(which, "long", args) for which in ("ours", "like_for_like")}
    result = {**summarise(res, long, peak), "provenance": prov.block()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "sides"}, indent=2))


if __name__ == "__main__":
    main()
