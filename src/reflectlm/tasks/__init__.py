"""Task-specific encoding, losses and metrics. One module per task; TASKS is the table."""

from __future__ import annotations

import torch

from . import classification, ner

TASKS = {"classification": classification, "ner": ner}


def get_task(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None


def collate(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding: pad to the longest sequence in this batch, not to max_length.

    Each feature is {"input_ids": list[int], "labels": int | list[int], "index": int}.
    """
    width = max(len(f["input_ids"]) for f in features)
    n = len(features)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)  # (B, T)
    attention = torch.zeros((n, width), dtype=torch.long)  # (B, T)
    token_level = isinstance(features[0]["labels"], list)
    labels = torch.full((n, width), -100, dtype=torch.long) if token_level else torch.empty(n, dtype=torch.long)
    for i, f in enumerate(features):
        ids = f["input_ids"]
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        if token_level:
            labels[i, : len(f["labels"])] = torch.tensor(f["labels"])
        else:
            labels[i] = f["labels"]
    index = torch.tensor([f["index"] for f in features], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "index": index}
