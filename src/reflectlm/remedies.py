"""Remedies that change how a model trains: loss terms and hooks that train.fit calls without
knowing their names. REMEDIES is the one table; each entry reads its own [train] keys (the
update actions set them) and, when they are on, joins a fit:

    options()                      keyword arguments of task.per_example (class weights, a noise matrix)
    term(logits, idx, accelerator) a per-example term (B,) added to what is minimised, or None
    after_backward(model, batch, loss_of, backward)
                                   extra work after the batch's backward pass (a second, adversarial pass)

`open(tc, setting)` returns the remedy when its keys are set and raises ConfigError (with the fix)
when the task cannot take it: each declares the capabilities it `requires` (tasks/base.py).
The records (training dynamics) keep the plain loss whatever a remedy adds.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Setting:
    """What a remedy is fitted to: the task, its labels, the training set size and the device."""

    task: Any  # tasks.Task
    labels: list[str]
    n: int  # training features
    device: Any
    accelerator: Any
    model: Any  # the unwrapped model


def _refuse(tc_key: str, task, requires: str) -> None:
    from .config import ConfigError

    raise ConfigError(f"train.{tc_key} needs one probability row per example over the labels ({requires}); "
                      f"data.task = {task.name!r} predicts {task.head} outputs, so leave train.{tc_key} at its "
                      "default for it")


class ClassWeights:
    """train.class_weights: the loss of each example scaled by its gold class's weight (reweight_classes)."""

    requires = ("labels",)

    def __init__(self, weights):
        self.weights = weights  # (C,) tensor on the device

    @classmethod
    def open(cls, tc, s: Setting, given: np.ndarray | None = None):
        import torch

        from .config import ConfigError

        w = given if given is not None else (np.asarray(tc.class_weights) if tc.class_weights else None)
        if w is None:
            return None
        if "labels" not in s.task.capabilities:
            _refuse("class_weights", s.task, "class labels")
        if len(w) != len(s.labels):
            raise ConfigError(f"train.class_weights has {len(w)} values but there are {len(s.labels)} labels; give "
                              "one weight per label (sorted class names) or leave it empty")
        return cls(torch.tensor(w, dtype=torch.float32, device=s.device))

    def options(self) -> dict:
        return {"class_weight": self.weights}

    def term(self, logits, idx, accelerator):
        return None

    def after_backward(self, model, batch, loss_of, backward) -> None:
        return None


class ForwardCorrection:
    """train.noise_transition: the loss of the given label under softmax(logits) @ T, so the model's
    own softmax learns the clean posterior (Patrini et al. 2017; correct_noise sets T)."""

    requires = ("class_probs",)

    def __init__(self, transition):
        self.transition = transition  # (C, C) tensor

    @classmethod
    def open(cls, tc, s: Setting, given=None):
        import torch

        from .config import ConfigError

        if not tc.noise_transition:
            return None
        if "class_probs" not in s.task.capabilities:
            _refuse("noise_transition", s.task, "forward loss correction")
        T = np.asarray(tc.noise_transition, dtype=np.float64)
        C = len(s.labels)
        if T.shape != (C, C):
            raise ConfigError(f"train.noise_transition is {T.shape[0]} x {T.shape[1] if T.ndim == 2 else '?'} but "
                              f"there are {C} labels; give a {C} x {C} matrix (rows: true class, columns: given "
                              "label, in sorted class order) or leave it empty")
        if (T < 0).any() or not np.allclose(T.sum(1), 1.0, atol=1e-3):
            raise ConfigError("train.noise_transition must hold probabilities with every row summing to 1 "
                              "(row i: P(given label | true class i))")
        return cls(torch.tensor(T / T.sum(1, keepdims=True), dtype=torch.float32, device=s.device))

    def options(self) -> dict:
        return {"transition": self.transition}

    def term(self, logits, idx, accelerator):
        return None

    def after_backward(self, model, batch, loss_of, backward) -> None:
        return None


class EarlyLearning:
    """train.early_learning: each example keeps a target t, a moving average of the model's own
    detached predictions, t <- beta t + (1 - beta) p, and the loss adds lambda log(1 - <p, t>).

    References: Liu, Niles-Weed, Razavian & Fernandez-Granda 2020 (early-learning regularization)."""

    requires = ("class_probs",)

    def __init__(self, targets, weight: float, beta: float):
        self.targets = targets  # (N, C), zero until an example is first seen
        self.weight = weight
        self.beta = beta

    @classmethod
    def open(cls, tc, s: Setting, given=None):
        import torch

        if not tc.early_learning:
            return None
        if "class_probs" not in s.task.capabilities:
            _refuse("early_learning", s.task, "early-learning regularisation")
        return cls(torch.zeros((s.n, len(s.labels)), dtype=torch.float32, device=s.device), tc.early_learning,
                   tc.early_learning_beta)

    def options(self) -> dict:
        return {}

    def term(self, logits, idx, accelerator):
        return self.weight * self.step(logits, idx, accelerator)

    def step(self, logits, idx: np.ndarray, accelerator):
        """Move the batch's targets towards its predictions, then return log(1 - <p, t>) per example.
        Under N processes an example's batch may run on another process next epoch, so every process
        applies every process's update and all keep the same targets."""
        import torch

        from .tasks.classification import early_learning_targets, early_learning_term

        targets = self.targets
        index = torch.as_tensor(idx, dtype=torch.long, device=targets.device).reshape(-1)
        q = early_learning_targets(logits).to(targets.device)
        all_index, all_q = index, q
        if accelerator.num_processes > 1:
            all_index = accelerator.gather(accelerator.pad_across_processes(index, pad_index=-1))
            all_q = accelerator.gather(accelerator.pad_across_processes(q, pad_index=0))
            keep = all_index >= 0
            all_index, all_q = all_index[keep], all_q[keep]
        targets[all_index] = self.beta * targets[all_index] + (1.0 - self.beta) * all_q
        return early_learning_term(logits, targets[index].to(logits.device))

    def after_backward(self, model, batch, loss_of, backward) -> None:
        return None


class Adversarial:
    """train.adversarial_epsilon: fast gradient method on the word embeddings, r = epsilon * g / ||g||
    where g is the loss gradient of the embedding matrix; a second pass trains on the perturbed input
    and its gradient adds to the clean one; the weights are restored exactly.

    References: Miyato, Dai & Goodfellow 2017 (adversarial training methods for semi-supervised
    text classification)."""

    requires = ()

    def __init__(self, weight, epsilon: float):
        self.weight = weight  # the word-embedding matrix (a Parameter)
        self.epsilon = epsilon

    @classmethod
    def open(cls, tc, s: Setting, given=None):
        import torch

        if tc.adversarial_epsilon <= 0:
            return None
        get = getattr(s.model, "get_input_embeddings", None)
        emb = get() if get is not None else next((m for m in s.model.modules() if isinstance(m, torch.nn.Embedding)),
                                                 None)
        if emb is None:
            raise ValueError("adversarial training needs a model with a word-embedding layer")
        return cls(emb.weight, tc.adversarial_epsilon)

    def options(self) -> dict:
        return {}

    def term(self, logits, idx, accelerator):
        return None

    @contextlib.contextmanager
    def perturbed(self):
        import torch

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

    def after_backward(self, model, batch, loss_of, backward) -> None:
        with self.perturbed():
            backward(loss_of(batch))


REMEDIES = (ClassWeights, ForwardCorrection, EarlyLearning, Adversarial)


def open_remedies(tc, s: Setting, class_weights: np.ndarray | None = None) -> list:
    """The remedies this fit trains with (their keys set), in table order."""
    out = []
    for cls in REMEDIES:
        r = cls.open(tc, s, class_weights) if cls is ClassWeights else cls.open(tc, s)
        if r is not None:
            out.append(r)
    return out
