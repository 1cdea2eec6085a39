"""Plan: which actions the next challenger gets.

Candidates are the actions the targets list (reflect: the findings, ranked by RULES, with the
remedies the actions declare) plus any action declared `unprompted` whose condition holds (an
action that asks the oracle ranks level with the best remedy while label budget is left). Each is
scored by a Thompson draw from its value posterior (prior: the rules' expected gain, x 0.8 per
place down the finding's remedies; data: the gains measured in this workspace's store). The best
applicable one leads; up to loop.max_actions - 1 others join if judged the same way (mode,
retrains), not in conflict and at least half as promising. A plan applies in the ACTIONS table's
order. This module holds no action names: it reads what the actions declare (actions/base.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import store
from ..actions import ACTIONS, SUPERIORITY, ActionInputs, Recipe, apply_order, conflict, get_action, unavailable
from ..config import Config, ConfigError
from ..rundir import CHALLENGERS, PLAN, read_json, round_dir
from ..tasks import applies
from .state import State


def validate_actions(cfg: Config) -> None:
    """Name errors in the [loop] action settings before anything is spent."""
    lc = cfg.loop
    bad = sorted((set(lc.actions) | set(lc.exclude_actions) | set(lc.action_params)) - set(ACTIONS))
    if bad:
        raise ConfigError(f"loop.actions / exclude_actions / action_params name unknown actions {bad}; "
                         f"valid: {', '.join(ACTIONS)}")
    for name, params in lc.action_params.items():
        get_action(name, **params)  # raises with the valid parameter names


def plan_cost(plan: list, recipe: Recipe) -> int:
    """Training examples a plan will process (an upper estimate made before it runs): its epochs
    over the training set plus what its actions process on their own; post-only plans train nothing."""
    if not plan or not plan[0].retrains:
        return 0
    n, epochs, extra = len(recipe.train), int(recipe.get("train.epochs")), 0
    for action in plan:
        if hasattr(action, "estimate"):
            n, epochs, extra = action.estimate(n, epochs, extra)
    return int(n * epochs + extra)


def _candidates(targets: list, inputs: ActionInputs, cfg: Config) -> tuple[dict[str, float], dict[str, list[str]]]:
    """action -> prior expected gain, and action -> the finding kinds it would answer."""
    lc = cfg.loop
    # Only what the run's task can take (each action declares the capabilities it requires).
    allowed = {a for a in set(lc.actions or ACTIONS) - set(lc.exclude_actions) if applies(inputs.task, ACTIONS[a])}
    prior: dict[str, float] = {}
    kinds: dict[str, list[str]] = {}
    for t in targets:
        for j, a in enumerate(t.actions):  # most promising first (the actions' declared ranks)
            if a not in allowed:
                continue
            g = t.expected_gain * 0.8**j
            prior[a] = max(prior.get(a, 0.0), g)
            kinds.setdefault(a, []).append(t.finding_kind)
    for name, cls in ACTIONS.items():
        when, kind = getattr(cls, "unprompted", (None, None))
        if name in prior:
            continue
        if (when == "listed" and name in lc.actions) or (when == "oracle" and inputs.oracle is not None
                                                         and name in allowed):
            prior[name], kinds[name] = 0.001, [kind]  # asked for, not diagnosed: a round is worth it
    # Labels the user budgeted for are bought early: the oracle's answers are kept whatever the
    # round's verdict (they are gold labels), so every later round trains on them; and a round that
    # only adds verified labels is judged by non-inferiority, the one kind of round a small selection
    # split can accept. So while budget is left, asking ranks level with the most promising diagnosed
    # remedy (the Thompson draw decides between them) instead of last.
    budget_left = inputs.label_budget_left is None or inputs.label_budget_left > 0
    asking = [a for a in prior if getattr(ACTIONS[a], "queries_oracle", False)]
    if inputs.oracle is not None and budget_left and asking and len(asking) < len(prior):
        best = max(v for a, v in prior.items() if a not in asking)
        for a in asking:
            prior[a] = max(prior[a], best)
    return prior, kinds


def choose_plans(targets: list, inputs: ActionInputs, recipe: Recipe, cfg: Config, run_dir: Path,
                 rejected: set[str], r: int, k: int = 1, examples_left: int | None = None,
                 seconds_left: float | None = None, seconds_per_example: float | None = None,
                 chained: bool = False) -> tuple[list[tuple[list, list[str]]], list[dict]]:
    """The k best plans for round r (loop.parallel challengers), best first: plan j is led by the
    best-ranked applicable action that no earlier plan uses, joined by up to loop.max_actions - 1
    others judged the same way (mode, retrains), not in conflict and at least half as promising. The
    plans together must fit what is left of loop.examples_budget (each must fit loop.time_budget_s:
    challengers run side by side). Returns ([(actions in the order they apply, the finding kinds
    they address)], the ranking).
    chained: the round builds on a promising rejected challenger, so it is judged for superiority
    (loop.round.ab_test) and only actions that can prove a gain are tried."""
    lc = cfg.loop
    validate_actions(cfg)
    prior, kinds = _candidates(targets, inputs, cfg)
    learned = store.gains(run_dir.parent, cfg.data.task)
    rng = np.random.default_rng([cfg.train.seed, r])
    ranking = []
    for a in sorted(prior):
        obs = [g for k_ in sorted(set(kinds[a])) for g, _ in learned.get((k_, a), [])]
        mean, sd = store.posterior(prior[a], obs)
        draw = float(rng.normal(mean, sd)) if lc.exploration == "thompson" else mean
        ranking.append({"action": a, "finding_kinds": kinds[a], "prior": round(prior[a], 5), "observed": len(obs),
                        "observed_mean": float(np.mean(obs)) if obs else None, "posterior_mean": round(mean, 5),
                        "posterior_sd": round(sd, 5), "score": round(draw, 5)})
    ranking.sort(key=lambda x: (-x["score"], x["action"]))
    proposed = _proposed(ranking, inputs, recipe, lc, rejected, chained)
    plans: list[tuple[list, list[str]]] = []
    used: set[str] = set()
    left = examples_left
    for j in range(k):
        plan: list = []
        for row, action in proposed:
            if row["action"] in used:
                continue
            cost = plan_cost(apply_order(plan + [action]), recipe)
            why = None
            if left is not None and cost > left:
                why = (f"would process about {cost} training examples; {left} are left of "
                       "loop.examples_budget")
            elif seconds_left is not None and seconds_per_example and cost * seconds_per_example > seconds_left:
                why = (f"would take about {cost * seconds_per_example:.0f} s at this run's "
                       f"{seconds_per_example * 1000:.1f} ms per example; {seconds_left:.0f} s are left of "
                       "loop.time_budget_s")
            if why is not None:
                row.setdefault("skipped", why)
                continue
            if plan:
                lead = plan[0]
                if (action.mode != lead.mode or action.retrains != lead.retrains or len(plan) >= lc.max_actions
                        or any(conflict(action, p) for p in plan) or row["score"] < 0.5 * ranking[0]["score"]):
                    continue
            plan.append(action)
            row["chosen"] = True
            if k > 1:
                row["challenger"] = j
        if not plan:
            break
        used |= {a.name for a in plan}
        if left is not None:
            left -= plan_cost(apply_order(plan), recipe)
        addressed = sorted({kd for a in plan for kd in kinds.get(a.name, [])})
        # Ranked to be chosen, applied in the table's order (e.g. fix labels before dropping suspects).
        plans.append((apply_order(plan), addressed))
    return plans, ranking


def _proposed(ranking: list[dict], inputs: ActionInputs, recipe: Recipe, lc, rejected: set[str],
              chained: bool) -> list[tuple[dict, object]]:
    """(row, action) for the ranked actions that apply here and were not already rejected on this
    base, with loop.action_params applied; the others' rows say why they were skipped."""
    proposed = []
    for row in ranking:
        action = ACTIONS[row["action"]].propose(inputs, recipe)
        if action is None:
            row["skipped"] = unavailable(row["action"]) or "does not apply here"
            continue
        if lc.action_params.get(action.name):
            action = get_action(action.name, **{**action.params(), **lc.action_params[action.name]})
        if chained and action.mode != SUPERIORITY:
            row["skipped"] = ("this round builds on a rejected challenger and must prove a gain over the champion; "
                              f"a {action.mode.replace('_', '-')} action cannot")
            continue
        fresh = getattr(action, "queries_oracle", False) and inputs.oracle is not None  # new examples each time
        if json.dumps([action.name, action.params()], sort_keys=True) in rejected and not fresh:
            row["skipped"] = "the same plan was already tried on this base since the champion last changed"
            continue
        proposed.append((row, action))
    return proposed


def rejected_on_base(run_dir: Path, state: State) -> set[str]:
    """Plans already tried on the current base since the champion last changed: the same findings
    would propose them again. (A plan rejected on the champion may still be tried on a promising
    challenger's data, e.g. a second cleaning pass.)"""
    out = set()
    for d in state.decisions[state.champion + 1:]:
        if d.get("built_on", d["champion_round"]) != state.base:
            continue
        rd = round_dir(run_dir, d["round"])
        # With loop.parallel > 1 every challenger's plan was tried, not only the one kept.
        for path in [rd / PLAN, *sorted(rd.glob(f"{CHALLENGERS}/*/{PLAN}"))]:
            for a in read_json(path)["actions"]:
                out.add(json.dumps([a["action"], a["params"]], sort_keys=True))
    return out
