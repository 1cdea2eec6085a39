"""Our training loop, on accelerate: fine-tune a model and record what the diagnosis needs.

Besides the usual (AdamW / Adafactor, warm-up + decay, accumulation, clipping, bf16 / fp16
autocast, length-grouped dynamic batches, early stopping, freezing, layer-wise learning rates)
it records, at no extra forward pass:

- training dynamics: each training example's loss, gold-label probability and correctness,
  per epoch, read off the training forward pass (References: Swayamdipta et al. 2020, data maps);
- gradient telemetry: every `telemetry_every` optimizer steps, the gradient norm, weight norm
  and update-to-weight ratio of each layer group (embeddings, layer.i, head).

What a task changes (encoding, the loss, decoding) is the task's (tasks/); what a remedy adds (class
weights, forward correction, early-learning targets, adversarial steps) is the remedy's
(remedies.py): `fit` calls both without knowing which.

    bundle, result = fit_config(cfg, train_ds, selection_ds, labels)   # build -> encode -> fit
    train(cfg)                                                         # the job: + run directory

Under `accelerate launch --num_processes N` both run data-parallel (DDP): each process trains on its
share of the batches, the records are joined so every example appears once, and only the main
process writes files (docs/scale-out.md).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import lm, rundir, runtime
from .callable import callable_module
from .config import Config, ConfigError, TrainConfig, dump_toml
from .evaluate import evaluate_features, pad_id
from .metric import get_metric
from .modeling import Bundle, build, layer_groups, save_bundle
from .remedies import Setting, open_remedies
from .rundir import RUN_FILES, RunError
from .tasks import get_task, model_inputs
from .ui import progress

__all__ = ["FitInputs", "FitResult", "RUN_FILES", "RunError", "TrainResult", "fit", "fit_config", "train"]


# --------------------------------------------------------------------------- batching


class LengthGroupedBatches:
    """Shuffled batches of similar length: shuffle, cut into mega-batches of 50 batches, sort each
    by length, cut into batches, shuffle the batch order. Padding falls to a few percent while
    every epoch still sees a different order. Seeded per epoch, so runs repeat exactly."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool = True):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        bs = self.batch_size
        if self.group:
            mega = bs * 50
            chunks = [order[i : i + mega] for i in range(0, len(order), mega)]
            order = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks]) if chunks else order
        batches = [order[i : i + bs].tolist() for i in range(0, len(order), bs)]
        if self.group:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return iter(batches)


class ShardedBatches:
    """One process's share of a batch order under N processes: its j-th batch is batch j * N + rank
    of the whole order, which every process draws alike (same seed and epoch), so together they see
    each batch once. The order is padded to a multiple of N by repeating its first batches, because
    DDP needs every process to take every step (DistributedSampler pads the same way);
    `is_padding(j)` marks such a repeat, which the loop trains on but leaves out of the dynamics and
    the epoch's loss, so each example is recorded exactly once. With N = 1 it is the order itself.

    accelerate's own sharding is not used: it pads a short last batch up to the batch size, so an
    epoch's records would hold some examples twice."""

    def __init__(self, batches: LengthGroupedBatches, num_processes: int = 1, rank: int = 0):
        self.batches = batches
        self.num_processes = num_processes
        self.rank = rank

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.batches) / self.num_processes)

    def is_padding(self, j: int) -> bool:
        return j * self.num_processes + self.rank >= len(self.batches)

    def __iter__(self):
        order = list(self.batches)
        order += [order[i % len(order)] for i in range(len(self) * self.num_processes - len(order))]
        return iter(order[self.rank :: self.num_processes])


# --------------------------------------------------------------------------- optimiser


def _no_decay(name: str, p: torch.nn.Parameter) -> bool:
    # Biases and normalisation weights are not decayed (the usual BERT recipe).
    return p.ndim < 2 or "norm" in name.lower()


def trainable_groups(model: torch.nn.Module) -> list[tuple[str, list]]:
    """modeling.layer_groups, with only the adapters of a LoRA model (its base stays as loaded)."""
    groups = layer_groups(model)
    if lm.is_adapter(model):
        groups = [(n, [(k, p) for k, p in ps if lm.adapter_param(k)]) for n, ps in groups]
        groups = [(n, ps) for n, ps in groups if ps]
    return groups


def param_groups(model: torch.nn.Module, tc: TrainConfig) -> list[dict]:
    """Optimizer groups per layer group x (decay, no decay), with freezing and layer-wise
    learning-rate decay (the top layer gets lr, each layer below it lr * decay more)."""
    groups = trainable_groups(model)
    layers = [n for n, _ in groups if n.startswith("layer.")]
    trainable = set(n for n, _ in groups)
    if tc.freeze == "head_only":
        trainable = {"head"}
    elif tc.freeze == "last_n":
        keep = layers[len(layers) - tc.unfreeze_last_n :] if tc.unfreeze_last_n else []
        trainable = {"head", *keep}
    out = []
    for name, params in groups:
        if name not in trainable:
            for _, p in params:
                p.requires_grad_(False)
            continue
        if name == "head":
            lr = tc.head_lr or tc.lr
        elif name == "embeddings":
            lr = tc.lr * tc.layerwise_lr_decay ** (len(layers) or 1)
        else:
            depth = len(layers) - 1 - layers.index(name)
            lr = tc.lr * tc.layerwise_lr_decay**depth
        for p_list, wd in (([p for n, p in params if not _no_decay(n, p)], tc.weight_decay),
                           ([p for n, p in params if _no_decay(n, p)], 0.0)):
            if p_list:
                for p in p_list:
                    p.requires_grad_(True)
                out.append({"params": p_list, "lr": lr, "weight_decay": wd, "group": name})
    if not out:
        raise ConfigError("nothing to train: every parameter is frozen; set train.freeze = 'none' or 'last_n'")
    return out


def make_optimizer(groups: list[dict], tc: TrainConfig):
    clean = [{k: v for k, v in g.items() if k != "group"} for g in groups]
    if tc.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # Fixed learning rate (no relative step) so schedules and layer-wise rates apply as with AdamW.
        return Adafactor(clean, lr=tc.lr, scale_parameter=False, relative_step=False, warmup_init=False)
    # The fused kernel does the whole update in one pass; on this CPU the optimizer step drops
    # from about a third of a training step to under a tenth (MiniLM, batch 32).
    return torch.optim.AdamW(clean, lr=tc.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)


def make_schedule(optimizer, tc: TrainConfig, total_steps: int):
    from transformers.optimization import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[tc.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=int(tc.warmup_ratio * total_steps), num_training_steps=total_steps)


# --------------------------------------------------------------------------- telemetry


class GradientTelemetry:
    """Per layer group: gradient norm (before clipping), weight norm and ||update|| / ||weight||.

    Measured every `every` optimizer steps with fused foreach norms: one snapshot of the
    trainable weights before the step and one subtraction after it. Frozen groups are reported
    too (all zeros) so a frozen encoder reads as 'no updates', not as missing data.
    """

    def __init__(self, model: torch.nn.Module, every: int):
        self.every = every
        groups = trainable_groups(model)
        self.names = [n for n, _ in groups]
        self.params = [p for _, ps in groups for _, p in ps]
        self.group_of = torch.tensor([g for g, (_, ps) in enumerate(groups) for _ in ps])
        self.rows: dict[str, list] = {k: [] for k in ("step", "lr", "loss", "grad_norm", "weight_norm", "update_ratio")}
        self._before = None
        self._pending = None
        self.seconds = 0.0  # time spent measuring, to report the overhead

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def _per_group(self, norms: torch.Tensor) -> np.ndarray:
        sq = torch.zeros(len(self.names), dtype=torch.float64).index_add_(0, self.group_of, norms.double().cpu() ** 2)
        return sq.sqrt().numpy()

    @torch.no_grad()
    def before_step(self, step: int, lr: float, loss: float, grad_scale: float = 1.0) -> None:
        t0 = time.perf_counter()
        live = [p.grad is not None for p in self.params]
        grads = [p.grad for p, ok in zip(self.params, live) if ok]
        norms = torch.zeros(len(self.params))
        if grads:
            norms[torch.tensor(live)] = torch.stack(torch._foreach_norm(grads)).float().cpu() / grad_scale
        self._pending = (step, lr, loss, self._per_group(norms))
        self._before = [p.detach().clone() for p in self.params]
        self.seconds += time.perf_counter() - t0

    @torch.no_grad()
    def after_step(self) -> None:
        if self._before is None:
            return
        t0 = time.perf_counter()
        now = [p.detach() for p in self.params]
        update = self._per_group(torch.stack(torch._foreach_norm(torch._foreach_sub(now, self._before))).float())
        weight = self._per_group(torch.stack(torch._foreach_norm(now)).float())
        step, lr, loss, grad = self._pending
        for k, v in zip(self.rows, (step, lr, loss, grad, weight, update / np.maximum(weight, 1e-12))):
            self.rows[k].append(v)
        self._before = self._pending = None
        self.seconds += time.perf_counter() - t0

    def arrays(self) -> dict[str, np.ndarray]:
        L = len(self.names)
        out = {"layers": np.array(self.names)}
        for k, v in self.rows.items():
            if k in ("grad_norm", "weight_norm", "update_ratio"):
                out[k] = np.array(v, dtype=np.float32).reshape(-1, L)  # (S, L)
            else:
                out[k] = np.array(v, dtype=np.int64 if k == "step" else np.float32)  # (S,)
        return out




# --------------------------------------------------------------------------- the loop


@dataclass
class FitInputs:
    """What fit trains on: the task's encoded features and what scoring them needs."""

    task: object  # tasks.Task
    labels: list[str]
    train: list[dict]  # encoded training features (task.encode)
    selection: tuple  # (Dataset, features): picks the best epoch
    pad_id: int
    metric: str  # the selection metric
    example_weights: np.ndarray | None = None  # (N,) per training example (a feature's "index")
    class_weights: np.ndarray | None = None  # (C,) per gold class; else train.class_weights
    options: dict = field(default_factory=dict)  # the encoding options the task decodes with (task.outputs)
    tokenizer: object = None  # the model's: a task that generates decodes its outputs with it

    @property
    def examples(self) -> int:
        """Training examples: the features the dynamics record (one per example)."""
        return sum(1 for f in self.train if f.get("record", True))


@dataclass
class FitResult:
    history: list[dict]
    dynamics: dict[str, np.ndarray]  # (E, N) per recorded example; "index": the examples' positions (N,)
    telemetry: dict[str, np.ndarray]
    best_epoch: int
    selection_metrics: dict
    examples_seen: int  # training features processed, all epochs together
    train_seconds: float
    precision: str
    stopped_early: bool = False
    overhead_seconds: dict | None = None  # {"telemetry": s, "dynamics": s}, inside train_seconds
    attention: str = "sdpa"  # the attention kernel training ran with (runtime.ATTENTIONS)


def _accelerator(mixed_precision: str, grad_accum: int, cpu: bool):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # accelerate keeps one process-wide state; a later fit() in the same process (the loop trains
    # many models) may ask for another precision, which a single process can safely switch.
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        if AcceleratorState().num_processes == 1:
            AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum, cpu=cpu)


def _epoch_records(records: dict[str, list]) -> dict[str, np.ndarray]:
    """One epoch's per-example records of every process, joined: index (M,) and loss, gold_prob,
    correct, weight (M,) each, every training example exactly once (checked)."""
    local = {k: np.concatenate(v) if v else np.zeros(0, np.int64 if k == "index" else np.float32)
             for k, v in records.items()}
    parts = runtime.gather_objects(local)
    out = {k: np.concatenate([p[k] for p in parts]) for k in local}
    if len(np.unique(out["index"])) != len(out["index"]):
        raise RuntimeError("an epoch recorded some training examples twice; the batches of the processes overlap")
    return out


@dataclass
class _Run:
    """One fit's moving parts, built by _setup and advanced by the epochs."""

    inputs: FitInputs
    tc: TrainConfig
    accelerator: object
    model: torch.nn.Module
    optimizer: object
    schedule: object
    loader: object
    sampler: ShardedBatches
    remedies: list
    loss_options: dict
    weights: torch.Tensor | None  # (N,) example weights
    telemetry: GradientTelemetry
    precision: str
    attention: str
    dyn: dict  # (E, N) loss, gold_prob, correct
    history: list = field(default_factory=list)
    step: int = 0
    seen: int = 0
    train_seconds: float = 0.0
    dynamics_seconds: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    best_state: dict | None = None
    since_best: int = 0
    stopped_early: bool = False

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def fit(model: torch.nn.Module, inputs: FitInputs, tc: TrainConfig, *, quiet: bool = False,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train `model` in place on inputs.train; pick the best epoch on inputs.selection.

    on_epoch gets each epoch's history row as soon as it is measured: tuning (actions/tune_hparams)
    reports it to Ray Tune, whose scheduler may end the trial there."""
    if not inputs.train:
        raise ConfigError("no training examples: check data.train and data.sample")
    run = _setup(model, inputs, tc)
    for epoch in range(tc.epochs):
        records = _epoch(run, epoch, quiet)
        row = _select(run, epoch, records, quiet)
        if on_epoch is not None:
            on_epoch(row)
        if run.stopped_early:
            break
    return _finish(run)


def _setup(model, inputs: FitInputs, tc: TrainConfig) -> _Run:
    """Precision, the accelerator, optimiser, schedule, batches, remedies and records."""
    from accelerate.data_loader import prepare_data_loader

    task = get_task(inputs.task)
    dev = runtime.device()
    precision = runtime.resolve_precision(tc.precision, dev, purpose="train")
    attention = runtime.attention_for(precision, "train", dev)  # accelerate applies the autocast itself
    # Under accelerate launch each process could measure "auto" differently; all take the main one's.
    precision, attention = runtime.from_main((precision, attention))
    accelerator = _accelerator({"fp32": "no"}.get(precision, precision), tc.grad_accum, dev.type == "cpu")
    optimizer = make_optimizer(param_groups(model, tc), tc)
    sampler = ShardedBatches(LengthGroupedBatches([len(f["input_ids"]) for f in inputs.train], tc.batch_size, tc.seed,
                                                  tc.group_by_length), accelerator.num_processes, accelerator.process_index)
    loader = torch.utils.data.DataLoader(inputs.train, batch_sampler=sampler,
                                         collate_fn=lambda b: task.collate(b, inputs.pad_id))
    schedule = make_schedule(optimizer, tc, math.ceil(len(sampler) / tc.grad_accum) * tc.epochs)
    model, optimizer = accelerator.prepare(model, optimizer)  # DDP when launched with N processes
    # The batches are already this process's shard: accelerate only places them on the device and
    # marks the epoch's end for gradient accumulation (num_processes=1: no second sharding).
    loader = prepare_data_loader(loader, accelerator.device, num_processes=1, process_index=0,
                                 non_blocking=accelerator.non_blocking)
    plain = accelerator.unwrap_model(model)
    n = max((f["index"] for f in inputs.train), default=-1) + 1
    remedies = open_remedies(tc, Setting(task, inputs.labels, n, accelerator.device, accelerator, plain),
                             inputs.class_weights)
    options = {k: v for r in remedies for k, v in r.options().items()}
    weights = torch.tensor(inputs.example_weights, dtype=torch.float32) if inputs.example_weights is not None else None
    rows = tc.epochs if tc.record_dynamics else 0  # off: the arrays keep their names, with no rows
    dyn = {k: np.full((rows, n), np.nan, dtype=np.float32) for k in ("loss", "gold_prob", "correct")}
    return _Run(inputs, tc, accelerator, model, optimizer, schedule, loader, sampler, remedies, options, weights,
                GradientTelemetry(plain, tc.telemetry_every), precision, attention, dyn)


def _epoch(run: _Run, epoch: int, quiet: bool) -> dict[str, np.ndarray]:
    """One pass over the training batches; the epoch's joined per-example records."""
    run.sampler.set_epoch(epoch)
    run.model.train()
    t0 = time.perf_counter()
    records: dict[str, list] = {k: [] for k in ("index", "loss", "gold_prob", "correct", "weight")}
    ema = None
    n, acc = len(run.inputs.train), run.accelerator
    with progress(n, f"epoch {epoch + 1}/{run.tc.epochs}", quiet or not run.main) as bar:
        for j, batch in enumerate(run.loader):
            loss, kept = _step(run, batch)
            t_dyn = time.perf_counter()
            if not run.sampler.is_padding(j):  # a repeat that evens out the processes' steps is not recorded
                for k, v in kept.items():
                    records[k].append(v)
            run.dynamics_seconds += time.perf_counter() - t_dyn
            ema = loss if ema is None else 0.9 * ema + 0.1 * loss
            bar.advance(len(batch["index"]) * acc.num_processes, loss=ema)
    t_dyn = time.perf_counter()
    rec = _epoch_records(records)
    if run.tc.record_dynamics:
        for k in run.dyn:
            run.dyn[k][epoch, rec["index"]] = rec[k]
    run.dynamics_seconds += time.perf_counter() - t_dyn
    run.seen += n  # every feature is trained once per epoch, over all processes together
    run.train_seconds += time.perf_counter() - t0
    rec["seconds"] = time.perf_counter() - t0
    return rec


def _step(run: _Run, batch: dict) -> tuple[float, dict]:
    """Forward, loss (with the remedies' terms), backward, the remedies' hooks and the optimiser
    step; returns the batch loss and the records of the features the dynamics keep."""
    task, acc, tc = get_task(run.inputs.task), run.accelerator, run.tc
    idx = batch["index"].cpu().numpy()  # (B,) examples; a numpy index, also for a one-example batch
    w_example = None if run.weights is None else run.weights[torch.from_numpy(idx)]

    def objective(b) -> tuple:
        with runtime.attention_context(run.attention):
            logits = task.logits(run.model(**model_inputs(b)))
        loss_vec, gold, correct, count = task.per_example(logits, b["labels"], tc.label_smoothing, **run.loss_options)
        w = count if w_example is None else count * w_example.to(count.device)
        return logits, loss_vec, gold, correct, w

    def mean(vec, w):
        return (vec * w).sum() / w.sum().clamp(min=1e-8)

    def loss_of(b):
        _, vec, _, _, w = objective(b)
        return mean(vec, w)

    with acc.accumulate(run.model):
        logits, loss_vec, gold, correct, w = objective(batch)
        total = loss_vec  # what is minimised; the records keep the plain loss
        for r in run.remedies:
            term = r.term(logits, idx, acc)
            if term is not None:
                total = total + term
        loss = mean(total, w)
        acc.backward(loss)
        for r in run.remedies:  # e.g. a second pass on perturbed embeddings; its gradient adds up
            r.after_backward(run.model, batch, loss_of, acc.backward)
        _optimizer_step(run, float(loss.detach()))
    mask = batch["record"].cpu().numpy().astype(bool)  # (B,) the features the dynamics keep
    kept = {"index": idx[mask]}
    for k, v in (("loss", loss_vec), ("gold_prob", gold), ("correct", correct), ("weight", w)):
        kept[k] = v.detach().float().cpu().reshape(-1).numpy()[mask]  # (B,), also for a one-example batch
    return float(loss.detach()), kept


def _optimizer_step(run: _Run, loss: float) -> None:
    acc = run.accelerator
    if acc.sync_gradients:
        run.step += 1
        if run.telemetry.due(run.step):
            scale = acc.scaler.get_scale() if acc.scaler is not None else 1.0
            run.telemetry.before_step(run.step, run.schedule.get_last_lr()[0], loss, scale)
        if run.tc.max_grad_norm:
            acc.clip_grad_norm_(run.model.parameters(), run.tc.max_grad_norm)
    run.optimizer.step()
    if acc.sync_gradients:
        run.schedule.step()
        run.telemetry.after_step()
    run.optimizer.zero_grad(set_to_none=True)


def _select(run: _Run, epoch: int, rec: dict, quiet: bool) -> dict:
    """Score the epoch on the selection split, keep the best weights, decide on early stopping."""
    inp, tc = run.inputs, run.tc
    # Every process evaluates the whole selection split with the same weights (one process's
    # numbers); the main one's metrics are shared so the best-epoch and stopping decisions agree.
    sel_ds, sel_feats = inp.selection
    out = evaluate_features(run.accelerator.unwrap_model(run.model), sel_ds, sel_feats, task=inp.task,
                            labels=inp.labels, pad_id=inp.pad_id, batch_size=tc.eval_batch_size,
                            precision=run.precision, options=inp.options, tokenizer=inp.tokenizer)
    sel_metrics = runtime.from_main(out.metrics)
    value = sel_metrics[inp.metric]
    w_sum = float(rec["weight"].astype(np.float64).sum())
    row = {"epoch": epoch + 1,
           "train_loss": float((rec["loss"].astype(np.float64) * rec["weight"]).sum()) / max(w_sum, 1e-8),
           "train_accuracy": float(rec["correct"].astype(np.float64).sum()) / max(len(rec["index"]), 1),
           "selection_loss": sel_metrics.get("loss"), f"selection_{inp.metric}": value,
           "lr": run.schedule.get_last_lr()[0], "seconds": rec["seconds"]}
    run.history.append(row)
    if not quiet and run.main:
        print(f"epoch {epoch + 1}/{tc.epochs}: train loss {row['train_loss']:.4f}  selection {inp.metric} {value:.4f}",
              flush=True)
    if get_metric(inp.metric).better(value, run.best):
        run.best, run.best_epoch, run.best_metrics, run.since_best = value, epoch + 1, sel_metrics, 0
        # The last epoch's weights are already in place.
        run.best_state = ({k: v.detach().clone() for k, v in run.accelerator.unwrap_model(run.model).state_dict().items()}
                          if epoch + 1 < tc.epochs else None)
    else:
        run.since_best += 1
        run.stopped_early = bool(tc.early_stopping_patience and run.since_best >= tc.early_stopping_patience)
    return row


def _finish(run: _Run) -> FitResult:
    model = run.accelerator.unwrap_model(run.model, keep_fp32_wrapper=False)
    if run.best_state is not None and run.best_epoch != len(run.history):
        model.load_state_dict(run.best_state)
    model.eval()
    dynamics = {k: v[: len(run.history)] for k, v in run.dyn.items()}
    return FitResult(run.history, dynamics, run.telemetry.arrays(), run.best_epoch, run.best_metrics, run.seen,
                     run.train_seconds, run.precision, run.stopped_early,
                     {"telemetry": run.telemetry.seconds, "dynamics": run.dynamics_seconds}, run.attention)


# --------------------------------------------------------------------------- build -> encode -> fit


def encode(bundle: Bundle, cfg: Config, ds, labels: list[str]) -> list[dict]:
    """ds encoded for the bundle's model with the run's length and the bundle's options."""
    label2id = {name: i for i, name in enumerate(labels)}
    return get_task(cfg.data.task).encode(bundle.tokenizer, ds, label2id, cfg.data.max_length,
                                          **bundle.meta.get("options", {}))


def fit_inputs(bundle: Bundle, cfg: Config, train_ds, selection_ds, labels: list[str]) -> FitInputs:
    """The bundle's encoding of both splits, with what fit and scoring need."""
    return FitInputs(get_task(cfg.data.task), labels, encode(bundle, cfg, train_ds, labels),
                     (selection_ds, encode(bundle, cfg, selection_ds, labels)), pad_id(bundle.tokenizer),
                     cfg.selection_metric, train_ds.weights, options=bundle.meta.get("options", {}),
                     tokenizer=bundle.tokenizer)


def fit_config(cfg: Config, train_ds, selection_ds, labels: list[str], *, quiet: bool = True, seed: int | None = None,
               on_epoch: Callable[[dict], None] | None = None) -> tuple[Bundle, FitResult]:
    """Build the configured model, encode both splits and fit: the one way a model is trained (the
    training job, a cross-validation fold, a tuning trial). seed: the head's initialisation
    (default train.seed)."""
    task = get_task(cfg.data.task)
    torch.manual_seed(cfg.train.seed if seed is None else seed)  # the head's initialisation
    bundle = build(cfg.model, task.name, labels, train_ds, cfg.data.max_length, options=task.encode_options(cfg.data))
    result = fit(bundle.model, fit_inputs(bundle, cfg, train_ds, selection_ds, labels), cfg.train, quiet=quiet,
                 on_epoch=on_epoch)
    return bundle, result


# --------------------------------------------------------------------------- the job


@dataclass
class TrainResult:
    run_dir: Path
    bundle: Bundle
    metrics: dict
    fit: FitResult


def train(cfg: Config, output_dir: str | Path | None = None, *, splits=None, quiet: bool | None = None,
          stem: str = "run", existing: bool = False) -> TrainResult:
    """Fine-tune the configured model on the configured data and write a run directory.

    existing=True writes into a directory that already holds other files (a loop round's).
    Under `accelerate launch --num_processes N` every process runs this; they train together
    (see fit) and only the main process writes the run directory, whose name it chooses."""
    from . import data as data_mod

    quiet = cfg.run.quiet if quiet is None else quiet
    started = time.time()
    runtime.set_threads(cfg.train.threads)
    runtime.seed_everything(cfg.train.seed)
    if splits is None:
        splits = data_mod.load_splits(cfg.data, cfg.train.seed, cfg.open_set)
    if cfg.open_set.enabled:  # a bad setting fails now, not after the training it would waste
        from .open_set import check_settings

        o = cfg.open_set
        check_settings(o.label, splits.labels, o.max_false_rejection, o.threshold, o.fallback)
    run_dir, info = _open(cfg, splits, output_dir, stem, existing)
    bundle, result = fit_config(cfg, splits.train, splits.selection, splits.labels, quiet=quiet)
    if cfg.open_set.enabled:  # after training: the detector reads the trained model's features
        from .fit_open_set import fit_bundle

        bundle.open_set = fit_bundle(bundle, splits.train, splits.selection, cfg.open_set,
                                     metric=cfg.selection_metric, batch_size=cfg.train.eval_batch_size,
                                     precision=result.precision)
    metrics = _metrics(cfg, splits, bundle, result)
    info.update(status="finished", wall_seconds=time.time() - started, best_epoch=result.best_epoch,
                stopped_early=result.stopped_early)
    if runtime.is_main_process():
        save_bundle(bundle, run_dir / rundir.MODEL)
        ids = np.array(splits.train.ids)
        np.savez_compressed(run_dir / rundir.DYNAMICS, ids=ids, **result.dynamics)
        np.savez_compressed(run_dir / rundir.GRADIENTS, **result.telemetry)
        rundir.write_json(run_dir / rundir.METRICS, metrics)
        rundir.write_json(run_dir / rundir.RUN, info)
    runtime.wait_for_everyone()  # no process returns before the run directory is complete
    return TrainResult(run_dir, bundle, metrics, result)


def _open(cfg: Config, splits, output_dir, stem: str, existing: bool) -> tuple[Path, dict]:
    """The run directory (the main process chooses its name) with config.toml and run.json written."""
    main = runtime.is_main_process()
    made: Path | RunError | None = None
    if main:
        try:
            made = rundir.make_run_dir(cfg.run.name, output_dir, cfg.run.output_dir, stem, existing)
        except RunError as e:
            made = e
    made = runtime.from_main(made)  # one directory (a timestamped name could differ between processes)
    if isinstance(made, RunError):
        raise made
    info = {} if not main else {  # the run's record; the other processes write nothing
        "kind": "train", "status": "running", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv, "versions": runtime.versions(), "device": str(runtime.device()),
        "cpu": runtime.cpu_info(), "precision": runtime.precision_report(cfg.train.precision), "task": cfg.data.task,
        "files": RUN_FILES, "warnings": list(splits.warnings), "labels": splits.labels,
        "data": {name: {"source": ds.source, "examples": len(ds), "fingerprint": ds.fingerprint()}
                 for name, ds in (("train", splits.train), ("selection", splits.selection), ("test", splits.test))
                 if ds is not None},
    }
    if main and splits.simulated:  # data.simulated_label_noise: say that, how many and which
        from .data import simulated_record

        info["simulated_label_noise"] = simulated_record(splits.simulated)
    if main:
        rundir.write_text(made / rundir.CONFIG, dump_toml(cfg))
        rundir.write_json(made / rundir.RUN, info)
    return made, info


def _metrics(cfg: Config, splits, bundle: Bundle, result: FitResult) -> dict:
    """metrics.json: the best epoch's selection metrics, the history, and the test split's (reported only)."""
    metrics = {"selection_metric": cfg.selection_metric, "best_epoch": result.best_epoch,
               "selection": result.selection_metrics, "history": result.history, "train_seconds": result.train_seconds,
               "train_samples_per_s": result.examples_seen / max(result.train_seconds, 1e-9),
               "examples_trained": result.examples_seen, "precision": result.precision, "attention": result.attention,
               "recording_seconds": result.overhead_seconds}
    def scored(ds) -> dict:
        return evaluate_features(bundle.model, ds, encode(bundle, cfg, ds, splits.labels), task=cfg.data.task,
                                 labels=splits.labels, pad_id=pad_id(bundle.tokenizer),
                                 batch_size=cfg.train.eval_batch_size, precision=result.precision,
                                 options=bundle.meta.get("options"), open_set=bundle.open_set,
                                 tokenizer=bundle.tokenizer).metrics

    if bundle.open_set is not None:  # the selection numbers with the detector's decisions in them
        metrics["selection"] = scored(splits.selection)
        meta, _ = bundle.open_set.to_json()
        metrics["open_set"] = {k: meta[k] for k in ("detector", "threshold", "label", "chosen_by", "selection")}
    if splits.test is not None:  # nothing above looked at it
        metrics["test"] = scored(splits.test)
    return metrics


callable_module(__name__, train)  # `reflectlm.train(...)` calls train() (see reflectlm.callable)
