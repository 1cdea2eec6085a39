"""Diagnose: what is wrong with a trained model, with evidence.

DIAGNOSTICS is the one table of checks (one file each). `diagnose(run_dir)` builds the inputs
the chosen checks need from a run directory, runs every check, records each skip (missing
input) and failure (never aborting the rest), writes findings.json and returns the findings.
What to do about them is reflect's job (reflect.py), a layer above: nothing here imports it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..callable import callable_module
from ..tasks import applies, get_task, missing
from .balance import BalanceAndData
from .base import Context, Finding, Skip
from .calibration import Calibration
from .copying import Copying
from .crossval import CrossValidation
from .descent import DescentPath
from .dynamics import DataMap
from .fit import Fit
from .gradients import GradientHealth
from .label_issues import LabelIssues
from .language import Language
from .length import Length
from .out_of_scope import OutOfScope
from .performance import HeldOutPerformance
from .repetition import Repetition
from .robustness import Robustness
from .unsupported import Unsupported

DIAGNOSTICS = {
    "performance": HeldOutPerformance,
    "crossval": CrossValidation,
    "label_issues": LabelIssues,
    "dynamics": DataMap,
    "fit": Fit,
    "gradients": GradientHealth,
    "descent": DescentPath,
    "calibration": Calibration,
    "balance": BalanceAndData,
    "robustness": Robustness,
    "out_of_scope": OutOfScope,
    # generated outputs (outputs.py: the shared measures and finding shape)
    "length": Length,
    "copying": Copying,
    "repetition": Repetition,
    "unsupported": Unsupported,
    "language": Language,
}

__all__ = ["DIAGNOSTICS", "Context", "Diagnosis", "Finding", "Skip", "build_context", "context_from_run", "diagnose",
           "get_check", "run_diagnosis", "wanted"]


@dataclass
class Diagnosis:
    findings: list[Finding]
    skipped: list[dict] = field(default_factory=list)  # {"check", "reason"}
    failed: list[dict] = field(default_factory=list)  # {"check", "error"}
    seconds: dict = field(default_factory=dict)  # check -> seconds
    cv: dict | None = None
    selection_metrics: dict | None = None  # the diagnosed model's, when a check read them (reflect's headroom)


def get_check(name: str, **params):
    from ..config import ConfigError

    try:
        return DIAGNOSTICS[name](**params)
    except KeyError:
        raise ConfigError(f"unknown check {name!r}; valid checks: {', '.join(DIAGNOSTICS)}") from None


def build_context(cfg, train, selection, labels: list[str], *, artifacts: Path | None = None, needs: set[str],
                  cv: str = "fast", selection_out=None, predict=None, embed=None, train_config: dict | None = None,
                  quiet: bool = True, wants: set[str] = frozenset()) -> Context:
    """The one Context builder (a run directory here, a loop round in loop/round.py).

    cfg: the run's Config (task, seed; the model and training settings cross-validation uses);
    artifacts: the directory holding the model's metrics.json, dynamics.npz and gradients.npz;
    selection_out: evaluate.Outputs on the selection split; predict / embed: texts -> probabilities
    / unit vectors; train_config: the [train] section the model was trained with (default cfg's).
    Cross-validation (expensive) runs only when a check needs it, or wants it (`wants`: inputs a
    check uses when it can; if they cannot be built here the check runs without them)."""
    from .. import rundir

    ctx = Context(task=cfg.data.task, labels=labels, train=train, selection=selection, seed=cfg.train.seed,
                  train_config=train_config if train_config is not None else cfg.train.model_dump(),
                  predict_texts=predict, embed_texts=embed, open_label=cfg.open_set.label,
                  options=get_task(cfg.data.task).encode_options(cfg.data))
    if selection_out is not None:
        ctx.selection_probs, ctx.selection_metrics = selection_out.probs, selection_out.metrics
    if artifacts is not None:
        ctx.history = (rundir.read_json(artifacts / rundir.METRICS, {}) or {}).get("history")
        ctx.dynamics = rundir.read_npz(artifacts / rundir.DYNAMICS)
        ctx.gradients = rundir.read_npz(artifacts / rundir.GRADIENTS)
    if (needs | set(wants)) & {"oof_probs", "cv"}:
        from .crossval import out_of_fold

        model = cfg.model.name if cfg.model.kind == "transformer" else "minilm"
        try:
            ctx.oof_probs, ctx.cv = out_of_fold(train, labels, cfg.data.task, mode=cv, folds=5, seed=cfg.train.seed,
                                                model=model, train_cfg=cfg.train, model_cfg=cfg.model,
                                                data_cfg=cfg.data, quiet=quiet)
        except (Skip, ValueError):
            if needs & {"oof_probs", "cv"}:
                raise
            # only wanted: the checks that want it read the selection split instead, and say so
    return ctx


def wanted(checks) -> tuple[set[str], set[str]]:
    """(needs, wants) of check instances: what each must have, and what each uses when it can."""
    return ({n for c in checks for n in c.needs},
            {n for c in checks for n in getattr(c, "wants", ())})


def context_from_run(run_dir: str | Path, needs: set[str], cv: str = "fast", quiet: bool = True,
                     wants: set[str] = frozenset()) -> Context:
    """Load what the checks need from a run directory; expensive inputs only when needed."""
    from .. import data as data_mod
    from .. import rundir
    from ..config import load_config
    from ..evaluate import bundle_probs, evaluate_bundle
    from ..modeling import load_bundle

    run_dir = Path(run_dir)
    if not (run_dir / rundir.CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {rundir.CONFIG}); pass the directory "
                                "that `reflectlm train` wrote")
    cfg = load_config(run_dir / rundir.CONFIG)
    splits = data_mod.load_splits(cfg.data, cfg.train.seed, cfg.open_set)
    bundle = load_bundle(run_dir)
    batch, precision = cfg.train.eval_batch_size, cfg.train.precision
    out = (evaluate_bundle(bundle, splits.selection, batch_size=batch, precision=precision, quiet=quiet)
           if needs & {"selection_probs", "selection_metrics"} else None)
    embed = None
    if "embed_texts" in needs:
        from ..embed import embed_texts

        encoder = cfg.model.name if cfg.model.kind == "transformer" else "minilm"
        embed = lambda texts: embed_texts(list(texts), model=encoder, quiet=quiet)  # noqa: E731
    return build_context(cfg, splits.train, splits.selection, bundle.labels, artifacts=run_dir, needs=needs, cv=cv,
                         selection_out=out, embed=embed, quiet=quiet, wants=wants,
                         predict=lambda items: bundle_probs(bundle, list(items), batch_size=batch, precision=precision))


def diagnose(run_dir: str | Path, checks: list[str] | None = None, **kwargs) -> list[Finding]:
    """The findings of `run_diagnosis` (the library entry point: reflectlm.diagnose(run_dir))."""
    return run_diagnosis(run_dir, checks, **kwargs).findings


def run_diagnosis(run_dir: str | Path | None, checks: list[str] | None = None, *, cv: str = "fast", write: bool = True,
                  quiet: bool = True, ctx: Context | None = None) -> Diagnosis:
    """Run the chosen checks (default: all) on a run directory (or a ready Context); write
    findings.json into the run directory."""
    if cv not in ("fast", "full"):
        raise ValueError(f"cv must be 'fast' or 'full', not {cv!r}")
    names = list(checks) if checks else list(DIAGNOSTICS)
    instances = {name: get_check(name) for name in names}
    task = _task_of(ctx, run_dir)
    skipped = [{"check": n, "reason": f"does not apply to data.task = {task.name!r}: needs "
                                      f"{', '.join(missing(task, c))} (tasks/base.py capabilities)"}
               for n, c in instances.items() if not applies(task, c)]
    instances = {n: c for n, c in instances.items() if applies(task, c)}
    needs, wants = wanted(instances.values())
    if any(isinstance(c, BalanceAndData) for c in instances.values()):
        needs.add("embed_texts")
    if ctx is None:
        ctx = context_from_run(run_dir, needs, cv=cv, quiet=quiet, wants=wants)
    findings: list[Finding] = []
    failed, timings = [], {}
    for name, check in instances.items():
        t0 = time.perf_counter()
        try:
            ctx.need(*check.needs)
            findings += check.run(ctx)
        except Skip as e:
            skipped.append({"check": name, "reason": str(e)})
        except Exception as e:  # noqa: BLE001 - one failing check must not hide the others
            failed.append({"check": name, "error": f"{type(e).__name__}: {e}"})
        timings[name] = round(time.perf_counter() - t0, 3)
    findings.sort(key=lambda f: -f.severity)
    if write and run_dir is not None:
        record = {"findings": [f.to_json() for f in findings], "skipped": skipped, "failed": failed,
                  "checks": {n: c.params() for n, c in instances.items()}, "seconds": timings, "cv": ctx.cv}
        _write(Path(run_dir), record)
    return Diagnosis(findings, skipped, failed, timings, ctx.cv, ctx.selection_metrics)


def _task_of(ctx: Context | None, run_dir):
    """The task the checks run for: the context's, else the run directory's config."""
    if ctx is not None:
        return ctx.task
    from .. import rundir
    from ..config import load_config
    from ..tasks import get_task

    path = Path(run_dir) / rundir.CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {rundir.CONFIG}); pass the directory "
                                "that `reflectlm train` wrote")
    return get_task(load_config(path).data.task)


def _write(run_dir: Path, obj) -> None:
    from .. import rundir
    from ..findings import jsonable

    rundir.write_text(run_dir / rundir.FINDINGS, json.dumps(jsonable(obj), indent=2))


callable_module(__name__, diagnose)  # `reflectlm.diagnose(...)` calls diagnose() (see reflectlm.callable_module)
