"""Cost model of one loop round: measured per-example costs on this machine, projected to rounds
per hour against cluster size (docs/scale-out.md, "Cost model").

    python benchmarks/cost_model.py     # prints JSON, writes benchmarks/results/cost_model.json

Measured (MiniLM, model "minilm", precision "auto" - bf16 autocast where `reflectlm info` says so -,
batch 32, max_length 64, 2,000 BANKING77 training texts and 1,000 selection texts, two epochs so
that every check has what it reads):
  train          seconds per training example per epoch (fit, dynamics and telemetry on)
  infer          seconds per selection example (evaluating a model on the selection split)
  embed          seconds per text for the frozen-encoder vectors of fast cross-validation (cold cache)
  cv_heads       the five logistic-regression heads of fast cross-validation, per training example
  checks         each diagnosis check, per example of the split it reads (train or selection)
  compare        the A/B test (paired bootstrap, 1,000 resamples, McNemar, per-class guardrails)
Projected: a round = a serial part (evaluate the champion, diagnose it, the A/B test, planning)
plus K challengers, each trained on n x epochs examples and evaluated on the selection split. With
W workers (each a 2-core node like this one) the K challengers run side by side (waves of W when
K > W) and each trains data-parallel on W // K workers. Data-parallel scaling is taken as ideal
(an upper bound: gradient all-reduce is not measured here), and costs scale linearly in n.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance  # noqa: E402

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

N_TRAIN, N_SELECTION, SEED = 2000, 1000, 0
# which split each check's work grows with
READS_SELECTION = {"performance", "calibration", "robustness"}
TASKS = {"banking77_size": {"n": 9_000, "selection": 1_000, "epochs": 3},
         "one_million": {"n": 1_000_000, "selection": 10_000, "epochs": 3}}
WORKERS = (1, 2, 4, 8, 16)
K_VALUES = (1, 2, 4)


def measure(out_dir: Path) -> dict:
    from reflectlm import runtime
    from reflectlm.compare import compare
    from reflectlm.config import data_root, load_config
    from reflectlm.data import Splits
    from reflectlm.diagnose import DIAGNOSTICS, build_context, run_diagnosis
    from reflectlm.diagnose.crossval import out_of_fold
    from reflectlm.embed import embed_texts
    from reflectlm.evaluate import bundle_probs, evaluate_bundle
    from reflectlm.train import train

    sys.path.insert(0, str(Path(__file__).parent))
    from train_throughput import _data  # the same 2,000 / 1,000 BANKING77 split, seed 0

    path = data_root() / "banking77" / "train.csv"
    tr, sel, labels = _data()
    cfg = load_config(tree={"data": {"train": str(path), "max_length": 64}, "model": {"name": "minilm"},
                            "train": {"epochs": 2, "batch_size": 32, "precision": "auto", "seed": SEED},
                            "run": {"quiet": True}})
    res = train(cfg, out_dir / "run", splits=Splits(tr, sel, None, labels, []))
    fit = res.fit
    t_train = fit.train_seconds / fit.examples_seen

    t0 = time.perf_counter()
    out = evaluate_bundle(res.bundle, sel, batch_size=cfg.train.eval_batch_size, precision="auto")
    t_infer = (time.perf_counter() - t0) / len(sel)

    cache = out_dir / "embeddings"  # cold: nothing of these texts is cached yet
    t0 = time.perf_counter()
    embed_texts(list(tr.texts), model="minilm", cache_dir=cache)
    t_embed = (time.perf_counter() - t0) / len(tr)
    t0 = time.perf_counter()
    oof, cv = out_of_fold(tr, labels, "classification", mode="fast", folds=5, seed=SEED, model="minilm",
                          cache_dir=cache)  # the vectors now come from the cache: the time is the heads'
    t_heads = (time.perf_counter() - t0) / len(tr)

    needs = {n for c in DIAGNOSTICS.values() for n in c().needs} - {"oof_probs", "cv"}
    memo: dict = {}

    def predict(texts):  # as the loop's predictor: one model pass per distinct text list
        key = tuple(texts)
        if key not in memo:
            memo.clear()
            memo[key] = bundle_probs(res.bundle, list(texts), precision="auto")
        return memo[key]

    ctx = build_context(cfg, tr, sel, labels, artifacts=res.run_dir, needs=needs, selection_out=out, predict=predict,
                        embed=lambda texts: embed_texts(list(texts), model="minilm", cache_dir=cache))
    ctx.oof_probs, ctx.cv = oof, cv
    diag = run_diagnosis(None, write=False, ctx=ctx)
    checks = {name: {"seconds": s, "reads": "selection" if name in READS_SELECTION else "train",
                     "per_example": s / (len(sel) if name in READS_SELECTION else len(tr))}
              for name, s in diag.seconds.items()}

    y = np.array([labels.index(v) for v in sel.labels])
    champ = out.probs.argmax(1)
    rng = np.random.default_rng(SEED)
    chall = np.where(rng.random(len(y)) < 0.05, rng.integers(0, len(labels), len(y)), champ)  # a challenger that differs
    t0 = time.perf_counter()
    compare(y, champ, chall, labels=labels, metric="macro_f1", n_bootstrap=1000, seed=SEED)
    t_compare = (time.perf_counter() - t0) / len(sel)

    return {"machine": {"cpu": runtime.cpu_info(), "precision_train": fit.precision, "attention_train": fit.attention,
                        "torch_threads": __import__("torch").get_num_threads()},
            "setup": {"model": "minilm", "batch_size": 32, "max_length": 64, "train_examples": len(tr),
                      "selection_examples": len(sel), "epochs": 2, "labels": len(labels)},
            "per_example_seconds": {"train": t_train, "infer": t_infer, "embed": t_embed, "cv_heads": t_heads,
                                    "compare": t_compare},
            "train_samples_per_s": 1 / t_train, "checks": checks, "skipped_checks": diag.skipped,
            "failed_checks": diag.failed}


def serial_seconds(m: dict, n: int, sel: int, embedded: bool) -> dict:
    """The round's serial part on the champion, in seconds, by stage."""
    p = m["per_example_seconds"]
    parts = {"evaluate_champion": p["infer"] * sel,
             "embed": 0.0 if embedded else p["embed"] * (n + sel),
             "cv_heads": p["cv_heads"] * n,
             "label_issues": m["checks"]["label_issues"]["per_example"] * n,
             "other_checks": sum(c["per_example"] * (sel if c["reads"] == "selection" else n)
                                 for name, c in m["checks"].items() if name not in ("label_issues", "crossval")),
             "ab_test": p["compare"] * sel}
    return parts


def project(m: dict) -> dict:
    p = m["per_example_seconds"]
    out = {}
    for name, t in TASKS.items():
        n, sel, E = t["n"], t["selection"], t["epochs"]
        rows = []
        for embedded in (False, True):
            serial = serial_seconds(m, n, sel, embedded)
            S = sum(serial.values())
            challenger = p["train"] * n * E  # one challenger on one worker
            for K in K_VALUES:
                for W in WORKERS:
                    waves = -(-K // W)
                    dp = max(1, W // K)  # workers per challenger (data-parallel)
                    T = S + waves * (challenger / dp + p["infer"] * sel)
                    rows.append({"embeddings_cached": embedded, "K": K, "workers": W, "data_parallel": dp,
                                 "round_seconds": T, "rounds_per_hour": 3600 / T, "plans_per_hour": K * 3600 / T})
            T1 = S + challenger + p["infer"] * sel
            out.setdefault(name, {})["cached" if embedded else "cold"] = {
                "serial_seconds": serial, "serial_total": S, "challenger_seconds_one_worker": challenger,
                "serial_fraction_at_1_worker_K1": S / T1, "amdahl_max_speedup": T1 / S,
                "max_rounds_per_hour": 3600 / S}
        out[name]["rows"] = rows
        out[name]["task"] = t
    return out


def main() -> None:
    lock = os.environ.get("BENCH_LOCK", "/tmp/bench.lock")
    if not Path(lock).exists():
        print(f"note: {lock} is not held; other work on the machine may skew the timings", file=sys.stderr)
    load_before = os.getloadavg()
    prov = Provenance()
    with tempfile.TemporaryDirectory() as tmp:
        m = measure(Path(tmp))
    # Other work on a shared machine slows every number here alike: the load is part of the record.
    m["machine"]["load_average_1min"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    result = {"measured": m, "projection": project(m), "provenance": prov.block()}
    path = Path(__file__).parent / "results" / "cost_model.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
