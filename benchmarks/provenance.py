"""The provenance block every results file carries: what code, command, machine and libraries
produced its numbers.

    from provenance import Provenance
    prov = Provenance(seeds=[0, 1, 2])        # at the start: the clock, the commit, the command
    ...
    result["provenance"] = prov.block()       # at the end: + wall seconds

Paths in a results file are relative to the repository (`relative`); the commit is the one the
working tree was at, and `dirty` says whether it had uncommitted changes (then the numbers are of
that commit plus the changes, and a results file should be re-measured after committing them).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "transformers", "accelerate", "onnxruntime", "ray", "scikit-learn", "numpy", "peft", "trl",
             "sacrebleu", "rouge-score")


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def cpu() -> dict:
    """Model, cores and the flags that decide bf16 speed (avx512_bf16, amx)."""
    text = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").is_file() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    return {"model": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx": bool({"amx_bf16", "amx_tile"} & flags), "flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16",
                                                                                    "amx_bf16", "amx_tile", "amx_int8"})}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def relative(path) -> str:
    """A path as the results file records it: relative to the repository where it lies inside it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return p.name if p.is_absolute() else str(path)


class Provenance:
    """Started when the measurement starts; block() closes it."""

    def __init__(self, seeds=None, threads: int | None = None, command: list[str] | None = None):
        self.started = time.time()
        self.started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.seeds = list(seeds) if seeds is not None else None
        self.threads = threads
        # Paths as the repository sees them: relative inside it, the name alone outside it.
        self.command = [relative(a) if Path(a).exists() or Path(a).is_absolute() else a for a in (command or sys.argv)]

    def block(self) -> dict:
        import torch

        return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
                "command": ["python"] + self.command, "started_utc": self.started_utc,
                "wall_seconds": round(time.time() - self.started, 1), "cpu": cpu(),
                "threads": self.threads or torch.get_num_threads(), "versions": versions(), "seeds": self.seeds}


KEYS = ("commit", "dirty", "command", "started_utc", "wall_seconds", "cpu", "threads", "versions", "seeds")


def backfilled(commit: str, command: list[str], cpu_info: dict | None = None, wall_seconds: float | None = None,
               seeds=None) -> dict:
    """The block of a results file measured before results recorded their provenance: the commit that
    recorded it, the command that makes it, and what the file itself says of the machine; what was
    not recorded is None, never guessed, and `reconstructed` says so (the rendered page marks it)."""
    return {"commit": commit, "dirty": None, "command": command, "started_utc": None, "wall_seconds": wall_seconds,
            "cpu": cpu_info, "threads": None, "versions": None, "seeds": seeds,
            "reconstructed": "measured before results recorded their provenance; commit: the one that recorded "
                             "the file, not re-measured on the current code"}


def merged(parts: dict[str, dict]) -> dict:
    """One block for a results file whose parts (seeds, runs) were measured apart, each with its own
    block: the latest part's block, the seeds of them all, and per part its commit, whether the tree
    was dirty, its start and its CPU, so the file says which part ran where."""
    if not parts:
        return {}
    latest = max(parts.values(), key=lambda b: b.get("started_utc") or "")
    seeds = sorted({s for b in parts.values() for s in (b.get("seeds") or [])})
    return {**latest, "seeds": seeds or latest.get("seeds"),
            "wall_seconds": round(sum(b.get("wall_seconds") or 0.0 for b in parts.values()), 1),
            "parts": {k: {"commit": b["commit"], "dirty": b["dirty"], "started_utc": b["started_utc"],
                          "wall_seconds": b.get("wall_seconds"), "cpu": (b.get("cpu") or {}).get("model")}
                      for k, b in parts.items()}}
