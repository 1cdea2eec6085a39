"""The loop under `accelerate launch --num_processes N`: the main process decides, every process trains.

    accelerate launch --multi_gpu --num_processes N -m reflectlm.cli run CONFIG

Only the main process runs the loop itself: it opens (or resumes) the run directory, diagnoses,
plans, A/B-tests, decides and writes every file. The other processes `follow`: each time the main
process trains a challenger (round.train_round) it broadcasts the job - the round's config, its
training set and the selection split - and all N processes run train.train on it together (DDP,
as `reflectlm train` does; only the main process writes). At the end it broadcasts the result.

Why decide on one process and broadcast rather than compute the same decisions everywhere: a
round's decisions read the wall clock (loop.time_budget_s), the workspace's store (action values
learned by earlier runs, written by this one) and files the round itself writes (an adapted
encoder, train.jsonl); computed on N processes they would agree only by luck. Broadcasting what
is trained makes the plans identical by construction, and costs the other processes nothing but
waiting while the main one diagnoses (the checks are not sharded; they would not run faster).
Resume needs nothing extra: the main process restores from disk and the others follow it.

Limits: steps that fine-tune on their own would train on the main process alone while the others
wait at a broadcast, so they are refused (loop.cv = "full"); a wait longer than the process
group's timeout (accelerate's default: 30 minutes of diagnosis) ends the run; the training
processes read the files the main process wrote (an adapted encoder), so on several machines the
run directory must be on a shared filesystem.
"""

from __future__ import annotations

from .. import runtime
from ..config import Config, ConfigError


def validate(cfg: Config) -> None:
    """Refuse, on every process, what the loop cannot do under N processes."""
    if runtime.num_processes() == 1:
        return
    if cfg.loop.backend != "local":
        raise ConfigError(f"loop.backend = {cfg.loop.backend!r} under accelerate launch: the challengers would train "
                          "as Ray tasks, not in these processes; use one or the other (loop.backend = 'local' here)")
    if cfg.loop.cv == "full":
        raise ConfigError("loop.cv = 'full' fine-tunes one model per fold on the main process alone, which cannot "
                          "run under accelerate launch; use loop.cv = 'fast' (or run without accelerate launch)")


def train_together(run_cfg: Config, rd, splits) -> None:
    """Main process, before it trains: tell the others what to train with it (no-op alone)."""
    if runtime.num_processes() > 1:
        runtime.from_main(("train", run_cfg, rd, splits))


def release(result=None, error: str | None = None) -> None:
    """Main process, at the end (or on an error): the others stop following."""
    if runtime.num_processes() > 1:
        runtime.from_main(("stop", result, error))
        runtime.wait_for_everyone()  # see follow(): no process leaves while the last broadcast is in flight


def follow():
    """A process other than the main one: train each job the main process broadcasts, until it
    stops; returns the main process's LoopResult."""
    from ..rundir import RunError
    from ..train import train as fit_model

    while True:
        job = runtime.from_main(None)
        if job[0] == "stop":
            _, result, error = job
            # Leave together: a process that exited while the main one's gloo threads were still
            # sending that last (large) broadcast died with "terminate called without an active
            # exception" after a run that had succeeded (3 of 8 two-process test runs).
            runtime.wait_for_everyone()
            if error is not None:
                raise RunError(f"the main process stopped the loop: {error}")
            return result
        _, run_cfg, rd, splits = job
        fit_model(run_cfg, rd, splits=splits, quiet=True, existing=True)
