"""Tasks as plug-ins: TASKS is the one table, each entry a Task (tasks/base.py) that owns what
differs by task - reading its data, encoding, the loss, decoding, metrics, the per-example outcome
the A/B test pairs, the error kinds, the prediction schema and which checks and actions apply.

    task = get_task(cfg.data.task)
    feats = task.encode(tokenizer, ds, label2id, max_length)
    outputs = task.outputs(ds, feats, logits)
    task.metrics(ds, outputs, labels)

Importing a task module costs no torch import: the heavy stack loads inside the methods.
"""

from __future__ import annotations

from .base import Task, applies, missing, model_inputs
from .classification import Classification
from .generation import SUMMARISATION, TRANSLATION, Generation
from .ner import NER
from .qa import QA

TASKS: dict[str, Task] = {"classification": Classification(), "ner": NER(), "qa": QA(),
                          "summarisation": Generation(SUMMARISATION), "translation": Generation(TRANSLATION)}

__all__ = ["TASKS", "Task", "applies", "get_task", "missing", "model_inputs"]


def get_task(name) -> Task:
    """The Task for a data.task name (a Task passes through)."""
    if not isinstance(name, str):
        return name
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None
