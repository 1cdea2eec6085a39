"""Active learning in the loop against random sampling at the same label budget, on BANKING77.

    python benchmarks/active_learning.py --threads 2            # 3 seeds x 5 rounds of 500 labels
    python benchmarks/active_learning.py --seeds 1 --threads 2  # one seed, merged into --out
    python benchmarks/active_learning.py --quick --out -        # 1 seed, 2 rounds of 200, small data
    python benchmarks/active_learning.py --merge s0.json s1.json  # add seeds printed by earlier runs

Every finished seed is merged into --out (default benchmarks/results/active_learning.json): its
entry under per_seed (keyed by seed) is replaced, the other seeds are kept, and the summary is
recomputed - so seeds can run at different times, and one seed can be re-run to audit it.

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

test.csv is read only after the loop has finished. Prints one JSON object, the merged file:
{"budgets": [...], "loop": [...], "random": [...]} (mean test accuracy per budget over the seeds,
as fractions), "mean_gain", whether the loop is above random at every budget (of the mean, and on
every seed), and per_seed {seed: {"budgets", "loop", "random", "gain", ...}}.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance, merged  # noqa: E402

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
    from reflectlm.loop.challenger import evaluate
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
                    help="add the seeds of earlier runs' printed JSON (same setup) to --out")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "active_learning.json"),
                    help="merged results file (each seed's entry replaced, the others kept); '-' to skip")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.rounds, args.size = "0", 2, 200
    setup = {"rounds": args.rounds, "size": args.size, "start": args.start, "epochs": args.epochs,
             "quick": args.quick}
    if args.merge:
        runs = [json.loads(Path(p).read_text()) for p in args.merge]
        data = None
        for r in runs:
            data = merge(args.out, {k: v for k, v in r["setup"].items() if k != "seeds"}, _seeds_of(r))
        print(json.dumps(data, indent=2))
        return

    from reflectlm.config import data_root

    data = None
    for s in args.seeds.split(","):
        prov = Provenance(seeds=[int(s)], threads=args.threads)
        one = {**one_seed(int(s), args, data_root() / "banking77"), "provenance": prov.block()}
        data = merge(args.out, setup, [one])  # after every seed: a stopped run keeps what it finished
    print(json.dumps(data, indent=2))


def _seeds_of(run: dict) -> list[dict]:
    """The per-seed results of a printed or merged JSON (per_seed as a list in files made before the
    results file was keyed by seed)."""
    ps = run["per_seed"]
    return list(ps.values()) if isinstance(ps, dict) else list(ps)


def merge(out: str, setup: dict, seeds: list[dict]) -> dict:
    """Put `seeds` under per_seed of the results file `out` (replacing those seeds) and recompute the
    summary; '-' merges in memory only. Refuses seeds made with another setup."""
    path = None if out == "-" else Path(out)
    data = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    old = data
    if data.get("setup") and data["setup"] != setup:
        sys.exit(f"{out} holds seeds made with {data['setup']}, not {setup}: use another --out")
    per_seed = {str(p["seed"]): p for p in _seeds_of(data)} if data else {}
    for p in seeds:
        per_seed[str(p["seed"])] = p
    data = summarize(dict(sorted(per_seed.items(), key=lambda kv: int(kv[0]))))
    data["setup"] = setup
    parts = {k: p["provenance"] for k, p in data["per_seed"].items() if p.get("provenance")}
    data["provenance"] = merged(parts) if parts else (old or {}).get("provenance")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def summarize(per_seed: dict[str, dict]) -> dict:
    runs = list(per_seed.values())
    n = min(len(p["budgets"]) for p in runs)
    for p in runs:
        p["gain"] = [a - b for a, b in zip(p["loop"], p["random"])]
    out = {"budgets": [int(np.mean([p["budgets"][i] for p in runs])) for i in range(n)],
           "loop": [float(np.mean([p["loop"][i] for p in runs])) for i in range(n)],
           "random": [float(np.mean([p["random"][i] for p in runs])) for i in range(n)]}
    out["mean_gain"] = float(np.mean(np.array(out["loop"]) - np.array(out["random"]))) if n else None
    out["loop_above_random_at_every_budget"] = bool(n) and all(a > b for a, b in zip(out["loop"], out["random"]))
    out["above_random_at_every_budget_on_every_seed"] = all(all(g > 0 for g in p["gain"]) for p in runs)
    out["seeds"] = [int(k) for k in per_seed]
    out["target"] = "above random at every budget on every seed, and mean_gain >= 0.02"
    out["per_seed"] = per_seed
    return out


if __name__ == "__main__":
    main()
