"""Where a round's challengers train: loop.backend = "local" (this process, one after another) or
"ray" (one Ray task each, side by side on a Ray cluster).

Both run the same function, `train_one` (round.train_round, then the selection split's outputs),
so a challenger trained by a Ray task is the one trained here: with loop.parallel = 1 the two
backends decide every round alike. Everything else in a round - diagnosis, planning, the A/B
tests, Holm's correction, the decision - runs in the driver, so a round is finished when its
decision.json is written, whichever backend trained it, and --resume works the same way.

A Ray task asks for loop.ray.num_cpus / num_gpus / memory_gib and sets torch's threads itself
(loop.ray.threads, default its CPUs): Ray sets OMP_NUM_THREADS=1 in workers where it is unset,
which would leave a task on one core. Tasks write their files into the run directory, so every
node must see it at the same path (a shared filesystem; a single machine always does), and every
node needs reflectlm installed (the `distributed` extra). `ray` is imported only here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..config import Config, ConfigError


def train_one(rd: Path, cfg: Config, recipe, splits, source_dir: Path, retrain: bool, quiet: bool = True,
              threads: int | None = None):
    """Train one challenger into rd and evaluate it on the selection split: (metrics, examples
    processed, evaluate.Outputs). threads: torch intra-op threads for this call (None: leave them)."""
    from .. import runtime
    from .challenger import evaluate, train_round

    runtime.set_threads(threads)
    metrics, seen, bundle = train_round(rd, cfg, recipe, splits, source_dir, quiet, retrain=retrain)
    return metrics, seen, evaluate(bundle, splits.selection, cfg)


def train_challengers(rnd, challengers: list) -> None:
    """Fill each challenger's metrics, seen and chall_out."""
    if rnd.cfg.loop.backend == "ray":
        return _train_ray(rnd, challengers)
    for c in challengers:
        c.metrics, c.seen, c.chall_out = train_one(c.dir, rnd.cfg, c.recipe, rnd.splits, rnd.base_dir,
                                                   c.plan[0].retrains, rnd.quiet)


def task_threads(cfg: Config) -> int:
    rc = cfg.loop.ray
    return rc.threads or max(1, int(rc.num_cpus))


def _train_ray(rnd, challengers: list) -> None:
    import ray

    rc = rnd.cfg.loop.ray
    options = {"num_cpus": rc.num_cpus, "num_gpus": rc.num_gpus}
    if rc.memory_gib is not None:
        options["memory"] = int(rc.memory_gib * 2**30)
    task = ray.remote(train_one).options(**options)
    splits = ray.put(rnd.splits)  # one copy in the object store for all the tasks
    refs = [task.remote(c.dir, rnd.cfg, c.recipe, splits, rnd.base_dir, c.plan[0].retrains, True, task_threads(rnd.cfg))
            for c in challengers]
    if not rnd.quiet:
        print(f"round {rnd.r}: {len(refs)} challenger(s) training as Ray tasks "
              f"({rc.num_cpus:g} CPU, {rc.num_gpus:g} GPU, {task_threads(rnd.cfg)} torch threads each)", flush=True)
    try:
        results = ray.get(refs)
    except BaseException:
        for ref in refs:  # an interrupted driver must not leave tasks writing into the round
            ray.cancel(ref, force=True)
        raise
    for c, (metrics, seen, out) in zip(challengers, results):
        c.metrics, c.seen, c.chall_out = metrics, seen, out


@contextlib.contextmanager
def session(cfg: Config):
    """A connection to Ray for the loop (loop.backend = "ray"): joins the one already open in this
    process, else connects to loop.ray.address (RAY_ADDRESS when unset; none: a local Ray on this
    machine's cores), and disconnects at the end if it connected."""
    if cfg.loop.backend != "ray":
        yield
        return
    try:
        import ray
    except ImportError:
        raise ConfigError("loop.backend = 'ray' needs Ray: pip install 'reflectlm[distributed]' "
                          "(or run with loop.backend = 'local')") from None
    opened = not ray.is_initialized()
    if opened:
        try:
            ray.init(address=cfg.loop.ray.address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as e:
            raise ConfigError(f"cannot connect to Ray at loop.ray.address = {cfg.loop.ray.address!r}: {e}; start a "
                              "cluster with `ray start --head` and pass --address HOST:6379 (or leave the address "
                              "unset for a local Ray)") from None
    _check_resources(ray, cfg)
    try:
        yield
    finally:
        if opened:
            ray.shutdown()


def _check_resources(ray, cfg: Config) -> None:
    """A task that asks for more than any node has would wait forever: say so now."""
    rc = cfg.loop.ray
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if nodes and not any(n.get("CPU", 0) >= rc.num_cpus and n.get("GPU", 0) >= rc.num_gpus for n in nodes):
        most = max(nodes, key=lambda n: (n.get("CPU", 0), n.get("GPU", 0)))
        raise ConfigError(f"no Ray node has loop.ray.num_cpus = {rc.num_cpus:g} CPUs and num_gpus = {rc.num_gpus:g} "
                          f"GPUs (the largest has {most.get('CPU', 0):g} CPUs, {most.get('GPU', 0):g} GPUs); "
                          "lower them or add a node")
