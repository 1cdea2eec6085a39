"""The shared vocabulary of diagnose, reflect and the actions: Finding, Target and the finding kinds.

A check reports a Finding of one of the KINDS below; reflect turns findings into Targets; an
action declares the kinds it addresses. Kinds are named constants so that a typo is an error
where it is written (an unknown kind raises when the Finding is made, and the contract tests
check every rule and every action declaration), not a target that silently never fires.
This module imports nothing of the package: every layer may import it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# data and labels
LABEL_ISSUES = "label_issues"
HARD_TO_LEARN = "hard_to_learn"
AMBIGUOUS = "ambiguous"
CLASS_IMBALANCE = "class_imbalance"
NEAR_DUPLICATES = "near_duplicates"
LENGTH_OUTLIERS = "length_outliers"
# held-out errors
SELECTION_PERFORMANCE = "selection_performance"  # the summary row: severity 0, evidence only
HIGH_ERROR_CLASS = "high_error_class"
CONFUSED_PAIR = "confused_pair"
ERROR_KINDS = "error_kinds"  # the task's error-kind breakdown (NER: boundary / type / missed / spurious; QA: overlap)
CV_SPREAD = "cv_spread"
# generated outputs (diagnose/outputs.py)
LENGTH_ERRORS = "length_errors"  # empty, far too short or too long against the reference
COPYING = "copying"  # the output is largely the source: untranslated, or an extract for a summary
REPETITION = "repetition"  # n-gram loops
UNSUPPORTED_CONTENT = "unsupported_content"  # numbers and names the source never mentions
WRONG_LANGUAGE = "wrong_language"  # not in the language asked for
# fit and optimisation
OVERFITTING = "overfitting"
UNDERFITTING = "underfitting"
PEAK_EPOCH = "peak_epoch"
VANISHING_GRADIENTS = "vanishing_gradients"
VANISHING_UPDATES = "vanishing_updates"
EXPLODING_GRADIENTS = "exploding_gradients"
UNSTABLE_UPDATES = "unstable_updates"
GRADIENT_SPIKES = "gradient_spikes"
DIVERGENCE = "divergence"
OSCILLATION = "oscillation"
PLATEAU = "plateau"
LR_TOO_HIGH = "lr_too_high"
LR_TOO_LOW = "lr_too_low"
# confidence and robustness
MISCALIBRATION = "miscalibration"
NOISE_SENSITIVITY = "noise_sensitivity"
OUT_OF_SCOPE = "out_of_scope"  # messages of no intent answered with one (open_set.py)
# Not diagnosed: what an action answers when it is asked for rather than found necessary
# (an action's `unprompted` declaration names one of these).
MODEL_SIZE = "model_size"  # compression asked for in loop.actions
UNLABELLED_POOL = "unlabelled_pool"  # an oracle is configured: someone pays for labels

KINDS = frozenset(v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str))


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        import difflib

        near = difflib.get_close_matches(kind, sorted(KINDS), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ValueError(f"unknown finding kind {kind!r}; {hint}add it to reflectlm/findings.py, or use one of: "
                         f"{', '.join(sorted(KINDS))}")
    return kind


@dataclass
class Finding:
    check: str  # the DIAGNOSTICS name that produced it
    kind: str  # one of KINDS, e.g. HIGH_ERROR_CLASS, LABEL_ISSUES, EXPLODING_GRADIENTS
    severity: float  # 0 = nothing to act on ... 1 = the most serious this check can say
    summary: str  # one plain sentence a person reads first
    evidence: dict = field(default_factory=dict)  # JSON-able numbers, names, examples
    scores: dict[str, float] | None = None  # example id -> score in [0, 1] (higher = more suspect)
    split: str | None = None  # which split the scores refer to: "train" or "selection"

    def __post_init__(self) -> None:
        check_kind(self.kind)
        self.severity = float(min(1.0, max(0.0, self.severity)))
        if self.scores is not None:
            self.scores = {str(k): float(min(1.0, max(0.0, v))) for k, v in self.scores.items()}

    def to_json(self) -> dict:
        return jsonable(asdict(self))

    @classmethod
    def from_json(cls, d: dict) -> Finding:
        return cls(**d)


@dataclass
class Target:
    """A finding worth acting on, with the actions that address it (most promising first)."""

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


def jsonable(x: Any) -> Any:
    """Numpy scalars and arrays to plain Python; NaN / inf to None (JSON has neither)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
