"""Device, precision, threads and seeding: the facts of the machine a run executes on."""

from __future__ import annotations

import contextlib
import functools
import os
import random

import numpy as np
import torch


@functools.cache
def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX): there bf16 autocast roughly
    doubles training and triples inference speed; elsewhere it is emulated and slower."""
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, dev: torch.device | None = None) -> str:
    """"auto" -> bf16 on a CPU with native bf16, fp16 on CUDA, fp32 otherwise."""
    dev = dev or device()
    if precision != "auto":
        if precision == "fp16" and dev.type != "cuda":
            raise ValueError("train.precision = 'fp16' needs a CUDA GPU; on CPU use 'bf16' or 'fp32' (or 'auto')")
        return precision
    if dev.type == "cuda":
        return "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(precision: str, dev: torch.device | None = None):
    dev = dev or device()
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=dev.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
