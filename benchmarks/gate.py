"""The promotion gate measured against the truth: A/A pairs (false promotions).

    python benchmarks/gate.py --pairs 20 --workdir WORKDIR     # resumable: trainings are kept in WORKDIR
    python benchmarks/gate.py --pairs 2 --workdir WORKDIR      # a smoke run (the first 2 pairs)

Pairs already judged in --out whose trainings are not in WORKDIR are kept as recorded (each names
the commit it was measured at), so --pairs 100 after a 20-pair run trains only pairs 20-99.

A/A: 2 x pairs trainings of the same config on the same data that differ only in the seed
(head initialisation and data order). Each pair is judged by the gate as challenger (odd seed)
vs champion (even seed) on the same 1,000-example selection split; any promotion is a false one,
since neither model is better by construction. Setting: BANKING77, a stratified 2,000-example
training subset and a disjoint stratified 1,000-example selection split of train.csv (seed 0),
MiniLM with the loop benchmarks' training config (3 epochs, batch 32, lr 1e-4, max_length 64).

Every candidate gate is applied to the same pairs, so their false-promotion counts compare:
  macro_f1    the loop's gate today: compare.compare(metric="macro_f1"), superiority at the
              loop's alpha (two-sided CI, so one-sided alpha / 2), with the per-class guardrail;
  accuracy    the same with metric="accuracy" (the bootstrap CI and McNemar must agree);
  accuracy_midp  options measured for the owner, not the loop's rule: the accuracy gate with the
              mid-p McNemar test (Fagerland et al. 2013: the exact conditional test is conservative,
              mid-p keeps close to the nominal level) in place of the exact one;
  accuracy_ci the accuracy gate on the bootstrap CI alone (as macro_f1 is judged);
  log_prob    a proper score of every example: the paired bootstrap CI of the mean difference in
              the gold label's log-probability (challenger - champion) above 0 at the same level;
  brier       the same on the multi-class Brier score (lower is better, so champion - challenger).
Each training's selection and test probabilities are saved in --workdir (one .npz per seed), so a
killed run resumes where it stopped, and trainings made apart merge by copying their .npz files
into one --workdir before the judging run.
Prints one JSON object and writes it to --out (default benchmarks/results/gate.json):
{"aa": {"pairs", "false_promotions"}, "candidates": {name: {"false_promotions", ...}}, ...}.

    python benchmarks/gate.py --rounds      # part (ii): precision and misses, no training
    python benchmarks/gate.py --shaped 10 --workdir WORKDIR   # challengers shaped by a diagnosis

--shaped P: challengers shaped the way the loop shapes them, judged by the loop's gate (macro_f1)
against the A/A champions (even seeds 0 .. 2P-2). Each challenger is `reweight_classes` (the real
action) trained with the champion's seed + 1, its class weights read from
  selection   the champion's per-class F1 on the selection split - what shaped it before, and the
              split it is then judged on;
  train_oof   the per-class F1 of out-of-fold predictions on the training data (cross-validation,
              fast mode) - what the performance check reads now; the gate never saw it.
Reweighting may really help or hurt, so a promotion is not false by construction here: a false
promotion is one whose challenger is not better than its champion on test. The reuse shows as the
selection gain exceeding the test gain: `reuse_bias` = mean over pairs of (selection - test)
accuracy difference; the A/A pairs' value (same config, only the seed) is the no-reuse baseline.

Part (ii) reads the loop benchmark's merged results (benchmarks/results/loop_vs_baselines.json, where
every round's challenger was scored on test after the run beside the champion it was judged
against) and adds to --out, keeping the A/A part: precision = the share of promotions whose
challenger beats, on test, the champion it replaced; a miss = a rejected challenger that beats its
champion on test by at least 1 point (listed with its size). Where every round carries its paired
counts (`gate`: b, c, CI, alpha; loop_vs_baselines.py records them from compare.json), the same is
scored for the mid-p accuracy gate under `options` - an option for the owner, not the loop's rule.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance  # noqa: E402

N_TRAIN, N_SELECTION, DATA_SEED = 2000, 1000, 0
TRAIN = {"epochs": 3, "batch_size": 32, "lr": 1e-4, "metric": "macro_f1"}
MAX_LENGTH = 64


def _splits():
    from reflectlm.config import data_root
    from reflectlm.data import load, stratified_sample, stratified_split

    root = data_root() / "banking77"
    if not (root / "train.csv").is_file():
        sys.exit(f"BANKING77 not found under {root}: set REFLECTLM_DATA to the shared data folder")
    pool = stratified_sample(load(str(root / "train.csv"), "classification"), N_TRAIN + N_SELECTION, DATA_SEED)
    train, selection = stratified_split(pool, N_SELECTION / (N_TRAIN + N_SELECTION), DATA_SEED)
    test = load(str(root / "test.csv"), "classification")
    return train, selection, test, sorted(set(pool.labels))


def shaped_weights(source: str, champion: Path, workdir: Path) -> list[float]:
    """reweight_classes' class weights, from per-class F1 on `source` (see --shaped)."""
    from reflectlm.actions import get_action
    from reflectlm.actions.base import ActionInputs, Recipe
    from reflectlm.findings import Finding
    from reflectlm.tasks.classification import metrics

    train, selection, _, labels = _splits()
    if source == "selection":
        f1 = metrics(selection, np.load(champion)["selection"].astype(np.float64), labels)["per_class"]
    else:
        cache = workdir / "train_oof.npy"
        if not cache.is_file():
            from reflectlm.diagnose.crossval import out_of_fold

            oof, _ = out_of_fold(train, labels, "classification", mode="fast", folds=5, seed=DATA_SEED)
            np.save(cache, oof)
        f1 = metrics(train, np.load(cache).astype(np.float64), labels)["per_class"]
    summary = Finding("performance", "selection_performance", 0.0, "shaping",
                      {"shaping": {"split": source, "per_class_f1": {c: v["f1"] for c, v in f1.items()}}})
    inputs = ActionInputs(task="classification", labels=labels, findings=[summary])
    recipe = Recipe({"data": {"task": "classification", "train": "x.csv"}}, train=train)
    action = get_action("reweight_classes", basis="error", power=1.0)
    return list(action.apply(recipe, inputs).tree["train"]["class_weights"])


def train_one(seed: int, out: Path, quiet: bool = True, class_weights: list[float] | None = None) -> None:
    """Train the config with this seed; save selection / test probabilities to `out` (atomic)."""
    import torch

    from reflectlm.config import ModelConfig, TrainConfig
    from reflectlm.evaluate import evaluate_features
    from reflectlm.modeling import build
    from reflectlm.tasks import get_task
    from reflectlm.train import FitInputs, fit

    train, selection, test, labels = _splits()
    l2i = {n: i for i, n in enumerate(labels)}
    task = get_task("classification")
    torch.manual_seed(seed)  # the head's initialisation
    bundle = build(ModelConfig(), "classification", labels, train, MAX_LENGTH)
    tc = TrainConfig(seed=seed, class_weights=class_weights or [], **{k: v for k, v in TRAIN.items() if k != "metric"})
    feats, sel = (task.encode(bundle.tokenizer, d, l2i, MAX_LENGTH) for d in (train, selection))
    t0 = time.perf_counter()
    result = fit(bundle.model, FitInputs(task, labels, feats, (selection, sel), bundle.tokenizer.pad_token_id,
                                         TRAIN["metric"]), tc, quiet=quiet)
    probs = {}
    for name, ds in (("selection", selection), ("test", test)):
        f = task.encode(bundle.tokenizer, ds, l2i, MAX_LENGTH)
        probs[name] = evaluate_features(bundle.model, ds, f, task=task, labels=labels,
                                        pad_id=bundle.tokenizer.pad_token_id, batch_size=tc.eval_batch_size,
                                        precision=result.precision).probs.astype(np.float32)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez_compressed(tmp, selection=probs["selection"], test=probs["test"], seconds=time.perf_counter() - t0,
                        best_epoch=result.best_epoch, precision=result.precision)
    tmp.replace(out)


def _proper(score: str, y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Per-example score, higher = better: the gold label's log-probability, or minus the Brier score."""
    rows = np.arange(len(y))
    if score == "log_prob":
        return np.log(np.clip(P[rows, y], 1e-12, 1.0))
    onehot = np.zeros_like(P)
    onehot[rows, y] = 1.0
    return -((P - onehot) ** 2).sum(1)


def mcnemar_mid_p(b: int, c: int) -> float:
    """Two-sided mid-p McNemar (Fagerland et al. 2013) from the discordant counts: the product's
    own (compare.mcnemar_exact with test="mid_p")."""
    from reflectlm.compare import mcnemar_exact

    return mcnemar_exact([True] * b + [False] * c, [False] * b + [True] * c, "mid_p")["p_value"]


def judge(y: np.ndarray, champ: np.ndarray, chall: np.ndarray, labels: list[str], alpha: float, n_bootstrap: int,
          seed: int) -> dict:
    """Every candidate gate's verdict on one pair: {name: {"promote", "difference", "ci_low"}}."""
    from reflectlm.compare import compare, paired_bootstrap

    out = {}
    for metric in ("macro_f1", "accuracy"):
        c = compare(y, champ.argmax(1), chall.argmax(1), labels=labels, metric=metric, alpha=alpha,
                    n_bootstrap=n_bootstrap, seed=seed, mcnemar_test="exact")
        out[metric] = {"promote": bool(c.promote), "difference": c.difference, "ci_low": c.ci_low}
        if metric == "accuracy":
            g = gate_record(c.to_json())
            ci_ok = c.difference > 0 and c.ci_low > 0 and not g["guardrail_blocked"]
            out["accuracy_midp"] = {"promote": midp_would_promote(g, c.difference), "difference": c.difference,
                                    "ci_low": c.ci_low, "p_mid": mcnemar_mid_p(g["b"], g["c"])}
            out["accuracy_ci"] = {"promote": bool(ci_ok), "difference": c.difference, "ci_low": c.ci_low}
    for score in ("log_prob", "brier"):
        a, b = _proper(score, y, champ), _proper(score, y, chall)
        # The bootstrap of a mean difference: `accuracy` over per-example values is their mean.
        _, lo, hi = paired_bootstrap(lambda yy, v: float(np.mean(v)), y, a, b, n_bootstrap=n_bootstrap, seed=seed,
                                     alpha=alpha)
        out[score] = {"promote": bool(lo > 0), "difference": float(b.mean() - a.mean()), "ci_low": lo}
    return out


def summarise(pairs: list[dict]) -> dict:
    names = sorted(pairs[0]["verdicts"]) if pairs else []
    cand = {n: {"false_promotions": sum(p["verdicts"][n]["promote"] for p in pairs),
                "mean_abs_difference": float(np.mean([abs(p["verdicts"][n]["difference"]) for p in pairs]))}
            for n in names}
    midp = cand.get("accuracy_midp", {}).get("false_promotions")
    return {"aa": {"pairs": len(pairs), "false_promotions": cand.get("macro_f1", {}).get("false_promotions", 0),
                   "midp_false_promotions": midp},
            "adopted_gate": adopted(len(pairs), midp), "candidates": cand, "pairs": pairs}


# The owner's rule for the accuracy gate: mid-p McNemar becomes the default once 100 A/A pairs show
# at most 5 false promotions with it; otherwise the exact test stays.
ADOPT_PAIRS, ADOPT_MAX_FALSE = 100, 5


def adopted(pairs: int, midp_false: int | None) -> dict:
    """Which McNemar test the rule adopts (loop.mcnemar), and why."""
    if midp_false is None or pairs < ADOPT_PAIRS:
        return {"mcnemar": "exact", "why": f"{pairs} A/A pairs so far; the rule needs {ADOPT_PAIRS}"}
    ok = midp_false <= ADOPT_MAX_FALSE
    return {"mcnemar": "mid_p" if ok else "exact",
            "why": f"mid-p made {midp_false} false promotions in {pairs} A/A pairs "
                   f"({'within' if ok else 'above'} the {ADOPT_MAX_FALSE} allowed)"}


def summarise_shaped(pairs: list[dict], aa_pairs: list[dict]) -> dict:
    """Per shaping source: promotions, false ones (not better on test), and the reuse bias."""
    def bias(rows, sel, tst):
        return float(np.mean([sel(r) - tst(r) for r in rows])) if rows else None

    out = {}
    for source in sorted({p["source"] for p in pairs}):
        rows = [p for p in pairs if p["source"] == source]
        promoted = [p for p in rows if p["promote"]]
        out[source] = {
            "pairs": len(rows), "promotions": len(promoted),
            "false_promotions": sum(1 for p in promoted if p["test_difference"] <= 0),
            "mean_selection_difference": float(np.mean([p["selection_difference"] for p in rows])),
            "mean_test_difference": float(np.mean([p["test_difference"] for p in rows])),
            "reuse_bias": bias(rows, lambda p: p["selection_difference"], lambda p: p["test_difference"])}
    aa = [p for p in aa_pairs if "accuracy" in p.get("verdicts", {}) and len(p.get("test_accuracy", [])) == 2]
    out["aa_baseline"] = {"pairs": len(aa), "reuse_bias": bias(
        aa, lambda p: p["verdicts"]["accuracy"]["difference"], lambda p: p["test_accuracy"][1] - p["test_accuracy"][0])}
    out["definition"] = ("reuse_bias: mean over pairs of (selection - test) accuracy difference, challenger - "
                         "champion; a false promotion: promoted by the macro_f1 gate, not better on test")
    out["pairs_detail"] = pairs
    return out


def _loop_rows(name: str, data: dict) -> list[dict]:
    """loop_vs_baselines.py's layout (also its --noise 0 clean-data run): every judged round's
    challenger scored on test beside the champion it was judged against."""
    rows = []
    for seed, run in sorted(data.get("per_seed", {}).items(), key=lambda kv: int(kv[0])):
        for r in run["loop"]["rounds"]:
            if r["round"] == 0 or r.get("test_accuracy") is None or r.get("champion_test_accuracy") is None:
                continue
            row = {"file": name, "seed": int(seed), "round": r["round"], "actions": r["actions"],
                   "promoted": bool(r["promoted"]), "selection_difference": r.get("difference"),
                   "judged_against": r["judged_against"], "metric": "accuracy",
                   "test_difference": r["test_accuracy"] - r["champion_test_accuracy"]}
            if r.get("gate"):
                row["promoted_midp"] = row["promoted"] or midp_would_promote(r["gate"], r.get("difference"))
            rows.append(row)
    return rows


def _active_learning_rows(name: str, data: dict) -> list[dict]:
    """active_learning.py's layout: per seed, the champion's test accuracy after each round (`loop`,
    one per budget; a rejected round leaves the champion, so its entry repeats the one before) and
    each round's decision (`loop_rounds`). A promoted round's test difference is its entry minus the
    one before it (round 1: minus the starting model's)."""
    rows = []
    for seed, run in sorted(data.get("per_seed", {}).items(), key=lambda kv: int(kv[0])):
        test = [run["start_accuracy"], *run["loop"]]
        champion = 0
        for r in run["loop_rounds"]:
            if r["round"] == 0 or r["round"] >= len(test):
                continue
            rows.append({"file": name, "seed": int(seed), "round": r["round"], "actions": ["active_learning"],
                         "promoted": bool(r["promoted"]), "selection_difference": r.get("difference"),
                         "judged_against": champion, "metric": "accuracy",
                         "test_difference": test[r["round"]] - test[r["round"] - 1] if r["promoted"] else None})
            champion = r["round"] if r["promoted"] else champion
    return rows


def _qa_rows(name: str, data: dict) -> list[dict]:
    """qa.py's loop part: each round's dev F1 (SQuAD's dev split is the test split) beside the
    champion it was judged against (dev_f1_change, in F1 points)."""
    return [{"file": name, "seed": 0, "round": r["round"], "actions": r["actions"], "promoted": bool(r["promoted"]),
             "selection_difference": r.get("difference"), "judged_against": r["judged_against"], "metric": "f1",
             "test_difference": r["dev_f1_change"] / 100}
            for r in (data.get("loop") or {}).get("rounds", []) if r["round"] > 0 and "dev_f1_change" in r]


READERS = {"loop_vs_baselines.json": _loop_rows, "loop_clean.json": _loop_rows,
           "active_learning.json": _active_learning_rows, "qa.json": _qa_rows}
# noise_remedies.json judges no rounds (one remedy, trained once, beside the baselines), so it adds none.
AUDITED = tuple(READERS)


def audit_rounds(files: list[Path], miss_points: float = 1.0) -> dict:
    """Gate precision and misses over every judged round of the benchmarks that run the loop on
    data with a test split, on test (READERS: how each file records its rounds)."""
    rows = []
    for f in files:
        f = Path(f)
        if f.is_file():
            rows += READERS.get(f.name, _loop_rows)(f.name, json.loads(f.read_text()))

    def score(key: str) -> tuple[dict, list]:
        promoted = [r for r in rows if r.get(key)]
        right = [r for r in promoted if r["test_difference"] > 0]
        misses = [{k: r[k] for k in ("file", "seed", "round", "actions", "selection_difference", "test_difference")}
                  for r in rows if not r.get(key) and r["test_difference"] is not None
                  and r["test_difference"] >= miss_points / 100]
        return {"value": len(right) / len(promoted) if promoted else None, "promotions": len(promoted),
                "beat_their_champion_on_test": len(right)}, misses

    precision, misses = score("promoted")
    out = {"precision": {**precision,
                         "definition": "share of promotions whose challenger beats the replaced champion on test",
                         "files": sorted({r["file"] for r in rows})},
           "misses": misses, "rounds_audited": rows,
           "miss_definition": f"a rejected challenger that beats its champion on test by >= {miss_points:g} point"}
    judged = [r for r in rows if r["file"] in ("loop_vs_baselines.json", "loop_clean.json")]
    if judged and all("promoted_midp" in r for r in judged):
        # Each round as it was judged (had one more been promoted, the later rounds would have had
        # another champion): the other accuracy gate's view of the same rounds.
        other = "promoted_midp"
        p_mid, m_mid = score(other)
        out["options"] = {"accuracy_midp": {"precision": p_mid, "misses": m_mid}}
    return out


# The commit whose results file last judged the first 20 A/A pairs, whose trainings' files are gone.
FIRST_PAIRS_COMMIT = "cc3ea536a5fe873a7cbe304097dd35fea167e394"


def on_record(kept: dict, workdir: Path) -> dict[int, dict]:
    """Pairs already judged in the results file whose trainings are not in workdir, by pair index:
    they are kept as recorded (each with the commit it was measured at) instead of trained again, so
    a later run adds pairs to the earlier ones."""
    out = {}
    for p in kept.get("pairs", []):
        k = p["champion_seed"] // 2
        if not all((workdir / f"seed_{s}.npz").is_file() for s in (2 * k, 2 * k + 1)):
            out[k] = {**p, "commit": p.get("commit", FIRST_PAIRS_COMMIT)}
    return out


def gate_record(comparison: dict) -> dict:
    """What the audit needs of a comparison (compare.Comparison.to_json(), a round's compare.json)
    to judge it by another gate: the paired counts, the CI's lower end, alpha, mode, metric, and
    whether the per-class guardrail vetoed it."""
    guard = comparison["guardrail"]
    return {"b": comparison["mcnemar"]["b"], "c": comparison["mcnemar"]["c"], "ci_low": comparison["ci_low"],
            "alpha": comparison["alpha"], "mode": comparison["mode"], "metric": comparison["metric"],
            "guardrail_blocked": bool(guard.get("worse_classes")) and not guard.get("allowed")}


def midp_would_promote(gate: dict, difference: float | None) -> bool:
    """Whether a superiority round on accuracy passes the mid-p variant of the accuracy gate (the
    bootstrap CI above 0 and the mid-p McNemar test), the per-class guardrail as it decided."""
    if gate.get("mode") != "superiority" or gate.get("metric") != "accuracy" or gate.get("guardrail_blocked"):
        return False
    return bool((difference or 0) > 0 and gate["ci_low"] > 0 and gate["c"] > gate["b"]
                and mcnemar_mid_p(gate["b"], gate["c"]) < gate["alpha"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "reflectlm-gate",
                    help="where each training's probabilities are kept (default: <temp dir>/reflectlm-gate)")
    ap.add_argument("--alpha", type=float, default=None, help="default: the loop's (loop.alpha)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gate.json")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--weights-from", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shaped", type=int, default=None, metavar="P",
                    help="challengers shaped by reweight_classes against the first P A/A champions (see above)")
    ap.add_argument("--rounds", nargs="*", type=Path, default=None,
                    help="part (ii) only: the loop benchmarks' results files (default: those of AUDITED "
                         "under benchmarks/results/)")
    args = ap.parse_args()
    if args.rounds is not None:
        files = args.rounds or [Path(__file__).parent / "results" / name for name in AUDITED]
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result.update(audit_rounds(files))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps({k: result[k] for k in ("precision", "misses", "rounds_audited")}, indent=2))
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child is not None:
        if args.weights_from:
            weights = shaped_weights(args.weights_from, args.workdir / f"seed_{args.child - 1}.npz", args.workdir)
            train_one(args.child, args.workdir / f"shaped_{args.weights_from}_{args.child}.npz",
                      class_weights=weights)
        else:
            train_one(args.child, args.workdir / f"seed_{args.child}.npz")
        return
    import subprocess

    from reflectlm.config import LoopConfig

    lc = LoopConfig()
    alpha = args.alpha if args.alpha is not None else lc.alpha

    def run_child(s: int, path: Path, weights_from: str | None = None) -> None:
        if path.is_file():
            return  # made by an earlier, interrupted invocation
        cmd = [sys.executable, __file__, "--child", str(s), "--workdir", str(args.workdir)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += ["--weights-from", weights_from] if weights_from else []
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"training {path.name} failed:\n{done.stderr[-3000:]}")
        print(f"{path.name} trained ({float(np.load(path)['seconds']):.0f} s)", file=sys.stderr, flush=True)

    if args.shaped is not None:
        _, selection, test, labels = _splits()
        l2i = {n: i for i, n in enumerate(labels)}
        y, y_test = (np.array([l2i[v] for v in d.labels]) for d in (selection, test))
        pairs = []
        for k in range(args.shaped):
            run_child(2 * k, args.workdir / f"seed_{2 * k}.npz")
            champ = np.load(args.workdir / f"seed_{2 * k}.npz")
            for source in ("selection", "train_oof"):
                path = args.workdir / f"shaped_{source}_{2 * k + 1}.npz"
                run_child(2 * k + 1, path, source)
                chall = np.load(path)
                v = judge(y, champ["selection"], chall["selection"], labels, alpha, lc.n_bootstrap, seed=k)
                acc = [[float((z[split].argmax(1) == t).mean()) for z in (champ, chall)]
                       for split, t in (("selection", y), ("test", y_test))]
                pairs.append({"champion_seed": 2 * k, "challenger_seed": 2 * k + 1, "source": source,
                              "promote": v["macro_f1"]["promote"], "macro_f1_difference": v["macro_f1"]["difference"],
                              "selection_difference": acc[0][1] - acc[0][0], "test_difference": acc[1][1] - acc[1][0],
                              "test_accuracy": acc[1]})
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result["shaped"] = summarise_shaped(pairs, result.get("pairs", []))
        from reflectlm import runtime

        result["shaped"]["cpu"] = runtime.cpu_info()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps({k: v for k, v in result["shaped"].items() if k != "pairs_detail"}, indent=2))
        return

    aa_pairs(args, run_child, alpha, lc.n_bootstrap)


def aa_pairs(args, run_child, alpha: float, n_bootstrap: int) -> None:
    """Train and judge the A/A pairs one pair at a time, writing --out after each, so a stopped run
    (or one on another machine) leaves every pair it judged on record for the next to build on."""
    from reflectlm import runtime

    kept = json.loads(args.out.read_text()) if args.out.is_file() else {}
    recorded = on_record(kept, args.workdir)
    prov = Provenance(seeds=list(range(2 * args.pairs)), threads=args.threads)
    _, selection, test, labels = _splits()
    l2i = {n: i for i, n in enumerate(labels)}
    y = np.array([l2i[v] for v in selection.labels])
    y_test = np.array([l2i[v] for v in test.labels])
    pairs = []
    for k in range(args.pairs):
        if k in recorded:
            pairs.append(recorded[k])
            continue
        for s in (2 * k, 2 * k + 1):  # each training in its own process: memory and threads its own
            run_child(s, args.workdir / f"seed_{s}.npz")
        a, b = (np.load(args.workdir / f"seed_{s}.npz") for s in (2 * k, 2 * k + 1))
        v = judge(y, a["selection"], b["selection"], labels, alpha, n_bootstrap, seed=k)
        test_acc = [float((z["test"].argmax(1) == y_test).mean()) for z in (a, b)]
        block = prov.block()
        pairs.append({"champion_seed": 2 * k, "challenger_seed": 2 * k + 1, "verdicts": v,
                      "test_accuracy": test_acc, "seconds": [float(z["seconds"]) for z in (a, b)],
                      "commit": block["commit"], "dirty": block["dirty"]})
        result = {key: val for key, val in kept.items() if key in ("precision", "misses", "rounds_audited",
                                                                   "miss_definition", "shaped", "options")}
        result.update(summarise(pairs))
        result["provenance"] = block
        result["setting"] = {"train_examples": N_TRAIN, "selection_examples": N_SELECTION, "alpha": alpha,
                             "n_bootstrap": n_bootstrap, "train": TRAIN, "max_length": MAX_LENGTH}
        result["cpu"] = runtime.cpu_info()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"pair {k}: judged; {len(pairs)} pairs on record", file=sys.stderr, flush=True)
    print(json.dumps({key: val for key, val in json.loads(args.out.read_text()).items()
                      if key in ("aa", "adopted_gate", "candidates")}, indent=2))


if __name__ == "__main__":
    main()
