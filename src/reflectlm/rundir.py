"""The run directory: every file's name, how each is read and written, and making a new one.

Every run describes itself. A training run (`reflectlm train`) holds RUN_FILES; a loop run
(`reflectlm run`) holds LOOP_FILES at the top and one ROUND_FILES set per round under rounds/NN/
(round 0 is the baseline); an export holds export.json beside its model; `reflectlm serve` keeps
serving.sqlite next to what it serves. No other module spells a file name: they ask here.

Writes are atomic (atomic.py): a kill leaves the old file or the new one, never half of one. Reads
go through `read_json`, which says which file is missing and what to do, or returns the default
its caller gives for a file that may legitimately be absent (a run still in progress).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

# --------------------------------------------------------------------------- names

CONFIG = "config.toml"
RUN = "run.json"
METRICS = "metrics.json"
DYNAMICS = "dynamics.npz"
GRADIENTS = "gradients.npz"
MODEL = "model"
FINDINGS = "findings.json"
TARGETS = "targets.json"
PLAN = "plan.json"
RECIPE = "recipe.json"
CALIBRATION = "calibration.json"
OUT_OF_SCOPE = "out_of_scope.json"  # a round's detect_out_of_scope: the detector chosen, cross-fitted
TUNE = "tune.json"
COMPARE = "compare.json"
DECISION = "decision.json"
TRAIN_DATA = "train.jsonl"
CHALLENGERS = "challengers"
SUMMARY = "summary.json"
STORE = "store.sqlite"
REPORT = "report.html"
TENSORBOARD = "tb"
ROUNDS = "rounds"
CHAMPION = "champion"
LABEL_QUEUE = "label_queue.csv"
FEEDBACK = "feedback"
FEEDBACK_RECORD = "feedback.json"
POOL_TEXTS = "pool.txt"
EXPORTS = "exports"
EXPORT = "export.json"
SERVING_STORE = "serving.sqlite"
BUNDLE = "reflectlm.json"  # inside model/: what the model is (modeling.py)
OPEN_SET = "open_set.json"  # inside model/: the out-of-scope detector, its threshold (open_set.py)
OPEN_SET_ARRAYS = "open_set.npz"  # inside model/: the detector's fitted arrays (class means, reference scores)

RUN_FILES = {
    CONFIG: "the resolved config this run used",
    RUN: "what this run is: command, versions, data, status, timings, warnings",
    METRICS: "final metrics: selection (best epoch), test, per-epoch history",
    DYNAMICS: "per epoch x training example: loss, gold_prob, correct; ids (training dynamics)",
    GRADIENTS: "per telemetry step x layer group: grad_norm, weight_norm, update_ratio; step, lr, loss",
    MODEL + "/": "the trained model bundle (safetensors weights, tokenizer, reflectlm.json)",
}

ROUND_FILES = {
    CONFIG: "the resolved config this round trained with",
    RUN: "what made this round's model (train.py's record; for calibrate / prune: the source and the steps)",
    METRICS: "selection metrics (best epoch) and the per-epoch history",
    DYNAMICS: "training dynamics of this round's model",
    GRADIENTS: "gradient telemetry of this round's model",
    TRAIN_DATA: "the training set this round used (labels as fixed, examples as added)",
    FINDINGS: "rounds >= 1: the diagnosis of the champion that motivated the plan",
    TARGETS: "rounds >= 1: the ranked improvement targets",
    PLAN: "the actions with their parameters, the ranking behind them and what they changed",
    RECIPE: "promoted rounds and a round the next one builds on: the config tree later challengers start from",
    CALIBRATION: "when the plan calibrated: temperature and reliability before / after",
    OUT_OF_SCOPE: "when the plan fitted an out-of-scope detector: the one chosen, its threshold, cross-fitted numbers",
    TUNE: "when the plan tuned (tune_hparams): every trial's settings, scores per epoch, where it stopped",
    COMPARE: "rounds >= 1: the A/B test against the champion",
    DECISION: "promoted or rejected, and why (written last: the round is finished)",
    MODEL + "/": "the model, kept when promoted or when the next round builds on it",
    CHALLENGERS + "/": "loop.parallel > 1: challengers/<k>/ holds each challenger's plan.json and compare.json (the "
                       "kept one's trained files are the round's own; the others keep theirs without weights)",
}

# What a round's kept challenger hands up to the round (several challengers): its trained files.
TRAINED_FILES = (CONFIG, RUN, METRICS, DYNAMICS, GRADIENTS, TRAIN_DATA, CALIBRATION, OUT_OF_SCOPE, TUNE, MODEL)

LOOP_FILES = {
    CONFIG: "the resolved config",
    RUN: "this record",
    STORE: "rounds, decisions and learned action values",
    CHAMPION: "link to the champion's round",
    SUMMARY: "the result (written at the end)",
    REPORT: "the report",
    ROUNDS + "/NN/": ROUND_FILES,
}


class RunError(RuntimeError):
    """A run directory cannot be used; the message says what to do."""


# --------------------------------------------------------------------------- reading

_REQUIRED = object()


def read_json(path: str | Path, default=_REQUIRED):
    """The parsed JSON file. A missing, unreadable or half-written one is `default` when the caller
    gives one (a file that may not exist yet), else a RunError that names the file and the fix."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        if default is not _REQUIRED:
            return default
        what = "is missing" if isinstance(e, FileNotFoundError) else f"cannot be read ({type(e).__name__}: {e})"
        raise RunError(f"{path} {what}; pass a complete run directory (written by `reflectlm train` or "
                       "`reflectlm run`), or resume the run that was interrupted (`reflectlm run --resume`)") from None


def read_text(path: str | Path, default: str | None = None) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return default


def read_npz(path: str | Path) -> dict | None:
    """The arrays of an .npz file, or None when it is missing or unreadable."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None


def write_json(path: str | Path, obj) -> None:
    from .atomic import write_json as write

    write(path, obj)


def write_text(path: str | Path, text: str) -> None:
    from .atomic import write_text as write

    write(path, text)


# --------------------------------------------------------------------------- places


def make_run_dir(name: str | None, output_dir: str | Path | None, workspace: str | Path, stem: str = "run",
                 existing: bool = False) -> Path:
    """The run's directory: output_dir, else workspace/<name or stem-time>. It must be new or empty
    unless `existing` (a loop round writes into its own folder)."""
    if output_dir is None:
        output_dir = Path(workspace) / (name or f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    path = Path(output_dir)
    if not existing and path.exists() and any(path.iterdir()):
        raise RunError(f"run directory {path} already exists and is not empty; pass another --output-dir "
                       "(or --set run.name=...) or remove it")
    path.mkdir(parents=True, exist_ok=True)
    return path


def round_dir(run_dir: Path, r: int) -> Path:
    return Path(run_dir) / ROUNDS / f"{r:02d}"


def round_link(r: int) -> Path:
    """The champion link's target, relative to the run directory."""
    return Path(ROUNDS) / f"{r:02d}"


def is_run(path: Path) -> bool:
    """A run directory (training or loop run): its config and its record."""
    return (Path(path) / CONFIG).is_file() and (Path(path) / RUN).is_file()


def model_of(path: str | Path) -> Path | None:
    """The model bundle behind a path: a loop run's champion, a training run's model, or a bundle."""
    path = Path(path)
    for candidate in (path / CHAMPION / MODEL, path / MODEL, path):
        if (candidate / BUNDLE).is_file():
            return candidate
    return None


def run_of(path: str | Path) -> Path | None:
    """The run directory behind a served path: an export's source run, a run, its model/, or a round's model/."""
    path = Path(path)
    export = path / EXPORT
    if export.is_file():
        return Path(read_json(export)["run"])
    for p in (path, path.parent, path.parent.parent):  # run, run/model, run/rounds/NN/model
        if is_run(p):
            return p
    return None


def set_champion(run_dir: Path, r: int) -> None:
    """Point the champion link at round r (the link always names a finished round)."""
    from .atomic import symlink

    symlink(Path(run_dir) / CHAMPION, round_link(r))


# --------------------------------------------------------------------------- a round's training set


def save_train(path: Path, ds, task) -> None:
    """train.jsonl: the round's training set, one example a line in its task's record shape
    (task: the Task, tasks/)."""
    from .atomic import replacing

    with replacing(path) as fh:
        for k in range(len(ds)):
            fh.write(json.dumps(task.to_record(ds, k), ensure_ascii=False) + "\n")


def load_train(path: Path, task, source: str):
    """The Dataset save_train wrote (weights kept; the ids and labels as they were)."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return task.from_records(rows, source)
