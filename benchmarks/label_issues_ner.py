"""Label issues for NER: WNUT-17 with 10% of training sentences corrupted, how many does the check
flag and how precise is it, with and without the fine-tuned tagger's own view.

    python benchmarks/label_issues_ner.py                       # corrupt, fine-tune (5 epochs), score
    python benchmarks/label_issues_ner.py --epochs 3 --workdir /tmp/nerx
    python benchmarks/label_issues_ner.py --run RUN_DIR         # score a run already trained on the
                                                                # same corrupted file (same --seed)

Corruption (seeded): of the sentences with an entity, two thirds of the corrupted ones get one
entity's type swapped or the entity deleted (half each); one third of the corrupted sentences are
entity-free ones given a spurious one-word entity. WNUT-17's own annotation errors count as false
positives, so precision is a lower bound. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402


def corrupt(sents: list, rate: float, seed: int) -> dict[int, str]:
    """Corrupt `rate` of the sentences in place; returns sentence index -> kind."""
    rng = random.Random(seed)
    types = sorted({t[2:] for s in sents for _, t in s if t != "O"})
    with_ent = [i for i, s in enumerate(sents) if any(t != "O" for _, t in s)]
    without = [i for i, s in enumerate(sents) if all(t == "O" for _, t in s)]
    n = round(rate * len(sents))
    pick_e = rng.sample(with_ent, min(len(with_ent), round(n * 2 / 3)))
    pick_o = rng.sample(without, n - len(pick_e))
    kinds = {}
    for i in pick_e:
        s = sents[i]
        k = rng.choice([j for j, (_, t) in enumerate(s) if t.startswith("B-")])
        end = k + 1
        while end < len(s) and s[end][1].startswith("I-"):
            end += 1
        if rng.random() < 0.5:
            new = rng.choice([t for t in types if t != s[k][1][2:]])
            for j in range(k, end):
                s[j][1] = ("B-" if j == k else "I-") + new
            kinds[i] = "type"
        else:
            for j in range(k, end):
                s[j][1] = "O"
            kinds[i] = "deleted"
    for i in pick_o:
        s = sents[i]
        k = rng.randrange(len(s))  # drawn before the type (fixed order: the corruption is seeded)
        s[k][1] = "B-" + rng.choice(types)
        kinds[i] = "spurious"
    return kinds


def score(run_dir: Path, kinds: dict[int, str]) -> dict:
    from sklearn.metrics import roc_auc_score

    from reflectlm.diagnose import context_from_run, get_check

    t0 = time.time()
    ctx = context_from_run(run_dir, {"oof_probs", "cv"}, cv="fast")
    n = len(ctx.train)
    bad = np.zeros(n, bool)
    bad[list(kinds)] = True
    out = {"sentences": n, "corrupted": int(bad.sum()),
           "cv_entity_f1": float(np.mean(ctx.cv["fold_metrics"])) if ctx.cv else None}
    for name, params in (("ours", {}), ("out_of_fold_alone", {"use_model": False})):
        t1 = time.time()
        (f,) = get_check("label_issues", **params).run(ctx)
        s = np.array([f.scores[i] for i in ctx.train.ids])
        flagged = set(f.evidence["flagged"])
        idx = [k for k, i in enumerate(ctx.train.ids) if i in flagged]
        tp = int(bad[idx].sum())
        out[name] = {"flagged": len(idx), "precision": round(tp / max(len(idx), 1), 3),
                     "recall": round(tp / max(int(bad.sum()), 1), 3), "auroc": round(float(roc_auc_score(bad, s)), 3),
                     "caught": {k: sum(1 for i in idx if kinds.get(i) == k) for k in ("type", "deleted", "spurious")},
                     "seconds": round(time.time() - t1, 1)}
    out["seconds"] = round(time.time() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--run", default=None, help="a run already trained on this script's corrupted file")
    args = ap.parse_args()

    from reflectlm.config import data_root, load_config
    from reflectlm.train import train

    from reflectlm.data import load

    root = data_root() / "wnut17"
    clean = load(root / "train.conll", "ner")
    sents = [[[w, t] for w, t in zip(words, tags)] for words, tags in zip(clean.tokens, clean.labels)]
    kinds = corrupt(sents, args.rate, args.seed)
    text = "".join("".join(f"{a}\t{b}\n" for a, b in s) + "\n" for s in sents)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    if args.run:
        run = Path(args.run)
        used = Path(load_config(run / "config.toml").data.train)
        if hashlib.sha256(used.read_text(encoding="utf-8").encode()).hexdigest()[:16] != digest:
            sys.exit(f"{run} was not trained on this script's corrupted file (seed {args.seed}, rate {args.rate}); "
                     "train it with this script, or pass the same --seed and --rate")
    else:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="ner-issues-"))
        work.mkdir(parents=True, exist_ok=True)
        noisy = work / f"train-noisy-{digest}.conll"
        noisy.write_text(text, encoding="utf-8")
        tree = {"data": {"task": "ner", "train": str(noisy), "selection": str(root / "dev.conll"),
                         "test": str(root / "test.conll"), "max_length": 128},
                "model": {"name": "minilm"},
                "train": {"epochs": args.epochs, "batch_size": 16, "lr": 1e-4, "metric": "entity_f1",
                          "seed": args.seed, "threads": args.threads},
                "run": {"quiet": True}}
        run = train(load_config(tree=tree), work / "run", quiet=True).run_dir
    epochs = load_config(Path(run) / "config.toml").train.epochs  # the run's, also when --run is given
    out = {"setup": {"rate": args.rate, "seed": args.seed, "epochs": epochs, "run": str(run)}}
    out.update(score(run, kinds))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
