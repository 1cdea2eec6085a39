"""Terminal progress: rich bars with ETA and live values, silent when quiet."""

from __future__ import annotations

from contextlib import contextmanager


class _Bar:
    def __init__(self, progress, task_id):
        self._progress, self._task = progress, task_id

    def advance(self, n: int = 1, **fields) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, **({"info": _fmt(fields)} if fields else {}))

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)


def _fmt(fields: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())


@contextmanager
def progress(total: int, description: str, quiet: bool = False):
    """with progress(n, "train epoch 1/3") as bar: ... bar.advance(k, loss=0.31)"""
    if quiet:
        yield _Bar(None, None)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False) as p:
        yield _Bar(p, p.add_task(description, total=total, info=""))
