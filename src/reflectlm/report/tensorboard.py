"""TensorBoard event files for a run directory: `<run>/tb/`, readable by the stock reader.

Layout (TensorBoard shows each folder as a run):

    tb/            per round: selection metric of the challenger and the champion, the A/B
                   difference, its interval and McNemar p, promoted (0/1); the champion's test
                   metrics; the champion's confusion matrix as an image
    tb/round_NN/   per telemetry step: train loss, learning rate, gradient norm, weight norm and
                   update ratio per layer group, and a histogram of the per-layer gradient norms;
                   per epoch: train / selection loss and the selection metric

The whole folder is rewritten on every call (from the run directory, which is the record), so
calling it after each round never duplicates points.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import rundir
from .runs import Run, _num, load_run


def write_tensorboard(run_dir: str | Path) -> Path:
    """Write `<run_dir>/tb/` from the run directory; returns the folder."""
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    run = load_run(run_dir)
    tb = run.path / rundir.TENSORBOARD
    if tb.exists():
        shutil.rmtree(tb)
    tb.mkdir(parents=True)
    metric = run.metric

    with SummaryWriter(log_dir=str(tb)) as w:
        before = run.champion_before()
        for r in run.rounds:
            sel = r.selection(metric)
            if sel is not None:
                w.add_scalar(f"round/selection_{metric}", sel, r.number)
            if r.number > 0:
                c = r.compare or {}
                champ = before.get(r.number)
                if champ is not None:
                    w.add_scalar(f"round/champion_{metric}", champ, r.number)
                for key in ("difference", "ci_low", "ci_high", "p_bootstrap"):
                    if _num(c.get(key)) is not None:
                        w.add_scalar(f"round/{key}", _num(c[key]), r.number)
                p = _num((c.get("mcnemar") or {}).get("p_value"))
                if p is not None:
                    w.add_scalar("round/p_mcnemar", p, r.number)
                if r.promoted is not None:
                    w.add_scalar("round/promoted", float(r.promoted), r.number)
        last = run.rounds[-1].number if run.rounds else 0
        for name, value in (run.test_metrics() or {}).items():
            if _num(value) is not None:
                w.add_scalar(f"champion/test_{name}", _num(value), last)
        img = _confusion_image(run)
        if img is not None:
            w.add_image("champion/confusion", img, last, dataformats="HWC")
        w.add_text("run", _summary_text(run), last)

    for r in run.rounds:
        with SummaryWriter(log_dir=str(tb / f"round_{r.number:02d}")) as w:
            g = r.gradients()
            if g and "step" in g:
                steps = [int(s) for s in np.asarray(g["step"]).tolist()]
                layers = [str(x) for x in np.asarray(g.get("layers", [])).tolist()]
                for key in ("loss", "lr"):
                    if key in g:
                        for s, v in zip(steps, np.asarray(g[key], dtype=float)):
                            if np.isfinite(v):
                                w.add_scalar(f"train/{key}", float(v), s)
                for key in ("grad_norm", "weight_norm", "update_ratio"):
                    if key not in g:
                        continue
                    arr = np.asarray(g[key], dtype=float)  # (S, L)
                    for j, layer in enumerate(layers):
                        for s, v in zip(steps, arr[:, j]):
                            if np.isfinite(v):
                                w.add_scalar(f"{key}/{layer}", float(v), s)
                    if key == "grad_norm":
                        for s, row in zip(steps, arr):
                            row = row[np.isfinite(row)]
                            if row.size:
                                w.add_histogram("grad_norm_per_layer", row, s)
            for h in (r.metrics or {}).get("history") or []:
                e = int(h.get("epoch", 0))
                for key, value in h.items():
                    if key in ("epoch", "seconds") or _num(value) is None:
                        continue
                    w.add_scalar(f"epoch/{key}", _num(value), e)
    return tb


def _confusion_image(run: Run):
    """(H, W, 3) uint8 of the champion's confusion heat map (test split, else selection)."""
    import io

    import numpy as np

    _, cur, _ = run.champion_eval()
    conf, labels = cur.get("confusion"), cur.get("labels")
    if not conf or not labels or len(conf) != len(labels):
        return None
    from PIL import Image

    from .plots import confusion_heatmap, to_png

    png = to_png(confusion_heatmap(conf, labels, title="champion"), dpi=80)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _summary_text(run: Run) -> str:
    sel = run.champion.selection(run.metric) if run.champion else None
    return (f"**{run.name}** ({run.kind}, {run.task}): champion round {run.champion_round}, "
            f"selection {run.metric} {sel if sel is None else round(sel, 4)}; "
            f"{len(run.challengers)} challenger rounds; stopped: {run.stop_reason() or '-'}")
