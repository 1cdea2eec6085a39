"""Fast (frozen embeddings) against full (fine-tuned per fold) out-of-fold probabilities for
finding the nearest-class flips of the loop benchmark's noisy BANKING77 training split.

    python benchmarks/loop_vs_baselines.py --workdir W ...      # writes W/train_noisy.csv, train_true.csv
    python benchmarks/oof_modes.py --workdir W --mode fast --folds 5
    python benchmarks/oof_modes.py --workdir W --mode full --folds 2 --epochs 3

Scores what cleanlab.filter.find_label_issues (defaults) flags from these probabilities against
the flips (precision, recall), the AUROC of the given label's probability, and how often the
out-of-fold argmax is the true label of a flipped example. The probabilities are saved next to
the data (oof_<mode><folds>_e<epochs>.npy); with both modes saved, "pooled" scores their mean.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))


def score(ids: list[str], y: np.ndarray, y_true: np.ndarray, probs: np.ndarray) -> dict:
    from cleanlab.filter import find_label_issues
    from label_issues import _scores

    flip = y != y_true
    flagged = {ids[k] for k in np.flatnonzero(find_label_issues(y, probs))}
    # suspicion = 1 - the given label's probability (the AUROC ranks by it)
    suspicion = dict(zip(ids, (1.0 - probs[np.arange(len(y)), y]).tolist()))
    return {**_scores(flagged, {ids[k] for k in np.flatnonzero(flip)}, suspicion, ids),
            "argmax_is_true_label_on_flips": float((probs.argmax(1)[flip] == y_true[flip]).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True, help="a loop_vs_baselines.py --workdir")
    ap.add_argument("--mode", choices=("fast", "full"), default="fast")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3, help="full mode: epochs per fold")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from reflectlm.config import load_config
    from reflectlm.data import load
    from reflectlm.diagnose.crossval import out_of_fold
    from reflectlm.runtime import set_threads

    work = Path(args.workdir)
    noisy = load(work / "train_noisy.csv", "classification")
    true = load(work / "train_true.csv", "classification")
    selection = load(work / "selection.csv", "classification")
    if noisy.ids != true.ids:
        raise SystemExit(f"{work}: train_noisy.csv and train_true.csv list different examples; "
                         "rerun loop_vs_baselines.py")
    labels = sorted(set(true.labels) | set(selection.labels))
    l2i = {n: i for i, n in enumerate(labels)}
    y = np.array([l2i[v] for v in noisy.labels])
    y_true = np.array([l2i[v] for v in true.labels])
    # the benchmark's training setting (loop_vs_baselines._tree)
    cfg = load_config(tree={"data": {"task": "classification", "train": str(work / "train_noisy.csv"),
                                     "selection": str(work / "selection.csv"), "max_length": 64},
                            "model": {"name": "minilm", "dropout": "pretrained"},
                            "train": {"epochs": args.epochs, "batch_size": 32, "lr": 1e-4, "metric": "accuracy",
                                      "threads": args.threads}})
    set_threads(args.threads)
    t0 = time.time()
    probs, info = out_of_fold(noisy, labels, "classification", mode=args.mode, folds=args.folds, seed=cfg.train.seed,
                              train_cfg=cfg.train, model_cfg=cfg.model, quiet=True)
    seconds = time.time() - t0
    np.save(work / f"oof_{args.mode}{args.folds}_e{args.epochs}.npy", probs)
    folds = len(set(info["fold"]))
    # Full mode fits each fold on its training part less the 10 % carved to pick the epoch
    # (crossval._carve_selection): an estimate to within a few examples per fold.
    trained = 0 if args.mode == "fast" else int(round(0.9 * len(noisy) * (folds - 1) / folds)) * folds * args.epochs
    out = {"mode": args.mode, "folds": folds, "epochs": args.epochs if args.mode == "full" else None,
           "seconds": round(seconds, 1), "examples_trained": trained, "fold_score": info["mean"],
           **score(noisy.ids, y, y_true, probs)}
    saved = sorted(work.glob("oof_fast*.npy")), sorted(work.glob("oof_full*.npy"))
    if saved[0] and saved[1]:
        out["pooled"] = {"of": [saved[0][-1].name, saved[1][-1].name],
                         **score(noisy.ids, y, y_true, (np.load(saved[0][-1]) + np.load(saved[1][-1])) / 2)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
