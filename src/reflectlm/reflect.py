"""Reflect: turn findings into ranked improvement targets.

A target names the finding it answers, the actions that could fix it (by their ACTIONS names),
the expected gain and the evidence. The rules are the RULES table below, in one place:

    priority      = finding.severity * rule.weight
    expected_gain = priority * headroom          (headroom = 1 - current selection metric, or 1)

`weight` says how directly the actions address the finding and how much such findings usually
cost (a confirmed label-noise finding outranks a calibration one, which changes no prediction).
Actions are listed most promising first. Later the loop multiplies in learned action values
(what worked on similar findings before); these rules are the prior.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .diagnose.base import Finding

# Every action name the update stage knows (issue 4 builds them; the plan refers to them by name).
ACTION_NAMES = (
    "reweight_classes", "fix_labels", "drop_suspects", "active_learning", "self_training", "domain_pretraining",
    "adversarial_training", "augment_noise", "regularize", "tune_lr", "unfreeze", "layerwise_lr", "prune",
    "calibrate", "more_epochs", "early_stop", "transfer",
)


@dataclass(frozen=True)
class Rule:
    actions: tuple[str, ...]
    weight: float  # 0..1: how directly the actions fix it, how much it usually costs
    why: str


RULES: dict[str, Rule] = {
    # data and labels
    "label_issues": Rule(("fix_labels", "drop_suspects"), 1.0,
                         "mislabelled training examples teach the model wrong answers; relabel or drop them"),
    "hard_to_learn": Rule(("fix_labels", "drop_suspects"), 0.7,
                          "examples the model never learns are often mislabelled (data maps)"),
    "ambiguous": Rule(("regularize", "more_epochs"), 0.3,
                      "ambiguous examples help generalisation; label smoothing keeps them from forcing overconfidence"),
    "class_imbalance": Rule(("reweight_classes", "active_learning", "self_training"), 0.6,
                            "rare classes get too little weight in the loss; reweight or get more examples"),
    "near_duplicates": Rule(("drop_suspects",), 0.4,
                            "duplicates across splits inflate the selection metric (leakage)"),
    "length_outliers": Rule(("active_learning", "augment_noise"), 0.2,
                            "very short or long inputs are under-represented"),
    # held-out errors
    "high_error_class": Rule(("reweight_classes", "active_learning", "fix_labels", "self_training"), 0.8,
                             "a class with a significantly higher error rate is where the metric is lost"),
    "confused_pair": Rule(("fix_labels", "active_learning", "reweight_classes"), 0.6,
                          "two classes confused with each other often share mislabelled or borderline examples"),
    "ner_error_kinds": Rule(("more_epochs", "active_learning", "domain_pretraining"), 0.5,
                            "missed and boundary errors shrink with more in-domain data and training"),
    "cv_spread": Rule(("regularize", "active_learning"), 0.3,
                      "a large spread across folds means the model is data-starved or unstable"),
    # fit and optimisation
    "overfitting": Rule(("early_stop", "regularize", "augment_noise"), 0.6,
                        "selection loss rises while training loss falls"),
    "underfitting": Rule(("more_epochs", "tune_lr", "unfreeze", "domain_pretraining", "transfer"), 0.7,
                         "both training and selection scores are low and still improving"),
    "peak_epoch": Rule(("early_stop",), 0.2, "the best epoch came early: stop there and save compute"),
    "vanishing_gradients": Rule(("unfreeze", "layerwise_lr", "tune_lr"), 0.5,
                                "some layers receive almost no gradient and barely learn"),
    "vanishing_updates": Rule(("unfreeze", "tune_lr", "layerwise_lr"), 0.5,
                              "updates are tiny relative to the weights: the layer barely moves"),
    "exploding_gradients": Rule(("tune_lr", "regularize"), 0.8, "gradients explode: lower the rate, clip harder"),
    "unstable_updates": Rule(("tune_lr",), 0.7, "updates are large relative to the weights: training is unstable"),
    "gradient_spikes": Rule(("tune_lr", "regularize"), 0.4, "sudden gradient spikes destabilise training"),
    "divergence": Rule(("tune_lr",), 1.0, "the loss diverges: the learning rate is too high"),
    "oscillation": Rule(("tune_lr",), 0.5, "the loss oscillates: the learning rate is probably too high"),
    "plateau": Rule(("tune_lr", "more_epochs"), 0.4, "the loss plateaus while still high"),
    "lr_too_high": Rule(("tune_lr",), 0.8, "descent and update sizes say the learning rate is too high"),
    "lr_too_low": Rule(("tune_lr", "more_epochs"), 0.6, "descent and update sizes say the learning rate is too low"),
    # confidence and robustness
    "miscalibration": Rule(("calibrate", "regularize"), 0.3,
                           "confidences do not match accuracy; temperature scaling fixes it without changing predictions"),
    "noise_sensitivity": Rule(("augment_noise", "adversarial_training"), 0.5,
                              "realistic typos and casing change predictions"),
}

assert all(a in ACTION_NAMES for r in RULES.values() for a in r.actions), "RULES names an unknown action"


@dataclass
class Target:
    finding_kind: str
    check: str
    actions: list[str]
    priority: float
    expected_gain: float
    reason: str
    summary: str
    evidence: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def reflect(findings: list[Finding], current_metric: float | None = None, min_severity: float = 0.05) -> list[Target]:
    """Ranked improvement targets (highest priority first) for the findings worth acting on.

    Findings of kinds without a rule, or with severity below `min_severity`, yield no target.
    """
    headroom = 1.0 - current_metric if current_metric is not None else 1.0
    targets = []
    for f in findings:
        rule = RULES.get(f.kind)
        if rule is None or f.severity < min_severity:
            continue
        priority = f.severity * rule.weight
        targets.append(Target(f.kind, f.check, list(rule.actions), round(priority, 4), round(priority * headroom, 4),
                              rule.why, f.summary, _brief(f.evidence)))
    targets.sort(key=lambda t: (-t.priority, t.finding_kind))
    return targets


def _brief(evidence: dict, limit: int = 8) -> dict:
    """The evidence without long example lists, so targets.json stays readable."""
    out = {}
    for k, v in evidence.items():
        out[k] = v[:limit] if isinstance(v, list) else v
    return out
