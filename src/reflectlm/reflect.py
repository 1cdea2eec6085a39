"""Reflect: turn findings into ranked improvement targets.

A target names the finding it answers, the actions that could fix it, the expected gain and the
evidence. The rules are the RULES table below, in one place:

    priority      = finding.severity * rule.weight
    expected_gain = priority * headroom          (headroom = the selection metric's, see metric.py)

`weight` says how much such findings usually cost and how directly they can be fixed (a confirmed
label-noise finding outranks a calibration one, which changes no prediction). Which actions answer
a finding, most promising first, is what the actions declare (their `addresses`, read through
actions.remedies()); a rule knows only its weight and its why. Later the planner multiplies in
learned action values (what worked on similar findings before); these rules are the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import findings as K
from . import rundir
from .findings import Finding, Target  # noqa: F401 - Target is re-exported: the type reflect returns


@dataclass(frozen=True)
class Rule:
    weight: float  # 0..1: how directly the actions fix it, how much it usually costs
    why: str


RULES: dict[str, Rule] = {
    # data and labels
    K.LABEL_ISSUES: Rule(1.0, "mislabelled training examples teach the model wrong answers; relabel or drop them"),
    K.HARD_TO_LEARN: Rule(0.7, "examples the model never learns are often mislabelled (data maps)"),
    K.AMBIGUOUS: Rule(0.3,
                      "ambiguous examples help generalisation; label smoothing keeps them from forcing overconfidence"),
    K.CLASS_IMBALANCE: Rule(0.6, "rare classes get too little weight in the loss; reweight or get more examples"),
    # near_duplicates (leakage between the user's files) has no rule: it is reported with the
    # champion's score on the de-duplicated selection part, and no round is spent on it - a
    # challenger trained on less data and judged on the same leaked split can only lose.
    K.LENGTH_OUTLIERS: Rule(0.2, "very short or long inputs are under-represented"),
    # held-out errors
    K.HIGH_ERROR_CLASS: Rule(0.8, "a class with a significantly higher error rate is where the metric is lost"),
    K.CONFUSED_PAIR: Rule(0.6, "two classes confused with each other often share mislabelled or borderline examples"),
    K.ERROR_KINDS: Rule(0.5, "missed and boundary errors shrink with more in-domain data and training"),
    K.CV_SPREAD: Rule(0.3, "a large spread across folds means the model is data-starved or unstable"),
    # generated outputs
    K.LENGTH_ERRORS: Rule(0.6, "outputs far shorter or longer than the references lose overlap; decoding's length "
                               "settings and training on well-sized answers fix them"),
    K.COPYING: Rule(0.7, "an output that copies its source is untranslated or extractive; learning from the "
                         "model's own better samples moves it off the copy"),
    K.REPETITION: Rule(0.6, "n-gram loops waste the output; a no-repeat constraint in decoding stops them"),
    K.UNSUPPORTED_CONTENT: Rule(0.5, "numbers and names the source never mentions are likely invented; preferring "
                                     "faithful samples over unfaithful ones trains them out"),
    K.WRONG_LANGUAGE: Rule(0.8, "an answer in the wrong language scores nothing; more training on the target "
                                "language fixes it"),
    # fit and optimisation
    K.OVERFITTING: Rule(0.6, "selection loss rises while training loss falls"),
    K.UNDERFITTING: Rule(0.7, "both training and selection scores are low and still improving"),
    K.PEAK_EPOCH: Rule(0.2, "the best epoch came early: stop there and save compute"),
    K.VANISHING_GRADIENTS: Rule(0.5, "some layers receive almost no gradient and barely learn"),
    K.VANISHING_UPDATES: Rule(0.5, "updates are tiny relative to the weights: the layer barely moves"),
    K.EXPLODING_GRADIENTS: Rule(0.8, "gradients explode: lower the rate, clip harder"),
    K.UNSTABLE_UPDATES: Rule(0.7, "updates are large relative to the weights: training is unstable"),
    K.GRADIENT_SPIKES: Rule(0.4, "sudden gradient spikes destabilise training"),
    K.DIVERGENCE: Rule(1.0, "the loss diverges: the learning rate is too high"),
    K.OSCILLATION: Rule(0.5, "the loss oscillates: the learning rate is probably too high"),
    K.PLATEAU: Rule(0.4, "the loss plateaus while still high"),
    K.LR_TOO_HIGH: Rule(0.8, "descent and update sizes say the learning rate is too high"),
    K.LR_TOO_LOW: Rule(0.6, "descent and update sizes say the learning rate is too low"),
    # confidence and robustness
    K.MISCALIBRATION: Rule(0.3,
                           "confidences do not match accuracy; temperature scaling fixes it without changing predictions"),
    K.NOISE_SENSITIVITY: Rule(0.5, "realistic typos and casing change predictions"),
    K.OUT_OF_SCOPE: Rule(0.9, "a message that belongs to no intent gets a confident wrong one; a detector on the "
                              "model's own features can turn it away"),
}


def reflect(findings: list[Finding], current_metric: float | None = None, min_severity: float = 0.05, *,
            metric=None, remedies: dict[str, list[str]] | None = None) -> list[Target]:
    """Ranked improvement targets (highest priority first) for the findings worth acting on.

    `metric` (metric.Metric, default macro-F1's shape: higher is better, in [0, 1]) turns
    current_metric into the headroom; `remedies` (finding kind -> action names, most promising
    first) defaults to what the ACTIONS table declares. Findings of kinds without a rule, or with
    severity below `min_severity`, yield no target.
    """
    from .metric import get_metric

    if remedies is None:
        from .actions import remedies as declared

        remedies = declared()
    headroom = (metric or get_metric("macro_f1")).headroom(current_metric)
    targets = []
    for f in findings:
        rule = RULES.get(f.kind)
        if rule is None or f.severity < min_severity:
            continue
        priority = f.severity * rule.weight
        targets.append(Target(f.kind, f.check, list(remedies.get(f.kind, [])), round(priority, 4),
                              round(priority * headroom, 4), rule.why, f.summary, _brief(f.evidence)))
    targets.sort(key=lambda t: (-t.priority, t.finding_kind))
    return targets


def _brief(evidence: dict, limit: int = 8) -> dict:
    """The evidence without long example lists, so targets.json stays readable."""
    out = {}
    for k, v in evidence.items():
        out[k] = v[:limit] if isinstance(v, list) else v
    return out


def reflect_run(run_dir, diagnosis) -> list[Target]:
    """Targets for a diagnosed run directory (`reflectlm diagnose`): reflect() with the headroom of
    the run's selection metric; writes targets.json beside findings.json."""
    import json
    from pathlib import Path

    from .atomic import write_text
    from .config import load_config
    from .findings import jsonable
    from .metric import get_metric

    run_dir = Path(run_dir)
    metric = get_metric(load_config(run_dir / rundir.CONFIG).selection_metric)
    value = (diagnosis.selection_metrics or {}).get(metric.name)
    targets = reflect(diagnosis.findings, value, metric=metric)
    write_text(run_dir / rundir.TARGETS, json.dumps(jsonable([t.to_json() for t in targets]), indent=2))
    return targets
