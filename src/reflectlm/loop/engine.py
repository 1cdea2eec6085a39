"""improve(): round after round, keeping only what a paired test shows helps, until a stop rule fires.

Round 0 trains the baseline; each later round is round.run_round (diagnose -> reflect -> plan ->
apply -> train -> judge -> record). The test split is read once, by finish(), after the last round.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import rundir, store
from ..config import Config, ConfigError
from ..metric import gated
from ..rundir import read_json, round_dir, write_json
from . import backends, processes
from . import state as states
from .challenger import evaluate
from .planner import validate_actions
from .pool import load_data, make_oracle
from .round import Round, baseline, run_round, say
from .state import State


@dataclass
class LoopResult:
    run_dir: Path
    champion_round: int
    stop_reason: str
    summary: dict


def improve(cfg: Config, output_dir: str | Path | None = None, *, resume: bool = False, quiet: bool | None = None,
            config_path: str | Path | None = None, feedback: str | Path | None = None) -> LoopResult:
    """Run (or resume) the loop; returns the run directory, the champion round and why it stopped.
    feedback: a production store (`reflectlm serve`) whose corrections and texts join this run's data.
    Under `accelerate launch` every process calls it and gets the result; the main process runs the
    loop and the others train with it (processes.py). loop.backend / loop.parallel: backends.py."""
    from .. import runtime

    quiet = cfg.run.quiet if quiet is None else quiet
    runtime.set_threads(cfg.train.threads)
    session_start = time.time()
    validate(cfg)
    if not runtime.is_main_process():  # under accelerate launch: train what the main process decides
        return processes.follow()
    try:
        with backends.session(cfg):  # loop.backend = "ray": connected for the run
            result = _improve(cfg, output_dir, resume, quiet, config_path, feedback, session_start)
    except Exception as e:
        processes.release(error=f"{type(e).__name__}: {e}")
        raise
    processes.release(result)
    return result


def _improve(cfg: Config, output_dir, resume: bool, quiet: bool, config_path, feedback, session_start: float
             ) -> LoopResult:
    run_dir = states.open_run(cfg, output_dir, resume, config_path)
    if feedback is not None:  # hook for deploy/feedback.py: writes the run's data files, returns the config using them
        from ..deploy.feedback import attach_feedback

        cfg = attach_feedback(cfg, run_dir, feedback)
    data = load_data(cfg, quiet, describe=lambda splits: states.describe_data(run_dir, splits))
    oracle = make_oracle(cfg, run_dir, data.hidden)
    if data.pool is not None and cfg.loop.oracle == "column":  # say plainly who answers the queries
        budget = "no limit" if cfg.loop.label_budget is None else f"at most {cfg.loop.label_budget:,}"
        say(quiet, f"pool: {len(data.pool):,} unlabelled examples; the labels active learning asks for ({budget}) "
                   "come from the pool file's own label column, standing in for a person")

    state = states.restore(run_dir, cfg, data.splits, data.pool)
    if state is None:
        state = baseline(run_dir, cfg, data.splits, data.pool, quiet)
        after_round(run_dir, cfg, quiet)
    while (reason := should_stop(state, cfg)) is None:
        r = len(state.decisions)
        say(quiet, f"round {r}: diagnosing the champion (round {state.champion})" if state.base == state.champion
            else f"round {r}: diagnosing round {state.base} (rejected, but promising: this round builds on it; "
                 f"the champion is round {state.champion})")
        outcome = run_round(Round(r, run_dir, cfg, data.splits, state, oracle, data.pool, quiet))
        if isinstance(outcome, str):  # no plan: why
            reason = outcome
            break
        state = outcome
        after_round(run_dir, cfg, quiet)
    summary = finish(run_dir, cfg, data.test, state, reason, session_start, data.splits.labels)
    after_round(run_dir, cfg, quiet, final=True)
    return LoopResult(run_dir, state.champion, reason, summary)


def validate(cfg: Config) -> None:
    """Name errors in [loop] (and a selection metric the A/B test cannot judge) before round 0
    spends its training time."""
    from ..diagnose import DIAGNOSTICS

    gated(cfg.selection_metric, cfg.data.task)
    bad = sorted(set(cfg.loop.checks) - set(DIAGNOSTICS))
    if bad:
        raise ConfigError(f"loop.checks names unknown checks {bad}; valid: {', '.join(DIAGNOSTICS)}")
    validate_actions(cfg)
    processes.validate(cfg)


def should_stop(state: State, cfg: Config) -> str | None:
    """Why the loop stops before another round, or None."""
    lc = cfg.loop
    metric = gated(cfg.selection_metric, cfg.data.task)
    done = len(state.decisions) - 1
    champ = state.decisions[state.champion]
    value = champ["selection"]
    if metric.reached(value, lc.target):
        return f"target reached: {metric.name} {value:.4f} {'>=' if metric.higher_is_better else '<='} {lc.target}"
    if done >= lc.rounds:
        return f"round budget spent ({lc.rounds} rounds)"
    streak = 0
    for d in reversed(state.decisions[1:]):
        if d["promoted"]:
            break
        streak += 1
    # A chain in progress (the last round was promising) gets its next round: loop.chain bounds it.
    if streak >= lc.patience and state.base == state.champion:
        return f"no promotion in the last {streak} rounds (patience {lc.patience})"
    spent = sum(d["seconds"] for d in state.decisions)
    if lc.time_budget_s is not None and spent >= lc.time_budget_s:
        return f"time budget spent ({spent:.0f} s of {lc.time_budget_s:.0f} s)"
    if lc.examples_budget is not None:
        # Do not start a round that cannot finish. It costs at least about the cheaper of round 0's and
        # the champion's training: a champion that trains longer (correct_noise sets its own epochs)
        # still leaves room for plans that train less (early_stop, drop_suspects, post-only ones), and
        # the planner then takes only a plan that fits the examples left.
        costs = [c for c in (champ["examples_trained"], state.decisions[0]["examples_trained"]) if c]
        next_cost = min(costs) if costs else 0
        if state.examples_trained + next_cost > lc.examples_budget:
            return (f"compute budget spent ({state.examples_trained} of {lc.examples_budget} training examples; "
                    f"a round needs about {next_cost})")
    if lc.label_budget is not None and lc.oracle != "none" and state.labels_used >= lc.label_budget:
        return f"label budget spent ({state.labels_used} of {lc.label_budget})"
    return None


def finish(run_dir: Path, cfg: Config, test, state: State, reason: str, session_start: float,
           labels: list[str]) -> dict:
    """Evaluate the champion (and round 0) on the test split - the first time it is read - and
    write summary.json."""
    from ..modeling import load_bundle

    out = {"selection_metric": cfg.selection_metric, "champion_round": state.champion, "stop_reason": reason,
           "examples_trained": state.examples_trained, "labels_used": state.labels_used,
           "selection": state.decisions[state.champion]["selection"],
           "round0_selection": state.decisions[0]["selection"]}
    if test is not None:
        champ = evaluate(load_bundle(round_dir(run_dir, state.champion) / rundir.MODEL), test, cfg)
        out["test"] = champ.metrics
        if state.champion == 0:
            out["round0_test"] = out["test"]
        else:
            first = evaluate(load_bundle(round_dir(run_dir, 0) / rundir.MODEL), test, cfg)
            out["round0_test"] = first.metrics
            out["test_gain"] = test_gain(first, champ, test, cfg, labels)
    rows = []
    for d in state.decisions:
        cmp = read_json(round_dir(run_dir, d["round"]) / rundir.COMPARE, {})
        rows.append({"round": d["round"], "actions": d.get("actions", []), "addressed": d.get("addressed", []),
                     "selection": d["selection"], "promoted": d["promoted"], "difference": cmp.get("difference"),
                     "ci_low": cmp.get("ci_low"), "ci_high": cmp.get("ci_high"),
                     "p_mcnemar": (cmp.get("mcnemar") or {}).get("p_value"), "reason": d["reason"],
                     "detectable": cmp.get("detectable"),
                     "examples_trained": d["examples_trained"], "seconds": d["seconds"],
                     "built_on": d.get("built_on")})
    out["rounds"] = rows
    out["action_values"] = [v.to_json() for v in store.action_values(run_dir.parent, cfg.data.task)]
    info = read_json(run_dir / rundir.RUN)
    out["wall_seconds"] = info.get("wall_seconds", 0.0) + (time.time() - session_start)
    write_json(run_dir / rundir.SUMMARY, out)
    info.update(status="finished", stop_reason=reason, champion_round=state.champion, wall_seconds=out["wall_seconds"])
    write_json(run_dir / rundir.RUN, info)
    return out


def test_gain(first, champ, test, cfg: Config, labels: list[str]) -> dict:
    """The champion minus round 0 on the test split with its paired 95 % bootstrap interval (the
    task's own paired test, read once, after every decision): what the loop's work did for examples
    no decision looked at."""
    from ..metric import gated
    from ..tasks import get_task

    task = get_task(cfg.data.task)
    r = task.ab_test(first.probs, champ.probs, test, labels, gated(cfg.selection_metric,
                     cfg.data.task), mode="superiority", alpha=0.05, margin=0.0, n_bootstrap=cfg.loop.n_bootstrap,
                     seed=cfg.train.seed, allow_class_regressions=True).to_json()
    return {"metric": r.get("metric"), "round0": r.get("champion"), "champion": r.get("challenger"),
            "difference": r.get("difference"), "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"), "level": 0.95,
            "n": r.get("n")}


def after_round(run_dir: Path, cfg: Config, quiet: bool, final: bool = False) -> None:
    """Regenerate the report (and log to MLflow at the end); a reporting failure never stops the loop."""
    if not cfg.loop.report and cfg.loop.tracking == "none":
        return
    try:
        from .. import report
    except ImportError:
        return
    try:
        if cfg.loop.report:
            report.write_report(run_dir)
        if final and cfg.loop.report:
            report.write_tensorboard(run_dir)
        if final and cfg.loop.tracking == "mlflow":
            report.log_mlflow(run_dir)
    except Exception as e:  # noqa: BLE001 - the loop's record is what matters; say what failed
        print(f"warning: the report could not be written: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
