"""The common shape of every check's result, and the inputs checks read.

A check is a small class: its constructor stores parameters only, `run(ctx)` does the work and
returns a list of Findings (reflectlm.findings). Every Finding has the same shape: a kind, a
severity in [0, 1], a one-line summary, JSON-able evidence and, where it applies, a score in
[0, 1] per example id. A check whose inputs are missing raises Skip with the reason; a check that
needs what the run's task cannot give declares it in `requires` (tasks/base.py) and is skipped,
saying so, for such a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..findings import Finding  # noqa: F401 - re-exported: the shape every check returns


class Skip(Exception):
    """The check cannot run on this context; the message says which input is missing and why."""


@dataclass
class Context:
    """Everything a check may read. Built from a run directory by `from_run`, or by hand in tests.

    Fields are None when unavailable; a check that needs one raises Skip.
    """

    task: Any  # tasks.Task (a data.task name is looked up)
    labels: list[str]  # the model's label list (class names, BIO tags; [] for span answers)
    train: Any = None  # data.Dataset
    selection: Any = None  # data.Dataset
    selection_probs: Any = None  # (N, C) array; NER: list of (n_words, C)
    selection_metrics: dict | None = None
    oof_probs: Any = None  # out-of-fold probabilities for train: (N, C); NER: list of (n_words, C)
    cv: dict | None = None  # {"mode", "folds", "fold_metrics": [...], "seconds"}
    dynamics: dict | None = None  # {"loss", "gold_prob", "correct"}: (E, N); "ids": (N,)
    gradients: dict | None = None  # gradients.npz arrays
    history: list[dict] | None = None  # per-epoch rows from metrics.json
    train_config: dict | None = None  # the run's [train] section
    predict_texts: Callable[[list], Any] | None = None  # raw inputs (task.inputs) -> outputs like selection_probs
    embed_texts: Callable[[list[str]], np.ndarray] | None = None  # texts -> (N, D) unit vectors
    open_label: str | None = None  # the label marking out-of-scope examples (open_set.label)
    options: dict | None = None  # the task's data options (tasks' encode_options: e.g. the languages asked for)
    seed: int = 0

    def __post_init__(self) -> None:
        from ..tasks import get_task

        self.task = get_task(self.task)

    def need(self, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise Skip(f"needs {', '.join(missing)}, which this run does not have")


def stored_params(check) -> dict:
    """The constructor's parameters as stored on the check, read off its signature so that
    params() cannot drift from __init__ (every parameter is stored under its own name)."""
    import inspect

    names = [n for n in inspect.signature(type(check).__init__).parameters if n != "self"]
    return {n: list(v) if isinstance(v := getattr(check, n), tuple) else v for n in names}


class Check:
    """Interface of a DIAGNOSTICS entry (documentation only: checks do not inherit from it).

    name: str                 the table key
    needs: tuple[str, ...]    Context fields it reads; missing ones make diagnose() skip it
    requires: tuple[str, ...] task capabilities it needs (tasks/base.py); without them it is skipped
    __init__(**params)        stores parameters only (all JSON-able, all with defaults)
    params() -> dict          stored_params(self): the stored parameters, so a run records what ran
    run(ctx) -> list[Finding] the work; deterministic for ctx.seed; [] when nothing is wrong
                              (or a Finding with severity 0 that says what was checked)
    """
