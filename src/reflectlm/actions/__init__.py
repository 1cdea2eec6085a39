"""Update: concrete actions that change the next challenger's data, config or model.

ACTIONS is the one table (one file each). Each action declares what the planner needs to know
about it (see base.Action): the finding kinds it addresses and how it ranks among their remedies,
its judging mode, whether it retrains, what it conflicts with, its cost estimate. Nothing outside
an action's file and its table entry names it. To add an action: write its file, add it here.

A plan is a JSON list of {"action", "params"}; `from_plan` rebuilds the actions from it, so
plan.json replays a round.
"""

from __future__ import annotations

from .active_learning import ActiveLearning
from .adversarial_training import AdversarialTraining
from .augment_noise import AugmentNoise
from .base import NON_INFERIORITY, SUPERIORITY, ActionInputs, Recipe
from .calibrate import Calibrate
from .correct_noise import CorrectNoise
from .detect_out_of_scope import DetectOutOfScope
from .domain_pretraining import DomainPretraining
from .drop_suspects import DropSuspects
from .early_learning import EarlyLearning
from .early_stop import EarlyStop
from .fix_labels import FixLabels
from .layerwise_lr import LayerwiseLR
from .more_epochs import MoreEpochs
from .preference_optimisation import PreferenceOptimisation
from .prune import Prune
from .regularize import Regularize
from .rejection_sampling import RejectionSampling
from .reweight_classes import ReweightClasses
from .self_training import SelfTraining
from .transfer import Transfer
from .tune_hparams import TuneHparams
from .tune_decoding import TuneDecoding
from .tune_lr import TuneLR
from .unfreeze import Unfreeze

# The table's order is the order a plan applies its actions, whatever their ranking: labels are
# fixed before suspects are dropped (drop_suspects spares what fix_labels relabelled; the other way
# round it drops every suspect and leaves fix_labels nothing), data is complete before noisy copies
# are made of it and before class weights are set, and post-training steps come last.
ACTIONS = {
    "fix_labels": FixLabels,
    "drop_suspects": DropSuspects,
    "correct_noise": CorrectNoise,
    "early_learning": EarlyLearning,
    "active_learning": ActiveLearning,
    "self_training": SelfTraining,
    "rejection_sampling": RejectionSampling,
    "augment_noise": AugmentNoise,
    "reweight_classes": ReweightClasses,
    "domain_pretraining": DomainPretraining,
    "adversarial_training": AdversarialTraining,
    "regularize": Regularize,
    "tune_lr": TuneLR,
    "unfreeze": Unfreeze,
    "layerwise_lr": LayerwiseLR,
    "more_epochs": MoreEpochs,
    "early_stop": EarlyStop,
    # After every other change to the data and the training set-up: the search tunes the recipe
    # the challenger will train with.
    "tune_hparams": TuneHparams,
    "transfer": Transfer,
    "calibrate": Calibrate,
    # A generator's model is trained on its preferences before its decoding is tuned.
    "preference_optimisation": PreferenceOptimisation,
    "tune_decoding": TuneDecoding,
    "detect_out_of_scope": DetectOutOfScope,
    "prune": Prune,
}

__all__ = ["ACTIONS", "NON_INFERIORITY", "SUPERIORITY", "ActionInputs", "Recipe", "apply_order", "conflict",
           "from_plan", "get_action", "remedies", "unavailable"]


def remedies() -> dict[str, list[str]]:
    """Finding kind -> the actions the planner proposes for it, most promising first (their declared
    rank; ties by name). An action that addresses a kind with rank None is not proposed for it."""
    out: dict[str, list[tuple[int, str]]] = {}
    for name, cls in ACTIONS.items():
        for kind, rank in cls.addresses.items():
            if rank is not None:
                out.setdefault(kind, []).append((rank, name))
    return {kind: [name for _, name in sorted(pairs)] for kind, pairs in out.items()}


def conflict(a, b) -> bool:
    """Whether two actions cannot run in one plan (either one says so)."""
    return a.name in getattr(b, "conflicts", ()) or b.name in getattr(a, "conflicts", ())


def apply_order(plan: list) -> list:
    """The plan's actions in the order they are applied: their order in ACTIONS."""
    order = {name: k for k, name in enumerate(ACTIONS)}
    return sorted(plan, key=lambda a: order[a.name])


def unavailable(name: str) -> str | None:
    """Why an action cannot run in this environment (e.g. an optional dependency is missing, with
    the command that installs it), or None. Declared by the action (base.Action.unavailable)."""
    check = getattr(ACTIONS[name], "unavailable", None)
    return check() if check is not None else None


def get_action(name: str, **params):
    from ..config import ConfigError

    try:
        cls = ACTIONS[name]
    except KeyError:
        import difflib

        near = difflib.get_close_matches(name, list(ACTIONS), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ConfigError(f"unknown action {name!r}; {hint}valid actions: {', '.join(sorted(ACTIONS))}") from None
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    try:
        return cls(**params)
    except TypeError as e:
        raise ConfigError(f"action {name!r}: {e}; its parameters are {', '.join(cls.__dataclass_fields__)}") from None


def from_plan(plan: list[dict]) -> list:
    return [get_action(step["action"], **step.get("params", {})) for step in plan]
