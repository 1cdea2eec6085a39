"""One loop round with K = 2 challengers as Ray tasks vs the same two plans as two sequential rounds.

    python benchmarks/parallel_round.py            # prints one JSON object, writes results/parallel_round.json

Data: 10 BANKING77 intents x 50 examples (REFLECTLM_DATA), 60 / 20 / 20 train / selection / test;
model: MiniLM ("minilm"), 2 epochs, max_length 64, fp32 - so every configuration does the same
arithmetic. Round 0 is trained once and copied into three workspaces (learned action values stay
apart), each resumed from it:

  ray        loop.backend = "ray", loop.parallel = 2, rounds = 1: one round, both challengers
             trained as Ray tasks side by side (1 CPU and 1 torch thread each), on a local Ray
             started for the run (its start-up is reported, not counted in the round).
  sequential loop.backend = "local", loop.parallel = 1: round 1 allowed only the first
             plan's actions, then resumed for round 2 with only the second plan's: the same two
             plans as two ordinary rounds (each with its own diagnosis), all cores to torch.
  local_k2   loop.backend = "local", loop.parallel = 2: one round, the two challengers one after
             the other (all cores each) - what the Ray tasks replace.

All runs: loop.chain = 0 (a rejected round is not built on) and loop.max_actions = 1 (one action a
plan), so the sequential rounds can be held to the Ray round's plans; the Ray and local_k2 rounds
choose among RETRAINING actions, which always change the recipe, so both challengers train. Wall time of a round = its decision.json `seconds` (diagnosis, planning, training, A/B tests). The
ratio is sequential / ray: how much sooner the two plans are decided. `same_plans` checks that the
sequential rounds trained exactly the Ray round's plans.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CLASSES, PER_CLASS, SEED = 10, 50, 0
# Actions that always change the recipe (no data action that may find nothing to fix): both
# challengers really train.
RETRAINING = ["more_epochs", "tune_lr", "regularize", "reweight_classes"]
OUT = Path(__file__).resolve().parent / "results" / "parallel_round.json"


def _data(tmp: Path) -> Path:
    import csv

    from reflectlm.config import data_root

    path = data_root() / "banking77" / "train.csv"
    if not path.is_file():
        sys.exit(f"BANKING77 not found at {path}: set REFLECTLM_DATA to the shared data folder")
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    keep = sorted({r["label"] for r in rows})[:CLASSES]
    out, seen = [], {k: 0 for k in keep}
    for r in rows:
        if r["label"] in seen and seen[r["label"]] < PER_CLASS:
            seen[r["label"]] += 1
            out.append(r)
    dest = tmp / "banking10.csv"
    with dest.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows({"text": r["text"], "label": r["label"]} for r in out)
    return dest


def _tree(train: Path, out: Path, **loop) -> dict:
    return {"data": {"task": "classification", "train": str(train), "selection_fraction": 0.2, "test_fraction": 0.2,
                     "max_length": 64},
            "model": {"name": "minilm"},
            "train": {"epochs": 2, "batch_size": 32, "precision": "fp32", "seed": SEED},
            "run": {"quiet": True, "output_dir": str(out), "name": "run"},
            # One action a plan: a sequential round allowed only that action trains exactly that plan.
            "loop": {"rounds": 1, "patience": 3, "report": False, "chain": 0, "max_actions": 1, **loop}}


def _round(run: Path, r: int) -> dict:
    return json.loads((run / "rounds" / f"{r:02d}" / "decision.json").read_text())


def main() -> None:
    from reflectlm import runtime
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    prov = Provenance()
    tmp = Path(tempfile.mkdtemp(prefix="parallel-round-"))
    train = _data(tmp)
    result: dict = {"load_average_1min_at_start": os.getloadavg()[0], "cpu": runtime.cpu_info(), "data": f"BANKING77, {CLASSES} intents x {PER_CLASS}",
                    "model": "minilm", "epochs": 2}

    import shutil

    import ray

    t0 = time.perf_counter()
    base = improve(load_config(tree=_tree(train, tmp / "base", rounds=0))).run_dir  # round 0, once
    result["round0_s"] = time.perf_counter() - t0

    def fresh(name: str) -> Path:
        (tmp / name).mkdir()
        return Path(shutil.copytree(base, tmp / name / "run", symlinks=True))

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)  # a local Ray on this machine's cores
    result["ray_start_s"] = time.perf_counter() - t0
    result["ray_cpus"] = ray.cluster_resources().get("CPU")
    on_ray = fresh("ray")
    improve(load_config(tree=_tree(train, tmp / "ray", backend="ray", parallel=2, actions=RETRAINING,
                                   ray={"num_cpus": 1, "threads": 1})), on_ray, resume=True)
    ray.shutdown()
    d = _round(on_ray, 1)
    plans = [c["actions"] for c in d["challengers"]]
    result["plans"] = plans
    result["ray_round_s"] = d["seconds"]
    result["trained_challengers"] = sum(not c["no_op"] for c in d["challengers"])

    # The same two plans as two ordinary rounds: each round may use only its plan's actions.
    seq = fresh("seq")
    improve(load_config(tree=_tree(train, tmp / "seq", actions=plans[0])), seq, resume=True)
    improve(load_config(tree=_tree(train, tmp / "seq", actions=plans[1], rounds=2)), seq, resume=True)
    seq_rounds = [_round(seq, 1), _round(seq, 2)]
    result["sequential_round_s"] = [r["seconds"] for r in seq_rounds]
    result["sequential_s"] = sum(result["sequential_round_s"])
    result["same_plans"] = [r["actions"] for r in seq_rounds] == plans

    local = fresh("local")
    improve(load_config(tree=_tree(train, tmp / "local", parallel=2, actions=RETRAINING)), local, resume=True)
    dl = _round(local, 1)
    result["local_k2_round_s"] = dl["seconds"]
    result["local_k2_same_plans"] = [c["actions"] for c in dl.get("challengers", [])] == plans
    result["load_average_1min_at_end"] = os.getloadavg()[0]  # other jobs on the machine: see docs/benchmarks.md
    result["ratio_sequential_over_ray"] = result["sequential_s"] / result["ray_round_s"]
    result["ratio_local_k2_over_ray"] = result["local_k2_round_s"] / result["ray_round_s"]
    result["decisions"] = {"ray": {"promoted": d["promoted"], "kept": d["kept"],
                                   "p_holm": [c.get("p_holm") for c in d["challengers"]]},
                           "sequential": [r["promoted"] for r in seq_rounds]}
    result["provenance"] = prov.block()
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
