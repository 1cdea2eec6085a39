"""What every export shares: the run it starts from, the paired non-inferiority gate, the
refusal and the record (export.py for the encoders, export_lm.py for the generators)."""

from __future__ import annotations

from pathlib import Path

from .. import rundir
from ..atomic import write_json
from .predictor import resolve_model_dir


class ExportRefused(RuntimeError):
    """The candidate is worse than the champion by more than the margin; export.json has the evidence."""


def _source(run: Path):
    """The champion's model directory and the run's config (whose selection split gates the export)."""
    from ..config import load_config
    from ..modeling import ModelError

    model_dir = resolve_model_dir(run)
    if not (run / rundir.CONFIG).is_file():
        raise ModelError(f"{run} has no {rundir.CONFIG}: export scores the candidate against the champion on the "
                         "run's selection split, so pass the run directory (not a bare bundle)")
    return model_dir, load_config(run / rundir.CONFIG)


def _gate(cfg, selection, labels: list[str], champ_probs, probs, margin: float, n_bootstrap: int) -> dict:
    """The loop's own paired A/B test (the task's ab_test over compare.py), in non-inferiority mode."""
    from ..metric import gated
    from ..tasks import get_task

    lc = cfg.loop
    result = get_task(cfg.data.task).ab_test(
        champ_probs, probs, selection, labels, gated(cfg.selection_metric, cfg.data.task), mode="non_inferiority",
        alpha=lc.alpha, margin=margin, n_bootstrap=n_bootstrap, seed=cfg.train.seed,
        allow_class_regressions=lc.allow_class_regressions, mcnemar_test=lc.mcnemar)
    return result.to_json()


def _write_json(path: Path, obj) -> None:
    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if not k.startswith("_")}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    write_json(path, clean(obj))
