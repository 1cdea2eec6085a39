"""The selection metric: one object that early stopping, the A/B gate, reflect's headroom and the
loop's stop rules all read, so they cannot disagree about what "better" means.

    m = get_metric(cfg.selection_metric)
    m.of(metrics)            # its value in a metrics dict (tasks/*.metrics computes them from predictions)
    m.better(new, old)       # early stopping, "beats the round it was built on"
    m.reached(value, target) # loop.target
    m.headroom(value)        # reflect: expected_gain = priority * headroom
    m.gate                   # what compare.py resamples for the A/B test, or None

A metric without a gate cannot decide a promotion: compare.py tests accuracy and macro-F1, entity
F1 (sentences resampled) and the mean of per-example scores (a question's F1 or exact match)
paired, per example; there is no paired test of weighted F1 or of the mean loss there. The loop
refuses such a metric before round 0 instead of judging challengers by another metric than the
one the run selects epochs by. Which metrics a task computes is the task's (metric_names).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    gate: str | None  # the metric compare.py resamples in the A/B test; None: no paired test of it
    bounded: bool = True  # in [0, 1]: 1 - value is the headroom

    def of(self, metrics: dict) -> float:
        return float(metrics[self.name])

    def better(self, new: float, old: float | None) -> bool:
        if old is None:
            return True
        return new > old if self.higher_is_better else new < old

    def reached(self, value: float, target: float | None) -> bool:
        if target is None:
            return False
        return value >= target if self.higher_is_better else value <= target

    def headroom(self, value: float | None) -> float:
        """How much there is to gain (scales the rules' expected gains); 1 where it is not known."""
        if value is None or not self.bounded:
            return 1.0
        return 1.0 - value if self.higher_is_better else value


METRICS = {
    "accuracy": Metric("accuracy", True, gate="accuracy"),
    "macro_f1": Metric("macro_f1", True, gate="macro_f1"),
    "weighted_f1": Metric("weighted_f1", True, gate=None),
    "entity_f1": Metric("entity_f1", True, gate="entity_f1"),
    "f1": Metric("f1", True, gate="f1"),  # extractive QA: the mean of the questions' token F1
    "exact_match": Metric("exact_match", True, gate="exact_match"),  # QA: the share of exact answers
    # generation (fractions in [0, 1]): summarisation's per-example ROUGE means, translation's corpus
    # chrF (resampled from sentence statistics) and BLEU (reported; no paired test of it here)
    "rouge_l": Metric("rouge_l", True, gate="rouge_l"),
    "rouge_1": Metric("rouge_1", True, gate="rouge_1"),
    "rouge_2": Metric("rouge_2", True, gate="rouge_2"),
    "chrf": Metric("chrf", True, gate="chrf"),
    "bleu": Metric("bleu", True, gate=None),
    "loss": Metric("loss", False, gate=None, bounded=False),
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; valid metrics: {', '.join(METRICS)}") from None


def gated(name: str, task) -> Metric:
    """The metric if the loop's A/B gate can decide by it; otherwise an error that says what to use.
    task: the run's Task (or its name), whose metric_names say what it computes."""
    m = get_metric(name)
    if m.gate is None:
        from .tasks import get_task

        usable = [k for k in get_task(task).metric_names if METRICS[k].gate]
        from .config import ConfigError

        raise ConfigError(f"train.metric = {name!r} cannot decide promotions in the loop: the A/B test compares "
                         f"{' or '.join(usable)} per example, paired, and has no paired test of {name}; set "
                         f"train.metric = {usable[-1]!r} (or leave it unset) for `reflectlm run`. "
                         f"`reflectlm train` accepts {name!r}.")
    return m
