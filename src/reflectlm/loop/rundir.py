"""The loop's run directory: what each round writes, the champion link, train.jsonl, and the
state after the last finished round, derived from the files on disk.

A round is finished when its decision.json exists (written last, atomically). `restore` discards
a half-written round; `state_after` rebuilds the loop's state from finished rounds, and the live
loop derives its next state with the same function, so an interrupted run and an unbroken one
continue identically.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import store
from ..actions import Recipe
from ..atomic import replacing, symlink, write_json, write_text
from ..config import Config, dump_toml, load_config
from ..data import Dataset, Splits

ROUND_FILES = {
    "config.toml": "the resolved config this round trained with",
    "run.json": "what made this round's model (train.py's record; for calibrate / prune: the source and the steps)",
    "metrics.json": "selection metrics (best epoch) and the per-epoch history",
    "dynamics.npz": "training dynamics of this round's model",
    "gradients.npz": "gradient telemetry of this round's model",
    "train.jsonl": "the training set this round used (labels as fixed, examples as added)",
    "findings.json": "rounds >= 1: the diagnosis of the champion that motivated the plan",
    "targets.json": "rounds >= 1: the ranked improvement targets",
    "plan.json": "the actions with their parameters, the ranking behind them and what they changed",
    "recipe.json": "promoted rounds and a round the next one builds on: the config tree later challengers start from",
    "calibration.json": "when the plan calibrated: temperature and reliability before / after",
    "tune.json": "when the plan tuned (tune_hparams): every trial's settings, scores per epoch, where it stopped",
    "compare.json": "rounds >= 1: the A/B test against the champion",
    "decision.json": "promoted or rejected, and why (written last: the round is finished)",
    "model/": "the model, kept when promoted or when the next round builds on it",
    "challengers/": "loop.parallel > 1: challengers/<k>/ holds each challenger's plan.json and compare.json (the "
                    "kept one's trained files are the round's own; the others keep theirs without weights)",
}


@dataclass
class State:
    """Where the loop stands after its finished rounds."""

    decisions: list[dict]  # decision.json of every finished round, in order
    champion: int
    recipe: Recipe  # what the next challenger starts from: the base round's recipe
    examples_trained: int
    labels_used: int
    acquired: dict  # id -> label bought from the oracle (kept even when its round was rejected)
    base: int = -1  # the round the next challenger builds on: the champion, or a promising rejected round

    def __post_init__(self):
        if self.base < 0:
            self.base = self.champion

    @property
    def chained(self) -> bool:
        """The next challenger builds on a rejected one, so whatever its plan it must prove a gain
        over the champion: it carries that round's unproven change."""
        return self.base != self.champion


def round_dir(run_dir: Path, r: int) -> Path:
    return run_dir / "rounds" / f"{r:02d}"


def read_json(path: Path) -> dict | list:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- opening a run


def open_run(cfg: Config, output_dir, resume: bool, config_path) -> Path:
    """A new run directory, or (resume) the one to continue, checked against this config."""
    from ..train import RunError, make_run_dir

    if resume:
        run_dir = Path(output_dir) if output_dir else _find_resumable(cfg, config_path)
        if not (run_dir / "run.json").is_file():
            raise RunError(f"{run_dir} is not a loop run to resume (no run.json); start it without --resume")
        info = read_json(run_dir / "run.json")
        old = load_config(run_dir / "config.toml")
        for section in ("data", "model", "train"):
            if getattr(old, section) != getattr(cfg, section):
                raise RunError(f"the [{section}] section differs from the one {run_dir} started with; resume with the "
                               f"same config (the run's own copy is {run_dir / 'config.toml'}), or start a new run")
        info.update(status="running", resumed=info.get("resumed", 0) + 1)
        write_json(run_dir / "run.json", info)
        write_text(run_dir / "config.toml", dump_toml(cfg))  # [loop] may grow (more rounds)
        return run_dir
    from .. import runtime
    from ..train import _versions

    run_dir = make_run_dir(cfg, output_dir, stem="loop")
    write_text(run_dir / "config.toml", dump_toml(cfg))
    (run_dir / "rounds").mkdir()
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info = {"kind": "loop", "status": "running", "created": created, "command": sys.argv,
            "config_path": str(config_path) if config_path else None, "versions": _versions(),
            "cpu": runtime.cpu_info(), "precision": runtime.precision_report(cfg.train.precision),
            "task": cfg.data.task, "selection_metric": cfg.selection_metric,
            "base_model": cfg.model.name if cfg.model.kind == "transformer" else "lstm",
            "files": {"config.toml": "the resolved config", "run.json": "this record", "store.sqlite":
                      "rounds, decisions and learned action values", "champion": "link to the champion's round",
                      "summary.json": "the result (written at the end)", "report.html": "the report",
                      "rounds/NN/": ROUND_FILES}}
    write_json(run_dir / "run.json", info)
    store.record_run(run_dir, run_dir.name, cfg.data.task, cfg.data.train, info["base_model"], cfg.selection_metric,
                     created)
    return run_dir


def describe_data(run_dir: Path, splits: Splits) -> None:
    """Record in run.json which data this session read (a resumed run checks nothing else by it)."""
    info = read_json(run_dir / "run.json")
    info.update(labels=splits.labels, warnings=list(splits.warnings),
                data={name: {"source": ds.source, "examples": len(ds), "fingerprint": ds.fingerprint()}
                      for name, ds in (("train", splits.train), ("selection", splits.selection), ("test", splits.test))
                      if ds is not None})
    write_json(run_dir / "run.json", info)


def _find_resumable(cfg: Config, config_path) -> Path:
    from ..train import RunError

    if cfg.run.name:
        return Path(cfg.run.output_dir) / cfg.run.name
    found = []
    for p in Path(cfg.run.output_dir).glob("*/run.json"):
        try:
            info = read_json(p)
        except (OSError, json.JSONDecodeError):
            continue
        if info.get("kind") == "loop" and info.get("status") != "finished" and (
                config_path is None or info.get("config_path") == str(config_path)):
            found.append((info.get("created", ""), p.parent))
    if not found:
        raise RunError(f"no unfinished loop run of this config in {cfg.run.output_dir}/; pass --output-dir RUN "
                       "to resume a particular run")
    return max(found)[1]


# --------------------------------------------------------------------------- round files


def set_champion(run_dir: Path, r: int) -> None:
    symlink(run_dir / "champion", Path("rounds") / f"{r:02d}")  # the link always points at a finished round


def save_train(path: Path, ds: Dataset) -> None:
    with replacing(path) as fh:
        for k in range(len(ds)):
            rec = {"id": ds.ids[k], "label": ds.labels[k], "text": ds.texts[k]}
            if ds.tokens is not None:
                rec["tokens"] = ds.tokens[k]
            if ds.weights is not None:
                rec["weight"] = float(ds.weights[k])
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def load_train(path: Path, task: str, source: str) -> Dataset:
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    weights = [r.get("weight") for r in recs]
    return Dataset(task=task, ids=[r["id"] for r in recs], labels=[r["label"] for r in recs],
                   texts=[r["text"] for r in recs], tokens=[r["tokens"] for r in recs] if task == "ner" else None,
                   weights=None if all(w is None for w in weights) else np.array(
                       [1.0 if w is None else w for w in weights], dtype=np.float32), source=source)


def save_recipe(rd: Path, recipe: Recipe) -> None:
    write_json(rd / "recipe.json", {"tree": recipe.tree,
                                    "pool_ids": None if recipe.pool is None else list(recipe.pool.ids)})


def record(run_dir: Path, decision: dict, cfg: Config) -> None:
    """Write a finished round into the workspace's store (idempotent: resume re-syncs it)."""
    rd = round_dir(run_dir, decision["round"])
    cmp = read_json(rd / "compare.json") if (rd / "compare.json").is_file() else None
    plan = read_json(rd / "plan.json") if (rd / "plan.json").is_file() else {"actions": []}
    steps = [{"action": a["action"], "params": a["params"], "addresses": a.get("addresses", [])} for a in plan["actions"]]
    store.record_round(run_dir, decision, cmp, steps, plan.get("addressed", []), cfg.data.task)


# --------------------------------------------------------------------------- restore / resume


def restore(run_dir: Path, cfg: Config, splits: Splits, pool: Dataset | None) -> State | None:
    """The state after the last finished round; a round without decision.json is discarded."""
    rounds = [p for p in (run_dir / "rounds").iterdir() if p.is_dir() and p.name.isdigit()] \
        if (run_dir / "rounds").is_dir() else []
    rounds.sort(key=lambda p: int(p.name))  # numerically: rounds/100 after rounds/99
    decisions = []
    for p in rounds:
        if (p / "decision.json").is_file() and int(p.name) == len(decisions):
            decisions.append(read_json(p / "decision.json"))
        else:
            shutil.rmtree(p)  # half-written (killed mid-round): redo it from its start
    if not decisions:
        return None
    for d in decisions:  # re-sync the store: a kill between decision.json and the store write loses nothing
        record(run_dir, d, cfg)
    set_champion(run_dir, decisions[-1]["champion_round"])  # a kill may fall between decision.json and the link
    return state_after(run_dir, cfg, splits, pool, decisions)


def state_after(run_dir: Path, cfg: Config, splits: Splits, pool: Dataset | None, decisions: list[dict]) -> State:
    """The loop's state once `decisions` (rounds 0 .. k, in order) are made, rebuilt from disk."""
    champion = decisions[-1]["champion_round"]
    base = decisions[-1].get("next_base", champion)
    cdir = round_dir(run_dir, base)
    saved = read_json(cdir / "recipe.json")
    train = load_train(cdir / "train.jsonl", cfg.data.task, splits.train.source)
    acquired = {}
    for d in decisions:
        acquired.update(d.get("acquired", {}))
    # Acquired labels stay in the pool until a round merges them in (round.start_recipe), as in an unbroken run.
    if pool is not None and saved.get("pool_ids") is not None:  # the champion's pool, exactly as it was
        keep = set(saved["pool_ids"])
        pool_left = pool.subset([k for k, i in enumerate(pool.ids) if i in keep])
    else:
        used = set(train.ids)
        pool_left = None if pool is None else pool.subset([k for k, i in enumerate(pool.ids) if i not in used])
    return State(decisions, champion, Recipe(saved["tree"], train=train, pool=pool_left),
                 sum(d["examples_trained"] for d in decisions), sum(d.get("labels_used", 0) for d in decisions),
                 acquired, base)
