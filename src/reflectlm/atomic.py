"""Atomic file writes: the one helper every writer of a run directory uses.

A file is written next to its destination and renamed over it, so a kill at any moment leaves
either the old file or the new one, never half of one; resume relies on it (a round is finished
when its decision.json exists, and every file it reads was written this way).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path, newline: str | None = None, mode: int | None = None):
    """A text handle whose contents replace `path` when the block ends without an error. The
    temporary file is named per process, so processes writing the same file (the ranks of a
    multi-process run, two runs sharing a cache) never write into each other's. `mode`: file
    permissions, set before the file appears under its name (e.g. 0o600 for a key file)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8", newline=newline) as fh:
        yield fh
    if mode is not None:
        os.chmod(tmp, mode)
    tmp.replace(path)


def write_text(path: str | Path, text: str, mode: int | None = None) -> None:
    with replacing(path, mode=mode) as fh:
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
