"""Device, precision, threads and seeding: the facts of the machine a run executes on."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch


@functools.cache
def cpu_info() -> dict:
    """The CPU as /proc/cpuinfo names it, and the flags that decide bf16 speed."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        text = ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"model": model, "cores": os.cpu_count(),
            "bf16_flags": sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f"))}


def versions() -> dict:
    """The versions a run records (run.json) of the stack it ran on."""
    import accelerate
    import transformers

    from .version import __version__

    return {"reflectlm": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def cpu_has_bf16() -> bool:
    """True when the CPU reports native bf16 instructions (AVX-512 BF16 or AMX). Reporting them is
    not the same as bf16 being faster: on a 2-core Xeon with AVX-512 BF16 but no AMX, bf16 autocast
    trained MiniLM 15-50 % slower than fp32. `choose_precision` measures instead."""
    return any(f in cpu_info()["bf16_flags"] for f in ("avx512_bf16", "amx_bf16"))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------- precision by measurement

PURPOSES = ("train", "infer")
# How scaled-dot-product attention runs: "sdpa" lets torch pick its fused kernel (flash attention
# on CPU); "math" computes it as plain matmul + softmax. For short texts the fused CPU kernel's
# backward can be the slowest op of a training step (36 % of a bf16 MiniLM step, batch 32 of ~16
# tokens, on a 2-core AMD EPYC with AVX-512 BF16), so this is measured too.
ATTENTIONS = ("sdpa", "math")
# bf16 must beat fp32 by this much to be chosen: near a tie, fp32 is exact and the safer choice.
BF16_MIN_SPEEDUP = 1.05
_FORMAT = 3  # bump when the workload below changes, so stale decisions are re-measured
_chosen: dict = {}  # (purpose, device) -> PrecisionChoice, for this process


@dataclass
class PrecisionChoice:
    precision: str
    purpose: str
    reason: str
    seconds: dict = field(default_factory=dict)  # precision -> attention -> best seconds of the workload
    source: str = "measured"  # "measured" (now), "cache" (an earlier measurement on this machine), "rule", "config"
    attention: str = "sdpa"

    def to_json(self) -> dict:
        return asdict(self)


def cache_home() -> Path:
    """Where per-machine decisions are kept: $XDG_CACHE_HOME/reflectlm (default ~/.cache/reflectlm)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "reflectlm"


def _machine_key() -> str:
    key = {"format": _FORMAT, "cpu": cpu_info(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def precision_cache_path() -> Path:
    return cache_home() / f"precision-{_machine_key()}.json"


def attention_context(attention: str):
    """Run scaled-dot-product attention as `attention` says (see ATTENTIONS) inside this block.
    Only the forward pass needs it: the backward pass replays whatever ops the forward recorded."""
    if attention == "math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


def _workload(purpose: str, precision: str, attention: str, repeats: int = 5) -> float:
    """Best-of-`repeats` seconds of one MiniLM-shaped encoder layer (hidden 384, 12 heads, FFN
    1536; 16 sequences x 32 tokens) - forward and backward for "train", forward for "infer" -
    under this precision's autocast and attention kernel. The model's shapes, in about 0.1 s."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    d, heads, ffn, B, T = 384, 12, 1536, 16, 32
    w = {name: (torch.randn(shape, generator=gen) * 0.02).requires_grad_(purpose == "train")
         for name, shape in (("qkv", (3 * d, d)), ("out", (d, d)), ("up", (ffn, d)), ("down", (d, ffn)))}
    x = torch.randn(B, T, d, generator=gen)

    def layer():
        q, k, v = F.linear(x, w["qkv"]).view(B, T, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, dh)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, d)  # (B, T, d)
        h = F.layer_norm(x + F.linear(a, w["out"]), (d,))
        return F.layer_norm(h + F.linear(F.gelu(F.linear(h, w["up"])), w["down"]), (d,))  # (B, T, d)

    best = float("inf")
    # The decision may be first needed inside a caller's autocast block (an evaluation during
    # training): switch any ambient autocast off, or "fp32" would be timed in bf16.
    with torch.autocast("cpu", enabled=False):
        for i in range(repeats + 2):  # two warm-up runs: the first call pays for kernel selection
            t0 = time.perf_counter()
            if purpose == "train":
                with autocast(precision), attention_context(attention):
                    y = layer()
                y.float().square().mean().backward()
            else:
                with torch.no_grad(), autocast(precision), attention_context(attention):
                    layer()
            if i >= 2:
                best = min(best, time.perf_counter() - t0)
    return best


def time_precisions(purpose: str) -> dict[str, dict[str, float]]:
    """{precision: {attention: seconds}} of the workload; replaced by a fake in tests."""
    return {p: {a: _workload(purpose, p, a) for a in ATTENTIONS} for p in ("fp32", "bf16")}


def _fastest_attention(seconds: dict, precision: str) -> str:
    return min(seconds[precision], key=seconds[precision].get)


def _decide(purpose: str, seconds: dict) -> tuple[str, str]:
    best = {p: min(seconds[p].values()) for p in ("fp32", "bf16")}
    speedup = best["fp32"] / max(best["bf16"], 1e-12)
    if speedup >= BF16_MIN_SPEEDUP:
        return "bf16", f"bf16 autocast was {speedup:.2f}x as fast as fp32 for {purpose} on this CPU"
    if speedup >= 1.0:
        return "fp32", (f"bf16 autocast was only {speedup:.2f}x as fast as fp32 for {purpose} on this CPU "
                        f"(bf16 needs {BF16_MIN_SPEEDUP:.2f}x to be worth its rounding)")
    return "fp32", f"bf16 autocast was {1 / speedup:.2f}x slower than fp32 for {purpose} on this CPU"


def choose_precision(purpose: str = "infer", dev: torch.device | None = None) -> PrecisionChoice:
    """What precision = "auto" means here for `purpose` ("train" or "infer"): fp16 on CUDA; on a
    CPU the faster of fp32 and bf16 autocast, each with its faster attention kernel, measured
    once per machine and torch version and kept in precision_cache_path() with the seconds."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; use one of: {', '.join(PURPOSES)}")
    dev = dev or device()
    memo = _chosen.get((purpose, dev.type))
    if memo is not None:
        return memo
    if dev.type == "cuda":
        choice = PrecisionChoice("fp16", purpose, "CUDA: fp16 autocast with a gradient scaler", source="rule")
    else:
        path = precision_cache_path()
        stored = {}
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            choice = PrecisionChoice(**{**stored[purpose], "source": "cache"})
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: measure
            seconds = time_precisions(purpose)
            precision, reason = _decide(purpose, seconds)
            attention = _fastest_attention(seconds, precision)
            choice = PrecisionChoice(precision, purpose, f"{reason}; attention {attention!r} was the faster kernel",
                                     seconds, attention=attention)
            stored = {**(stored if isinstance(stored, dict) else {}), purpose: choice.to_json(), "cpu": cpu_info(),
                      "torch": torch.__version__}
            from .atomic import write_json

            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json(path, stored)  # atomic: a concurrent process reads the old file or the new one
            except OSError as e:  # a read-only home: measure again next time, nothing else is lost
                print(f"note: could not store the precision decision in {path} ({e}); it is measured again "
                      "next time", file=sys.stderr)
    _chosen[(purpose, dev.type)] = choice
    return choice


def attention_for(precision: str, purpose: str = "infer", dev: torch.device | None = None) -> str:
    """The faster attention kernel for this (resolved) precision, from this machine's measurement."""
    dev = dev or device()
    if dev.type == "cuda":
        return "sdpa"
    choice = choose_precision(purpose, dev)
    if precision == choice.precision or precision not in choice.seconds:
        return choice.attention
    return _fastest_attention(choice.seconds, precision)


def forget_precision() -> None:
    """Drop this machine's stored decision and this process's memo: the next use measures again."""
    precision_cache_path().unlink(missing_ok=True)
    _chosen.clear()


def precision_report(setting: str = "auto", dev: torch.device | None = None) -> dict:
    """{purpose: choice} for a precision setting, as run.json and `reflectlm info` show it."""
    if setting != "auto":
        out = {}
        for p in PURPOSES:
            precision = resolve_precision(setting, dev, p)
            out[p] = PrecisionChoice(precision, p, f"set explicitly (precision = {setting!r})", source="config",
                                     attention=attention_for(precision, p, dev)).to_json()
        return out
    return {p: choose_precision(p, dev).to_json() for p in PURPOSES}


def resolve_precision(precision: str, dev: torch.device | None = None, purpose: str = "infer") -> str:
    """An explicit "fp32" / "bf16" / "fp16" as given (fp16 needs CUDA); "auto" -> choose_precision."""
    dev = dev or device()
    if precision != "auto":
        if precision == "fp16" and dev.type != "cuda":
            raise ValueError("train.precision = 'fp16' needs a CUDA GPU; on CPU use 'bf16' or 'fp32' (or 'auto')")
        return precision
    return choose_precision(purpose, dev).precision


def autocast(precision: str, dev: torch.device | None = None):
    dev = dev or device()
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=dev.type, dtype=dtype)


@contextlib.contextmanager
def compute(precision: str, purpose: str = "infer", dev: torch.device | None = None):
    """A model's forward pass as this machine runs it fastest: the precision's autocast and the
    attention kernel measured faster for it (`attention_for`)."""
    attention = attention_for(precision, purpose, dev)  # before the autocast: it may measure
    with autocast(precision, dev), attention_context(attention):
        yield


@contextlib.contextmanager
def half_weights(model, precision: str):
    """For inference under a half-precision autocast: every fp32 nn.Linear weight swapped for a
    half-precision copy while the block runs, the fp32 originals put back after. Autocast casts
    those weights on every call (a generator's decode step re-reads and re-casts the whole model,
    once per token); the copies are the same values cast once, so the outputs do not change. The
    originals stay untouched: training, merging and fp32 scoring see what they saw before."""
    if precision not in ("bf16", "fp16"):
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    saved = []
    try:
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float32:
                saved.append((m, m.weight))
                m.weight = torch.nn.Parameter(m.weight.detach().to(dtype), requires_grad=False)
        yield
    finally:
        for m, w in saved:
            m.weight = w


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- processes (accelerate launch)
# `accelerate launch --num_processes N` (or torchrun) starts N copies of the command with WORLD_SIZE
# and RANK set; train.fit then runs data-parallel (DDP). These helpers are the only place the
# process facts are read, and each is a no-op (no process group, no accelerate state) when run alone.


def _env_int(names: tuple[str, ...], default: int) -> int:
    # The variables accelerate itself reads: torchrun / accelerate launch, then MPI launchers.
    return next((int(os.environ[n]) for n in names if os.environ.get(n)), default)


def num_processes() -> int:
    """How many processes train together (as the launcher says; 1 when run alone)."""
    return _env_int(("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"), 1)


def process_index() -> int:
    return _env_int(("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"), 0)


def is_main_process() -> bool:
    """The process that prints and writes files; the others compute the same things silently."""
    return process_index() == 0


def _process_group() -> None:
    from accelerate import PartialState

    PartialState(cpu=device().type == "cpu")  # joins the process group (gloo on CPU, NCCL on GPUs) once


def from_main(obj):
    """`obj` as the main process has it, on every process: decisions that must not differ between
    processes (a measured precision, a run directory's name, an epoch's selection metrics)."""
    if num_processes() == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    _process_group()
    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def gather_objects(obj) -> list:
    """[obj of process 0, obj of process 1, ...] on every process ([obj] when run alone)."""
    if num_processes() == 1:
        return [obj]
    from accelerate.utils import gather_object

    _process_group()
    return gather_object([obj])


def wait_for_everyone() -> None:
    if num_processes() > 1:
        from accelerate import PartialState

        _process_group()
        PartialState().wait_for_everyone()
