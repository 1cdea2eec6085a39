"""The run store: one SQLite file per run (`<run>/store.sqlite`) with its rounds, decisions and
the measured value of every (finding kind, action) it tried.

Learned action values are shared across the runs of a workspace (the folder that holds the run
directories) by reading every run's store: a second run on similar data starts from what the
first one measured. Each run writes only its own file, so concurrent runs never contend, and a
round's rows are written in one transaction after its decision.json, keyed by round, so a
resumed run that re-records a round replaces it instead of counting it twice.
"""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import rundir

STORE = rundir.STORE

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run TEXT PRIMARY KEY, task TEXT, data TEXT, base_model TEXT, metric TEXT,
                                 created TEXT);
CREATE TABLE IF NOT EXISTS rounds (round INTEGER PRIMARY KEY, plan TEXT, selection REAL, champion REAL,
                                   difference REAL, ci_low REAL, ci_high REAL, p_mcnemar REAL, promoted INTEGER,
                                   reason TEXT, seconds REAL, examples_trained INTEGER);
CREATE TABLE IF NOT EXISTS action_values (round INTEGER, finding_kind TEXT, action TEXT, task TEXT, gain REAL,
                                          promoted INTEGER, PRIMARY KEY (round, finding_kind, action));
"""


def connect(run_dir: str | Path) -> sqlite3.Connection:
    con = sqlite3.connect(Path(run_dir) / STORE)
    con.executescript(SCHEMA)
    return con


def record_run(run_dir: str | Path, run: str, task: str, data: str, base_model: str, metric: str, created: str) -> None:
    with closing(connect(run_dir)) as con, con:
        con.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)", (run, task, data, base_model, metric, created))


def record_round(run_dir: str | Path, decision: dict, compare: dict | None, plan: list[dict], addressed: list[str],
                 task: str) -> None:
    """Write one decided round and the (finding kind, action) gains it measured, atomically."""
    c = compare or {}
    r = int(decision["round"])
    gain = c.get("difference")
    with closing(connect(run_dir)) as con, con:
        con.execute("INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r, json.dumps(plan), decision.get("selection"), c.get("champion"), gain, c.get("ci_low"),
                     c.get("ci_high"), (c.get("mcnemar") or {}).get("p_value"), int(bool(decision["promoted"])),
                     decision.get("reason"), decision.get("seconds"), decision.get("examples_trained")))
        con.execute("DELETE FROM action_values WHERE round = ?", (r,))
        if gain is not None:
            for step in plan:
                # The kinds this step answers (its own list); a plan-wide list only as a fallback.
                for kind in sorted(set(step.get("addresses") or addressed or ["(none)"])):
                    con.execute("INSERT OR REPLACE INTO action_values VALUES (?, ?, ?, ?, ?, ?)",
                                (r, kind, step["action"], task, float(gain), int(bool(decision["promoted"]))))


def rounds(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / STORE
    if not path.is_file():
        return []
    with closing(sqlite3.connect(path)) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM rounds ORDER BY round")]


@dataclass
class ActionValue:
    finding_kind: str
    action: str
    n: int
    mean_gain: float
    promotions: int

    def to_json(self) -> dict:
        return {"finding_kind": self.finding_kind, "action": self.action, "n": self.n,
                "mean_gain": self.mean_gain, "promotions": self.promotions}


def gains(workspace: str | Path, task: str | None = None) -> dict[tuple[str, str], list[tuple[float, bool]]]:
    """(finding kind, action) -> every (gain, promoted) measured by any run in the workspace."""
    out: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for path in sorted(Path(workspace).glob(f"*/{STORE}")):
        try:
            with closing(sqlite3.connect(path)) as con:
                rows = con.execute("SELECT finding_kind, action, task, gain, promoted FROM action_values").fetchall()
        except sqlite3.DatabaseError:
            continue  # a store being created right now, or not ours
        for kind, action, t, gain, promoted in rows:
            if task is None or t == task:
                out.setdefault((kind, action), []).append((float(gain), bool(promoted)))
    return out


def action_values(workspace: str | Path, task: str | None = None) -> list[ActionValue]:
    vals = [ActionValue(k, a, len(g), float(np.mean([x for x, _ in g])), sum(p for _, p in g))
            for (k, a), g in gains(workspace, task).items()]
    return sorted(vals, key=lambda v: (-v.mean_gain, v.finding_kind, v.action))


# Thompson sampling over the gains: a Gaussian prior centred on the rules' expected gain (reflect.py)
# with sd PRIOR_SD, Gaussian noise of sd NOISE_SD per measured gain; the posterior of the mean gain
# is Gaussian (conjugate), and one draw from it ranks the action. Measured gains pull the draw
# towards what happened; untried actions keep the prior's spread, so they still get tried.
PRIOR_SD = 0.02
NOISE_SD = 0.02


def posterior(prior_mean: float, observed: list[float]) -> tuple[float, float]:
    prec = 1.0 / PRIOR_SD**2 + len(observed) / NOISE_SD**2
    mean = (prior_mean / PRIOR_SD**2 + sum(observed) / NOISE_SD**2) / prec
    return mean, math.sqrt(1.0 / prec)
