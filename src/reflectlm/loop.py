"""Improve: the self-improvement loop, round after round, keeping only what a paired test shows helps.

    result = improve(load_config("configs/banking77.toml"))

Round 0 trains the baseline from the config; it is the first champion. Each later round
diagnoses the champion, reflects, picks a plan (one or a few compatible actions, ranked by the
rules and by the action values learned in this workspace), trains the challenger, A/B-tests it
against the champion on the selection split, promotes or rejects it, and records everything
before the next round starts. The test split is sealed until the very end.

A rejected challenger that beat the champion by at least loop.chain_min_gain - a gain too small
for the selection split to confirm - may be what the next round builds on (diagnosed and planned
on its data), at most loop.chain rounds in a row; every challenger is tested against the champion.

A round is finished when its decision.json exists (written last, atomically). `resume=True`
discards a half-written round and continues after the last finished one; finished rounds are
never redone or rewritten.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import store
from .actions import ACTIONS, ActionInputs, Recipe, SUPERIORITY, apply_order, get_action
from .actions.oracle import ColumnOracle, QueueOracle
from .config import Config, dump_toml, load_config, validate_tree
from .data import Dataset, Splits
from .train import RunError, _versions, _write_json

ROUND_FILES = {
    "config.toml": "the resolved config this round trained with",
    "run.json": "what made this round's model (train.py's record; for calibrate / prune: the source and the steps)",
    "metrics.json": "selection metrics (best epoch) and the per-epoch history",
    "dynamics.npz": "training dynamics of this round's model",
    "gradients.npz": "gradient telemetry of this round's model",
    "train.jsonl": "the training set this round used (labels as fixed, examples as added)",
    "findings.json": "rounds >= 1: the diagnosis of the champion that motivated the plan",
    "targets.json": "rounds >= 1: the ranked improvement targets",
    "plan.json": "the actions with their parameters, the ranking behind them and what they changed",
    "recipe.json": "promoted rounds and a round the next one builds on: the config tree later challengers start from",
    "calibration.json": "when the plan calibrated: temperature and reliability before / after",
    "compare.json": "rounds >= 1: the A/B test against the champion",
    "decision.json": "promoted or rejected, and why (written last: the round is finished)",
    "model/": "the model, kept when promoted or when the next round builds on it",
}
# Plans that cannot run together: they set the same knob in opposite directions.
CONFLICTS = [{"early_stop", "more_epochs"}, {"tune_lr", "transfer"}, {"more_epochs", "transfer"},
             {"early_stop", "transfer"}, {"fix_labels", "transfer"}, {"domain_pretraining", "transfer"},
             {"regularize", "transfer"}]


@dataclass
class LoopResult:
    run_dir: Path
    champion_round: int
    stop_reason: str
    summary: dict


@dataclass
class _State:
    decisions: list[dict]  # decision.json of every finished round, in order
    champion: int
    recipe: Recipe  # what the next challenger starts from: the base round's recipe
    examples_trained: int
    labels_used: int
    acquired: dict  # id -> label bought from the oracle (kept even when its round was rejected)
    base: int = -1  # the round the next challenger builds on: the champion, or a promising rejected round

    def __post_init__(self):
        if self.base < 0:
            self.base = self.champion


class _Sealed:
    """The test split, unreadable until the loop has decided everything."""

    def __init__(self, ds):
        self._ds = ds

    def open(self):
        return self._ds


# --------------------------------------------------------------------------- entry point


def improve(cfg: Config, output_dir: str | Path | None = None, *, resume: bool = False, quiet: bool | None = None,
            config_path: str | Path | None = None, feedback: str | Path | None = None) -> LoopResult:
    """Run (or resume) the loop; returns the run directory, the champion round and why it stopped.
    feedback: a production store (`reflectlm serve`) whose corrections and texts join this run's data."""
    from . import data as data_mod
    from . import runtime

    quiet = cfg.run.quiet if quiet is None else quiet
    runtime.set_threads(cfg.train.threads)
    session_start = time.time()
    run_dir = _open_run(cfg, output_dir, resume, config_path)
    if feedback is not None:  # hook for deploy/feedback.py: writes the run's data files, returns the config using them
        from .deploy.feedback import attach_feedback

        cfg = attach_feedback(cfg, run_dir, feedback)
    splits = data_mod.load_splits(cfg.data, cfg.train.seed)
    info = json.loads((run_dir / "run.json").read_text())
    info.update(labels=splits.labels, warnings=list(splits.warnings),
                data={name: {"source": ds.source, "examples": len(ds), "fingerprint": ds.fingerprint()}
                      for name, ds in (("train", splits.train), ("selection", splits.selection), ("test", splits.test))
                      if ds is not None})
    _write_json(run_dir / "run.json", info)
    sealed = _Sealed(splits.test)
    pool = _load_pool(cfg, splits, quiet)  # (de-duplicated against train, selection and test)
    splits = Splits(splits.train, splits.selection, None, splits.labels, splits.warnings)
    oracle = _oracle(cfg, run_dir, pool[1] if pool else None)
    pool_ds = pool[0] if pool else None

    state = _restore(run_dir, cfg, splits, pool_ds)
    if state is None:
        state = _baseline(run_dir, cfg, splits, pool_ds, quiet)
        _after_round(run_dir, cfg, quiet)
    while (reason := _should_stop(state, cfg)) is None:
        r = len(state.decisions)
        _say(quiet, f"round {r}: diagnosing the champion (round {state.champion})" if state.base == state.champion
             else f"round {r}: diagnosing round {state.base} (rejected, but promising: this round builds on it; "
                  f"the champion is round {state.champion})")
        nxt = _round(r, run_dir, cfg, splits, state, oracle, quiet, pool_ds)
        if isinstance(nxt, str):  # no plan: why
            reason = nxt
            break
        state = nxt
        _after_round(run_dir, cfg, quiet)
    summary = _finish(run_dir, cfg, splits, sealed, state, reason, session_start)
    _after_round(run_dir, cfg, quiet, final=True)
    return LoopResult(run_dir, state.champion, reason, summary)


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def _fault(point: str) -> None:
    # Tests kill the process at a chosen point to prove that resume works after a hard kill.
    if os.environ.get("REFLECTLM_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- run directory


def _open_run(cfg: Config, output_dir, resume: bool, config_path) -> Path:
    from .train import make_run_dir

    _validate_loop(cfg)
    if resume:
        run_dir = Path(output_dir) if output_dir else _find_resumable(cfg, config_path)
        if not (run_dir / "run.json").is_file():
            raise RunError(f"{run_dir} is not a loop run to resume (no run.json); start it without --resume")
        info = json.loads((run_dir / "run.json").read_text())
        old = load_config(run_dir / "config.toml")
        for section in ("data", "model", "train"):
            if getattr(old, section) != getattr(cfg, section):
                raise RunError(f"the [{section}] section differs from the one {run_dir} started with; resume with the "
                               f"same config (the run's own copy is {run_dir / 'config.toml'}), or start a new run")
        info.update(status="running", resumed=info.get("resumed", 0) + 1)
        _write_json(run_dir / "run.json", info)
        _write_text(run_dir / "config.toml", dump_toml(cfg))  # [loop] may grow (more rounds)
        return run_dir
    run_dir = make_run_dir(cfg, output_dir, stem="loop")
    _write_text(run_dir / "config.toml", dump_toml(cfg))
    (run_dir / "rounds").mkdir()
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info = {"kind": "loop", "status": "running", "created": created, "command": sys.argv,
            "config_path": str(config_path) if config_path else None, "versions": _versions(),
            "task": cfg.data.task, "selection_metric": cfg.selection_metric,
            "base_model": cfg.model.name if cfg.model.kind == "transformer" else "lstm",
            "files": {"config.toml": "the resolved config", "run.json": "this record", "store.sqlite":
                      "rounds, decisions and learned action values", "champion": "link to the champion's round",
                      "summary.json": "the result (written at the end)", "report.html": "the report",
                      "rounds/NN/": ROUND_FILES}}
    _write_json(run_dir / "run.json", info)
    store.record_run(run_dir, run_dir.name, cfg.data.task, cfg.data.train, info["base_model"], cfg.selection_metric,
                     created)
    return run_dir


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # atomic: a kill never leaves half a config


def _validate_loop(cfg: Config) -> None:
    """Name errors in [loop] before round 0 spends its training time."""
    from .diagnose import DIAGNOSTICS

    lc = cfg.loop
    bad = sorted(set(lc.checks) - set(DIAGNOSTICS))
    if bad:
        raise ValueError(f"loop.checks names unknown checks {bad}; valid: {', '.join(DIAGNOSTICS)}")
    bad = sorted((set(lc.actions) | set(lc.exclude_actions) | set(lc.action_params)) - set(ACTIONS))
    if bad:
        raise ValueError(f"loop.actions / exclude_actions / action_params name unknown actions {bad}; "
                         f"valid: {', '.join(ACTIONS)}")
    for name, params in lc.action_params.items():
        get_action(name, **params)  # raises with the valid parameter names


def _find_resumable(cfg: Config, config_path) -> Path:
    if cfg.run.name:
        return Path(cfg.run.output_dir) / cfg.run.name
    found = []
    for p in Path(cfg.run.output_dir).glob("*/run.json"):
        try:
            info = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if info.get("kind") == "loop" and info.get("status") != "finished" and (
                config_path is None or info.get("config_path") == str(config_path)):
            found.append((info.get("created", ""), p.parent))
    if not found:
        raise RunError(f"no unfinished loop run of this config in {cfg.run.output_dir}/; pass --output-dir RUN "
                       "to resume a particular run")
    return max(found)[1]


def _round_dir(run_dir: Path, r: int) -> Path:
    return run_dir / "rounds" / f"{r:02d}"


def _set_champion(run_dir: Path, r: int) -> None:
    link = run_dir / "champion"
    tmp = run_dir / "champion.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path("rounds") / f"{r:02d}")
    tmp.replace(link)  # atomic: the link always points at a finished round


def _save_train(path: Path, ds: Dataset) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for k in range(len(ds)):
            rec = {"id": ds.ids[k], "label": ds.labels[k], "text": ds.texts[k]}
            if ds.tokens is not None:
                rec["tokens"] = ds.tokens[k]
            if ds.weights is not None:
                rec["weight"] = float(ds.weights[k])
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _load_train(path: Path, task: str, source: str) -> Dataset:
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    weights = [r.get("weight") for r in recs]
    return Dataset(task=task, ids=[r["id"] for r in recs], labels=[r["label"] for r in recs],
                   texts=[r["text"] for r in recs], tokens=[r["tokens"] for r in recs] if task == "ner" else None,
                   weights=None if all(w is None for w in weights) else np.array(
                       [1.0 if w is None else w for w in weights], dtype=np.float32), source=source)


def _restore(run_dir: Path, cfg: Config, splits: Splits, pool: Dataset | None) -> _State | None:
    """The state after the last finished round; a round without decision.json is discarded."""
    rounds = [p for p in (run_dir / "rounds").iterdir() if p.is_dir() and p.name.isdigit()] \
        if (run_dir / "rounds").is_dir() else []
    rounds.sort(key=lambda p: int(p.name))  # numerically: rounds/100 after rounds/99
    decisions = []
    for p in rounds:
        if (p / "decision.json").is_file() and int(p.name) == len(decisions):
            decisions.append(json.loads((p / "decision.json").read_text()))
        else:
            shutil.rmtree(p)  # half-written (killed mid-round): redo it from its start
    if not decisions:
        return None
    for d in decisions:  # re-sync the store: a kill between decision.json and the store write loses nothing
        _record(run_dir, d, cfg)
    _set_champion(run_dir, decisions[-1]["champion_round"])  # a kill may fall between decision.json and the link
    return _state_after(run_dir, cfg, splits, pool, decisions)


def _state_after(run_dir: Path, cfg: Config, splits: Splits, pool: Dataset | None, decisions: list[dict]) -> _State:
    """The loop's state once `decisions` (rounds 0 .. k, in order) are made, rebuilt from disk."""
    champion = decisions[-1]["champion_round"]
    base = decisions[-1].get("next_base", champion)
    cdir = _round_dir(run_dir, base)
    saved = json.loads((cdir / "recipe.json").read_text())
    tree = saved["tree"]
    train = _load_train(cdir / "train.jsonl", cfg.data.task, splits.train.source)
    acquired = {}
    for d in decisions:
        acquired.update(d.get("acquired", {}))
    # Acquired labels stay in the pool until a round merges them in (_base_recipe), as in an unbroken run.
    if pool is not None and saved.get("pool_ids") is not None:  # the champion's pool, exactly as it was
        keep = set(saved["pool_ids"])
        pool_left = pool.subset([k for k, i in enumerate(pool.ids) if i in keep])
    else:
        used = set(train.ids)
        pool_left = None if pool is None else pool.subset([k for k, i in enumerate(pool.ids) if i not in used])
    return _State(decisions, champion, Recipe(tree=tree, train=train, pool=pool_left),
                  sum(d["examples_trained"] for d in decisions), sum(d.get("labels_used", 0) for d in decisions),
                  acquired, base)


def _base_recipe(state: _State) -> Recipe:
    """What the next challenger starts from: the base round's recipe (the champion's, or a promising
    rejected round's), plus oracle answers bought in rejected rounds (they are still gold labels)."""
    base = state.recipe.evolve()
    have = set(base.train.ids)
    missing = {i for i in state.acquired if i not in have}
    if missing and base.pool is not None:
        from .actions.base import concat, drop_ids

        got = base.pool.subset([k for k, i in enumerate(base.pool.ids) if i in missing])
        got.labels = [state.acquired[i] for i in got.ids]
        base = base.evolve(train=concat(base.train, got), pool=drop_ids(base.pool, set(got.ids)))
    return base


def _inputs(cfg: Config, splits: Splits, r: int, state: _State, findings: list, champ_out, cdir: Path, predict,
            embed, oracle, work_dir: Path, quiet: bool) -> ActionInputs:
    budget_left = None if cfg.loop.label_budget is None else cfg.loop.label_budget - state.labels_used
    return ActionInputs(task=cfg.data.task, labels=splits.labels, seed=cfg.train.seed + r, findings=findings,
                        selection_metrics=champ_out.metrics,
                        history=json.loads((cdir / "metrics.json").read_text()).get("history"), predict=predict,
                        embed=embed, oracle=oracle, champion_model=cdir / "model", work_dir=work_dir,
                        label_budget_left=budget_left, quiet=quiet)


def replay(run_dir: str | Path, r: int, work_dir: str | Path | None = None) -> Recipe:
    """Apply round r's plan.json again to what its challenger started from (the recipe of the
    round it was built on - the champion, or a promising rejected challenger - and the findings in
    its findings.json); the result equals what round r trained on.
    Artifacts (e.g. an adapted encoder) go to work_dir (default: a temporary folder)."""
    import tempfile

    from . import data as data_mod
    from .actions import from_plan
    from .diagnose.base import Finding
    from .modeling import load_bundle

    run_dir = Path(run_dir)
    rd = _round_dir(run_dir, r)
    if r < 1 or not (rd / "plan.json").is_file():
        raise RunError(f"{rd} has no plan.json to replay; pass a round >= 1 of a loop run")
    cfg = load_config(run_dir / "config.toml")
    splits = data_mod.load_splits(cfg.data, cfg.train.seed)
    pool = _load_pool(cfg, splits)
    splits = Splits(splits.train, splits.selection, None, splits.labels, splits.warnings)
    oracle = _oracle(cfg, run_dir, pool[1] if pool else None)
    if oracle is not None and (rd / "decision.json").is_file():
        # Answer exactly what the round was answered (a queue may have grown since; asking it
        # again would also rewrite the run's label_queue.csv).
        oracle = ColumnOracle(json.loads((rd / "decision.json").read_text()).get("acquired", {}))
    decisions = [json.loads((_round_dir(run_dir, k) / "decision.json").read_text()) for k in range(r)]
    state = _state_after(run_dir, cfg, splits, pool[0] if pool else None, decisions)
    cdir = _round_dir(run_dir, state.base)  # what round r diagnosed and built on
    champ = load_bundle(cdir / "model")
    findings = [Finding.from_json(f) for f in json.loads((rd / "findings.json").read_text())["findings"]]
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="replay-"))
    inputs = _inputs(cfg, splits, r, state, findings, _evaluate(champ, splits.selection, cfg), cdir,
                     _predictor(champ, cfg), _embedder(cfg), oracle, work, True)
    recipe = _base_recipe(state)
    for action in from_plan(json.loads((rd / "plan.json").read_text())["actions"]):
        recipe = action.apply(recipe, inputs)
    return recipe


def _record(run_dir: Path, decision: dict, cfg: Config) -> None:
    rd = _round_dir(run_dir, decision["round"])
    cmp = json.loads((rd / "compare.json").read_text()) if (rd / "compare.json").is_file() else None
    plan = json.loads((rd / "plan.json").read_text()) if (rd / "plan.json").is_file() else {"actions": []}
    steps = [{"action": a["action"], "params": a["params"], "addresses": a.get("addresses", [])} for a in plan["actions"]]
    store.record_round(run_dir, decision, cmp, steps, plan.get("addressed", []), cfg.data.task)


# --------------------------------------------------------------------------- data


def _load_pool(cfg: Config, splits: Splits, quiet: bool = True):
    """(pool Dataset, hidden labels or None). The pool's labels are never given to training, and
    pool examples that repeat a train, selection or test example are removed (a test text pulled
    into training by active learning would leak the test split)."""
    from .data import DataError, load

    lc = cfg.loop
    if not lc.pool:
        return None
    cols = {k: getattr(cfg.data, k) for k in ("format", "text_column", "tokens_key", "tags_key")}
    label_col = lc.pool_label_column or cfg.data.label_column
    try:
        ds = load(lc.pool, cfg.data.task, label_column=label_col, id_column=cfg.data.id_column, **cols)
        hidden = dict(zip(ds.ids, ds.labels)) if lc.oracle == "column" else None
    except DataError as e:
        if lc.oracle == "column":
            raise DataError(f"{e}\nloop.oracle = 'column' needs the pool's label column ({label_col!r}); set "
                            "loop.pool_label_column") from None
        ds = _text_only(lc.pool, cfg)
        hidden = None
    if lc.oracle == "column" and cfg.data.task == "classification":
        unknown = sorted(set(hidden.values()) - set(splits.labels))
        if unknown:
            raise DataError(f"{lc.pool}: pool labels {unknown[:5]} are not among the training labels")
    # The pool's own labels must not leak: keep only texts (and the ids the oracle answers for).
    ds.labels = [["O"] * len(t) for t in ds.tokens] if ds.task == "ner" else [None] * len(ds)
    seen_ids, seen_texts = set(), set()
    for other in (splits.train, splits.selection, splits.test):
        if other is not None:
            seen_ids.update(other.ids)
            seen_texts.update(" ".join(t.lower().split()) for t in other.texts)
    keep = [k for k, (i, t) in enumerate(zip(ds.ids, ds.texts))
            if i not in seen_ids and " ".join(t.lower().split()) not in seen_texts]
    if len(keep) < len(ds):
        msg = (f"{lc.pool}: {len(ds) - len(keep)} pool examples repeat a train, selection or test example; "
               "left out of the pool")
        splits.warnings.append(msg)
        _say(quiet, f"warning: {msg}")
        ds = ds.subset(keep)
    return ds, hidden


def _text_only(path: str, cfg: Config) -> Dataset:
    """An unlabelled pool: one text per line (.txt) or a CSV / JSONL with the text column only."""
    import csv
    import hashlib

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"loop.pool = {path!r} does not exist; point it at a file of unlabelled texts")
    if p.suffix == ".jsonl":
        texts = [json.loads(line)[cfg.data.text_column] for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif p.suffix in (".csv", ".tsv"):
        with p.open(newline="", encoding="utf-8") as fh:
            texts = [r[cfg.data.text_column] for r in csv.DictReader(fh, delimiter="\t" if p.suffix == ".tsv" else ",")]
    else:
        texts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [t for t in texts if t and t.strip()]
    ids = [f"pool-{hashlib.sha1(t.encode()).hexdigest()[:12]}" for t in texts]
    tokens = [t.split() for t in texts] if cfg.data.task == "ner" else None
    return Dataset(task=cfg.data.task, ids=ids, labels=[None] * len(texts), texts=texts, tokens=tokens, source=str(p))


def _oracle(cfg: Config, run_dir: Path, hidden: dict | None):
    if cfg.loop.oracle == "column":
        if hidden is None:
            raise RunError("loop.oracle = 'column' needs loop.pool with a label column")
        return ColumnOracle(hidden)
    if cfg.loop.oracle == "queue":
        return QueueOracle(run_dir)
    return None


# --------------------------------------------------------------------------- training a round


def _train_round(rd: Path, cfg: Config, tree: dict, recipe: Recipe, splits: Splits, champion_dir: Path | None,
                 quiet: bool, retrain: bool = True) -> tuple[dict, int, object]:
    """Train (or, for post-only plans, copy) the challenger into `rd`; returns its metrics, the
    examples it processed, and its bundle."""
    from .modeling import load_bundle, save_bundle
    from .train import train

    _save_train(rd / "train.jsonl", recipe.train)
    run_tree = json.loads(json.dumps(tree))
    if recipe.init_from:
        run_tree["model"]["name"] = recipe.init_from  # transfer: this round only
    for key, value in recipe.round_only.items():  # e.g. transfer's shorter schedule: not inherited
        node = run_tree
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    run_cfg = validate_tree(run_tree)
    if retrain:
        res = train(run_cfg, rd, splits=Splits(recipe.train, splits.selection, None, splits.labels, []), quiet=quiet,
                    existing=True)
        bundle, metrics, seen = res.bundle, res.metrics, res.fit.examples_seen
    else:  # calibrate / prune: work on the champion's trained model, no training
        (rd / "config.toml").write_text(dump_toml(run_cfg), encoding="utf-8")
        # The round still describes itself: what it started from and what it did, no training.
        _write_json(rd / "run.json", {"kind": "post", "status": "finished", "trained": False,
                                      "source_model": str((champion_dir / "model").resolve()),
                                      "steps": recipe.post, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                      "versions": _versions()})
        for name in ("dynamics.npz", "gradients.npz"):
            if (champion_dir / name).is_file():
                shutil.copy(champion_dir / name, rd / name)
        bundle = load_bundle(champion_dir / "model")
        metrics = json.loads((champion_dir / "metrics.json").read_text())
        metrics = {k: metrics[k] for k in ("selection_metric", "best_epoch", "history") if k in metrics}
        metrics["examples_trained"] = 0
        seen = 0
    if recipe.post:
        post = _PostInputs(bundle, splits, cfg)
        for step in recipe.post:
            action = get_action(step["action"], **step["params"])
            info = action.transform(bundle.model, post)
            metrics.setdefault("post", {})[step["action"]] = info
            if step["action"] == "calibrate":
                _write_json(rd / "calibration.json", info)
        save_bundle(bundle, rd / "model")
        out = _evaluate(bundle, splits.selection, cfg)
        metrics["selection"] = out.metrics
        _write_json(rd / "metrics.json", metrics)
    return metrics, seen + recipe.extra_examples, bundle


class _PostInputs:
    """What a post-training step reads: the selection split's logits and targets."""

    def __init__(self, bundle, splits: Splits, cfg: Config):
        self.bundle, self.splits, self.cfg = bundle, splits, cfg
        self.labels = splits.labels
        l2i = {n: i for i, n in enumerate(splits.labels)}
        self.selection_targets = np.array([l2i[y] for y in splits.selection.labels]) if cfg.data.task == "classification" else None

    def selection_logits(self, model):
        from . import runtime
        from .evaluate import forward_all
        from .tasks import get_task

        tmod = get_task(self.cfg.data.task)
        l2i = {n: i for i, n in enumerate(self.labels)}
        feats = tmod.encode(self.bundle.tokenizer, self.splits.selection, l2i, self.cfg.data.max_length)
        pad = getattr(self.bundle.tokenizer, "pad_token_id", 0) or 0
        logits, _, _ = forward_all(model, feats, pad, self.cfg.data.task, self.cfg.train.eval_batch_size,
                                   runtime.resolve_precision(self.cfg.train.precision))
        return np.stack(logits) if logits else np.zeros((0, len(self.labels)))


def _evaluate(bundle, ds: Dataset, cfg: Config):
    from .evaluate import evaluate_bundle

    return evaluate_bundle(bundle, ds, batch_size=cfg.train.eval_batch_size, precision=cfg.train.precision)


def _predictor(bundle, cfg: Config):
    from .evaluate import bundle_probs

    cache: dict = {}

    def predict(texts: list[str]):
        key = tuple(texts)
        if key not in cache:  # the label check and the robustness check ask for the same texts in one round
            cache.clear()
            cache[key] = bundle_probs(bundle, list(texts), batch_size=cfg.train.eval_batch_size,
                                      precision=cfg.train.precision)
        return cache[key]

    return predict


# --------------------------------------------------------------------------- round 0


def _baseline(run_dir: Path, cfg: Config, splits: Splits, pool: Dataset | None, quiet: bool) -> _State:
    t0 = time.time()
    rd = _round_dir(run_dir, 0)
    rd.mkdir(parents=True, exist_ok=True)
    _say(quiet, "round 0: training the baseline")
    tree = _base_tree(cfg)
    recipe = Recipe(tree=tree, train=splits.train, pool=pool)
    _write_json(rd / "plan.json", {"actions": [], "ranking": [], "addressed": [], "changes": []})
    metrics, seen, _ = _train_round(rd, cfg, tree, recipe, splits, None, quiet)
    _write_json(rd / "recipe.json", {"tree": tree, "pool_ids": None if pool is None else list(pool.ids)})
    value = metrics["selection"][cfg.selection_metric]
    decision = {"round": 0, "promoted": True, "reason": "baseline: the first champion", "champion_round": 0,
                "selection": value, "seconds": time.time() - t0, "examples_trained": seen, "labels_used": 0,
                "actions": []}
    _fault("0:before_decision")
    _write_json(rd / "decision.json", decision)
    _set_champion(run_dir, 0)
    _record(run_dir, decision, cfg)
    return _State([decision], 0, recipe, seen, 0, {})


def _base_tree(cfg: Config) -> dict:
    tree = cfg.model_dump()
    return {k: tree[k] for k in ("data", "model", "train", "run")}


# --------------------------------------------------------------------------- a round


def _round(r: int, run_dir: Path, cfg: Config, splits: Splits, state: _State, oracle, quiet: bool,
           pool: Dataset | None) -> _State | str:
    from .compare import compare, compare_ner
    from .diagnose import run_diagnosis
    from .modeling import load_bundle

    t0 = time.time()
    rd = _round_dir(run_dir, r)
    if rd.exists():
        shutil.rmtree(rd)
    rd.mkdir(parents=True)
    # The challenger builds on the base round (the champion, or a promising rejected challenger:
    # diagnosed on the data it was trained on) and is tested against the champion.
    cdir = _round_dir(run_dir, state.base)
    base_model = load_bundle(cdir / "model")
    base_out = _evaluate(base_model, splits.selection, cfg)
    champ_out = base_out if state.base == state.champion else _evaluate(
        load_bundle(_round_dir(run_dir, state.champion) / "model"), splits.selection, cfg)
    predict = _predictor(base_model, cfg)
    embed = _embedder(cfg)

    ctx = _context(cfg, splits, state, cdir, base_out, predict, embed, quiet)
    diagnosis = run_diagnosis(rd, cfg.loop.checks or None, ctx=ctx, write=True, quiet=quiet)
    _fault(f"{r}:after_diagnosis")

    # Reflect + plan.
    base = _base_recipe(state)
    inputs = _inputs(cfg, splits, r, state, diagnosis.findings, base_out, cdir, predict, embed, oracle, rd, quiet)
    left = None if cfg.loop.examples_budget is None else cfg.loop.examples_budget - state.examples_trained
    seconds_left = rate = None
    if cfg.loop.time_budget_s is not None:
        # Rounds so far, diagnosis and evaluation included, give the run's cost per training example.
        spent = sum(d["seconds"] for d in state.decisions) + (time.time() - t0)
        seconds_left = cfg.loop.time_budget_s - spent
        rate = sum(d["seconds"] for d in state.decisions) / max(1, state.examples_trained)
    plan, ranking, addressed = choose_plan(diagnosis.targets, inputs, base, cfg, run_dir, _rejected_on_base(
        run_dir, state), r, examples_left=left, seconds_left=seconds_left, seconds_per_example=rate)
    if not plan:
        shutil.rmtree(rd)
        if any("loop.examples_budget" in row.get("skipped", "") for row in ranking):
            return (f"compute budget spent: no applicable plan fits in the {left} training examples left of "
                    f"{cfg.loop.examples_budget}")
        if any("loop.time_budget_s" in row.get("skipped", "") for row in ranking):
            return (f"time budget spent: no applicable plan fits in the {seconds_left:.0f} s left of "
                    f"{cfg.loop.time_budget_s:.0f} s")
        return "no applicable action left to try"
    _say(quiet, f"round {r}: plan " + " + ".join(f"{a.name}" for a in plan) + f" (for {', '.join(addressed)})")
    recipe = base
    for action in plan:
        recipe = action.apply(recipe, inputs)
    steps = [{"action": a.name, "params": a.params(), "addresses": sorted(set(a.addresses) & set(addressed))}
             for a in plan]
    _write_json(rd / "plan.json", {"actions": steps, "ranking": ranking, "addressed": addressed,
                                   "changes": recipe.changes})
    _fault(f"{r}:after_plan")
    if _unchanged(base, recipe):
        # e.g. active learning with a person as the oracle who has not answered yet: training the
        # same recipe again would only spend compute. The round is recorded as a no-op.
        what = "; ".join(f"{c['action']}: {c.get('skipped') or 'no change'}" for c in recipe.changes)
        queued = (rd.parent.parent / "label_queue.csv").is_file()
        reason = "the plan changed nothing (" + what + ")" + (
            "; examples wait in label_queue.csv for `reflectlm label import`" if queued else "") + "; not trained"
        decision = {"round": r, "promoted": False, "reason": reason, "champion_round": state.champion,
                    "selection": champ_out.metrics[cfg.selection_metric], "champion_selection":
                    champ_out.metrics[cfg.selection_metric], "seconds": time.time() - t0, "examples_trained": 0,
                    "labels_used": 0, "acquired": {}, "actions": [a.name for a in plan], "addressed": addressed,
                    "no_op": True, "built_on": state.base, "next_base": state.base}
        _write_json(rd / "decision.json", decision)
        _record(run_dir, decision, cfg)
        _say(quiet, f"round {r}: {reason}")
        return _State(state.decisions + [decision], state.champion, state.recipe, state.examples_trained,
                      state.labels_used, state.acquired, state.base)

    # Train the challenger.
    # A plan is all-retraining or all-post (choose_plan keeps them apart): calibrate / prune work on
    # the champion's trained model.
    metrics, seen, bundle = _train_round(rd, cfg, recipe.tree, recipe, splits, cdir, quiet, retrain=plan[0].retrains)
    _fault(f"{r}:after_train")
    chall_out = _evaluate(bundle, splits.selection, cfg)

    # A/B test on the selection split.
    mode = plan[0].mode
    lc = cfg.loop
    if cfg.data.task == "ner":
        ca, ka = _ner_counts(champ_out.probs, splits.selection, splits.labels)
        cb, kb = _ner_counts(chall_out.probs, splits.selection, splits.labels)
        result = compare_ner(ca, cb, ka, kb, mode=mode, alpha=lc.alpha, margin=lc.margin, n_bootstrap=lc.n_bootstrap,
                             seed=cfg.train.seed + r)
    else:
        l2i = {n: i for i, n in enumerate(splits.labels)}
        y = np.array([l2i[v] for v in splits.selection.labels])
        metric = cfg.selection_metric if cfg.selection_metric in ("accuracy", "macro_f1") else "macro_f1"
        result = compare(y, np.asarray(champ_out.probs).argmax(1), np.asarray(chall_out.probs).argmax(1),
                         labels=splits.labels, metric=metric, mode=mode, alpha=lc.alpha, margin=lc.margin,
                         n_bootstrap=lc.n_bootstrap, seed=cfg.train.seed + r,
                         allow_class_regressions=lc.allow_class_regressions)
    _write_json(rd / "compare.json", result.to_json())

    promoted = bool(result.promote)
    chained = not promoted and _promising(result, plan, chall_out, base_out, state, cfg)
    reason = result.reason
    if chained:
        depth = _chain_depth(state) + 1
        reason += (f"; but {result.difference:+.4f} >= {lc.chain_min_gain}: the next round builds on this one "
                   f"({depth} of at most {lc.chain} in a row) and is again tested against the champion")
    if promoted or chained:
        _write_json(rd / "recipe.json", {"tree": recipe.tree,
                                         "pool_ids": None if recipe.pool is None else list(recipe.pool.ids)})
    elif (rd / "model").exists():
        shutil.rmtree(rd / "model")  # a rejected challenger's weights are not kept
    new_acquired = {}
    for ch in recipe.changes:
        if ch.get("action") == "active_learning":
            idx = {i: k for k, i in enumerate(recipe.train.ids)}
            new_acquired.update({i: recipe.train.labels[idx[i]] for i in ch.get("ids", []) if i in idx})
    next_base = r if promoted or chained else state.champion
    decision = {"round": r, "promoted": promoted, "reason": reason,
                "champion_round": r if promoted else state.champion,
                "selection": chall_out.metrics[cfg.selection_metric],
                "champion_selection": champ_out.metrics[cfg.selection_metric], "decided_by": result.metric,
                "seconds": time.time() - t0, "examples_trained": seen, "labels_used": recipe.labels_used,
                "acquired": new_acquired, "actions": [a.name for a in plan], "addressed": addressed,
                "built_on": state.base, "next_base": next_base}
    _fault(f"{r}:before_decision")
    _write_json(rd / "decision.json", decision)
    if promoted:
        _set_champion(run_dir, r)
    _record(run_dir, decision, cfg)
    _say(quiet, f"round {r}: {reason}")
    # The next state is read back from disk, as --resume reads it: one derivation for both.
    return _state_after(run_dir, cfg, splits, pool, state.decisions + [decision])


def _unchanged(a: Recipe, b: Recipe) -> bool:
    same_w = (a.train.weights is None and b.train.weights is None) or (
        a.train.weights is not None and b.train.weights is not None and np.array_equal(a.train.weights, b.train.weights))
    return (a.tree == b.tree and a.train.ids == b.train.ids and a.train.labels == b.train.labels and same_w
            and not b.post and b.init_from == a.init_from)


def _rejected_on_base(run_dir: Path, state: _State) -> set[str]:
    """Plans already tried on the current base since the champion last changed: the same findings
    would propose them again. (A plan rejected on the champion may still be tried on a promising
    challenger's data, e.g. a second cleaning pass.)"""
    out = set()
    for d in state.decisions[state.champion + 1:]:
        if d.get("built_on", d["champion_round"]) != state.base:
            continue
        plan = json.loads((_round_dir(run_dir, d["round"]) / "plan.json").read_text())
        for a in plan["actions"]:
            out.add(json.dumps([a["action"], a["params"]], sort_keys=True))
    return out


def _chain_depth(state: _State) -> int:
    """How many promising rejected rounds in a row the current base stands on."""
    depth, r = 0, state.base
    while r != state.champion:
        depth += 1
        r = state.decisions[r].get("built_on", state.champion)
    return depth


def _promising(result, plan: list, chall_out, base_out, state: _State, cfg: Config) -> bool:
    """A rejected challenger worth building on: a retraining plan judged by superiority whose
    estimate beats the champion by at least chain_min_gain, and beats the round it was built on."""
    lc = cfg.loop
    if lc.chain <= 0 or not plan or plan[0].mode != SUPERIORITY or not plan[0].retrains:
        return False
    if result.difference is None or not result.difference >= lc.chain_min_gain or _chain_depth(state) >= lc.chain:
        return False
    m = cfg.selection_metric
    better = (lambda a, b: a < b) if m == "loss" else (lambda a, b: a > b)
    return state.base == state.champion or better(chall_out.metrics[m], base_out.metrics[m])


def _embedder(cfg: Config):
    from .embed import embed_texts

    encoder = cfg.model.name if cfg.model.kind == "transformer" else "minilm"
    if "adapted" in str(encoder) or (Path(str(encoder)) / "reflectlm.json").is_file():
        encoder = "minilm" if cfg.model.kind != "transformer" else encoder
    return lambda texts: embed_texts(list(texts), model=encoder, quiet=True)


def _context(cfg: Config, splits: Splits, state: _State, cdir: Path, champ_out, predict, embed, quiet: bool):
    from .diagnose import DIAGNOSTICS
    from .diagnose.base import Context

    ctx = Context(task=cfg.data.task, labels=splits.labels, train=state.recipe.train, selection=splits.selection,
                  selection_probs=champ_out.probs, selection_metrics=champ_out.metrics, seed=cfg.train.seed,
                  train_config=state.recipe.tree["train"], predict_texts=predict, embed_texts=embed)
    metrics = json.loads((cdir / "metrics.json").read_text())
    ctx.history = metrics.get("history")
    for name, attr in (("dynamics.npz", "dynamics"), ("gradients.npz", "gradients")):
        if (cdir / name).is_file():
            with np.load(cdir / name) as z:
                setattr(ctx, attr, {k: z[k] for k in z.files})
    checks = cfg.loop.checks or list(DIAGNOSTICS)
    needs = {n for c in checks for n in DIAGNOSTICS[c]().needs}
    if needs & {"oof_probs", "cv"}:
        from .diagnose.crossval import out_of_fold

        model = cfg.model.name if cfg.model.kind == "transformer" else "minilm"
        ctx.oof_probs, ctx.cv = out_of_fold(state.recipe.train, splits.labels, cfg.data.task, mode=cfg.loop.cv, folds=5,
                                            seed=cfg.train.seed, model=model, train_cfg=cfg.train, model_cfg=cfg.model,
                                            quiet=quiet)
    return ctx


def _ner_counts(probs, ds: Dataset, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per sentence: entity (tp, fp, fn) under strict span matching, and whether it is all right."""
    from .tasks.ner import decode, spans

    counts = np.zeros((len(ds), 3), dtype=np.int64)
    right = np.zeros(len(ds), dtype=bool)
    for k, (p, gold) in enumerate(zip(probs, ds.labels)):
        g, q = set(spans(list(gold))), set(spans(decode(p, labels)))
        counts[k] = (len(g & q), len(q - g), len(g - q))
        right[k] = g == q
    return counts, right


# --------------------------------------------------------------------------- planning


def plan_cost(plan: list, recipe: Recipe) -> int:
    """Training examples a plan will process (an upper estimate made before it runs): its epochs
    over the training set plus what its actions process on their own; post-only plans train nothing."""
    if not plan or not plan[0].retrains:
        return 0
    n, epochs, extra = len(recipe.train), int(recipe.get("train.epochs", 1)), 0
    for action in plan:
        if hasattr(action, "estimate"):
            n, epochs, extra = action.estimate(n, epochs, extra)
    return int(n * epochs + extra)


def choose_plan(targets: list, inputs: ActionInputs, recipe: Recipe, cfg: Config, run_dir: Path,
                rejected: set[str], r: int, examples_left: int | None = None, seconds_left: float | None = None,
                seconds_per_example: float | None = None) -> tuple[list, list[dict], list[str]]:
    """Rank candidate actions by a Thompson draw from their value posterior (prior: the rules'
    expected gain; data: the gains measured in this workspace), then take the best applicable one
    and up to max_actions - 1 compatible others judged the same way.

    Returns (actions, the ranking with its numbers, the finding kinds the plan addresses)."""
    lc = cfg.loop
    allowed = set(lc.actions or ACTIONS) - set(lc.exclude_actions)
    _validate_loop(cfg)
    prior: dict[str, float] = {}
    kinds: dict[str, list[str]] = {}
    for t in targets:
        for j, a in enumerate(t.actions):
            if a not in allowed:
                continue
            g = t.expected_gain * 0.8**j  # the rule lists actions most promising first
            prior[a] = max(prior.get(a, 0.0), g)
            kinds.setdefault(a, []).append(t.finding_kind)
    if "prune" in lc.actions and "prune" not in prior:  # compression is asked for, not diagnosed
        prior["prune"], kinds["prune"] = 0.001, ["model_size"]
    if inputs.oracle is not None and "active_learning" in allowed and "active_learning" not in prior:
        # Someone pays for labels (an oracle is configured): asking is worth a round even when no
        # finding points at a class.
        prior["active_learning"], kinds["active_learning"] = 0.001, ["unlabelled_pool"]
    learned = store.gains(run_dir.parent, cfg.data.task)
    rng = np.random.default_rng([cfg.train.seed, r])
    ranking = []
    for a in sorted(prior):
        obs = [g for k in sorted(set(kinds[a])) for g, _ in learned.get((k, a), [])]
        mean, sd = store.posterior(prior[a], obs)
        draw = float(rng.normal(mean, sd)) if lc.exploration == "thompson" else mean
        ranking.append({"action": a, "finding_kinds": kinds[a], "prior": round(prior[a], 5), "observed": len(obs),
                        "observed_mean": float(np.mean(obs)) if obs else None, "posterior_mean": round(mean, 5),
                        "posterior_sd": round(sd, 5), "score": round(draw, 5)})
    ranking.sort(key=lambda x: (-x["score"], x["action"]))
    plan: list = []
    for row in ranking:
        action = ACTIONS[row["action"]].propose(inputs, recipe)
        if action is None:
            row["skipped"] = "does not apply here"
            continue
        if lc.action_params.get(action.name):
            action = get_action(action.name, **{**action.params(), **lc.action_params[action.name]})
        # Asking the oracle is never the same plan twice: each query takes new examples from the
        # pool (and the answers of a rejected round stay in the data).
        fresh = action.name == "active_learning" and inputs.oracle is not None
        if json.dumps([action.name, action.params()], sort_keys=True) in rejected and not fresh:
            row["skipped"] = "the same plan was already tried on this base since the champion last changed"
            continue
        cost = plan_cost(apply_order(plan + [action]), recipe)
        if examples_left is not None and cost > examples_left:
            row["skipped"] = (f"would process about {cost} training examples; {examples_left} are left of "
                              "loop.examples_budget")
            continue
        if seconds_left is not None and seconds_per_example and cost * seconds_per_example > seconds_left:
            row["skipped"] = (f"would take about {cost * seconds_per_example:.0f} s at this run's "
                              f"{seconds_per_example * 1000:.1f} ms per example; {seconds_left:.0f} s are left of "
                              "loop.time_budget_s")
            continue
        if plan:
            lead = plan[0]
            if (action.mode != lead.mode or action.retrains != lead.retrains or len(plan) >= lc.max_actions
                    or any({action.name, p.name} in CONFLICTS for p in plan) or row["score"] < 0.5 * ranking[0]["score"]):
                continue
        plan.append(action)
        row["chosen"] = True
    addressed = sorted({k for a in plan for k in kinds.get(a.name, [])})
    # Ranked to be chosen, applied in the table's order (e.g. fix labels before dropping suspects).
    return apply_order(plan), ranking, addressed


# --------------------------------------------------------------------------- stopping and the end


def _should_stop(state: _State, cfg: Config) -> str | None:
    lc = cfg.loop
    done = len(state.decisions) - 1
    champ = state.decisions[state.champion]
    value = champ["selection"]
    reached = value <= lc.target if cfg.selection_metric == "loss" else value >= lc.target if lc.target is not None else False
    if lc.target is not None and reached:
        return f"target reached: {cfg.selection_metric} {value:.4f} >= {lc.target}"
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
        # A round costs about what the champion's training cost; do not start one that cannot finish.
        next_cost = champ["examples_trained"] or state.decisions[0]["examples_trained"]
        if state.examples_trained + next_cost > lc.examples_budget:
            return (f"compute budget spent ({state.examples_trained} of {lc.examples_budget} training examples; "
                    f"a round needs about {next_cost})")
    if lc.label_budget is not None and lc.oracle != "none" and state.labels_used >= lc.label_budget:
        return f"label budget spent ({state.labels_used} of {lc.label_budget})"
    return None


def _finish(run_dir: Path, cfg: Config, splits: Splits, sealed: _Sealed, state: _State, reason: str,
            session_start: float) -> dict:
    """Evaluate the champion (and round 0) on the test split - the first time it is read."""
    from .modeling import load_bundle

    test = sealed.open()
    champ_dir = _round_dir(run_dir, state.champion)
    out = {"selection_metric": cfg.selection_metric, "champion_round": state.champion, "stop_reason": reason,
           "examples_trained": state.examples_trained, "labels_used": state.labels_used,
           "selection": state.decisions[state.champion]["selection"],
           "round0_selection": state.decisions[0]["selection"]}
    if test is not None:
        out["test"] = _evaluate(load_bundle(champ_dir / "model"), test, cfg).metrics
        out["round0_test"] = (out["test"] if state.champion == 0 else
                              _evaluate(load_bundle(_round_dir(run_dir, 0) / "model"), test, cfg).metrics)
    rows = []
    for d in state.decisions:
        c = _round_dir(run_dir, d["round"]) / "compare.json"
        cmp = json.loads(c.read_text()) if c.is_file() else {}
        rows.append({"round": d["round"], "actions": d.get("actions", []), "addressed": d.get("addressed", []),
                     "selection": d["selection"], "promoted": d["promoted"], "difference": cmp.get("difference"),
                     "ci_low": cmp.get("ci_low"), "ci_high": cmp.get("ci_high"),
                     "p_mcnemar": (cmp.get("mcnemar") or {}).get("p_value"), "reason": d["reason"],
                     "examples_trained": d["examples_trained"], "seconds": d["seconds"],
                     "built_on": d.get("built_on")})
    out["rounds"] = rows
    out["action_values"] = [v.to_json() for v in store.action_values(run_dir.parent, cfg.data.task)]
    info = json.loads((run_dir / "run.json").read_text())
    out["wall_seconds"] = info.get("wall_seconds", 0.0) + (time.time() - session_start)
    _write_json(run_dir / "summary.json", out)
    info.update(status="finished", stop_reason=reason, champion_round=state.champion, wall_seconds=out["wall_seconds"])
    _write_json(run_dir / "run.json", info)
    return out


def _after_round(run_dir: Path, cfg: Config, quiet: bool, final: bool = False) -> None:
    """Regenerate the report (and log to MLflow at the end); a reporting failure never stops the loop."""
    if not cfg.loop.report and cfg.loop.tracking == "none":
        return
    try:
        from . import report
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


class _CallableModule(type(sys)):
    # `reflectlm.loop(cfg)` calls improve(), like reflectlm.train / reflectlm.diagnose.
    def __call__(self, *args, **kwargs):
        return improve(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["LoopResult", "ROUND_FILES", "SUPERIORITY", "choose_plan", "improve", "plan_cost", "replay"]
