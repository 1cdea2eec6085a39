"""What every update action works on: the recipe of the next challenger, and the inputs it reads.

An action is a frozen dataclass whose fields are its parameters (JSON-able, all with defaults).
`propose(inputs, recipe)` picks the parameters from the findings (or returns None when the
action cannot help here, e.g. active learning without a pool); `apply(recipe, inputs)` returns a
new Recipe and never changes the one it was given, so a plan is a pure function of the champion's
recipe, the findings and the seed, and plan.json replays a round exactly.

An action that changes how much a round trains (more epochs, added examples, masked-LM steps)
also has `estimate(n, epochs, extra) -> (n, epochs, extra)`: the training examples, epochs and
examples processed outside fine-tuning once it has run, so the loop can leave out a plan that
would overrun loop.examples_budget before spending anything on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import rundir
from ..data import Dataset

SUPERIORITY = "superiority"
NON_INFERIORITY = "non_inferiority"


# The config sections a recipe carries (the run's [loop] is not the challenger's: rounds run it;
# [open_set] is: the detect_out_of_scope action turns it on, and later challengers keep it).
SECTIONS = ("data", "model", "train", "run", "open_set")


@dataclass
class Recipe:
    """Everything that determines the next challenger, before training.

    `config` is a validated Config; `set` changes one key through pydantic's validated assignment,
    so a bad value fails when the action applies, before any training. A dict is validated on the
    way in (recipe.json stores `tree`)."""

    config: Any  # config.Config: the data / model / train / run sections the challenger trains with
    train: Dataset  # training examples: labels may be fixed, examples dropped or added
    pool: Dataset | None = None  # unlabelled examples still in the pool (labels, if any, are not read)
    init_from: str | None = None  # a model bundle to start from instead of the base model (transfer)
    # Config overrides for this round's training only (dotted keys), not inherited by later
    # challengers when promoted: transfer's shorter schedule suits a warm start, not a fresh one.
    round_only: dict = field(default_factory=dict)
    post: list[dict] = field(default_factory=list)  # steps on the trained model: {"action", "params"}
    changes: list[dict] = field(default_factory=list)  # what each action did, for plan.json
    labels_used: int = 0  # oracle answers spent by this recipe
    extra_examples: int = 0  # training examples processed outside fine-tuning (e.g. MLM pre-training)

    def __post_init__(self) -> None:
        from ..config import Config, validate_tree

        if isinstance(self.config, dict):
            self.config = validate_tree({k: v for k, v in self.config.items() if k in SECTIONS})
        elif isinstance(self.config, Config):
            # Only the recipe's sections: a challenger trains with the default [loop], as recipe.json reads back.
            self.config = Config(**{k: getattr(self.config, k).model_copy(deep=True) for k in SECTIONS})
        else:
            raise TypeError(f"Recipe.config must be a Config (or its tree as a dict), not {type(self.config).__name__}")

    @property
    def tree(self) -> dict:
        """The config sections as plain data (what recipe.json stores)."""
        return self.config.model_dump(include=set(SECTIONS))

    def evolve(self, **kw) -> Recipe:
        """A copy with some fields replaced; the config is always copied (never shared)."""
        kw.setdefault("config", self.config.model_copy(deep=True))
        kw.setdefault("post", list(self.post))
        kw.setdefault("changes", list(self.changes))
        kw.setdefault("round_only", dict(self.round_only))
        return replace(self, **kw)

    def set(self, dotted: str, value: Any) -> Recipe:
        """A copy with one config key set, validated now (an error names the key and how to fix it)."""
        out = self.evolve()
        out.config = with_value(out.config, dotted, value)
        return out

    def get(self, dotted: str) -> Any:
        return get_value(self.config, dotted)


def get_value(config, dotted: str) -> Any:
    """config.a.b for "a.b"; an unknown key is an error that lists the valid ones."""
    from ..config import ConfigError

    node = config
    for p in dotted.split("."):
        if p not in type(node).model_fields:
            raise ConfigError(f"unknown config key {dotted!r}; valid keys here: {', '.join(type(node).model_fields)}")
        node = getattr(node, p)
    return node


def with_value(config, dotted: str, value: Any):
    """A deep copy of config with `dotted` set through pydantic's validated assignment."""
    from pydantic import ValidationError

    from ..config import ConfigError

    *parents, last = dotted.split(".")
    out = config.model_copy(deep=True)
    node = get_value(out, ".".join(parents)) if parents else out
    if last not in type(node).model_fields:
        raise ConfigError(f"unknown config key {dotted!r}; valid keys here: {', '.join(type(node).model_fields)}")
    try:
        setattr(node, last, value)
    except ValidationError as e:
        msg = "; ".join(err["msg"] for err in e.errors())
        raise ConfigError(f"{dotted} = {value!r} is not valid: {msg}") from None
    return out


@dataclass
class ActionInputs:
    """What actions may read. Fields are None when unavailable (an action then proposes nothing)."""

    task: Any  # tasks.Task (a data.task name is looked up)
    labels: list[str]
    seed: int = 0
    findings: list = field(default_factory=list)  # diagnose.Finding of the champion
    selection_metrics: dict | None = None  # the champion's
    history: list[dict] | None = None  # the champion's per-epoch rows
    predict: Callable[[list], Any] | None = None  # raw inputs (task.inputs) -> the champion's outputs
    embed: Callable[[list[str]], np.ndarray] | None = None  # texts -> (N, D) unit vectors
    oracle: Any = None  # oracle.Oracle: answers labels for pool examples
    champion_model: Path | None = None  # the champion's model bundle directory
    work_dir: Path | None = None  # the round directory, for artifacts (e.g. an adapted encoder)
    label_budget_left: int | None = None
    quiet: bool = True

    def __post_init__(self) -> None:
        from ..tasks import get_task

        self.task = get_task(self.task)

    def finding(self, *kinds: str):
        """The most severe finding of these kinds, or None."""
        found = [f for f in self.findings if f.kind in kinds]
        return max(found, key=lambda f: f.severity) if found else None


def champion_post(inputs: ActionInputs) -> set[str]:
    """Post-training steps (calibrate, prune) the champion's model has already been through."""
    import json

    if inputs.champion_model is None:
        return set()
    path = Path(inputs.champion_model).parent / rundir.METRICS
    if not path.is_file():
        return set()
    return set((json.loads(path.read_text()).get("post") or {}))


def warm_start(recipe: Recipe, source, lr_factor: float, epochs: int | None = None, **kw) -> Recipe:
    """The recipe starting from the model bundle `source` instead of the base model, with the
    learning rates (body and head) scaled by lr_factor and, if given, its own epochs. The schedule
    is for this round only (Recipe.round_only): a later challenger that starts fresh from the base
    model needs the full one. kw: other fields to replace (a new training set)."""
    only = {"train.lr": float(recipe.get("train.lr")) * lr_factor}
    if epochs:
        only["train.epochs"] = epochs
    head = float(recipe.get("train.head_lr") or 0.0)
    if head:
        only["train.head_lr"] = head * lr_factor
    return recipe.evolve(init_from=str(source), round_only={**recipe.round_only, **only}, **kw)


def params_of(action) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(action).items()}


def with_labels(ds: Dataset, new: dict[str, Any]) -> Dataset:
    """A copy of `ds` with the labels of some ids replaced."""
    out = ds.subset(range(len(ds)))
    out.labels = [new.get(i, y) for i, y in zip(out.ids, out.labels)]
    return out


def concat(a: Dataset, b: Dataset) -> Dataset:
    """Examples of `a` then `b` (same task); weights default to 1 where one side has none."""
    def w(ds):
        return ds.weights if ds.weights is not None else np.ones(len(ds), dtype=np.float32)

    weights = None if a.weights is None and b.weights is None else np.concatenate([w(a), w(b)]).astype(np.float32)
    return Dataset(task=a.task, ids=a.ids + b.ids, labels=list(a.labels) + list(b.labels), texts=a.texts + b.texts,
                   tokens=None if a.tokens is None else a.tokens + (b.tokens or [[] for _ in b.ids]),
                   weights=weights, confidence=None, source=a.source,
                   lines=(a.lines + b.lines) if a.lines and b.lines else [], warnings=list(a.warnings),
                   fields={k: list(v) + list(b.fields.get(k, [None] * len(b))) for k, v in a.fields.items()})


def drop_ids(ds: Dataset, ids: set[str]) -> Dataset:
    return ds.subset([i for i, x in enumerate(ds.ids) if x not in ids])


def class_probs(inputs: ActionInputs, ds: Dataset) -> np.ndarray | None:
    """The champion's (N, C) probabilities on a dataset of a task with one row per example, or None."""
    if inputs.predict is None or len(ds) == 0 or "class_probs" not in inputs.task.capabilities:
        return None
    return np.asarray(inputs.predict(inputs_of(inputs.task, ds)), dtype=np.float64)


def unsupported(inputs: ActionInputs, action) -> dict | None:
    """A recipe change that says why `action` skipped, when the task lacks what it requires."""
    from ..tasks import applies, missing

    if applies(inputs.task, action):
        return None
    return {"action": action.name, "skipped": f"not for data.task = {inputs.task.name!r} (needs "
                                               f"{', '.join(missing(inputs.task, action))})"}


def inputs_of(task, ds: Dataset) -> list:
    """The raw inputs of every example (what inputs.predict takes)."""
    return [task.inputs(ds, i) for i in range(len(ds))]


class Action:
    """Interface of an ACTIONS entry (documentation only: actions do not inherit from it).

    name: str                     the table key
    addresses: dict[str, int | None]
                                  finding kinds (findings.py constants) it answers -> its rank among
                                  the remedies proposed for that kind (0 = first; ties by name; the
                                  planner's prior drops x 0.8 per place down that list), or None: it
                                  helps with that kind (plan.json credits it) but is not proposed for it
    mode: str                     how its challenger is judged: SUPERIORITY (must be significantly
                                  better) or NON_INFERIORITY (size / speed / calibration: not worse
                                  than the margin)
    retrains: bool                False for steps on the champion's trained model (calibrate, prune)
    requires: tuple[str, ...]     task capabilities it needs (tasks/base.py); the planner offers it only
                                  for a task that has them, and apply() on another task changes nothing
    conflicts: tuple[str, ...]    optional: actions it cannot share a plan with (checked both ways)
    unprompted: (when, kind)      optional: proposed without a finding, as answering `kind` - when
                                  "listed" (named in loop.actions) or "oracle" (an oracle is configured)
    queries_oracle: bool          optional: each application asks the oracle for new labels, so the
                                  same parameters are not "the same plan again"; its changes' "ids"
                                  are the examples bought
    record: str                   optional (post steps): the round file transform()'s result is written to
    unavailable()                 optional classmethod: why it cannot run in this environment (an
                                  optional dependency missing: the command that installs it), or
                                  None; the planner records the reason when it skips the action
    estimate(n, epochs, extra)    optional: the training examples, epochs and examples processed
                                  outside fine-tuning once it has run (default: unchanged)
    propose(inputs, recipe)       classmethod: an instance with parameters fitted to the findings,
                                  or None when the action cannot apply
    apply(recipe, inputs)         a new Recipe; deterministic for inputs.seed; copes with an empty
                                  pool and one-class data (then changes nothing and says so)
    """
