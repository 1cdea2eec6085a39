"""The loop against two baselines on BANKING77 with 20% plausibly wrong training labels.

    python benchmarks/loop_vs_baselines.py             # full BANKING77 (about an hour on 2 cores)
    python benchmarks/loop_vs_baselines.py --quick     # 2,500 training examples, small grid (~10 min)

Setup (seeded): 10% of train.csv is carved off, stratified, as the selection split and keeps its
true labels (it decides; a curated held-out set is what a team would have). Of the rest, 20% of
the labels are moved to the nearest other class by cosine of the classes' mean MiniLM embeddings
- a plausible confusion, not a uniform one. test.csv is only reported.

  (a) plain          fine-tune MiniLM on the noisy labels; epochs from a small grid, chosen on the
                     selection split;
  (b) one_shot_clean cleanlab.filter.find_label_issues (defaults) on frozen-embedding 5-fold
                     out-of-fold probabilities, drop what it flags, retrain (same grid);
  (c) loop           `reflectlm run` (loop.improve) from the same config with (a)'s chosen epochs,
                     with at most four times (a)'s training compute: loop.examples_budget =
                     4 x the examples (a)'s chosen run processed.

The effectiveness target is the share of the noise gap the loop wins back on test,
R = (loop - plain) / (reference - plain), where the reference is the same training on the true labels.

Every loop round keeps its model (loop.keep_models), and after the run each round's challenger is
scored on test beside the champion it was judged against, with the paired counts of its A/B test
(`gate`), so the gate's precision and misses can be counted (benchmarks/gate.py --rounds).

Seeds run apart and merge: each invocation prints its seed's JSON object ({"plain": {"test_accuracy",
...}, "one_shot_clean": {...}, "loop": {"test_accuracy", "rounds": [...]}, "reference": {...},
"recovery", ...}) and writes it under "per_seed" of --out (default
benchmarks/results/loop_vs_baselines.json), keeping the other seeds there, with the mean recovery.
`--baselines-only` stops after (a), (b) and the reference (the loop arm reuses them later from the
same --workdir).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from provenance import Provenance, merged  # noqa: E402


def _write(path: Path, ds, labels=None) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label"])
        for i, t, y in zip(ds.ids, ds.texts, labels if labels is not None else ds.labels):
            w.writerow([i, t, y])


def _tree(work: Path, train: Path, epochs: int, threads: int | None, dropout) -> dict:
    # every arm trains with the same dropout (--dropout)
    return {"data": {"task": "classification", "train": str(train), "selection": str(work / "selection.csv"),
                     "test": str(work / "test.csv"), "id_column": "id", "max_length": 64},
            "model": {"name": "minilm", "dropout": dropout},
            "train": {"epochs": epochs, "batch_size": 32, "lr": 1e-4, "metric": "accuracy", "threads": threads},
            "run": {"quiet": True, "output_dir": str(work / "runs")}}


def _grid(work: Path, train_csv: Path, grid: list[int], threads, dropout, name: str) -> dict:
    from reflectlm.config import load_config
    from reflectlm.train import train

    runs = []
    for e in grid:
        t0 = time.time()
        out = work / "runs" / f"{name}-e{e}"
        seconds = None
        if (out / "metrics.json").is_file():  # finished in an earlier, interrupted invocation (--workdir)
            metrics = json.loads((out / "metrics.json").read_text())
            info = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
            seconds = info.get("wall_seconds")  # the training's own, not the time to read its files
        else:
            if out.exists():
                import shutil

                shutil.rmtree(out)
            metrics = train(load_config(tree=_tree(work, train_csv, e, threads, dropout)), out, quiet=True).metrics
        runs.append({"epochs": e, "selection_accuracy": metrics["selection"]["accuracy"],
                     "test_accuracy": metrics["test"]["accuracy"], "examples_trained": metrics["examples_trained"],
                     "seconds": round(seconds if seconds is not None else time.time() - t0, 1)})
        print(f"{name} epochs={e}: selection {runs[-1]['selection_accuracy']:.4f} test {runs[-1]['test_accuracy']:.4f}",
              file=sys.stderr, flush=True)
    best = max(runs, key=lambda r: (r["selection_accuracy"], -r["epochs"]))
    return {**best, "grid": runs, "grid_examples_trained": sum(r["examples_trained"] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument("--grid", default=None, help="epoch grid for (a) and (b), e.g. 3,5")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the reference run on the true labels (then no recovery R; saves one training)")
    ap.add_argument("--baselines-only", action="store_true", help="stop after (a), (b) and the reference")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loop_vs_baselines.json",
                    help="merged results file (this seed's entry is replaced, the others kept); '-' to skip")
    ap.add_argument("--merge-only", action="store_true", help="only recompute the summary of --out")
    ap.add_argument("--dropout", default="pretrained",
                    help='model.dropout for every arm (default "pretrained", as the numbers in docs/benchmarks.md)')
    args = ap.parse_args()
    dropout = args.dropout if args.dropout == "pretrained" else float(args.dropout)
    if args.merge_only:
        print(json.dumps(merge(args.out, None, None), indent=2))
        return

    from label_issues import nearest_other_class

    from reflectlm.config import data_root, load_config
    from reflectlm.data import load, stratified_sample, stratified_split
    from reflectlm.embed import embed_texts
    from reflectlm.loop import improve

    started = time.time()
    prov = Provenance(seeds=[args.seed], threads=args.threads)
    root = data_root() / "banking77"
    full = load(root / "train.csv", "classification")
    test = load(root / "test.csv", "classification")
    if args.quick:
        full = stratified_sample(full, 2500, args.seed, min_per_class=3)
    grid = [int(x) for x in (args.grid or ("2,4" if args.quick else "3,5")).split(",")]
    rest, selection = stratified_split(full, 0.1, args.seed)

    labels = sorted(set(full.labels))
    l2i = {n: i for i, n in enumerate(labels)}
    y = np.array([l2i[v] for v in rest.labels])
    X = embed_texts(list(rest.texts), model="minilm", quiet=True)
    nearest = nearest_other_class(X, y, len(labels))
    rng = np.random.default_rng(args.seed)
    flip = np.sort(rng.choice(len(rest), size=int(args.noise * len(rest)), replace=False))
    flip_set = set(flip.tolist())
    noisy = [labels[nearest[y[i]]] if i in flip_set else rest.labels[i] for i in range(len(rest))]
    flipped_ids = {rest.ids[i] for i in flip}
    true = dict(zip(rest.ids, rest.labels))

    work = Path(args.workdir or tempfile.mkdtemp(prefix="loop-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # A --workdir reuses finished runs; only when they were made with the same setting.
    setting = {"seed": args.seed, "noise": args.noise, "quick": args.quick, "dropout": dropout}
    marker = work / "setting.json"
    if marker.is_file() and json.loads(marker.read_text()) != setting:
        sys.exit(f"{work} holds runs made with {marker.read_text().strip()}, not {setting}: use another --workdir")
    marker.write_text(json.dumps(setting))
    _write(work / "train_noisy.csv", rest, noisy)
    _write(work / "selection.csv", selection)
    _write(work / "test.csv", test)
    print(f"workdir {work}: train {len(rest)} ({len(flip)} flipped), selection {len(selection)}, test {len(test)}",
          file=sys.stderr, flush=True)

    # (a) plain fine-tuning on the noisy labels
    t0 = time.time()
    plain = _grid(work, work / "train_noisy.csv", grid, args.threads, dropout, "plain")
    plain["seconds_total"] = round(time.time() - t0, 1)

    # (b) one-shot cleaning: cleanlab on frozen-embedding out-of-fold probabilities, drop, retrain
    from cleanlab.filter import find_label_issues

    from reflectlm.diagnose.crossval import out_of_fold

    t0 = time.time()
    noisy_ds = load(work / "train_noisy.csv", "classification", id_column="id")
    oof, _ = out_of_fold(noisy_ds, labels, "classification", mode="fast", folds=5, seed=args.seed)
    issues = find_label_issues(np.array([l2i[v] for v in noisy_ds.labels]), oof)
    keep = np.flatnonzero(~issues)
    dropped = {noisy_ds.ids[i] for i in np.flatnonzero(issues)}
    _write(work / "train_clean.csv", noisy_ds.subset(keep))
    clean = _grid(work, work / "train_clean.csv", grid, args.threads, dropout, "one_shot_clean")
    clean.update(dropped=len(dropped), dropped_precision=len(dropped & flipped_ids) / max(len(dropped), 1),
                 dropped_recall=len(dropped & flipped_ids) / max(len(flipped_ids), 1),
                 seconds_total=round(time.time() - t0, 1))

    # reference: the same training on the true labels (what the noise cost; the ceiling for (b), (c))
    _write(work / "train_true.csv", rest)
    reference = (_grid(work, work / "train_true.csv", [plain["epochs"]], args.threads, dropout, "clean_reference")
                 if args.reference else None)

    if args.baselines_only:
        print(json.dumps({"plain": plain, "one_shot_clean": clean, "reference": reference}, indent=2))
        return

    # (c) the loop, from (a)'s chosen epochs, with at most 4x (a)'s training compute
    t0 = time.time()
    tree = _tree(work, work / "train_noisy.csv", plain["epochs"], args.threads, dropout)
    budget = 4 * plain["examples_trained"]
    tree["loop"] = {"rounds": 10, "patience": 2, "examples_budget": budget, "report": False, "keep_models": True}
    tree["run"].update(output_dir=str(work / "loop-workspace"), name="loop")
    again = (work / "loop-workspace" / "loop" / "run.json").is_file()  # resume an interrupted invocation
    # The loop's progress goes to stderr: stdout carries only the JSON result.
    with contextlib.redirect_stdout(sys.stderr):
        result = improve(load_config(tree=tree), quiet=False, resume=again)
    s = result.summary
    fixes = []
    for r in s["rounds"][1:]:
        plan = json.loads((result.run_dir / "rounds" / f"{r['round']:02d}" / "plan.json").read_text())
        for ch in plan.get("changes", []):
            if ch.get("action") == "fix_labels":
                rel = {x["id"] for x in ch["relabels"]}
                right = sum(1 for x in ch["relabels"] if x["id"] in flipped_ids and x["new"] == true[x["id"]])
                fixes.append({"round": r["round"], "relabelled": len(rel), "truly_flipped": len(rel & flipped_ids),
                              "restored_true_label": right})
            if ch.get("action") == "drop_suspects":
                d = set(ch["ids"])
                fixes.append({"round": r["round"], "dropped": len(d), "truly_flipped": len(d & flipped_ids)})
    round_tests = score_rounds(result.run_dir, work, s["rounds"], tree)
    loop = {"test_accuracy": s["test"]["accuracy"], "selection_accuracy": s["selection"],
            "round0_test_accuracy": s["round0_test"]["accuracy"], "champion_round": s["champion_round"],
            "stop_reason": s["stop_reason"], "examples_trained": s["examples_trained"], "examples_budget": budget,
            "rounds": [{k: r[k] for k in ("round", "actions", "addressed", "selection", "promoted", "difference",
                                          "ci_low", "ci_high", "p_mcnemar", "examples_trained", "reason")}
                       | round_tests.get(r["round"], {}) for r in s["rounds"]],
            "label_changes": fixes, "run_dir": os.path.relpath(result.run_dir, work),  # under --workdir
            "seconds_total": round(time.time() - t0, 1)}

    out = {"setup": {"train": len(rest), "flipped": len(flip), "noise": args.noise, "selection": len(selection),
                     "test": len(test), "grid": grid, "seed": args.seed, "quick": args.quick},
           "plain": plain, "one_shot_clean": clean, "loop": loop,
           "clean_labels_reference": reference and {"test_accuracy": reference["test_accuracy"],
                                                    "epochs": reference["epochs"],
                                                    "selection_accuracy": reference["selection_accuracy"]},
           "reference": reference and {"test_accuracy": reference["test_accuracy"], "epochs": reference["epochs"],
                                       "selection_accuracy": reference["selection_accuracy"]},
           "recovery": (None if not reference or reference["test_accuracy"] == plain["test_accuracy"] else
                        (loop["test_accuracy"] - plain["test_accuracy"])
                        / (reference["test_accuracy"] - plain["test_accuracy"])),
           "one_shot_clean_recovery": (None if not reference or reference["test_accuracy"] == plain["test_accuracy"]
                                       else (clean["test_accuracy"] - plain["test_accuracy"])
                                       / (reference["test_accuracy"] - plain["test_accuracy"])),
           "examples_trained": {"plain": plain["examples_trained"], "plain_grid": plain["grid_examples_trained"],
                                "one_shot_clean": clean["examples_trained"],
                                "one_shot_clean_grid": clean["grid_examples_trained"], "loop": loop["examples_trained"],
                                "loop_over_plain": loop["examples_trained"] / plain["examples_trained"]},
           "gain_over_plain": loop["test_accuracy"] - plain["test_accuracy"],
           "gain_over_one_shot_clean": loop["test_accuracy"] - clean["test_accuracy"],
           "seconds": round(time.time() - started, 1), "provenance": prov.block()}
    print(json.dumps(out, indent=2))
    if str(args.out) != "-":
        merge(args.out, args.seed, out)


def score_rounds(run_dir: Path, work: Path, rounds: list[dict], tree: dict) -> dict[int, dict]:
    """Each trained round's challenger on test, beside the champion it was judged against (read after
    the run, as the gate's audit: the loop itself never sees test)."""
    from reflectlm.config import load_config
    from reflectlm.data import load
    from reflectlm.loop.challenger import evaluate
    from reflectlm.modeling import load_bundle

    cfg = load_config(tree=tree)
    test = load(work / "test.csv", "classification", id_column="id")
    acc: dict[int, float] = {}
    for r in rounds:
        model = run_dir / "rounds" / f"{r['round']:02d}" / "model"
        if model.is_dir():
            acc[r["round"]] = evaluate(load_bundle(model), test, cfg).metrics["accuracy"]
    out, champion = {}, 0
    for r in rounds:
        if r["round"] == 0 or r["round"] not in acc:
            continue
        out[r["round"]] = {"test_accuracy": acc[r["round"]], "judged_against": champion,
                           "champion_test_accuracy": acc.get(champion)}
        cmp = run_dir / "rounds" / f"{r['round']:02d}" / "compare.json"
        if cmp.is_file():  # the paired counts, so the audit can judge the round by other gates too
            from gate import gate_record

            out[r["round"]]["gate"] = gate_record(json.loads(cmp.read_text()))
        if r["promoted"]:
            champion = r["round"]
    return out


def merge(path: Path, seed: int | None, result: dict | None) -> dict:
    """Put one seed's result under per_seed of the results file and recompute the summary."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    per_seed = data.get("per_seed", {})
    if result is not None:
        per_seed[str(seed)] = result
    for run in per_seed.values():  # the run directory relative to --workdir (files made before recorded it whole)
        rd = run.get("loop", {}).get("run_dir", "")
        if os.path.isabs(rd) and "loop-workspace" in rd:
            run["loop"]["run_dir"] = rd[rd.index("loop-workspace"):]
    per_seed = dict(sorted(per_seed.items(), key=lambda kv: int(kv[0])))
    rec = {k: v["recovery"] for k, v in per_seed.items() if v.get("recovery") is not None}
    arms = ("plain", "one_shot_clean", "loop", "reference")
    mean = {a: float(np.mean([v[a]["test_accuracy"] for v in per_seed.values() if v.get(a)]))
            for a in arms if any(v.get(a) for v in per_seed.values())}
    data = {"per_seed": per_seed,
            "recovery": {"per_seed": rec, "mean": float(np.mean(list(rec.values()))) if rec else None},
            "loop_above_one_shot_clean": {k: v["loop"]["test_accuracy"] > v["one_shot_clean"]["test_accuracy"]
                                          for k, v in per_seed.items()},
            "mean_test_accuracy": mean,
            "target": "recovery mean >= 0.50 and the loop above one_shot_clean on every seed"}
    parts = {k: v["provenance"] for k, v in per_seed.items() if v.get("provenance")}
    if parts:  # seeds run apart: each keeps its own block, and the file's names which ran where
        data["provenance"] = merged(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


if __name__ == "__main__":
    main()
