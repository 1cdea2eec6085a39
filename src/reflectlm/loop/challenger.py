"""One challenger: trained (or, for a post-only plan, derived from the round it builds on) into its
round directory, and what the round's diagnosis asks of a model (its outputs, a cached predictor,
an embedder). round.py's steps and the backends (backends.py) both train through `train_round`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from .. import rundir
from ..actions import Recipe, get_action
from ..config import Config, dump_toml
from ..data import Dataset, Splits
from ..tasks import get_task


def evaluate(bundle, ds: Dataset, cfg: Config):
    """The bundle's outputs and metrics on ds, as the run evaluates (its batch size and precision)."""
    from ..evaluate import evaluate_bundle

    return evaluate_bundle(bundle, ds, batch_size=cfg.train.eval_batch_size, precision=cfg.train.precision)


def predictor(bundle, cfg: Config):
    """Raw inputs -> the bundle's outputs, remembering the last call: the label check and the
    robustness check ask for the same inputs in one round."""
    from ..evaluate import bundle_probs

    cache: dict = {}

    def predict(items: list):
        key = tuple(json.dumps(x, sort_keys=True) if isinstance(x, dict) else x for x in items)
        if key not in cache:
            cache.clear()
            cache[key] = bundle_probs(bundle, list(items), batch_size=cfg.train.eval_batch_size,
                                      precision=cfg.train.precision)
        return cache[key]

    return predict


def embedder(cfg: Config):
    """Texts -> unit vectors from the run's encoder (the packaged MiniLM for an LSTM run)."""
    from ..embed import embed_texts

    encoder = cfg.model.name if cfg.model.kind == "transformer" else "minilm"
    if "adapted" in str(encoder) or (Path(str(encoder)) / rundir.BUNDLE).is_file():
        encoder = "minilm" if cfg.model.kind != "transformer" else encoder
    return lambda texts: embed_texts(list(texts), model=encoder, quiet=True)


def train_round(rd: Path, cfg: Config, recipe: Recipe, splits: Splits, source_dir: Path | None, quiet: bool,
                retrain: bool = True) -> tuple[dict, int, object]:
    """Train (or, for post-only plans, copy from source_dir) the challenger into `rd`; returns its
    metrics, the examples it processed, and its bundle."""
    from ..actions.base import with_value
    from ..modeling import save_bundle
    from ..train import train as fit_model
    from .processes import train_together

    rundir.save_train(rd / rundir.TRAIN_DATA, recipe.train, get_task(cfg.data.task))
    run_cfg = recipe.config
    if recipe.init_from:
        run_cfg = with_value(run_cfg, "model.name", recipe.init_from)  # transfer: this round only
    for key, value in recipe.round_only.items():  # e.g. transfer's shorter schedule: not inherited
        run_cfg = with_value(run_cfg, key, value)
    if retrain:
        train_splits = Splits(recipe.train, splits.selection, None, splits.labels, [])
        train_together(run_cfg, rd, train_splits)  # under accelerate launch: every process trains it (processes.py)
        res = fit_model(run_cfg, rd, splits=train_splits, quiet=quiet, existing=True)
        bundle, metrics, seen = res.bundle, res.metrics, res.fit.examples_seen
    else:  # calibrate / prune: work on the source round's trained model, no training
        bundle, metrics = _derive(rd, run_cfg, recipe, source_dir)
        seen = 0
    if recipe.post:
        post = PostInputs(bundle, splits, cfg)
        for step in recipe.post:
            action = get_action(step["action"], **step["params"])
            info = action.transform(bundle.model, post)
            metrics.setdefault("post", {})[step["action"]] = info
            if getattr(action, "record", None):
                rundir.write_json(rd / action.record, info)
        save_bundle(bundle, rd / rundir.MODEL)
        metrics["selection"] = evaluate(bundle, splits.selection, cfg).metrics
        rundir.write_json(rd / rundir.METRICS, metrics)
    return metrics, seen + recipe.extra_examples, bundle


def _derive(rd: Path, run_cfg: Config, recipe: Recipe, source_dir: Path) -> tuple[object, dict]:
    """A post-only round: the source round's model and history, and a record of what it started from."""
    from .. import runtime
    from ..modeling import load_bundle

    rundir.write_text(rd / rundir.CONFIG, dump_toml(run_cfg))
    # The round still describes itself: what it started from and what it did, no training.
    rundir.write_json(rd / rundir.RUN, {"kind": "post", "status": "finished", "trained": False,
                                        "source_model": str((source_dir / rundir.MODEL).resolve()),
                                        "steps": recipe.post, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                        "versions": runtime.versions()})
    for name in (rundir.DYNAMICS, rundir.GRADIENTS):
        if (source_dir / name).is_file():
            shutil.copy(source_dir / name, rd / name)
    metrics = rundir.read_json(source_dir / rundir.METRICS)
    metrics = {k: metrics[k] for k in ("selection_metric", "best_epoch", "history") if k in metrics}
    metrics["examples_trained"] = 0
    return load_bundle(source_dir / rundir.MODEL), metrics


class PostInputs:
    """What a post-training step reads: the selection split's logits and, for a task whose outputs
    are one class per example, their targets."""

    def __init__(self, bundle, splits: Splits, cfg: Config):
        self.bundle, self.splits, self.cfg = bundle, splits, cfg
        self.labels = splits.labels
        l2i = {n: i for i, n in enumerate(splits.labels)}
        one_class = "class_probs" in get_task(cfg.data.task).capabilities
        self.selection_targets = np.array([l2i[y] for y in splits.selection.labels]) if one_class else None

    def selection_logits(self, model):
        from .. import runtime
        from ..evaluate import encode_bundle, forward_all, pad_id

        feats = encode_bundle(self.bundle, self.splits.selection)
        logits, _, _ = forward_all(model, feats, pad_id(self.bundle.tokenizer), self.cfg.data.task,
                                   self.cfg.train.eval_batch_size, runtime.resolve_precision(self.cfg.train.precision))
        return np.stack(logits) if logits else np.zeros((0, len(self.labels)))
