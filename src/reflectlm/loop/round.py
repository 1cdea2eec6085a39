"""One round: diagnose -> reflect -> plan -> apply -> train -> judge -> record.

`run_round(Round(...))` runs the STEPS in order. Each step is a function of the one Round object:
it reads what the earlier steps left there and adds its own results, so a step can be tested
alone. A step that ends the round early (no applicable plan, a plan that changes nothing) sets
`rnd.outcome`; otherwise `record` does, with the next State read back from disk as --resume
reads it. The challenger builds on the base round (the champion, or a promising rejected
challenger: diagnosed on the data it was trained on) and is always tested against the champion.

Round 0 (`baseline`) trains the config as given; it is the first champion.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import rundir
from ..actions import ACTIONS, SUPERIORITY, ActionInputs, Recipe
from ..config import Config
from ..data import Dataset, Splits
from ..findings import jsonable
from ..metric import Metric, get_metric
from ..rundir import read_json, round_dir, write_json
from . import state as states
from .challenger import embedder, evaluate, predictor, train_round
from .planner import choose_plans, rejected_on_base
from .state import State

# Called with "<round>:after_<step>" after each step (and "<round>:before_decision") - a seam, not
# a feature: the kill-and-resume test adds a hook that kills the process at a chosen point.
CHECKPOINTS: list[Callable[[str], None]] = []


def checkpoint(point: str) -> None:
    for hook in CHECKPOINTS:
        hook(point)


def say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


@dataclass
class Challenger:
    """One of the round's challengers (loop.parallel of them): its plan, what it trained on and how
    it compared. With one challenger its directory is the round's own; with several, challengers/<k>/
    until the kept one's files move up to the round (judge)."""

    k: int
    plan: list
    addressed: list[str]
    dir: Path
    recipe: Recipe | None = None
    no_op: bool = False
    metrics: dict | None = None
    seen: int = 0
    chall_out: Any = None
    result: Any = None  # compare.Comparison, at the level Holm's step-down tested it
    holm: dict | None = None


@dataclass
class Round:
    """Round r's inputs, and what its steps found and made, in step order."""

    r: int
    run_dir: Path
    cfg: Config
    splits: Splits  # train and selection (no test split: it is read only after the last round)
    state: State  # the loop after the finished rounds
    oracle: Any = None
    pool: Dataset | None = None
    quiet: bool = True
    started: float = field(default_factory=time.time)
    # diagnose
    base_out: Any = None  # evaluate.Outputs of the base round's model on the selection split
    champ_out: Any = None  # ... of the champion's (the same object when the base is the champion)
    predict: Callable | None = None  # texts -> the base model's probabilities
    embed: Callable | None = None  # texts -> (N, D) unit vectors
    findings: list = field(default_factory=list)
    # reflect
    targets: list = field(default_factory=list)
    # plan
    start: Recipe | None = None  # what the challenger starts from
    inputs: ActionInputs | None = None
    plan: list = field(default_factory=list)  # the kept challenger's (after judge; before it, the best plan's)
    ranking: list[dict] = field(default_factory=list)
    addressed: list[str] = field(default_factory=list)
    plans: list = field(default_factory=list)  # [(plan, addressed)]: the loop.parallel best, best first
    # apply
    recipe: Recipe | None = None
    challengers: list[Challenger] = field(default_factory=list)
    # train
    metrics: dict | None = None
    seen: int = 0
    bundle: Any = None
    chall_out: Any = None
    # judge
    result: Any = None  # compare.Comparison
    promoted: bool = False
    chained: bool = False
    reason: str = ""
    outcome: State | str | None = None  # the next State, or why the loop stops

    @property
    def dir(self) -> Path:
        return round_dir(self.run_dir, self.r)

    @property
    def base_dir(self) -> Path:
        return round_dir(self.run_dir, self.state.base)

    @property
    def metric(self) -> Metric:
        return get_metric(self.cfg.selection_metric)


def run_round(rnd: Round) -> State | str:
    for step in STEPS:
        step(rnd)
        if rnd.outcome is not None:
            return rnd.outcome
        checkpoint(f"{rnd.r}:after_{step.__name__}")
    raise AssertionError("record() sets the outcome")  # unreachable: a round always ends in record


# --------------------------------------------------------------------------- the steps


def diagnose(rnd: Round) -> None:
    """Evaluate the base round's model (and the champion's) and run the checks on it: findings.json."""
    from ..diagnose import run_diagnosis
    from ..modeling import load_bundle

    if rnd.dir.exists():
        shutil.rmtree(rnd.dir)
    rnd.dir.mkdir(parents=True)
    cfg, state = rnd.cfg, rnd.state
    base_model = load_bundle(rnd.base_dir / rundir.MODEL)
    rnd.base_out = evaluate(base_model, rnd.splits.selection, cfg)
    rnd.champ_out = rnd.base_out if state.base == state.champion else evaluate(
        load_bundle(round_dir(rnd.run_dir, state.champion) / rundir.MODEL), rnd.splits.selection, cfg)
    rnd.predict = predictor(base_model, cfg)
    rnd.embed = embedder(cfg)
    rnd.findings = run_diagnosis(rnd.dir, cfg.loop.checks or None, ctx=context(rnd), write=True,
                                 quiet=rnd.quiet).findings


def reflect(rnd: Round) -> None:
    """Findings -> ranked targets (reflect.RULES, the remedies the actions declare): targets.json."""
    from ..reflect import reflect as rank

    rnd.targets = rank(rnd.findings, rnd.metric.of(rnd.base_out.metrics), metric=rnd.metric)
    rundir.write_text(rnd.dir / rundir.TARGETS, json.dumps(jsonable([t.to_json() for t in rnd.targets]), indent=2))


def plan(rnd: Round) -> None:
    """Choose the plan within what is left of the budgets; none applicable ends the loop."""
    cfg, state, lc = rnd.cfg, rnd.state, rnd.cfg.loop
    rnd.start = start_recipe(state)
    rnd.inputs = action_inputs(rnd)
    left = None if lc.examples_budget is None else lc.examples_budget - state.examples_trained
    seconds_left = rate = None
    if lc.time_budget_s is not None:
        # Rounds so far, diagnosis and evaluation included, give the run's cost per training example.
        spent = sum(d["seconds"] for d in state.decisions) + (time.time() - rnd.started)
        seconds_left = lc.time_budget_s - spent
        rate = sum(d["seconds"] for d in state.decisions) / max(1, state.examples_trained)
    rnd.plans, rnd.ranking = choose_plans(
        rnd.targets, rnd.inputs, rnd.start, cfg, rnd.run_dir, rejected_on_base(rnd.run_dir, state), rnd.r,
        lc.parallel, examples_left=left, seconds_left=seconds_left, seconds_per_example=rate,
        chained=state.chained)
    if rnd.plans:
        rnd.plan, rnd.addressed = rnd.plans[0]
        for k, (p, addressed) in enumerate(rnd.plans):
            say(rnd.quiet, f"round {rnd.r}: {'plan' if len(rnd.plans) == 1 else f'challenger {k}: plan'} "
                + " + ".join(a.name for a in p) + f" (for {', '.join(addressed)})")
        return
    shutil.rmtree(rnd.dir)
    if any("loop.examples_budget" in row.get("skipped", "") for row in rnd.ranking):
        rnd.outcome = (f"compute budget spent: no applicable plan fits in the {left} training examples left of "
                       f"{lc.examples_budget}")
    elif any("loop.time_budget_s" in row.get("skipped", "") for row in rnd.ranking):
        rnd.outcome = (f"time budget spent: no applicable plan fits in the {seconds_left:.0f} s left of "
                       f"{lc.time_budget_s:.0f} s")
    else:
        rnd.outcome = "no applicable action left to try"


def apply(rnd: Round) -> None:
    """Apply each plan to the start recipe: plan.json (per challenger). A plan that changes nothing
    is recorded, not trained; when every plan changes nothing the round ends here."""
    multi = len(rnd.plans) > 1
    if not rnd.plans:  # a round built by hand (tests): its one plan
        rnd.plans = [(rnd.plan, rnd.addressed)]
    rnd.challengers = []
    for k, (plan_k, addressed) in enumerate(rnd.plans):
        cdir = rnd.dir / rundir.CHALLENGERS / str(k) if multi else rnd.dir
        cdir.mkdir(parents=True, exist_ok=True)
        # Artifacts (an adapted encoder) stay in the challenger's own folder: recipes name them by path.
        inputs = dataclasses.replace(rnd.inputs, work_dir=cdir) if multi else rnd.inputs
        recipe = rnd.start
        for action in plan_k:
            recipe = action.apply(recipe, inputs)
        steps = [{"action": a.name, "params": a.params(), "addresses": sorted(set(a.addresses) & set(addressed))}
                 for a in plan_k]
        write_json(cdir / rundir.PLAN, {"actions": steps, "ranking": rnd.ranking, "addressed": addressed,
                                        "changes": recipe.changes})
        rnd.challengers.append(Challenger(k, plan_k, addressed, cdir, recipe, no_op=unchanged(rnd.start, recipe)))
    live = [c for c in rnd.challengers if not c.no_op]
    first = live[0] if live else rnd.challengers[0]
    rnd.plan, rnd.addressed, rnd.recipe = first.plan, first.addressed, first.recipe
    if not live:
        if multi:
            _write_round_plan(rnd, first)
        _no_op(rnd)


def _write_round_plan(rnd: Round, kept: Challenger) -> None:
    """Several challengers: the round's plan.json is the kept one's, with every challenger listed."""
    plan_json = read_json(kept.dir / rundir.PLAN)
    plan_json["kept"] = kept.k
    plan_json["challengers"] = [{"challenger": c.k, "dir": str(c.dir.relative_to(rnd.dir)),
                                 "actions": [a.name for a in c.plan], "addressed": c.addressed,
                                 "no_op": c.no_op} for c in rnd.challengers]
    write_json(rnd.dir / rundir.PLAN, plan_json)


def _no_op(rnd: Round) -> None:
    # e.g. active learning with a person as the oracle who has not answered yet: training the
    # same recipe again would only spend compute.
    state, m = rnd.state, rnd.metric.name
    what = "; ".join(f"{c['action']}: {c.get('skipped') or 'no change'}" for c in rnd.recipe.changes)
    queued = (rnd.run_dir / rundir.LABEL_QUEUE).is_file()
    reason = "the plan changed nothing (" + what + ")" + (
        "; examples wait in label_queue.csv for `reflectlm label import`" if queued else "") + "; not trained"
    decision = {"round": rnd.r, "promoted": False, "reason": reason, "champion_round": state.champion,
                "selection": rnd.champ_out.metrics[m], "champion_selection": rnd.champ_out.metrics[m],
                "seconds": time.time() - rnd.started, "examples_trained": 0, "labels_used": 0, "acquired": {},
                "actions": [a.name for a in rnd.plan], "addressed": rnd.addressed, "no_op": True,
                "built_on": state.base, "next_base": state.base}
    write_json(rnd.dir / rundir.DECISION, decision)
    states.record(rnd.run_dir, decision, rnd.cfg)
    say(rnd.quiet, f"round {rnd.r}: {reason}")
    rnd.outcome = State(state.decisions + [decision], state.champion, state.recipe, state.examples_trained,
                        state.labels_used, state.acquired, state.base)


def train(rnd: Round) -> None:
    """Train the challengers (loop.backend: here one after another, or as Ray tasks side by side)
    and evaluate each on the selection split. A plan is all-retraining or all-post (the planner
    keeps them apart): calibrate / prune work on the base round's trained model."""
    from .backends import train_challengers

    live = [c for c in rnd.challengers if not c.no_op]
    train_challengers(rnd, live)
    rnd.metrics, rnd.seen, rnd.chall_out = live[0].metrics, live[0].seen, live[0].chall_out


def judge(rnd: Round) -> None:
    """The paired A/B test of each challenger against the champion on the selection split, Holm's
    step-down over them when there are several, and the one kept: the best that passes (else the
    best, which a later round may build on): compare.json."""
    lc = rnd.cfg.loop
    live = [c for c in rnd.challengers if not c.no_op] or [
        Challenger(0, rnd.plan, rnd.addressed, rnd.dir, rnd.recipe, metrics=rnd.metrics, seen=rnd.seen,
                   chall_out=rnd.chall_out)]  # a round built by hand (tests): its one challenger
    for c in live:
        c.result = ab_test(rnd, c, lc.alpha)
    if len(live) > 1:
        holm_step_down(rnd, live)
    passed = [c for c in live if c.result.promote]
    kept = min(passed or live, key=lambda c: (-(c.result.difference if c.result.difference is not None
                                                 else -np.inf), c.k))
    rnd.plan, rnd.addressed, rnd.recipe = kept.plan, kept.addressed, kept.recipe
    rnd.metrics, rnd.chall_out, rnd.result = kept.metrics, kept.chall_out, kept.result
    if len(rnd.challengers) > 1:
        _keep(rnd, kept, live)
    write_json(rnd.dir / rundir.COMPARE, _compare_json(rnd, kept, live))
    rnd.promoted = bool(rnd.result.promote)
    rnd.chained = not rnd.promoted and promising(rnd)
    rnd.reason = rnd.result.reason
    if rnd.chained:
        depth = chain_depth(rnd.state) + 1
        rnd.reason += (f"; but {rnd.result.difference:+.4f} >= {lc.chain_min_gain}: the next round builds on this one "
                       f"({depth} of at most {lc.chain} in a row) and is again tested against the champion")


def ab_test(rnd: Round, c: Challenger, alpha: float):
    """One challenger against the champion at level alpha (compare.compare via the task)."""
    from ..tasks import get_task

    lc, cfg = rnd.cfg.loop, rnd.cfg
    # A round built on a promising rejected challenger carries that challenger's unproven change:
    # whatever its own actions are, it must prove a gain over the champion. Non-inferiority (a
    # calibration, verified labels) on top would let the rejected change through untested.
    chained = rnd.state.chained
    mode = SUPERIORITY if chained else c.plan[0].mode
    result = get_task(cfg.data.task).ab_test(
        rnd.champ_out.probs, c.chall_out.probs, rnd.splits.selection, rnd.splits.labels, rnd.metric,
        mode=mode, alpha=alpha, margin=lc.margin, n_bootstrap=lc.n_bootstrap,
        seed=cfg.train.seed + rnd.r, allow_class_regressions=lc.allow_class_regressions, mcnemar_test=lc.mcnemar)
    if chained and c.plan[0].mode != SUPERIORITY:
        result = dataclasses.replace(result, reason=result.reason + (
            f" (judged for superiority, not {c.plan[0].mode.replace('_', '-')}: it builds on round "
            f"{rnd.state.base}, whose change was not proven)"))
    # A post step fitted on the selection split (calibrate) judges itself out of sample too; its
    # refusal overrides a test that its own fitting data passed.
    refused = [(name, info["refused"]) for name, info in ((c.metrics or {}).get("post") or {}).items()
               if isinstance(info, dict) and info.get("refused")]
    if refused and result.promote:
        why = "; ".join(f"{name}: {text}" for name, text in refused)
        result = dataclasses.replace(result, promote=False,
                                     reason=result.reason.replace("; promoted", "") + f"; but {why}; rejected")
    return result


def holm_step_down(rnd: Round, live: list[Challenger]) -> None:
    """Holm's procedure over the m challengers' gates: in order of their gate p-values, the i-th
    (0-based) is tested again at alpha / (m - i) - its CI at that level - and the first that fails
    ends it; the rest are not promoted. Each challenger's result becomes the one at its level; its
    Holm-adjusted p-value (compare.holm) is recorded beside it. Holm controls the family-wise
    error at alpha over the m comparisons: promoting the best of several challengers tested at
    alpha each would promote a useless one far more often than alpha. References: Holm 1979,
    "A simple sequentially rejective multiple test procedure"."""
    from ..compare import gate_p_value, gate_passed, holm

    alpha, m = rnd.cfg.loop.alpha, len(live)
    p = [gate_p_value(c.result) for c in live]
    adjusted = holm(p)
    order = sorted(range(m), key=lambda i: (p[i], live[i].k))
    going = True
    for rank, i in enumerate(order):
        c, level = live[i], alpha / (m - rank)
        tag = f"challenger {c.k} of {m}, Holm level {level:.4g}"
        if going:
            if m - rank > 1:
                c.result = ab_test(rnd, c, level)
            # The step-down goes on while the tests reject their nulls; a guardrail's veto rejects
            # the challenger, not the hypothesis, so the next one is still tested.
            going = gate_passed(c.result)
            c.result = dataclasses.replace(c.result, reason=f"{tag}: {c.result.reason}")
        else:
            c.result = dataclasses.replace(c.result, promote=False, reason=(
                f"{tag}: {c.result.reason.replace('; promoted', '')}; not promoted: Holm's step-down stopped at a "
                "more significant challenger").replace("promoted; not promoted", "not promoted"))
        c.holm = {"p_gate": p[i], "p_holm": adjusted[i], "rank": rank, "level": level, "family": m,
                  "passed": bool(c.result.promote)}


def _keep(rnd: Round, kept: Challenger, live: list[Challenger]) -> None:
    """Several challengers: each one's compare.json in its folder; the kept one's trained files move
    up to the round (what the next round reads), the others' weights are not kept."""
    for c in live:
        write_json(c.dir / rundir.COMPARE, {**c.result.to_json(), "holm": c.holm})
        if c is not kept and (c.dir / rundir.MODEL).exists() and not rnd.cfg.loop.keep_models:
            shutil.rmtree(c.dir / rundir.MODEL)
    for name in rundir.TRAINED_FILES:
        if (kept.dir / name).exists():
            (kept.dir / name).replace(rnd.dir / name)
    _write_round_plan(rnd, kept)


def _compare_json(rnd: Round, kept: Challenger, live: list[Challenger]) -> dict:
    out = rnd.result.to_json()
    # Out-of-scope numbers beside the gate's metric, where either model has a detector (open_set.py).
    sides = {"champion": (rnd.champ_out.metrics or {}).get("open_set"),
             "challenger": ((kept.chall_out.metrics if kept.chall_out is not None else None) or {}).get("open_set")}
    if any(sides.values()):
        out["open_set"] = sides
    if len(live) > 1:
        out["holm"] = {**kept.holm, "kept": kept.k, "alpha": rnd.cfg.loop.alpha, "challengers": [
            {"challenger": c.k, "actions": [a.name for a in c.plan], "difference": c.result.difference,
             "ci_low": c.result.ci_low, "ci_high": c.result.ci_high, "promote": bool(c.result.promote), **c.holm}
            for c in live]}
    return out


def record(rnd: Round) -> None:
    """Keep what the next rounds need, write decision.json (last: the round is finished), update the
    champion link and the store."""
    state, recipe, r, m = rnd.state, rnd.recipe, rnd.r, rnd.metric.name
    if rnd.promoted or rnd.chained:
        states.save_recipe(rnd.dir, recipe)
    elif (rnd.dir / rundir.MODEL).exists() and not rnd.cfg.loop.keep_models:
        shutil.rmtree(rnd.dir / rundir.MODEL)  # a rejected challenger's weights are not kept
    acquired = {}  # oracle answers: gold labels, kept even if this round is rejected (any challenger's)
    trained = [c for c in rnd.challengers if not c.no_op] or [Challenger(0, rnd.plan, rnd.addressed, rnd.dir, recipe,
                                                                          seen=rnd.seen)]
    for c in trained:
        idx = {i: k for k, i in enumerate(c.recipe.train.ids)}
        for ch in c.recipe.changes:
            if getattr(ACTIONS.get(ch.get("action")), "queries_oracle", False):
                acquired.update({i: c.recipe.train.labels[idx[i]] for i in ch.get("ids", []) if i in idx})
    decision = {"round": r, "promoted": rnd.promoted, "reason": rnd.reason,
                "champion_round": r if rnd.promoted else state.champion,
                "selection": rnd.chall_out.metrics[m], "champion_selection": rnd.champ_out.metrics[m],
                "decided_by": rnd.result.metric, "seconds": time.time() - rnd.started,
                "examples_trained": sum(c.seen for c in trained), "labels_used": sum(c.recipe.labels_used for c in trained),
                "acquired": acquired, "actions": [a.name for a in rnd.plan],
                "addressed": rnd.addressed, "built_on": state.base,
                "next_base": r if rnd.promoted or rnd.chained else state.champion}
    if len(rnd.challengers) > 1:  # several challengers: which one was kept, and how each fared under Holm
        decision["challengers"] = [{"challenger": c.k, "actions": [a.name for a in c.plan], "no_op": c.no_op,
                                    **({} if c.no_op else _challenger_row(c, m))}
                                   for c in rnd.challengers]
        decision["kept"] = next(c.k for c in trained if c.recipe is recipe)
    checkpoint(f"{r}:before_decision")
    write_json(rnd.dir / rundir.DECISION, decision)
    if rnd.promoted:
        rundir.set_champion(rnd.run_dir, r)
    states.record(rnd.run_dir, decision, rnd.cfg)
    say(rnd.quiet, f"round {r}: {rnd.reason}")
    # The next state is read back from disk, as --resume reads it: one derivation for both.
    rnd.outcome = states.state_after(rnd.run_dir, rnd.cfg, rnd.splits, rnd.pool, state.decisions + [decision])


def _challenger_row(c: Challenger, m: str) -> dict:
    # One trained challenger beside no-op ones: no correction (a family of one); its own test decides.
    from ..compare import gate_p_value

    holm = c.holm or {"p_gate": gate_p_value(c.result), "p_holm": gate_p_value(c.result), "passed": bool(c.result.promote)}
    return {"selection": c.chall_out.metrics[m], "difference": c.result.difference, "p_gate": holm["p_gate"],
            "p_holm": holm["p_holm"], "passed": holm["passed"]}


STEPS = (diagnose, reflect, plan, apply, train, judge, record)


# --------------------------------------------------------------------------- what the steps use


def start_recipe(state: State) -> Recipe:
    """What the next challenger starts from: the base round's recipe (the champion's, or a promising
    rejected round's), plus oracle answers bought in rejected rounds (they are still gold labels)."""
    base = state.recipe.evolve()
    have = set(base.train.ids)
    missing = {i for i in state.acquired if i not in have}
    if missing and base.pool is not None:
        from ..actions.base import concat, drop_ids

        got = base.pool.subset([k for k, i in enumerate(base.pool.ids) if i in missing])
        got.labels = [state.acquired[i] for i in got.ids]
        base = base.evolve(train=concat(base.train, got), pool=drop_ids(base.pool, set(got.ids)))
    return base


def action_inputs(rnd: Round) -> ActionInputs:
    cfg, state = rnd.cfg, rnd.state
    budget_left = None if cfg.loop.label_budget is None else cfg.loop.label_budget - state.labels_used
    return ActionInputs(task=cfg.data.task, labels=rnd.splits.labels, seed=cfg.train.seed + rnd.r,
                        findings=rnd.findings, selection_metrics=rnd.base_out.metrics,
                        history=read_json(rnd.base_dir / rundir.METRICS).get("history"), predict=rnd.predict,
                        embed=rnd.embed, oracle=rnd.oracle, champion_model=rnd.base_dir / rundir.MODEL, work_dir=rnd.dir,
                        label_budget_left=budget_left, quiet=rnd.quiet)


def context(rnd: Round):
    """The diagnosis inputs for the base round's model (diagnose.build_context, as `reflectlm diagnose`)."""
    from ..diagnose import DIAGNOSTICS, build_context, wanted
    from ..tasks import applies, get_task

    task = get_task(rnd.cfg.data.task)
    checks = [DIAGNOSTICS[c]() for c in (rnd.cfg.loop.checks or list(DIAGNOSTICS))]
    needs, wants = wanted(c for c in checks if applies(task, c))  # what the run's task's checks read
    return build_context(rnd.cfg, rnd.state.recipe.train, rnd.splits.selection, rnd.splits.labels,
                         artifacts=rnd.base_dir, needs=needs, wants=wants, cv=rnd.cfg.loop.cv,
                         selection_out=rnd.base_out, predict=rnd.predict, embed=rnd.embed,
                         train_config=rnd.state.recipe.config.train.model_dump(), quiet=rnd.quiet)


def unchanged(a: Recipe, b: Recipe) -> bool:
    same_w = (a.train.weights is None and b.train.weights is None) or (
        a.train.weights is not None and b.train.weights is not None and np.array_equal(a.train.weights, b.train.weights))
    return (a.tree == b.tree and a.train.ids == b.train.ids and a.train.labels == b.train.labels and same_w
            and not b.post and b.init_from == a.init_from)


def chain_depth(state: State) -> int:
    """How many promising rejected rounds in a row the current base stands on."""
    depth, r = 0, state.base
    while r != state.champion:
        depth += 1
        r = state.decisions[r].get("built_on", state.champion)
    return depth


def promising(rnd: Round) -> bool:
    """A rejected challenger worth building on: a retraining plan judged by superiority whose
    estimate beats the champion by at least chain_min_gain, and beats the round it was built on."""
    lc, result, state, m = rnd.cfg.loop, rnd.result, rnd.state, rnd.metric
    if lc.chain <= 0 or not rnd.plan or rnd.plan[0].mode != SUPERIORITY or not rnd.plan[0].retrains:
        return False
    if result.difference is None or not result.difference >= lc.chain_min_gain or chain_depth(state) >= lc.chain:
        return False
    return state.base == state.champion or m.better(m.of(rnd.chall_out.metrics), m.of(rnd.base_out.metrics))


# --------------------------------------------------------------------------- round 0 and replay


def baseline(run_dir: Path, cfg: Config, splits: Splits, pool: Dataset | None, quiet: bool) -> State:
    """Round 0: train the config as given; the first champion."""
    t0 = time.time()
    rd = round_dir(run_dir, 0)
    rd.mkdir(parents=True, exist_ok=True)
    say(quiet, "round 0: training the baseline")
    recipe = Recipe(cfg, train=splits.train, pool=pool)
    write_json(rd / rundir.PLAN, {"actions": [], "ranking": [], "addressed": [], "changes": []})
    metrics, seen, _ = train_round(rd, cfg, recipe, splits, None, quiet)
    states.save_recipe(rd, recipe)
    decision = {"round": 0, "promoted": True, "reason": "baseline: the first champion", "champion_round": 0,
                "selection": metrics["selection"][cfg.selection_metric], "seconds": time.time() - t0,
                "examples_trained": seen, "labels_used": 0, "actions": []}
    checkpoint("0:before_decision")
    write_json(rd / rundir.DECISION, decision)
    rundir.set_champion(run_dir, 0)
    states.record(run_dir, decision, cfg)
    return State([decision], 0, recipe, seen, 0, {})


def replay(run_dir: str | Path, r: int, work_dir: str | Path | None = None) -> Recipe:
    """Apply round r's plan.json again to what its challenger started from (the recipe of the
    round it was built on - the champion, or a promising rejected challenger - and the findings in
    its findings.json); the result equals what round r trained on.
    Artifacts (e.g. an adapted encoder) go to work_dir (default: a temporary folder)."""
    import tempfile

    from ..actions import from_plan
    from ..actions.oracle import ColumnOracle
    from ..config import load_config
    from ..findings import Finding
    from ..modeling import load_bundle
    from ..rundir import RunError
    from .pool import load_data, make_oracle

    run_dir = Path(run_dir)
    rd = round_dir(run_dir, r)
    if r < 1 or not (rd / rundir.PLAN).is_file():
        raise RunError(f"{rd} has no plan.json to replay; pass a round >= 1 of a loop run")
    cfg = load_config(run_dir / rundir.CONFIG)
    data = load_data(cfg)
    oracle = make_oracle(cfg, run_dir, data.hidden)
    if oracle is not None and (rd / rundir.DECISION).is_file():
        # Answer exactly what the round was answered (a queue may have grown since; asking it
        # again would also rewrite the run's label_queue.csv).
        oracle = ColumnOracle(read_json(rd / rundir.DECISION).get("acquired", {}))
    decisions = [read_json(round_dir(run_dir, k) / rundir.DECISION) for k in range(r)]
    state = states.state_after(run_dir, cfg, data.splits, data.pool, decisions)
    rnd = Round(r, run_dir, cfg, data.splits, state, oracle, data.pool, quiet=True)
    champ = load_bundle(rnd.base_dir / rundir.MODEL)  # what round r diagnosed and built on
    rnd.base_out = evaluate(champ, data.splits.selection, cfg)
    rnd.predict, rnd.embed = predictor(champ, cfg), embedder(cfg)
    rnd.findings = [Finding.from_json(f) for f in read_json(rd / rundir.FINDINGS)["findings"]]
    inputs = action_inputs(rnd)
    inputs.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="replay-"))
    recipe = start_recipe(state)
    for action in from_plan(read_json(rd / rundir.PLAN)["actions"]):
        recipe = action.apply(recipe, inputs)
    return recipe
