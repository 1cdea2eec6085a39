"""tune_hparams: a small search over learning rate, epochs, warm-up and weight decay inside a round,
on Ray Tune with the ASHA scheduler; the best trial's values become the challenger's training
settings.

Each trial trains the recipe's model with our own `train.fit` on most of the round's training
data and is scored, epoch by epoch, on a split carved from that training data (stratified by
class, identical texts kept on one side, as data.py carves its splits). The selection split is
never looked at here (actions do not even receive it): it still judges the challenger against
the champion in the loop's A/B test, so the search cannot overfit the gate. ASHA stops a trial at
a rung (grace_period x reduction_factor^k epochs) when it is not in the top 1 / reduction_factor of
the trials that reached that rung, so most of the budget goes to the promising settings.

The first trial is always the recipe's own settings: the search returns them when nothing beats
them on the carved split. Every trial (its settings, each epoch's score, the epoch it stopped at)
is written to the round's tune.json.

Costs up to trials x epochs_max x training examples (`estimate`: the planner leaves the action out
when loop.examples_budget cannot pay for it). Repeats exactly for a seed when the trials run one
at a time (max_concurrent = 1); with trials side by side, which trials ASHA stops depends on the
order their results arrive, so the chosen trial may differ between runs.

`ray` (the [distributed] extra) is imported only here; without it the planner skips the action and
says how to install it. Joins a running Ray cluster (ray.init's RAY_ADDRESS or the loop's) or starts
a local one for the search and shuts it down after.

References: Li et al. 2020 (a system for massively parallel hyperparameter tuning: ASHA);
Liaw et al. 2018 (Tune: a research platform for distributed model selection and training)."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from .. import findings as K
from .. import rundir
from .base import SUPERIORITY, params_of

INSTALL = "pip install reflectlm[distributed]"


def ray_missing() -> str | None:
    """Why the search cannot run here (ray is not installed), or None."""
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.tune") is None:
        return f"needs Ray Tune, which is not installed: {INSTALL}"
    return None


def carve(ds, fraction: float, seed: int):
    """(fit, held) of the training set: held is round(fraction x N) examples, split as the task splits
    (by class, at random, by article), no input on both sides (the splitter load_splits uses)."""
    from ..data import stratified_split

    return stratified_split(ds, fraction, seed)


def trial_tree(tree: dict, config: dict) -> dict:
    """The config tree one trial trains with: the searched values set, the head's rate moved by the
    same factor as the body's (as tune_lr does; 0 means "same as lr" and stays 0)."""
    out = {k: dict(v) for k, v in tree.items()}
    t = out["train"]
    head = float(t.get("head_lr") or 0.0)
    if head:
        t["head_lr"] = head * config["lr"] / float(t["lr"])
    t.update(lr=config["lr"], epochs=int(config["epochs"]), warmup_ratio=config["warmup_ratio"],
             weight_decay=config["weight_decay"])
    return out


def _trial(config: dict, *, tree: dict, fit_ds, held_ds, labels: list[str], threads: int, seed: int) -> None:
    """One Ray Tune trial: train with train.fit, report the carved split's score after every epoch."""
    from ray import tune

    from .. import runtime
    from ..config import validate_tree
    from ..train import fit_config

    # Ray sets OMP_NUM_THREADS=1 in its workers when it is unset; the trial's threads are set here,
    # explicitly, so a trial given 4 CPUs uses them.
    runtime.set_threads(threads)
    runtime.seed_everything(seed)
    cfg = validate_tree(trial_tree(tree, config))
    metric = cfg.selection_metric

    def report(row: dict) -> None:
        tune.report({"score": row[f"selection_{metric}"], "epoch": row["epoch"], "train_loss": row["train_loss"],
                     "held_loss": row["selection_loss"]})

    fit_config(cfg, fit_ds, held_ds, labels, quiet=True, seed=seed, on_epoch=report)


@dataclass(frozen=True)
class TuneHparams:
    name = "tune_hparams"
    # After the cheap remedies: tune_lr / more_epochs / early_stop / regularize change one thing the
    # diagnosis points at for the price of one training run; a search costs `trials` of them.
    addresses = {K.LR_TOO_HIGH: 1, K.LR_TOO_LOW: 2, K.DIVERGENCE: 1, K.OSCILLATION: 1, K.PLATEAU: 2,
                 K.UNDERFITTING: 5, K.OVERFITTING: 3, K.PEAK_EPOCH: 1}
    mode = SUPERIORITY
    retrains = True
    requires = ()
    # They set the values this search chooses (or, transfer, a schedule of its own for the round).
    conflicts = ("tune_lr", "more_epochs", "early_stop", "regularize", "transfer")

    trials: int = 8  # settings tried, the recipe's own first
    lr_min: float = 1e-5  # body learning rate, log-uniform
    lr_max: float = 1e-3
    epochs_min: int = 1
    epochs_max: int = 6  # also ASHA's max_t
    warmup_min: float = 0.0  # warm-up ratio, uniform
    warmup_max: float = 0.2
    weight_decay_min: float = 0.0  # uniform
    weight_decay_max: float = 0.1
    holdout: float = 0.2  # share of the training data carved off to score the trials
    grace_period: int = 1  # epochs before ASHA may stop a trial
    reduction_factor: float = 3.0  # ASHA keeps the top 1 / reduction_factor at each rung
    cpus_per_trial: float = 1.0  # Ray resources each trial asks for
    gpus_per_trial: float = 0.0
    threads_per_trial: int = 1  # torch threads in each trial (Ray sets OMP_NUM_THREADS=1)
    max_concurrent: int = 0  # trials side by side; 0: as many as the cluster's resources hold

    def __post_init__(self) -> None:
        from ..config import ConfigError

        problems = []

        def need(ok: bool, what: str) -> None:
            if not ok:
                problems.append(what)

        need(self.trials >= 1, f"trials = {self.trials} must be at least 1")
        need(0 < self.lr_min <= self.lr_max, f"lr_min = {self.lr_min}, lr_max = {self.lr_max}: need 0 < lr_min <= lr_max")
        need(1 <= self.epochs_min <= self.epochs_max,
             f"epochs_min = {self.epochs_min}, epochs_max = {self.epochs_max}: need 1 <= epochs_min <= epochs_max")
        need(0 <= self.warmup_min <= self.warmup_max < 1,
             f"warmup_min = {self.warmup_min}, warmup_max = {self.warmup_max}: need 0 <= warmup_min <= warmup_max < 1")
        need(0 <= self.weight_decay_min <= self.weight_decay_max,
             f"weight_decay_min = {self.weight_decay_min}, weight_decay_max = {self.weight_decay_max}: "
             "need 0 <= weight_decay_min <= weight_decay_max")
        need(0 < self.holdout < 1, f"holdout = {self.holdout} must be in (0, 1), e.g. 0.2")
        need(self.grace_period >= 1, f"grace_period = {self.grace_period} must be at least 1 epoch")
        need(self.reduction_factor > 1, f"reduction_factor = {self.reduction_factor} must be above 1, e.g. 3")
        need(self.cpus_per_trial > 0, f"cpus_per_trial = {self.cpus_per_trial} must be above 0")
        need(self.gpus_per_trial >= 0, f"gpus_per_trial = {self.gpus_per_trial} must be 0 or more")
        need(self.threads_per_trial >= 1, f"threads_per_trial = {self.threads_per_trial} must be at least 1")
        need(self.max_concurrent >= 0, f"max_concurrent = {self.max_concurrent} must be 0 (no limit) or more")
        if problems:
            raise ConfigError("action 'tune_hparams': " + "; ".join(problems)
                              + " (set them in loop.action_params.tune_hparams)")

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def unavailable(cls) -> str | None:
        from .. import runtime

        if runtime.num_processes() > 1:
            # its trials would train on the main process alone while the others wait at a broadcast
            return "not under accelerate launch with several processes (its trials train on the main process alone)"
        return ray_missing()

    @classmethod
    def propose(cls, inputs, recipe):
        if cls.unavailable() or len(recipe.train) < 10:
            return None
        return cls()

    def _max_epochs(self, epochs: int) -> int:
        return max(self.epochs_max, epochs)  # the recipe's own settings are a trial too

    def estimate(self, n: int, epochs: int, extra: int) -> tuple[int, int, int]:
        # At most every trial runs every epoch (ASHA stops most early) on the carved-off rest, then
        # the challenger trains with the winner's epochs.
        top = self._max_epochs(epochs)
        fit_n = n - min(max(int(round(self.holdout * n)), 1), max(n - 1, 0))
        return n, top, extra + self.trials * top * fit_n

    def space(self, recipe) -> tuple[dict, dict]:
        """Ray Tune's search space and the recipe's own settings (the first trial)."""
        from ray import tune

        t = recipe.config.train
        space = {"lr": tune.loguniform(self.lr_min, self.lr_max),
                 "epochs": tune.randint(self.epochs_min, self.epochs_max + 1),  # upper bound exclusive
                 "warmup_ratio": tune.uniform(self.warmup_min, self.warmup_max),
                 "weight_decay": tune.uniform(self.weight_decay_min, self.weight_decay_max)}
        own = {"lr": float(t.lr), "epochs": int(t.epochs), "warmup_ratio": float(t.warmup_ratio),
               "weight_decay": float(t.weight_decay)}
        return space, own

    def apply(self, recipe, inputs):
        from ..data import DataError

        why = ray_missing()
        if why or len(recipe.train) == 0:
            return recipe.evolve(changes=recipe.changes + [{"action": self.name, "skipped": why or "no training data"}])
        try:
            fit_ds, held_ds = carve(recipe.train, self.holdout, inputs.seed)
        except DataError as e:
            return recipe.evolve(changes=recipe.changes + [{"action": self.name, "skipped": f"cannot carve a split: {e}"}])
        trials, metric, seconds = self.search(recipe, inputs, fit_ds, held_ds)
        higher = metric != "loss"
        done = [t for t in trials if t["best_score"] is not None]
        if not done:
            return recipe.evolve(changes=recipe.changes + [{"action": self.name, "skipped": "every trial failed",
                                                            "errors": [t["error"] for t in trials]}])
        # The best score any epoch reached (fit keeps the best epoch's weights); ties: the earlier trial.
        best = max(done, key=lambda t: (t["best_score"] if higher else -t["best_score"], -t["trial"]))
        out = recipe
        for key in ("lr", "epochs", "warmup_ratio", "weight_decay"):
            out = out.set(f"train.{key}", best["config"][key])
        head = float(recipe.get("train.head_lr") or 0.0)
        if head:
            out = out.set("train.head_lr", trial_tree(recipe.tree, best["config"])["train"]["head_lr"])
        processed = sum(t["epochs_run"] for t in trials) * len(fit_ds)
        out.extra_examples += processed
        record = {"action": self.name, "metric": metric, "scored_on": "a split carved from the training data",
                  "fit_examples": len(fit_ds), "held_ids": list(held_ds.ids), "params": self.params(),
                  "seconds": seconds, "examples_processed": processed, "chosen": best["trial"], "trials": trials}
        if inputs.work_dir is not None:
            from ..atomic import write_json

            write_json(inputs.work_dir / rundir.TUNE, record)
        own = trials[0]
        out.changes.append({"action": self.name, "trials": len(trials), "chosen": best["trial"],
                            "config": best["config"], "held_score": best["best_score"],
                            "own_held_score": own["best_score"], "held_examples": len(held_ds),
                            "stopped_early": sum(t["stopped_early"] for t in trials),
                            "head_lr": [head, float(out.get("train.head_lr") or 0.0)]})
        return out

    def search(self, recipe, inputs, fit_ds, held_ds) -> tuple[list[dict], str, float]:
        """Run the trials on Ray Tune; returns one record per trial (in the order they were made),
        the metric, and the search's wall seconds."""
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import BasicVariantGenerator

        from ..actions.base import with_value

        run_cfg = recipe.config
        if recipe.init_from:  # train as the challenger would (train_round): a warm start's weights
            run_cfg = with_value(run_cfg, "model.name", recipe.init_from)
        for key, value in recipe.round_only.items():
            run_cfg = with_value(run_cfg, key, value)
        tree = run_cfg.model_dump(include={"data", "model", "train", "run"})
        metric = run_cfg.selection_metric
        higher = metric != "loss"
        space, own = self.space(recipe)
        top = self._max_epochs(int(own["epochs"]))
        started_here = not ray.is_initialized()
        if started_here:
            # A cluster named by RAY_ADDRESS is joined; otherwise a local one for this search.
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        storage = tempfile.mkdtemp(prefix="reflectlm-tune-")  # Tune's own files; tune.json is the record
        # Tune's console tables even at verbose=0, unless its older output path is chosen (read at fit time).
        output = os.environ.get("RAY_AIR_NEW_OUTPUT")
        if inputs.quiet:
            os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        t0 = time.time()
        try:
            trainable = tune.with_resources(
                tune.with_parameters(_trial, tree=tree, fit_ds=fit_ds, held_ds=held_ds, labels=list(inputs.labels),
                                     threads=self.threads_per_trial, seed=int(run_cfg.train.seed)),
                {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial})
            scheduler = ASHAScheduler(time_attr="training_iteration", max_t=top, grace_period=self.grace_period,
                                      reduction_factor=self.reduction_factor)
            searcher = BasicVariantGenerator(points_to_evaluate=[own], random_state=inputs.seed,
                                             max_concurrent=self.max_concurrent)
            tuner = tune.Tuner(
                trainable, param_space=space,
                tune_config=tune.TuneConfig(metric="score", mode="max" if higher else "min", scheduler=scheduler,
                                            search_alg=searcher, num_samples=self.trials,
                                            # one worker process per slot, not per trial: each new
                                            # process pays the torch / transformers imports again
                                            reuse_actors=True,
                                            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
                run_config=tune.RunConfig(name="tune_hparams", storage_path=storage, verbose=0))
            grid = tuner.fit()
            trials = [self._trial_record(k, result, higher) for k, result in enumerate(_in_creation_order(grid))]
        finally:
            if output is None:
                os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
            else:
                os.environ["RAY_AIR_NEW_OUTPUT"] = output
            shutil.rmtree(storage, ignore_errors=True)
            if started_here:
                ray.shutdown()
        return trials, metric, time.time() - t0

    @staticmethod
    def _trial_record(k: int, result, higher: bool) -> dict:
        cfg = {key: result.config[key] for key in ("lr", "epochs", "warmup_ratio", "weight_decay")}
        cfg = {key: int(v) if key == "epochs" else float(v) for key, v in cfg.items()}
        df = result.metrics_dataframe
        rows = [] if df is None or "score" not in df else df[["epoch", "score", "train_loss", "held_loss"]].to_dict("records")
        scores = [_finite(r["score"]) for r in rows]
        valid = [s for s in scores if s is not None]
        best = (max if higher else min)(valid) if valid else None
        run = len(rows)
        return {"trial": k, "config": cfg,
                "scores": scores, "train_loss": [_finite(r["train_loss"]) for r in rows],
                "held_loss": [_finite(r["held_loss"]) for r in rows],
                "epochs_run": run, "stopped_at_epoch": run, "stopped_early": run < cfg["epochs"] and result.error is None,
                "best_score": best, "best_epoch": None if best is None else int(rows[scores.index(best)]["epoch"]),
                "error": None if result.error is None else str(result.error).splitlines()[0][:300]}


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _in_creation_order(grid) -> list:
    # Tune numbers trials as it creates them (<experiment>_00000, _00001, ...): the first is the
    # recipe's own settings (points_to_evaluate), then the sampled ones in the searcher's order.
    results = [grid[i] for i in range(len(grid))]
    return sorted(results, key=lambda r: int(str(r.path).rstrip("/").rsplit("_", 1)[-1]))
