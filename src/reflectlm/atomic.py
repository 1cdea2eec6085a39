"""Atomic file writes: the one helper every writer of a run directory uses.

A file is written next to its destination and renamed over it, so a kill at any moment leaves
either the old file or the new one, never half of one; resume relies on it (a round is finished
when its decision.json exists, and every file it reads was written this way).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path, newline: str | None = None):
    """A text handle whose contents replace `path` when the block ends without an error."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline=newline) as fh:
        yield fh
    tmp.replace(path)


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as fh:
        fh.write(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=float))


def symlink(link: str | Path, target: str | Path) -> None:
    """Point `link` at `target` (relative targets stay relative): the link always names a finished target."""
    link = Path(link)
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(link)
