"""Improve: the self-improvement loop, round after round, keeping only what a paired test shows helps.

    result = improve(load_config("configs/banking77.toml"))     # or reflectlm.loop(cfg)

Round 0 trains the baseline from the config; it is the first champion. Each later round
diagnoses the champion, reflects, picks a plan (one or a few compatible actions, ranked by the
rules and by the action values learned in this workspace), trains the challenger, A/B-tests it
against the champion on the selection split, promotes or rejects it, and records everything
before the next round starts. The test split is read once, at the very end.

A rejected challenger that beat the champion by at least loop.chain_min_gain - a gain too small
for the selection split to confirm - may be what the next round builds on (diagnosed and planned
on its data), at most loop.chain rounds in a row; every challenger is tested against the champion.

A round is finished when its decision.json exists (written last, atomically). `resume=True`
discards a half-written round and continues after the last finished one; finished rounds are
never redone or rewritten.

The package, one job per file (docs/architecture.md):
    engine.py   improve(): the round loop, stop rules, the end (the test split, summary.json)
    round.py    one round as steps of one Round object; round 0; replay()
    planner.py  the plan from the targets, the actions' declarations and the learned action values
    state.py    the loop's state from the finished rounds' files: open, restore / resume
    challenger.py  one challenger trained into its round directory (train_round) and its outputs
    pool.py     the data the loop reads: splits, the unlabelled pool, the oracle
    backends.py where challengers train: here, or as Ray tasks (loop.backend, loop.parallel)
    processes.py under `accelerate launch`: the main process decides, every process trains
"""

from __future__ import annotations

from ..actions import SUPERIORITY
from ..callable import callable_module
from ..rundir import ROUND_FILES
from .engine import LoopResult, improve
from .planner import choose_plans, plan_cost
from .round import replay

__all__ = ["LoopResult", "ROUND_FILES", "SUPERIORITY", "choose_plans", "improve", "plan_cost", "replay"]

callable_module(__name__, improve)  # `reflectlm.loop(cfg)` calls improve(), like reflectlm.train
