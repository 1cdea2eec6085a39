"""Read a run directory into one shape, whichever command wrote it.

Two layouts (DESIGN.md §Run directory):

- a loop run (`reflectlm run`): run.json with kind "loop", summary.json at the end, and
  rounds/NN/ holding each round's metrics, dynamics, gradients, plan, findings, compare and
  decision files;
- a plain training run (`reflectlm train`): the same per-round files at the top, no rounds;
  it is read as a single round 0 that is its own champion.

Every file but a round's metrics.json is optional, and a half-written run (the loop is still
going, or it crashed) reads as far as it got: readers return None or [] for what is missing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .. import rundir


@dataclass
class Round:
    """One round's record; `path` is rounds/NN (or the run directory for a plain training run)."""

    number: int
    path: Path

    @cached_property
    def metrics(self) -> dict | None:
        return rundir.read_json(self.path / rundir.METRICS, None)

    @cached_property
    def plan(self) -> dict | None:
        return rundir.read_json(self.path / rundir.PLAN, None)

    @cached_property
    def findings(self) -> dict | None:
        record = rundir.read_json(self.path / rundir.FINDINGS, None)
        if isinstance(record, list):  # a bare list of findings
            record = {"findings": record}
        return record

    @cached_property
    def targets(self) -> list | None:
        return rundir.read_json(self.path / rundir.TARGETS, None)

    @cached_property
    def compare(self) -> dict | None:
        return rundir.read_json(self.path / rundir.COMPARE, None)

    @cached_property
    def decision(self) -> dict | None:
        return rundir.read_json(self.path / rundir.DECISION, None)

    @cached_property
    def calibration(self) -> dict | None:
        return rundir.read_json(self.path / rundir.CALIBRATION, None)

    @cached_property
    def config_text(self) -> str | None:
        return rundir.read_text(self.path / rundir.CONFIG)

    def dynamics(self) -> dict | None:  # not cached: up to (E, N) x 3 arrays per round
        return rundir.read_npz(self.path / rundir.DYNAMICS)

    def gradients(self) -> dict | None:
        return rundir.read_npz(self.path / rundir.GRADIENTS)

    @property
    def has_model(self) -> bool:
        return (self.path / rundir.MODEL).is_dir()

    def selection(self, metric: str | None) -> float | None:
        """This round's selection metric (its best epoch), from metrics.json or decision.json."""
        m = self.metrics or {}
        value = (m.get("selection") or {}).get(metric) if metric else None
        if value is None and self.decision:
            value = self.decision.get("selection")
        return _num(value)

    @property
    def actions(self) -> list[str]:
        return [a.get("action", "?") if isinstance(a, dict) else str(a) for a in (self.plan or {}).get("actions", [])]

    @property
    def promoted(self) -> bool | None:
        """True / False once decided; None for round 0 and for an undecided round."""
        if self.number == 0:
            return None
        if self.decision and "promoted" in self.decision:
            return bool(self.decision["promoted"])
        if self.compare and "promote" in self.compare:
            return bool(self.compare["promote"])
        return None


@dataclass
class Run:
    path: Path
    kind: str  # "loop" | "train"
    info: dict = field(default_factory=dict)  # run.json
    summary: dict | None = None  # summary.json (loop runs, at the end)
    rounds: list[Round] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return self.info.get("status") or ("finished" if self.summary else "unknown")

    @cached_property
    def config_text(self) -> str | None:
        return rundir.read_text(self.path / rundir.CONFIG) or (self.rounds[0].config_text if self.rounds else None)

    @cached_property
    def config(self) -> dict:
        import tomllib

        try:
            return tomllib.loads(self.config_text or "")
        except tomllib.TOMLDecodeError:
            return {}

    @property
    def task(self) -> str:
        """The run's data.task: its record, its config, else the task whose default metric its rounds were
        selected by (an older run directory records neither)."""
        from ..tasks import TASKS

        given = self.info.get("task") or self.config.get("data", {}).get("task")
        if given:
            return given
        selected = {k for r in self.rounds for k in ((r.metrics or {}).get("selection") or {})}
        return next((name for name, t in TASKS.items() if t.default_metric in selected), "classification")

    @property
    def spec(self):
        """The run's Task (tasks/): what its metrics, groups and error kinds are."""
        from ..tasks import get_task

        return get_task(self.task)

    @property
    def metric(self) -> str | None:
        for source in (self.summary, *(r.metrics for r in self.rounds)):
            if source and source.get("selection_metric"):
                return source["selection_metric"]
        return self.spec.default_metric

    @property
    def round0(self) -> Round | None:
        return self.rounds[0] if self.rounds and self.rounds[0].number == 0 else None

    @cached_property
    def champion_round(self) -> int:
        """The round whose model is the champion now: the `champion` link (the loop moves it at
        every promotion), summary.json, the latest decision, run.json, in that order; 0 when
        nothing has been promoted."""
        link = self.path / rundir.CHAMPION
        if link.is_symlink() or link.is_dir():
            try:
                return int(link.resolve().name)
            except ValueError:  # not a round folder: fall through to the recorded sources below
                pass
        if self.summary and isinstance(self.summary.get("champion_round"), int):
            return self.summary["champion_round"]
        for r in reversed(self.rounds):
            if r.decision and isinstance(r.decision.get("champion_round"), int):
                return r.decision["champion_round"]
        if isinstance(self.info.get("champion_round"), int):
            return self.info["champion_round"]
        return 0

    @property
    def champion(self) -> Round | None:
        for r in self.rounds:
            if r.number == self.champion_round:
                return r
        return self.rounds[0] if self.rounds else None

    @property
    def challengers(self) -> list[Round]:
        return [r for r in self.rounds if r.number > 0]

    def champion_before(self) -> dict[int, float | None]:
        """Round -> the champion's selection metric when that round's challenger was compared."""
        out, current = {}, None
        by_number = {r.number: r for r in self.rounds}
        for r in self.rounds:
            if r.number == 0:
                current = r.selection(self.metric)
                continue
            value = (r.compare or {}).get("champion")  # compare.py: the champion's metric value (a float)
            out[r.number] = _num(value) if isinstance(value, float) else current
            if r.promoted:
                current = r.selection(self.metric)
            elif r.decision and isinstance(r.decision.get("champion_round"), int):
                champ = by_number.get(r.decision["champion_round"])
                if champ is not None and champ.selection(self.metric) is not None:
                    current = champ.selection(self.metric)
        return out

    def test_metrics(self) -> dict | None:
        if self.summary and self.summary.get("test"):
            return self.summary["test"]
        champ = self.champion
        return (champ.metrics or {}).get("test") if champ else None

    def round0_test(self) -> dict | None:
        if self.summary and self.summary.get("round0_test"):
            return self.summary["round0_test"]
        return (self.round0.metrics or {}).get("test") if self.round0 else None

    def champion_eval(self) -> tuple[str, dict, dict | None]:
        """(split, the champion's metrics on it, round 0's on the same split or None when the
        champion is round 0). The loop reads the test split once, at the end (summary.json);
        until then, and in rounds' own metrics.json, there is only the selection split."""
        baseline = self.champion_round == 0
        if self.summary and self.summary.get("test"):
            return "test", self.summary["test"], None if baseline else self.summary.get("round0_test")
        champ = self.champion
        m = (champ.metrics or {}) if champ else {}
        split = "test" if m.get("test") else "selection"
        base = None
        if not baseline and self.round0 is not None:
            base = (self.round0.metrics or {}).get(split)
        return split, m.get(split) or {}, base

    def diagnosis(self) -> tuple[Round | None, dict | None]:
        """The most recent diagnosis: the run's own findings.json (a diagnosed training run, or one
        the loop wrote at the end), else the latest round that has one."""
        top = rundir.read_json(self.path / rundir.FINDINGS, None)
        if self.kind == "loop" and top is not None:
            return None, top if isinstance(top, dict) else {"findings": top}
        for r in reversed(self.rounds):
            if r.findings is not None:
                return r, r.findings
        return None, None

    def action_values(self) -> list[dict]:
        """summary.json's table at the end; before that, the same aggregate read from the stores
        of every run in the workspace (store.py keeps one row per round, finding kind and action)."""
        if self.summary and self.summary.get("action_values"):
            return list(self.summary["action_values"])
        stores = sorted(self.path.parent.glob("*/store.sqlite"))
        if self.path / rundir.STORE not in stores and (self.path / rundir.STORE).is_file():
            stores.append(self.path / rundir.STORE)
        return _action_values_from_stores(stores, self.task)

    def wall_seconds(self) -> float | None:
        for source in (self.summary, self.info):
            if source and _num(source.get("wall_seconds")) is not None:
                return _num(source["wall_seconds"])
        seconds = [_num((r.decision or {}).get("seconds")) for r in self.rounds]
        seconds = [s for s in seconds if s is not None]
        return sum(seconds) if seconds else None

    def stop_reason(self) -> str | None:
        for source in (self.summary, self.info):
            if source and source.get("stop_reason"):
                return str(source["stop_reason"])
        if self.kind == "train":
            return "single training run (no improvement rounds)"
        return "still running" if self.status == "running" else None


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory of either layout; raises FileNotFoundError when it is not one."""
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory; pass a run directory such as runs/<name>")
    info = rundir.read_json(path / rundir.RUN, None) or {}
    rounds_dir = path / rundir.ROUNDS
    if info.get("kind") == "loop" or rounds_dir.is_dir():
        rounds = []
        if rounds_dir.is_dir():
            for p in sorted(rounds_dir.iterdir()):
                if p.is_dir() and p.name.isdigit():
                    rounds.append(Round(int(p.name), p))
        rounds.sort(key=lambda r: r.number)
        return Run(path, "loop", info, rundir.read_json(path / rundir.SUMMARY, None), rounds)
    if not ((path / rundir.METRICS).is_file() or (path / rundir.RUN).is_file() or (path / rundir.CONFIG).is_file()):
        raise FileNotFoundError(f"{path} is not a run directory (no run.json, metrics.json or rounds/); pass the "
                                "directory that `reflectlm train` or `reflectlm run` wrote")
    return Run(path, "train", info, None, [Round(0, path)])


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / rundir.RUN).is_file() or (path / rundir.ROUNDS).is_dir()
                              or (path / rundir.METRICS).is_file())


def _action_values_from_stores(stores: list[Path], task: str | None) -> list[dict]:
    """(finding kind, action) -> n, mean gain, promotions over the rows of every store's
    action_values table (columns finding_kind, action, gain, promoted; task when present).
    The schema belongs to store.py; anything else reads as no rows."""
    groups: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for db in stores:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        except sqlite3.Error:
            continue
        try:
            cols = [r[1] for r in con.execute('PRAGMA table_info("action_values")')]
            if not {"finding_kind", "action", "gain"} <= set(cols):
                continue
            sel = ", ".join(c if c in cols else "NULL" for c in ("finding_kind", "action", "gain", "promoted", "task"))
            for kind, action, gain, promoted, t in con.execute(f"SELECT {sel} FROM action_values"):
                if gain is None or (task and t and t != task):
                    continue
                groups.setdefault((str(kind), str(action)), []).append((float(gain), bool(promoted)))
        except sqlite3.Error:
            continue
        finally:
            con.close()
    rows = [{"finding_kind": k, "action": a, "n": len(g), "mean_gain": sum(x for x, _ in g) / len(g),
             "promotions": sum(p for _, p in g)} for (k, a), g in groups.items()]
    return sorted(rows, key=lambda r: (-r["mean_gain"], r["finding_kind"], r["action"]))


def _num(x) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None
