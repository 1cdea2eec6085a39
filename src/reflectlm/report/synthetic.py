"""A synthetic loop run directory of any size, in the documented layout, without training.

For the report's size benchmark (benchmarks/report_size.py: 77 classes and ~9,000 training
examples, BANKING77's shape) and tests that need many classes; real runs of that size take
hours on CPU. Every number is drawn from a seeded generator, shaped like a real run's: metrics
per class with a confusion matrix, per-epoch history, (E, N) dynamics, (S, L) gradient
telemetry, findings with example evidence, a plan, an A/B comparison and a decision per round.
No model weights are written (model/ holds only a marker file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import rundir


def _w(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


def _metrics(rng, labels, n_eval: int, acc: float, epochs: int, metric: str) -> dict:
    C = len(labels)
    y = np.arange(n_eval) % C
    skill = np.clip(rng.normal(acc, 0.08, size=C), 0.05, 0.995)  # per-class recall
    pred = y.copy()
    wrong = rng.random(n_eval) > skill[y]
    neighbour = (y + rng.integers(1, 4, size=n_eval)) % C  # errors land on a few nearby classes
    pred[wrong] = neighbour[wrong]
    conf = np.zeros((C, C), dtype=int)
    np.add.at(conf, (y, pred), 1)
    tp = np.diag(conf).astype(float)
    prec = tp / np.maximum(conf.sum(0), 1)
    rec = tp / np.maximum(conf.sum(1), 1)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    split = {"n": n_eval, "accuracy": float(tp.sum() / n_eval), "macro_f1": float(f1.mean()),
             "weighted_f1": float((f1 * conf.sum(1)).sum() / n_eval), "loss": float(1.2 * (1 - acc) + 0.1),
             "per_class": {name: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                                  "support": int(conf[i].sum())} for i, name in enumerate(labels)},
             "labels": list(labels), "confusion": conf.tolist()}
    best = split[metric]
    history = [{"epoch": e + 1, "train_loss": 2.5 / (e + 1.2), "train_accuracy": min(0.99, 0.4 + 0.15 * e),
                "selection_loss": 2.6 / (e + 1.1) + 0.05, f"selection_{metric}": best * (0.6 + 0.4 * (e + 1) / epochs),
                "lr": 5e-5, "seconds": 60.0} for e in range(epochs)]
    return {"selection_metric": metric, "best_epoch": epochs, "selection": split, "history": history,
            "test": {**split, "accuracy": split["accuracy"] - 0.005}, "train_seconds": 60.0 * epochs,
            "train_samples_per_s": 150.0, "examples_trained": 9000 * epochs, "precision": "bf16"}


def _findings(rng, labels, ids, texts, given) -> dict:
    N = len(ids)
    order = rng.permutation(N)
    ranked = [{"id": ids[i], "line": int(i) + 2, "text": texts[i], "given": labels[given[i]],
               "suggested": labels[(given[i] + 1) % len(labels)], "score": float(0.95 - 0.01 * k),
               "oof_gold_prob": float(0.05 + 0.01 * k), "train_gold_prob": float(0.1 + 0.01 * k)}
              for k, i in enumerate(order[:20])]
    ex = [{"id": ids[i], "text": texts[i], "label": labels[given[i]], "confidence": float(rng.uniform(0, 0.3)),
           "variability": float(rng.uniform(0, 0.1)), "correctness": 0.0} for i in order[20:40]]
    amb = [{"id": ids[i], "text": texts[i], "label": labels[given[i]], "confidence": float(rng.uniform(0.4, 0.6)),
            "variability": float(rng.uniform(0.3, 0.45)), "correctness": 0.5} for i in order[40:60]]
    findings = [
        {"check": "label_issues", "kind": "label_issues", "severity": 0.45, "split": "train", "scores": None,
         "summary": f"{int(0.09 * N)} of {N} training examples (9.0%) look mislabelled; review the top-ranked ones first",
         "evidence": {"count": int(0.09 * N), "fraction": 0.09, "ranked": ranked, "flagged": [r["id"] for r in ranked],
                      "pairs": [{"given": r["given"], "suggested": r["suggested"], "count": 3} for r in ranked[:10]]}},
        {"check": "dynamics", "kind": "hard_to_learn", "severity": 0.3, "split": "train", "scores": None,
         "summary": "420 training examples stayed hard to learn", "evidence": {"count": 420, "top_examples": ex}},
        {"check": "dynamics", "kind": "ambiguous", "severity": 0.2, "split": "train", "scores": None,
         "summary": "800 training examples are ambiguous", "evidence": {"count": 800, "top_examples": amb}},
        {"check": "performance", "kind": "high_error_class", "severity": 0.6, "split": "selection", "scores": None,
         "summary": f"Class '{labels[3]}' is wrong on 41% of its selection examples",
         "evidence": {"class": labels[3], "error_rate": 0.41, "top_confusions": [{"predicted": labels[4], "count": 9}]}},
        {"check": "calibration", "kind": "miscalibration", "severity": 0.1, "split": "selection", "scores": None,
         "summary": "Expected calibration error 0.041", "evidence": {"ece": 0.041, "temperature": 1.3}},
    ]
    return {"findings": findings, "skipped": [], "failed": [], "checks": {}, "seconds": {}, "cv": None}


def make_synthetic_run(path: str | Path, classes: int = 77, n_train: int = 9000, n_eval: int = 1500,
                       rounds: int = 4, epochs: int = 5, layers: int = 8, steps: int = 300, seed: int = 0) -> Path:
    """Write a finished loop run directory: rounds 0..rounds-1, odd rounds promoted."""
    rng = np.random.default_rng(seed)
    run = Path(path)
    run.mkdir(parents=True, exist_ok=True)
    labels = [f"intent_{i:02d}_" + ("card_payment_declined" if i % 3 == 0 else "transfer" if i % 3 == 1 else "top_up")
              for i in range(classes)]
    ids = [f"{i:012x}" for i in range(n_train)]
    given = rng.integers(0, classes, size=n_train)
    texts = [f"example request number {i} about {labels[given[i]].split('_', 2)[-1].replace('_', ' ')}"
             for i in range(n_train)]
    metric = "macro_f1"
    config = ('[data]\ntask = "classification"\ntrain = "banking77/train.csv"\n\n[model]\nname = "minilm"\n\n'
              f'[train]\nepochs = {epochs}\nlr = 5e-05\nbatch_size = 32\n\n[loop]\nmax_rounds = {rounds - 1}\n')
    (run / rundir.CONFIG).write_text(config, encoding="utf-8")
    champion, champ_sel, summary_rounds = 0, None, []
    acc = 0.86
    layer_names = ["embeddings"] + [f"layer.{i}" for i in range(layers - 2)] + ["head"]
    for r in range(rounds):
        d = run / rundir.ROUNDS / f"{r:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / rundir.CONFIG).write_text(config, encoding="utf-8")
        promoted = r == 0 or r % 2 == 1
        acc_r = acc + (0.012 * r if promoted else -0.004)
        m = _metrics(rng, labels, n_eval, acc_r, epochs, metric)
        _w(d / rundir.METRICS, m)
        _records(rng, d, ids, epochs, steps, layer_names)
        sel = m["selection"][metric]
        actions = [] if r == 0 else [{"action": ["fix_labels", "reweight_classes", "regularize"][r % 3],
                                      "params": {"max_fraction": 0.05} if r % 3 == 0 else {"power": 0.5},
                                      "addresses": ["label_issues", "high_error_class"]}]
        _w(d / rundir.PLAN, {"actions": actions, "ranking": []})
        if r > 0:
            _w(d / rundir.FINDINGS, _findings(rng, labels, ids, texts, given))
            _w(d / rundir.COMPARE, _compare(metric, champ_sel, sel, promoted, n_eval))
        if promoted:
            champion, champ_sel = r, sel
            (d / rundir.MODEL).mkdir(exist_ok=True)
            (d / rundir.MODEL / "SYNTHETIC").write_text("no weights: synthetic run\n", encoding="utf-8")
        _w(d / rundir.DECISION, {"round": r, "promoted": promoted, "reason": "baseline" if r == 0 else
                                 ("significantly better" if promoted else "not significantly better"),
                                 "champion_round": champion, "selection": sel, "seconds": 300.0,
                                 "examples_trained": n_train * epochs})
        if r == rounds - 1:
            bins = [{"lower": b / 15, "upper": (b + 1) / 15, "count": 100, "confidence": (b + 0.5) / 15,
                     "accuracy": min(1.0, (b + 0.5) / 15 * 0.9)} for b in range(15)]
            _w(d / rundir.CALIBRATION, {"temperature": 1.3, "ece_before": 0.041, "ece_after": 0.012,
                                        "bins_before": bins, "bins_after": [{**b, "accuracy": b["confidence"]} for b in bins]})
        summary_rounds.append({"round": r, "actions": [a["action"] for a in actions], "selection": sel,
                               "promoted": promoted, "difference": None if r == 0 else sel - summary_rounds[0]["selection"],
                               "ci_low": None, "ci_high": None, "p_mcnemar": None, "reason": ""})
    link = run / rundir.CHAMPION
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(rundir.round_link(champion), link)
    first = json.loads((run / rundir.ROUNDS / "00" / rundir.METRICS).read_text())
    last = json.loads((run / rundir.ROUNDS / f"{champion:02d}" / rundir.METRICS).read_text())
    _w(run / rundir.SUMMARY, {"selection_metric": metric, "champion_round": champion, "stop_reason": "max_rounds reached",
                              "wall_seconds": 300.0 * rounds, "examples_trained": n_train * epochs * rounds,
                              "test": last["test"], "round0_test": first["test"], "rounds": summary_rounds,
                              "action_values": [{"finding_kind": "label_issues", "action": "fix_labels", "n": 2,
                                                 "mean_gain": 0.011, "promotions": 1},
                                                {"finding_kind": "high_error_class", "action": "reweight_classes",
                                                 "n": 1, "mean_gain": -0.002, "promotions": 0}]})
    _w(run / rundir.RUN, _record(labels, n_train, n_eval, rounds, champion))
    return run


def _records(rng, d: Path, ids: list[str], epochs: int, steps: int, layer_names: list[str]) -> None:
    """A round's dynamics.npz and gradients.npz, shaped as train.fit writes them."""
    n_train, layers = len(ids), len(layer_names)
    gold = np.clip(rng.beta(5, 1.5, size=(epochs, n_train)) * np.linspace(0.6, 1.0, epochs)[:, None], 1e-4, 1)
    np.savez_compressed(d / rundir.DYNAMICS, ids=np.array(ids), gold_prob=gold.astype(np.float32),
                        loss=(-np.log(gold)).astype(np.float32), correct=(gold > 0.5).astype(np.float32))
    g = np.exp(rng.normal(0, 0.5, size=(steps, layers))) * np.linspace(1, 0.3, steps)[:, None]
    np.savez_compressed(d / rundir.GRADIENTS, layers=np.array(layer_names), step=np.arange(1, steps + 1) * 10,
                        lr=np.full(steps, 5e-5, np.float32), loss=np.linspace(4.3, 0.4, steps).astype(np.float32),
                        grad_norm=g.astype(np.float32), weight_norm=np.full((steps, layers), 30.0, np.float32),
                        update_ratio=(g * 1e-4).astype(np.float32))


def _compare(metric: str, champ_sel: float, sel: float, promoted: bool, n_eval: int) -> dict:
    diff = sel - champ_sel
    return {"metric": metric, "mode": "superiority", "champion": champ_sel, "challenger": sel,
            "difference": diff, "ci_low": diff - 0.008, "ci_high": diff + 0.008, "p_bootstrap": 0.01 if promoted else 0.6,
            "mcnemar": {"b": 40, "c": 22 if promoted else 44, "p_value": 0.03 if promoted else 0.7},
            "alpha": 0.05, "margin": 0.0, "guardrail": {"ok": True}, "promote": promoted,
            "reason": "significantly better" if promoted else "not significantly better", "n": n_eval}


def _record(labels: list[str], n_train: int, n_eval: int, rounds: int, champion: int) -> dict:
    return {"kind": "loop", "status": "finished", "task": "classification", "labels": labels,
                          "data": {"train": {"source": "banking77/train.csv", "examples": n_train},
                                   "selection": {"source": "banking77/train.csv", "examples": n_eval},
                                   "test": {"source": "banking77/test.csv", "examples": n_eval}},
                          "command": ["reflectlm", "run", "configs/banking77.toml"], "versions": {"reflectlm": "0.1.0"},
                          "created": "2026-01-01T00:00:00+00:00", "stop_reason": "max_rounds reached",
                          "wall_seconds": 300.0 * rounds, "champion_round": champion}
