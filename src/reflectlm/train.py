"""Our training loop, on accelerate: fine-tune a model and record what the diagnosis needs.

Besides the usual (AdamW / Adafactor, warm-up + decay, accumulation, clipping, bf16 / fp16
autocast, length-grouped dynamic batches, early stopping, freezing, layer-wise learning rates)
it records, at no extra forward pass:

- training dynamics: each training example's loss, gold-label probability and correctness,
  per epoch, read off the training forward pass (References: Swayamdipta et al. 2020, data maps);
- gradient telemetry: every `telemetry_every` optimizer steps, the gradient norm, weight norm
  and update-to-weight ratio of each layer group (embeddings, layer.i, head).

`train(cfg)` is the command-line job (data -> model -> fit -> run directory); `fit()` is the
loop alone, which later stages call with their own data and weights.

Under `accelerate launch --num_processes N` both run data-parallel (DDP): each process trains on its
share of the batches, the records are joined so every example appears once, and only the main
process writes files (docs/scale-out.md).
"""

from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import callable_module, runtime
from .atomic import write_json, write_text
from .config import Config, ConfigError, TrainConfig, dump_toml
from .evaluate import evaluate_features
from .metric import get_metric
from .modeling import Bundle, build, layer_groups, save_bundle
from .tasks import collate, get_task
from .ui import progress

RUN_FILES = {
    "config.toml": "the resolved config this run used",
    "run.json": "what this run is: command, versions, data, status, timings, warnings",
    "metrics.json": "final metrics: selection (best epoch), test, per-epoch history",
    "dynamics.npz": "per epoch x training example: loss, gold_prob, correct; ids (training dynamics)",
    "gradients.npz": "per telemetry step x layer group: grad_norm, weight_norm, update_ratio; step, lr, loss",
    "model/": "the trained model bundle (safetensors weights, tokenizer, reflectlm.json)",
}


class RunError(RuntimeError):
    """A run directory cannot be used; the message says what to do."""


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


def param_groups(model: torch.nn.Module, tc: TrainConfig) -> list[dict]:
    """Optimizer groups per layer group x (decay, no decay), with freezing and layer-wise
    learning-rate decay (the top layer gets lr, each layer below it lr * decay more)."""
    groups = layer_groups(model)
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
        groups = layer_groups(model)
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


# --------------------------------------------------------------------------- adversarial training


class FGM:
    """Fast gradient method on the word embeddings: r = epsilon * g / ||g||, where g is the loss
    gradient of the embedding matrix; train on the perturbed input too, then restore the weights.

    References: Miyato, Dai & Goodfellow 2017 (adversarial training methods for semi-supervised
    text classification)."""

    def __init__(self, model: torch.nn.Module, epsilon: float):
        get = getattr(model, "get_input_embeddings", None)
        emb = get() if get is not None else next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
        if emb is None:
            raise ValueError("adversarial training needs a model with a word-embedding layer")
        self.weight = emb.weight
        self.epsilon = epsilon

    def perturbed(self):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            g = self.weight.grad
            if g is None or not self.weight.requires_grad:
                yield
                return
            with torch.no_grad():
                backup = self.weight.detach().clone()  # restore exactly (w + r - r is not w in floats)
                norm = torch.linalg.vector_norm(g)
                if norm > 0 and torch.isfinite(norm):
                    self.weight.add_(self.epsilon * g / norm)
            try:
                yield
            finally:
                with torch.no_grad():
                    self.weight.copy_(backup)

        return ctx()


# --------------------------------------------------------------------------- the loop


@dataclass
class FitResult:
    history: list[dict]
    dynamics: dict[str, np.ndarray]
    telemetry: dict[str, np.ndarray]
    best_epoch: int
    selection_metrics: dict
    examples_seen: int
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


def _transition(tc: TrainConfig, task: str, labels: list[str], device) -> torch.Tensor | None:
    """train.noise_transition as a (C, C) tensor, checked: one row and column per label, rows of
    probabilities."""
    if not tc.noise_transition:
        return None
    if task != "classification":
        raise ConfigError("train.noise_transition (forward loss correction) is for classification only; "
                          "leave it empty for NER")
    T = np.asarray(tc.noise_transition, dtype=np.float64)
    C = len(labels)
    if T.shape != (C, C):
        raise ConfigError(f"train.noise_transition is {T.shape[0]} x {T.shape[1] if T.ndim == 2 else '?'} but there "
                          f"are {C} labels; give a {C} x {C} matrix (rows: true class, columns: given label, in "
                          "sorted class order) or leave it empty")
    if (T < 0).any() or not np.allclose(T.sum(1), 1.0, atol=1e-3):
        raise ConfigError("train.noise_transition must hold probabilities with every row summing to 1 "
                          "(row i: P(given label | true class i))")
    return torch.tensor(T / T.sum(1, keepdims=True), dtype=torch.float32, device=device)


def _early_learning_targets(tc: TrainConfig, task: str, n: int, n_labels: int, device) -> torch.Tensor | None:
    """train.early_learning's per-example targets (N, C), zero until an example is first seen, or None."""
    if not tc.early_learning:
        return None
    if task != "classification":
        raise ConfigError("train.early_learning (early-learning regularisation) is for classification only; "
                          "set it to 0 for NER")
    return torch.zeros((n, n_labels), dtype=torch.float32, device=device)


def _early_learning_step(targets: torch.Tensor, logits: torch.Tensor, idx: np.ndarray, beta: float,
                         accelerator) -> torch.Tensor:
    """Move the batch's targets towards its predictions, then return log(1 - <p, t>) per example.
    Under N processes an example's batch may run on another process next epoch, so every process
    applies every process's update and all keep the same targets."""
    from .tasks.classification import early_learning_targets, early_learning_term

    index = torch.as_tensor(idx, dtype=torch.long, device=targets.device).reshape(-1)
    q = early_learning_targets(logits).to(targets.device)
    all_index, all_q = index, q
    if accelerator.num_processes > 1:
        all_index = accelerator.gather(accelerator.pad_across_processes(index, pad_index=-1))
        all_q = accelerator.gather(accelerator.pad_across_processes(q, pad_index=0))
        keep = all_index >= 0
        all_index, all_q = all_index[keep], all_q[keep]
    targets[all_index] = beta * targets[all_index] + (1.0 - beta) * all_q
    return early_learning_term(logits, targets[index].to(logits.device))


def fit(model: torch.nn.Module, train_features: list[dict], selection: tuple, tc: TrainConfig, *, task: str,
        labels: list[str], pad_id: int, metric: str, example_weights: np.ndarray | None = None,
        class_weights: np.ndarray | None = None, quiet: bool = False,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train `model` in place on `train_features`; pick the best epoch on `selection` = (ds, features).

    example_weights (N,) scale each training example's loss; class_weights (C,) weight the loss
    per gold class. Both are for the update actions (re-weighting, self-training). on_epoch gets
    each epoch's history row as soon as it is measured: tuning (actions/tune_hparams) reports it to
    Ray Tune, whose scheduler may end the trial there."""
    from accelerate.data_loader import prepare_data_loader

    tmod = get_task(task)
    dev = runtime.device()
    precision = runtime.resolve_precision(tc.precision, dev, purpose="train")
    attention = runtime.attention_for(precision, "train", dev)  # accelerate applies the autocast itself
    # Under accelerate launch each process could measure "auto" differently; all take the main one's.
    precision, attention = runtime.from_main((precision, attention))
    accelerator = _accelerator({"fp32": "no"}.get(precision, precision), tc.grad_accum, dev.type == "cpu")
    n = len(train_features)
    if n == 0:
        raise ConfigError("no training examples: check data.train and data.sample")
    groups = param_groups(model, tc)
    optimizer = make_optimizer(groups, tc)
    main = accelerator.is_main_process
    sampler = ShardedBatches(LengthGroupedBatches([len(f["input_ids"]) for f in train_features], tc.batch_size, tc.seed,
                                                  tc.group_by_length), accelerator.num_processes, accelerator.process_index)
    loader = torch.utils.data.DataLoader(train_features, batch_sampler=sampler, collate_fn=lambda b: collate(b, pad_id))
    steps_per_epoch = math.ceil(len(sampler) / tc.grad_accum)
    schedule = make_schedule(optimizer, tc, steps_per_epoch * tc.epochs)
    model, optimizer = accelerator.prepare(model, optimizer)  # DDP when launched with N processes
    # The batches are already this process's shard: accelerate only places them on the device and
    # marks the epoch's end for gradient accumulation (num_processes=1: no second sharding).
    loader = prepare_data_loader(loader, accelerator.device, num_processes=1, process_index=0,
                                 non_blocking=accelerator.non_blocking)
    weights_t = torch.tensor(example_weights, dtype=torch.float32) if example_weights is not None else None
    if class_weights is None and tc.class_weights:
        if len(tc.class_weights) != len(labels):
            raise ConfigError(f"train.class_weights has {len(tc.class_weights)} values but there are {len(labels)} "
                             "labels; give one weight per label (sorted class names) or leave it empty")
        class_weights = np.asarray(tc.class_weights)
    class_t = torch.tensor(class_weights, dtype=torch.float32, device=accelerator.device) if class_weights is not None else None
    transition_t = _transition(tc, task, labels, accelerator.device)
    extra = {} if transition_t is None else {"transition": transition_t}
    fgm = FGM(accelerator.unwrap_model(model), tc.adversarial_epsilon) if tc.adversarial_epsilon > 0 else None
    elr = _early_learning_targets(tc, task, n, len(labels), accelerator.device)

    E = tc.epochs
    rows = E if tc.record_dynamics else 0  # off: the arrays keep their names, with no rows
    dyn = {k: np.full((rows, n), np.nan, dtype=np.float32) for k in ("loss", "gold_prob", "correct")}
    telemetry = GradientTelemetry(accelerator.unwrap_model(model), tc.telemetry_every)
    history: list[dict] = []
    best = None
    best_state = None
    best_epoch = 0
    best_metrics: dict = {}
    since_best = 0
    step = 0
    seen = 0
    train_seconds = dynamics_seconds = 0.0
    stopped_early = False
    sel_ds, sel_feats = selection

    for epoch in range(E):
        sampler.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        records: dict[str, list] = {k: [] for k in ("index", "loss", "gold_prob", "correct", "weight")}
        ema = None
        with progress(n, f"epoch {epoch + 1}/{E}", quiet or not main) as bar:
            for j, batch in enumerate(loader):
                idx = batch["index"].cpu().numpy()  # (B,); a numpy index, also for a one-example batch
                with accelerator.accumulate(model):
                    with runtime.attention_context(attention):
                        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
                    loss_vec, gold, correct, count = tmod.per_example(logits, batch["labels"], tc.label_smoothing, class_t,
                                                                      **extra)
                    w = count if weights_t is None else count * weights_t[torch.from_numpy(idx)].to(count.device)
                    objective = loss_vec  # what is minimised; the records keep the plain loss
                    if elr is not None:
                        objective = loss_vec + tc.early_learning * _early_learning_step(
                            elr, logits, idx, tc.early_learning_beta, accelerator)
                    loss = (objective * w).sum() / w.sum().clamp(min=1e-8)
                    accelerator.backward(loss)
                    if fgm is not None:
                        # Second pass on the perturbed embeddings; its gradient adds to the clean one.
                        with fgm.perturbed(), runtime.attention_context(attention):
                            adv = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
                            adv_vec = tmod.per_example(adv, batch["labels"], tc.label_smoothing, class_t, **extra)[0]
                            accelerator.backward((adv_vec * w).sum() / w.sum().clamp(min=1e-8))
                    if accelerator.sync_gradients:
                        step += 1
                        if telemetry.due(step):
                            scale = accelerator.scaler.get_scale() if accelerator.scaler is not None else 1.0
                            telemetry.before_step(step, schedule.get_last_lr()[0], float(loss.detach()), scale)
                        if tc.max_grad_norm:
                            accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
                    optimizer.step()
                    if accelerator.sync_gradients:
                        schedule.step()
                        telemetry.after_step()
                    optimizer.zero_grad(set_to_none=True)
                t_dyn = time.perf_counter()
                if not sampler.is_padding(j):  # a repeat that evens out the processes' steps is not recorded
                    for k, v in zip(records, (idx, loss_vec, gold, correct, w)):
                        # (B,), also for a one-example batch
                        records[k].append(v if k == "index" else v.detach().float().cpu().reshape(-1).numpy())
                dynamics_seconds += time.perf_counter() - t_dyn
                last = float(loss.detach())
                ema = last if ema is None else 0.9 * ema + 0.1 * last
                bar.advance(len(idx) * accelerator.num_processes, loss=ema)
        t_dyn = time.perf_counter()
        rec = _epoch_records(records)
        if tc.record_dynamics:
            for k in dyn:
                dyn[k][epoch, rec["index"]] = rec[k]
        dynamics_seconds += time.perf_counter() - t_dyn
        seen += len(rec["index"])
        train_seconds += time.perf_counter() - t0

        # Every process evaluates the whole selection split with the same weights (one process's
        # numbers); the main one's metrics are shared so the best-epoch and stopping decisions agree.
        out = evaluate_features(accelerator.unwrap_model(model), sel_ds, sel_feats, labels, pad_id, task,
                                tc.eval_batch_size, precision, quiet=True)
        sel_metrics = runtime.from_main(out.metrics)
        value = sel_metrics[metric]
        w_sum = float(rec["weight"].astype(np.float64).sum())
        row = {"epoch": epoch + 1,
               "train_loss": float((rec["loss"].astype(np.float64) * rec["weight"]).sum()) / max(w_sum, 1e-8),
               "train_accuracy": float(rec["correct"].astype(np.float64).sum()) / n, "selection_loss": sel_metrics.get("loss"),
               f"selection_{metric}": value, "lr": schedule.get_last_lr()[0], "seconds": time.perf_counter() - t0}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if not quiet and main:
            print(f"epoch {epoch + 1}/{E}: train loss {row['train_loss']:.4f}  selection {metric} {value:.4f}", flush=True)
        if get_metric(metric).better(value, best):
            best, best_epoch, best_metrics, since_best = value, epoch + 1, sel_metrics, 0
            if epoch + 1 < E:  # the last epoch's weights are already in place
                best_state = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
            else:
                best_state = None
        else:
            since_best += 1
            if tc.early_stopping_patience and since_best >= tc.early_stopping_patience:
                stopped_early = True
                break

    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if best_state is not None and best_epoch != len(history):
        model.load_state_dict(best_state)
    model.eval()
    dynamics = {k: v[: len(history)] for k, v in dyn.items()}
    return FitResult(history, dynamics, telemetry.arrays(), best_epoch, best_metrics, seen, train_seconds, precision,
                     stopped_early, {"telemetry": telemetry.seconds, "dynamics": dynamics_seconds}, attention)


# --------------------------------------------------------------------------- the job


@dataclass
class TrainResult:
    run_dir: Path
    bundle: Bundle
    metrics: dict
    fit: FitResult


def make_run_dir(cfg: Config, output_dir: str | Path | None = None, stem: str = "run", existing: bool = False) -> Path:
    if output_dir is None:
        name = cfg.run.name or f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        output_dir = Path(cfg.run.output_dir) / name
    path = Path(output_dir)
    if not existing and path.exists() and any(path.iterdir()):
        raise RunError(f"run directory {path} already exists and is not empty; pass another --output-dir "
                       "(or --set run.name=...) or remove it")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _versions() -> dict:
    import accelerate
    import transformers

    from . import __version__

    return {"reflectlm": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def train(cfg: Config, output_dir: str | Path | None = None, *, splits=None, quiet: bool | None = None,
          stem: str = "run", existing: bool = False) -> TrainResult:
    """Fine-tune the configured model on the configured data and write a run directory.

    existing=True writes into a directory that already holds other files (a loop round's).
    Under `accelerate launch --num_processes N` every process runs this; they train together
    (see fit) and only the main process writes the run directory, whose name it chooses."""
    from . import data as data_mod

    quiet = cfg.run.quiet if quiet is None else quiet
    started = time.time()
    tc = cfg.train
    runtime.set_threads(tc.threads)
    runtime.seed_everything(tc.seed)
    if splits is None:
        splits = data_mod.load_splits(cfg.data, tc.seed)
    main = runtime.is_main_process()
    made: Path | RunError | None = None
    if main:
        try:
            made = make_run_dir(cfg, output_dir, stem, existing)
        except RunError as e:
            made = e
    made = runtime.from_main(made)  # one directory (a timestamped name could differ between processes)
    if isinstance(made, RunError):
        raise made
    run_dir = made
    info = {} if not main else {  # the run's record; the other processes write nothing
        "kind": "train", "status": "running", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv, "versions": _versions(), "device": str(runtime.device()), "cpu": runtime.cpu_info(),
        "precision": runtime.precision_report(tc.precision),
        "files": RUN_FILES, "warnings": list(splits.warnings), "labels": splits.labels,
        "data": {name: {"source": ds.source, "examples": len(ds), "fingerprint": ds.fingerprint()}
                 for name, ds in (("train", splits.train), ("selection", splits.selection), ("test", splits.test))
                 if ds is not None},
    }
    if main:
        write_text(run_dir / "config.toml", dump_toml(cfg))
        write_json(run_dir / "run.json", info)

    task = cfg.data.task
    tmod = get_task(task)
    torch.manual_seed(tc.seed)  # the head's initialisation
    bundle = build(cfg.model, task, splits.labels, splits.train, cfg.data.max_length)
    label2id = {name: i for i, name in enumerate(splits.labels)}
    pad_id = getattr(bundle.tokenizer, "pad_token_id", 0) or 0
    train_feats = tmod.encode(bundle.tokenizer, splits.train, label2id, cfg.data.max_length)
    sel_feats = tmod.encode(bundle.tokenizer, splits.selection, label2id, cfg.data.max_length)
    metric = cfg.selection_metric
    result = fit(bundle.model, train_feats, (splits.selection, sel_feats), tc, task=task, labels=splits.labels,
                 pad_id=pad_id, metric=metric, example_weights=splits.train.weights, quiet=quiet)

    metrics = {"selection_metric": metric, "best_epoch": result.best_epoch, "selection": result.selection_metrics,
               "history": result.history, "train_seconds": result.train_seconds,
               "train_samples_per_s": result.examples_seen / max(result.train_seconds, 1e-9),
               "examples_trained": result.examples_seen, "precision": result.precision, "attention": result.attention,
               "recording_seconds": result.overhead_seconds}
    if splits.test is not None:  # reported only; nothing above looked at it
        test_feats = tmod.encode(bundle.tokenizer, splits.test, label2id, cfg.data.max_length)
        metrics["test"] = evaluate_features(bundle.model, splits.test, test_feats, splits.labels, pad_id, task,
                                            tc.eval_batch_size, result.precision, quiet=True).metrics
    info.update(status="finished", wall_seconds=time.time() - started, best_epoch=result.best_epoch,
                stopped_early=result.stopped_early)
    if main:
        save_bundle(bundle, run_dir / "model")
        np.savez_compressed(run_dir / "dynamics.npz", ids=np.array(splits.train.ids), **result.dynamics)
        np.savez_compressed(run_dir / "gradients.npz", **result.telemetry)
        write_json(run_dir / "metrics.json", metrics)
        write_json(run_dir / "run.json", info)
    runtime.wait_for_everyone()  # no process returns before the run directory is complete
    return TrainResult(run_dir, bundle, metrics, result)


callable_module(__name__, train)  # `reflectlm.train(...)` calls train() (see reflectlm.callable_module)
