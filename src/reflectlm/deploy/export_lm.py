"""`reflectlm export RUN --merge [--gguf f16|f32]` for a model that generates (summarisation,
translation): the LoRA adapters folded into the base weights as one standalone Hugging Face
directory (safetensors), and optionally a GGUF file for llama.cpp and Ollama (gguf_export.py).

Each artefact is read back the way its user will load it - the merged directory by
AutoModelForCausalLM, the GGUF file through transformers' GGUF loader - and decodes the selection
split; the task's paired A/B test in non-inferiority mode (the run's margin) against the
champion's own decoding decides whether it is kept, as for every other export. A refused
artefact is deleted and export.json says why.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import rundir
from ..config import ConfigError

MERGED, GGUF_FILE = "merged", "model.gguf"


def export_generator(run: Path, output: Path | None, *, gguf: str | None, margin: float | None,
                     n_bootstrap: int | None, quiet: bool) -> dict:
    from ..data import load_splits
    from ..modeling import load_bundle
    from .export_common import ExportRefused, _gate, _source, _write_json
    from .predictor import EXPORT_FILE

    model_dir, cfg = _source(run)
    margin = cfg.loop.margin if margin is None else float(margin)
    n_bootstrap = n_bootstrap or cfg.loop.n_bootstrap
    selection = load_splits(cfg.data, cfg.train.seed, cfg.open_set).selection
    champion = load_bundle(model_dir)
    name = MERGED + (f"-gguf-{gguf}" if gguf else "")
    out = Path(output) if output else run / rundir.EXPORTS / name
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output directory {out} exists and is not empty; pass another --output or remove it")
    out.mkdir(parents=True, exist_ok=True)
    champ_out, champ_s = _decode(champion, selection, cfg)

    attempts, kept = [], {}
    merged = _merged(champion, out / rundir.MODEL)
    candidates = [("merged safetensors", out / rundir.MODEL)] + ([(f"GGUF {gguf}", out / GGUF_FILE)] if gguf else [])
    for label, path in candidates:
        if path.name == GGUF_FILE and not kept.get("merged safetensors"):
            break  # the GGUF file is written from the merged model
        bundle, extra = _gguf(merged, out, gguf) if path.name == GGUF_FILE else (load_bundle(path), {})
        outputs, seconds = _decode(bundle, selection, cfg)
        c = _gate(cfg, selection, [], champ_out, outputs, margin, n_bootstrap)
        attempts.append({"artifact": label, **extra, "passed": c["promote"], "selection_metric": c["challenger"],
                         "difference": c["difference"], "ci_low": c["ci_low"], "ci_high": c["ci_high"],
                         "reason": c["reason"], "selection_decode_seconds": round(seconds, 2), "bytes": _bytes(path),
                         "identical_outputs": sum(a["text"] == b["text"] for a, b in zip(champ_out, outputs))})
        if not quiet:
            print(f"{label}: {c['reason']}", flush=True)
        kept[label] = c["promote"]
        if not c["promote"]:
            _remove(path)
    info = {"source": str(model_dir.resolve()), "run": str(run.resolve()), "task": cfg.data.task,
            "metric": cfg.selection_metric, "margin": margin, "selection_examples": len(selection),
            "champion": {"selection_decode_seconds": round(champ_s, 2), "adapter": champion.meta.get("adapter")},
            "attempts": attempts, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if not kept.get("merged safetensors"):
        for p in out.iterdir():
            _remove(p)
        _write_json(out / EXPORT_FILE, {"status": "refused", "reason": attempts[0]["reason"], **info})
        raise ExportRefused(f"refused: the merged model is worse than the champion by more than the margin "
                            f"{margin:g} on the selection {cfg.selection_metric}; evidence: {out / EXPORT_FILE}")
    accepted = [a for a in attempts if a["passed"]]
    info.update(status="accepted", reason="; ".join(f"{a['artifact']}: {a['reason']}" for a in attempts),
                variant={"name": name, "format": "safetensors" + (" + gguf" if kept.get(f"GGUF {gguf}") else "")},
                candidate={"size_bytes": accepted[0]["bytes"]}, files_bytes=_bytes(out))
    _write_json(out / EXPORT_FILE, info)
    import json

    return {**json.loads((out / EXPORT_FILE).read_text(encoding="utf-8")), "output": str(out)}


def _merged(bundle, path: Path):
    """The champion with its adapters folded in, saved as a standalone bundle; the merged model."""
    from .. import lm
    from ..modeling import Bundle, save_bundle

    model = lm.merged(bundle.model)
    meta = {k: v for k, v in bundle.meta.items() if k != "adapter"}
    meta["merged_from"] = bundle.meta.get("adapter")
    save_bundle(Bundle(model, bundle.tokenizer, meta), path)
    return model


def _gguf(model, out: Path, dtype: str):
    """The GGUF file written and read back through transformers' GGUF loader: a bundle, and what
    was written."""
    from transformers import AutoModelForCausalLM

    from ..modeling import load_bundle
    from .gguf_export import write_gguf

    info = write_gguf(model, load_bundle(out / rundir.MODEL).tokenizer, out / GGUF_FILE, dtype=dtype)
    bundle = load_bundle(out / rundir.MODEL)
    bundle.model = AutoModelForCausalLM.from_pretrained(out, gguf_file=GGUF_FILE)
    bundle.model.generation_config.pad_token_id = bundle.tokenizer.pad_token_id
    return bundle, {"gguf": {k: Path(v).name if isinstance(v, Path) else v for k, v in info.items()}}


def _decode(bundle, ds, cfg) -> tuple[list, float]:
    from ..evaluate import evaluate_bundle

    t0 = time.perf_counter()
    out = evaluate_bundle(bundle, ds, batch_size=cfg.train.eval_batch_size, precision="fp32", labelled=False).probs
    return out, time.perf_counter() - t0


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
