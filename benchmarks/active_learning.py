"""Active learning in the loop against random sampling at the same label budget, on BANKING77.

    python benchmarks/active_learning.py --threads 1            # 3 seeds x 5 rounds of 500 labels
    python benchmarks/active_learning.py --quick                # 1 seed, 2 rounds of 200, small data
    python benchmarks/active_learning.py --merge s0.json s1.json  # one result from seeds run apart

Per seed (seeded): 10% of train.csv is carved off, stratified, as the selection split (it decides
promotions and the best epoch, for both arms). Of the rest, a stratified 10% starts labelled;
everything else is the pool, whose labels the training never reads: the oracle
(loop.oracle = "column") reveals a label only when asked.

  loop    `reflectlm run` (loop.improve) with loop.actions = ["active_learning"] (margin
          uncertainty, diversity by clustering embeddings), 500 labels per round, 5 rounds. The
          accuracy at a budget is the test accuracy of the loop's champion after the round that
          spent it (a rejected round keeps the older champion: that is what the loop would ship).
  random  the same config trained on the starting labels plus a random sample of the pool of the
          same size (nested across budgets).

test.csv is read only after the loop has finished. Prints one JSON object:
{"budgets": [...], "loop": [...], "random": [...]} (mean test accuracy per budget over the seeds)
plus the per-seed numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402


def _write(path: Path, ds) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label"])
        for i, t, y in zip(ds.ids, ds.texts, ds.labels):
            w.writerow([i, t, y])


def _tree(work: Path, train: Path, seed: int, epochs: int, threads) -> dict:
    return {"data": {"task": "classification", "train": str(train), "selection": str(work / "selection.csv"),
                     "test": str(work / "test.csv"), "id_column": "id", "max_length": 64},
            "model": {"name": "minilm"},
            # macro-F1 decides promotions (the bootstrap CI; accuracy would also need McNemar to agree,
            # which a real but small gain from 500 more labels often misses); accuracy is reported.
            "train": {"epochs": epochs, "batch_size": 32, "lr": 1e-4, "metric": "macro_f1", "seed": seed,
                      "threads": threads},
            "run": {"quiet": True, "output_dir": str(work / "runs")}}


def _test_accuracy(model_dir: Path, test, cfg) -> float:
    from reflectlm.loop.round import evaluate
    from reflectlm.modeling import load_bundle

    return float(evaluate(load_bundle(model_dir), test, cfg).metrics["accuracy"])


def one_seed(seed: int, args, root: Path) -> dict:
    from reflectlm.config import load_config
    from reflectlm.data import load, stratified_sample, stratified_split
    from reflectlm.loop import improve
    from reflectlm.train import train

    full = load(root / "train.csv", "classification")
    test = load(root / "test.csv", "classification")
    if args.quick:
        full = stratified_sample(full, 3000, seed, min_per_class=4)
    rest, selection = stratified_split(full, 0.1, seed)
    pool, start = stratified_split(rest, args.start, seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="al-bench-")) / f"seed{seed}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    _write(work / "start.csv", start)
    _write(work / "pool.csv", pool)
    _write(work / "selection.csv", selection)
    _write(work / "test.csv", test)
    t0 = time.time()

    # the loop: active learning only, labels from the hidden column
    tree = _tree(work, work / "start.csv", seed, args.epochs, args.threads)
    tree["loop"] = {"rounds": args.rounds, "patience": args.rounds + 1, "actions": ["active_learning"],
                    "pool": str(work / "pool.csv"), "oracle": "column", "pool_label_column": "label",
                    "label_budget": args.rounds * args.size, "checks": ["performance"], "report": False,
                    "action_params": {"active_learning": {"size": args.size}}}
    cfg = load_config(tree=tree)
    result = improve(cfg, quiet=True)
    s = result.summary
    budgets, loop_acc, cache = [], [], {}
    used = 0
    for r in s["rounds"][1:]:
        d = json.loads((result.run_dir / "rounds" / f"{r['round']:02d}" / "decision.json").read_text())
        used += d.get("labels_used", 0)
        champ = d["champion_round"]
        if champ not in cache:
            cache[champ] = _test_accuracy(result.run_dir / "rounds" / f"{champ:02d}" / "model", test, cfg)
        budgets.append(len(start) + used)
        loop_acc.append(cache[champ])
    start_acc = cache.get(0) or _test_accuracy(result.run_dir / "rounds" / "00" / "model", test, cfg)
    loop_seconds = time.time() - t0

    # random sampling at the same budgets (nested samples of the pool)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    rand_acc = []
    for b in budgets:
        k = b - len(start)
        sub = pool.subset(order[:k])
        both = start.subset(range(len(start)))
        both.ids, both.labels, both.texts = both.ids + sub.ids, both.labels + sub.labels, both.texts + sub.texts
        _write(work / f"random-{b}.csv", both)
        res = train(load_config(tree=_tree(work, work / f"random-{b}.csv", seed, args.epochs, args.threads)),
                    work / "runs" / f"random-{b}", quiet=True)
        rand_acc.append(res.metrics["test"]["accuracy"])
        print(f"seed {seed} budget {b}: loop {loop_acc[budgets.index(b)]:.4f} random {rand_acc[-1]:.4f}",
              file=sys.stderr, flush=True)
    return {"seed": seed, "start": len(start), "start_accuracy": start_acc, "budgets": budgets, "loop": loop_acc,
            "random": rand_acc, "loop_rounds": [{k: r[k] for k in ("round", "promoted", "selection", "difference",
                                                                    "reason")} for r in s["rounds"]],
            "loop_seconds": round(loop_seconds, 1), "seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--start", type=float, default=0.1, help="share of the training split labelled at the start")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="combine the per-seed results of earlier runs of this script (same setup) into one")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.rounds, args.size = "0", 2, 200
    if args.merge:
        print(json.dumps(merge(args.merge), indent=2))
        return

    from reflectlm.config import data_root

    started = time.time()
    per_seed = [one_seed(int(s), args, data_root() / "banking77") for s in args.seeds.split(",")]
    out = summarize(per_seed)
    out.update(setup={"seeds": args.seeds, "rounds": args.rounds, "size": args.size, "start": args.start,
                      "epochs": args.epochs, "quick": args.quick}, seconds=round(time.time() - started, 1))
    print(json.dumps(out, indent=2))


def merge(paths: list[str]) -> dict:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    setups = [{k: v for k, v in r["setup"].items() if k != "seeds"} for r in runs]
    if any(s != setups[0] for s in setups):
        sys.exit(f"the runs were made with different setups: {setups}; merge only runs of the same setup")
    per_seed = [p for r in runs for p in r["per_seed"]]
    seeds = [p["seed"] for p in per_seed]
    if len(set(seeds)) != len(seeds):
        sys.exit(f"seeds {seeds} repeat: merge runs of different seeds")
    out = summarize(per_seed)
    out.update(setup={**setups[0], "seeds": ",".join(str(s) for s in seeds)}, merged_from=paths,
               seconds=round(sum(r.get("seconds", 0.0) for r in runs), 1))
    return out


def summarize(per_seed: list[dict]) -> dict:
    n = min(len(p["budgets"]) for p in per_seed)
    out = {"budgets": [int(np.mean([p["budgets"][i] for p in per_seed])) for i in range(n)],
           "loop": [float(np.mean([p["loop"][i] for p in per_seed])) for i in range(n)],
           "random": [float(np.mean([p["random"][i] for p in per_seed])) for i in range(n)]}
    out["mean_gain"] = float(np.mean(np.array(out["loop"]) - np.array(out["random"]))) if n else None
    out["loop_above_random_at_every_budget"] = bool(n) and all(a > b for a, b in zip(out["loop"], out["random"]))
    out["per_seed"] = per_seed
    return out


if __name__ == "__main__":
    main()
