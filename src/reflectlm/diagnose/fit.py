"""Over- and under-fitting from the per-epoch history: train vs selection, and where the peak was.

Reads the rows train.fit() writes to metrics.json (epoch, train_loss, train_accuracy,
selection_loss, selection_<metric>). The selection metric is the one the run selected on
(train_config["metric"] when its column is present), else the first present of
macro_f1 / entity_f1 / accuracy / weighted_f1, else selection_loss.

Kinds (one Finding each; [] when nothing is wrong, this module's convention):
  overfitting  the selection loss rose for >= `patience` epochs after its minimum, ending
               `min_rise` (relative) above it, while the train loss kept falling; or (metrics on
               the train-accuracy scale only) train accuracy - selection metric >= `max_gap` at the
               end and grew by >= `gap_growth` from its smallest value, with train accuracy at least
               `fits_train` (a model that has not fit its training data is not memorising it).
  underfitting the last epoch still improved train accuracy by >= `min_gain` and the selection
               metric by >= `min_gain` / 2, and both are below `low_score`: more epochs would help.
  peak_epoch   (info) the selection metric peaked >= max(2, a quarter of the epochs) before the
               end, and early stopping did not already stop there: early stopping would save compute.
No randomness: the same context gives the same findings whatever ctx.seed.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

from ..findings import OVERFITTING, PEAK_EPOCH, UNDERFITTING
from ..metric import get_metric
from .base import Context, Finding, Skip, stored_params

# Metrics on the same 0..1 scale as train accuracy. entity_f1 is not: train "accuracy" for NER
# is per sentence, so a gap against entity F1 says nothing about over-fitting.
_ACCURACY_LIKE = ("accuracy", "macro_f1", "weighted_f1")


class Fit:
    name = "fit"
    needs = ("history",)
    requires = ()

    def __init__(self, patience: int = 2, min_rise: float = 0.02, max_gap: float = 0.15, gap_growth: float = 0.05,
                 fits_train: float = 0.8, low_score: float = 0.9, min_gain: float = 0.01):
        # patience 2: one bad epoch is noise on a small selection split; two in a row is a trend.
        # min_rise 2%: below that a selection-loss "rise" is within epoch-to-epoch wobble.
        # max_gap 0.15 and gap_growth 0.05: fine-tuned models always fit train a little better; a
        # gap of 15 points that is still widening is memorisation.
        # fits_train 0.8: memorising shows as high train accuracy; at 0.4 a gap means a weak model
        # or a metric on another scale (macro F1 of a one-class predictor), not over-fitting.
        # low_score 0.9: a transformer fine-tuned to convergence fits its training data past 0.9.
        # min_gain 0.01: a point of accuracy in the last epoch is real progress, not noise.
        self.patience = patience
        self.min_rise = min_rise
        self.max_gap = max_gap
        self.gap_growth = gap_growth
        self.fits_train = fits_train
        self.low_score = low_score
        self.min_gain = min_gain

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx: Context) -> list[Finding]:
        ctx.need(*self.needs)
        c = self._curves(ctx)
        found = [self._overfitting(c), self._underfitting(c), self._peak(c, ctx)]
        return [f for f in found if f is not None]

    def _curves(self, ctx: Context) -> SimpleNamespace:
        """The history's columns as lists (NaN where a value is missing), and the best epoch."""
        rows = [r for r in ctx.history if isinstance(r, dict)]
        if len(rows) < 2:
            raise Skip(f"fit needs at least 2 epochs of history to see a trend; this run has {len(rows)}")
        metric = selection_metric(rows, ctx.task, (ctx.train_config or {}).get("metric"))
        if metric is None:
            raise Skip("the history has no selection_<metric> column (expected e.g. selection_macro_f1 or "
                       "selection_loss)")
        lower_better = not get_metric(metric).higher_is_better
        sel = _col(rows, f"selection_{metric}")
        sel_loss, tr_loss, tr_acc = _col(rows, "selection_loss"), _col(rows, "train_loss"), _col(rows, "train_accuracy")
        epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(rows)]
        best_i = _best(sel, lower_better)
        if best_i is None:
            raise Skip(f"selection_{metric} has no finite value in the history")
        base = {"metric": metric, "best_epoch": epochs[best_i], "last_epoch": epochs[-1],
                "best_value": sel[best_i], "last_value": _plain(sel[-1]),
                "curve": {"train_loss": _plain(tr_loss), "train_accuracy": _plain(tr_acc),
                          "selection_loss": _plain(sel_loss), f"selection_{metric}": _plain(sel)}}
        return SimpleNamespace(metric=metric, lower_better=lower_better, sel=sel, sel_loss=sel_loss, tr_loss=tr_loss,
                               tr_acc=tr_acc, E=len(rows), epochs=epochs, best_i=best_i, base=base)

    def _overfitting(self, c) -> Finding | None:
        # --- over-fitting, (a): selection loss turned up while train loss kept falling.
        over = {}
        m_i = _best(c.sel_loss, lower_better=True)
        if (m_i is not None and c.E - 1 - m_i >= self.patience
                and all(_ok(x) for x in (c.sel_loss[-1], c.tr_loss[-1], c.tr_loss[m_i]))):
            rise = (c.sel_loss[-1] - c.sel_loss[m_i]) / max(abs(c.sel_loss[m_i]), 1e-12)
            if rise >= self.min_rise and c.tr_loss[-1] < c.tr_loss[m_i]:
                over["selection_loss"] = {"min_epoch": c.epochs[m_i], "min": c.sel_loss[m_i], "last": c.sel_loss[-1],
                                          "relative_rise": rise, "train_loss_at_min": c.tr_loss[m_i],
                                          "train_loss_last": c.tr_loss[-1]}
        # --- over-fitting, (b): the train/selection gap is large and still widening.
        if c.metric in _ACCURACY_LIKE and all(_ok(a) and _ok(s) for a, s in zip(c.tr_acc, c.sel)):
            gap = [a - s for a, s in zip(c.tr_acc, c.sel)]
            if gap[-1] >= self.max_gap and gap[-1] - min(gap) >= self.gap_growth and c.tr_acc[-1] >= self.fits_train:
                over["gap"] = {"train_minus_selection": gap, "last": gap[-1], "growth": gap[-1] - min(gap)}
        if over:
            rise = over.get("selection_loss", {}).get("relative_rise", 0.0)
            growth = over.get("gap", {}).get("growth", 0.0)
            # The run keeps the best epoch's weights, so over-fitting costs compute and signals room for
            # regularisation rather than a worse model: 0.3 at the threshold, up to 0.8.
            sev = 0.3 + 0.5 * min(1.0, max(rise / 0.5, growth / 0.2))
            why = []
            if "selection_loss" in over:
                o = over["selection_loss"]
                why.append(f"selection loss rose {100 * o['relative_rise']:.0f}% after its minimum at epoch "
                           f"{o['min_epoch']} while train loss kept falling")
            if "gap" in over:
                why.append(f"the train-selection gap widened to {over['gap']['last']:.2f}")
            return Finding(
                check=self.name, kind=OVERFITTING, severity=sev,
                summary=f"The model over-fits: {' and '.join(why)}; the best {c.metric} was at epoch {c.epochs[c.best_i]}.",
                evidence=copy.deepcopy({**c.base, **over}))
        return None

    def _underfitting(self, c) -> Finding | None:
        # --- under-fitting: still improving at the end, and both scores still low.
        if c.E >= 2 and all(_ok(x) for x in (c.tr_acc[-1], c.tr_acc[-2], c.sel[-1], c.sel[-2])):
            tr_gain = c.tr_acc[-1] - c.tr_acc[-2]
            sel_gain = (c.sel[-2] - c.sel[-1]) if c.lower_better else (c.sel[-1] - c.sel[-2])
            sel_low = True if c.lower_better else c.sel[-1] < self.low_score
            # Half the train threshold for selection: a small selection split moves in coarse steps.
            if c.tr_acc[-1] < self.low_score and sel_low and tr_gain >= self.min_gain and sel_gain >= self.min_gain / 2:
                sev = 0.3 + 0.5 * min(1.0, max(tr_gain, sel_gain) / 0.1)
                return Finding(
                    check=self.name, kind=UNDERFITTING, severity=sev,
                    summary=(f"The model under-fits: after {c.E} epochs train accuracy is {c.tr_acc[-1]:.2f} and "
                             f"selection {c.metric} {c.sel[-1]:.3g}, both still improving in the last epoch; "
                             "train longer."),
                    evidence=copy.deepcopy({**c.base, "train_accuracy_gain_last_epoch": tr_gain,
                                            "selection_gain_last_epoch": sel_gain,
                                            "suggested_epochs": c.E + max(1, c.E // 2)}))
        return None

    def _peak(self, c, ctx: Context) -> Finding | None:
        # --- the peak came well before the end.
        after = c.E - 1 - c.best_i
        patience = (ctx.train_config or {}).get("early_stopping_patience")
        stopped_there = bool(patience) and after == int(patience)  # early stopping already cut the run here
        if after >= max(2, math.ceil(c.E / 4)) and not stopped_there:
            return Finding(
                check=self.name, kind=PEAK_EPOCH, severity=0.1 + 0.3 * after / c.E,
                summary=(f"Selection {c.metric} peaked at epoch {c.epochs[c.best_i]} of {c.epochs[-1]}; early stopping "
                         f"(patience 1-2) would have saved about {after} epochs of compute."),
                evidence=copy.deepcopy({**c.base, "epochs_after_peak": after,
                                        "suggested_early_stopping_patience": min(2, after - 1)}))
        return None


def selection_metric(rows: list[dict], task, configured: str | None = None) -> str | None:
    """Which selection_<metric> column to judge by: the configured one, then the task's usual one."""
    from ..tasks import get_task

    task = get_task(task)
    present = {k[len("selection_"):] for r in rows for k in r if k.startswith("selection_")}
    for m in [configured, task.default_metric, *task.metric_names, "accuracy", "weighted_f1", "loss"]:
        if m and m in present and any(_ok(_num(r.get(f"selection_{m}"))) for r in rows):
            return m
    return None


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _col(rows: list[dict], key: str) -> list[float]:
    return [_num(r.get(key)) for r in rows]


def _plain(x):
    # Missing values as None in evidence, so a Finding equals its own JSON round trip.
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x if _ok(x) else None


def _ok(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def _best(values: list[float], lower_better: bool) -> int | None:
    # First occurrence of the best finite value, as train.fit() keeps the first best epoch.
    best = None
    for i, v in enumerate(values):
        if _ok(v) and (best is None or (v < values[best] if lower_better else v > values[best])):
            best = i
    return best
