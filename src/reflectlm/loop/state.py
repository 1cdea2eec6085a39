"""The loop's state after its finished rounds, derived from the files on disk, and opening or
resuming a loop run (the file names are rundir.py's).

A round is finished when its decision.json exists (written last, atomically). `restore` discards
a half-written round; `state_after` rebuilds the loop's state from finished rounds, and the live
loop derives its next state with the same function, so an interrupted run and an unbroken one
continue identically.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import rundir, store
from ..actions import Recipe
from ..config import Config, dump_toml, load_config
from ..data import Dataset, Splits
from ..rundir import RunError, read_json, round_dir
from ..tasks import get_task


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


# --------------------------------------------------------------------------- opening a run


def open_run(cfg: Config, output_dir, resume: bool, config_path) -> Path:
    """A new run directory, or (resume) the one to continue, checked against this config."""
    if resume:
        run_dir = Path(output_dir) if output_dir else _find_resumable(cfg, config_path)
        if not (run_dir / rundir.RUN).is_file():
            raise RunError(f"{run_dir} is not a loop run to resume (no {rundir.RUN}); start it without --resume")
        info = read_json(run_dir / rundir.RUN)
        old = load_config(run_dir / rundir.CONFIG)
        for section in ("data", "model", "train"):
            if getattr(old, section) != getattr(cfg, section):
                raise RunError(f"the [{section}] section differs from the one {run_dir} started with; resume with the "
                               f"same config (the run's own copy is {run_dir / rundir.CONFIG}), or start a new run")
        info.update(status="running", resumed=info.get("resumed", 0) + 1)
        rundir.write_json(run_dir / rundir.RUN, info)
        rundir.write_text(run_dir / rundir.CONFIG, dump_toml(cfg))  # [loop] may grow (more rounds)
        return run_dir
    from .. import runtime

    run_dir = rundir.make_run_dir(cfg.run.name, output_dir, cfg.run.output_dir, stem="loop")
    rundir.write_text(run_dir / rundir.CONFIG, dump_toml(cfg))
    (run_dir / rundir.ROUNDS).mkdir()
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info = {"kind": "loop", "status": "running", "created": created, "command": sys.argv,
            "config_path": str(config_path) if config_path else None, "versions": runtime.versions(),
            "cpu": runtime.cpu_info(), "precision": runtime.precision_report(cfg.train.precision),
            "task": cfg.data.task, "selection_metric": cfg.selection_metric,
            "base_model": cfg.model.name if cfg.model.kind == "transformer" else "lstm",
            "files": rundir.LOOP_FILES}
    rundir.write_json(run_dir / rundir.RUN, info)
    store.record_run(run_dir, run_dir.name, cfg.data.task, cfg.data.train, info["base_model"], cfg.selection_metric,
                     created)
    return run_dir


def describe_data(run_dir: Path, splits: Splits) -> None:
    """Record in run.json which data this session read (a resumed run checks nothing else by it)."""
    info = read_json(run_dir / rundir.RUN)
    info.update(labels=splits.labels, warnings=list(splits.warnings),
                data={name: {"source": ds.source, "examples": len(ds), "fingerprint": ds.fingerprint()}
                      for name, ds in (("train", splits.train), ("selection", splits.selection), ("test", splits.test))
                      if ds is not None})
    if splits.simulated:  # data.simulated_label_noise: say that, how many and which (the report reads it)
        from ..data import simulated_record

        info["simulated_label_noise"] = simulated_record(splits.simulated)
    rundir.write_json(run_dir / rundir.RUN, info)



def _find_resumable(cfg: Config, config_path) -> Path:
    if cfg.run.name:
        return Path(cfg.run.output_dir) / cfg.run.name
    found = []
    for p in Path(cfg.run.output_dir).glob(f"*/{rundir.RUN}"):
        info = read_json(p, None)
        if info is None:
            continue
        if info.get("kind") == "loop" and info.get("status") != "finished" and (
                config_path is None or info.get("config_path") == str(config_path)):
            found.append((info.get("created", ""), p.parent))
    if not found:
        raise RunError(f"no unfinished loop run of this config in {cfg.run.output_dir}/; pass --output-dir RUN "
                       "to resume a particular run")
    return max(found)[1]


# --------------------------------------------------------------------------- round files


def save_recipe(rd: Path, recipe: Recipe) -> None:
    rundir.write_json(rd / rundir.RECIPE, {"tree": recipe.tree,
                                           "pool_ids": None if recipe.pool is None else list(recipe.pool.ids)})


def record(run_dir: Path, decision: dict, cfg: Config) -> None:
    """Write a finished round into the workspace's store (idempotent: resume re-syncs it)."""
    rd = round_dir(run_dir, decision["round"])
    cmp = read_json(rd / rundir.COMPARE, None)
    plan = read_json(rd / rundir.PLAN, {"actions": []})
    steps = [{"action": a["action"], "params": a["params"], "addresses": a.get("addresses", [])} for a in plan["actions"]]
    store.record_round(run_dir, decision, cmp, steps, plan.get("addressed", []), cfg.data.task)


# --------------------------------------------------------------------------- restore / resume


def restore(run_dir: Path, cfg: Config, splits: Splits, pool: Dataset | None) -> State | None:
    """The state after the last finished round; a round without decision.json is discarded."""
    rounds_dir = run_dir / rundir.ROUNDS
    rounds = [p for p in rounds_dir.iterdir() if p.is_dir() and p.name.isdigit()] if rounds_dir.is_dir() else []
    rounds.sort(key=lambda p: int(p.name))  # numerically: rounds/100 after rounds/99
    decisions = []
    for p in rounds:
        if (p / rundir.DECISION).is_file() and int(p.name) == len(decisions):
            decisions.append(read_json(p / rundir.DECISION))
        else:
            shutil.rmtree(p)  # half-written (killed mid-round): redo it from its start
    if not decisions:
        return None
    for d in decisions:  # re-sync the store: a kill between decision.json and the store write loses nothing
        record(run_dir, d, cfg)
    rundir.set_champion(run_dir, decisions[-1]["champion_round"])  # a kill may fall between decision.json and the link
    return state_after(run_dir, cfg, splits, pool, decisions)


def state_after(run_dir: Path, cfg: Config, splits: Splits, pool: Dataset | None, decisions: list[dict]) -> State:
    """The loop's state once `decisions` (rounds 0 .. k, in order) are made, rebuilt from disk."""
    champion = decisions[-1]["champion_round"]
    base = decisions[-1].get("next_base", champion)
    cdir = round_dir(run_dir, base)
    saved = read_json(cdir / rundir.RECIPE)
    train = rundir.load_train(cdir / rundir.TRAIN_DATA, get_task(cfg.data.task), splits.train.source)
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
