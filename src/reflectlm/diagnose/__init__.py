"""Diagnose: what is wrong with a trained model, with evidence.

DIAGNOSTICS is the one table of checks (one file each). `diagnose(run_dir)` builds the inputs
the chosen checks need from a run directory, runs every check, records each skip (missing
input) and failure (never aborting the rest), writes findings.json and targets.json, and
returns the findings.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .balance import BalanceAndData
from .base import Context, Finding, Skip
from .calibration import Calibration
from .crossval import CrossValidation
from .descent import DescentPath
from .dynamics import DataMap
from .fit import Fit
from .gradients import GradientHealth
from .label_issues import LabelIssues
from .performance import HeldOutPerformance
from .robustness import Robustness

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
}

__all__ = ["DIAGNOSTICS", "Context", "Diagnosis", "Finding", "Skip", "context_from_run", "diagnose", "get_check",
           "run_diagnosis"]


@dataclass
class Diagnosis:
    findings: list[Finding]
    targets: list  # reflect.Target, ranked
    skipped: list[dict] = field(default_factory=list)  # {"check", "reason"}
    failed: list[dict] = field(default_factory=list)  # {"check", "error"}
    seconds: dict = field(default_factory=dict)  # check -> seconds
    cv: dict | None = None


def get_check(name: str, **params):
    try:
        return DIAGNOSTICS[name](**params)
    except KeyError:
        raise ValueError(f"unknown check {name!r}; valid checks: {', '.join(DIAGNOSTICS)}") from None


def context_from_run(run_dir: str | Path, needs: set[str], cv: str = "fast", quiet: bool = True) -> Context:
    """Load what the checks need from a run directory; expensive inputs only when needed."""
    import numpy as np

    from .. import data as data_mod
    from .. import runtime
    from ..config import load_config
    from ..evaluate import bundle_probs, evaluate_features
    from ..modeling import load_bundle
    from ..tasks import get_task

    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.toml); pass the directory "
                                "that `reflectlm train` wrote")
    cfg = load_config(run_dir / "config.toml")
    splits = data_mod.load_splits(cfg.data, cfg.train.seed)
    bundle = load_bundle(run_dir)
    task, labels = bundle.task, bundle.labels
    tmod = get_task(task)
    precision = runtime.resolve_precision(cfg.train.precision)
    pad_id = getattr(bundle.tokenizer, "pad_token_id", 0) or 0
    l2i = {n: i for i, n in enumerate(labels)}
    ctx = Context(task=task, labels=labels, train=splits.train, selection=splits.selection, seed=cfg.train.seed,
                  train_config=cfg.train.model_dump())
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        ctx.history = json.loads(metrics_path.read_text())["history"]
    if (run_dir / "dynamics.npz").is_file():
        with np.load(run_dir / "dynamics.npz") as d:
            ctx.dynamics = {k: d[k] for k in d.files}
    if (run_dir / "gradients.npz").is_file():
        with np.load(run_dir / "gradients.npz") as g:
            ctx.gradients = {k: g[k] for k in g.files}

    if needs & {"selection_probs", "selection_metrics"}:
        feats = tmod.encode(bundle.tokenizer, splits.selection, l2i, cfg.data.max_length)
        out = evaluate_features(bundle.model, splits.selection, feats, labels, pad_id, task, cfg.train.eval_batch_size,
                                precision, quiet)
        ctx.selection_probs, ctx.selection_metrics = out.probs, out.metrics

    ctx.predict_texts = lambda texts: bundle_probs(bundle, list(texts), batch_size=cfg.train.eval_batch_size,
                                                   precision=precision)
    if "embed_texts" in needs:
        from ..embed import embed_texts

        encoder = cfg.model.name if cfg.model.kind == "transformer" else "minilm"
        ctx.embed_texts = lambda texts: embed_texts(list(texts), model=encoder, quiet=quiet)
    if needs & {"oof_probs", "cv"}:
        from .crossval import out_of_fold

        ctx.oof_probs, ctx.cv = out_of_fold(splits.train, labels, task, mode=cv, folds=5, seed=cfg.train.seed,
                                            model=cfg.model.name if cfg.model.kind == "transformer" else "minilm",
                                            train_cfg=cfg.train, model_cfg=cfg.model, quiet=quiet)
    return ctx


def diagnose(run_dir: str | Path, checks: list[str] | None = None, **kwargs) -> list[Finding]:
    """The findings of `run_diagnosis` (the library entry point: reflectlm.diagnose(run_dir))."""
    return run_diagnosis(run_dir, checks, **kwargs).findings


def run_diagnosis(run_dir: str | Path | None, checks: list[str] | None = None, *, cv: str = "fast", write: bool = True,
                  quiet: bool = True, ctx: Context | None = None) -> Diagnosis:
    """Run the chosen checks (default: all) on a run directory (or a ready Context); write
    findings.json and targets.json into the run directory."""
    from ..reflect import reflect

    if cv not in ("fast", "full"):
        raise ValueError(f"cv must be 'fast' or 'full', not {cv!r}")
    names = list(checks) if checks else list(DIAGNOSTICS)
    instances = {name: get_check(name) for name in names}
    needs = {n for c in instances.values() for n in c.needs}
    if any(isinstance(c, BalanceAndData) for c in instances.values()):
        needs.add("embed_texts")
    if ctx is None:
        ctx = context_from_run(run_dir, needs, cv=cv, quiet=quiet)
    findings: list[Finding] = []
    skipped, failed, timings = [], [], {}
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
    metric = None
    if ctx.selection_metrics:
        metric = ctx.selection_metrics.get("entity_f1" if ctx.task == "ner" else "macro_f1")
    targets = reflect(findings, metric)
    if write and run_dir is not None:
        run_dir = Path(run_dir)
        record = {"findings": [f.to_json() for f in findings], "skipped": skipped, "failed": failed,
                  "checks": {n: c.params() for n, c in instances.items()}, "seconds": timings, "cv": ctx.cv}
        _write(run_dir / "findings.json", record)
        _write(run_dir / "targets.json", [t.to_json() for t in targets])
    return Diagnosis(findings, targets, skipped, failed, timings, ctx.cv)


def _write(path: Path, obj) -> None:
    from .base import _jsonable

    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2), encoding="utf-8")
    tmp.replace(path)


class _CallableModule(type(sys)):
    # `reflectlm.diagnose` is this package and the public function (see train.py for why).
    def __call__(self, *args, **kwargs):
        return diagnose(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
