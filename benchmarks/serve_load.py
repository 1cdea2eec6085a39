"""Serving throughput under concurrent load: ours (fp32, bf16, int8 ONNX) vs the Hugging Face
pipeline behind a minimal FastAPI endpoint, same model weights, same texts, one run.

    python benchmarks/serve_load.py [RUN] [--seconds 20] [--clients 32] [--threads 2]   # make bench-serve

RUN is a trained BANKING77 run directory (its champion is served); without it, the benchmark
trains one from configs/banking77.toml into .cache/bench-serve/run, or reuses the one it trained
there before. Each server is started on
127.0.0.1 in its own process with the same number of inference threads and driven by `clients`
concurrent callers, each sending one BANKING77 test sentence per request, for `seconds` after a
warm-up. Ours micro-batches across callers (the defaults: max_batch 32, max_wait 5 ms), with
auth, masking, the SQLite store and the drift monitor on, as in production. The peer is
`pipeline("text-classification")` called per request from a plain `def` FastAPI route (its
thread pool runs requests side by side). Also reported: each variant's selection accuracy from
the export gate (`reflectlm export`), and the CPU.

Writes benchmarks/results/serve_load.json and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import Provenance  # noqa: E402


def cpu() -> dict:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    return {"model": info.get("Model name", "?").strip(), "cores": os.cpu_count(),
            "avx512_bf16": "avx512_bf16" in flags, "amx": any(f.startswith("amx") for f in flags)}


def texts(n: int = 1000) -> list[str]:
    from reflectlm.config import data_root

    with open(data_root() / "banking77" / "test.csv", newline="", encoding="utf-8") as fh:
        return [r["text"] for r in csv.DictReader(fh)][:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def ensure_exports(run: Path, int8_margin: float | None) -> dict:
    """The bf16, fp32 ONNX and int8 ONNX exports of the champion (made once, with their gate
    results). A variant the gate refuses is reported as refused and not served."""
    from reflectlm.deploy.export import ExportRefused, export

    out = {}
    for name, kw in (("torch-bf16", {"quantize": "bf16"}), ("onnx-fp32", {"onnx": True}),
                     ("onnx-int8", {"onnx": True, "quantize": "int8", "margin": int8_margin})):
        path = run / "exports" / name
        if not (path / "export.json").is_file():
            try:
                export(run, path, quiet=False, **kw)
            except ExportRefused as e:
                print(f"{name}: {e}", file=sys.stderr)
        out[name] = json.loads((path / "export.json").read_text())
    return out


async def drive(url: str, payload_key: str, sample: list[str], clients: int, seconds: float, warmup: float) -> dict:
    import httpx

    lat, errors, statuses = [], 0, {}
    stop_at = time.perf_counter() + warmup + seconds
    record_from = time.perf_counter() + warmup
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers={"X-API-Key": KEY}) as c:
        async def worker(k: int):
            nonlocal errors
            i = k
            while (t0 := time.perf_counter()) < stop_at:
                try:
                    r = await c.post(url, json={payload_key: [sample[i % len(sample)]]})
                    ok = r.status_code == 200
                    code = r.status_code
                except httpx.HTTPError:
                    ok, code = False, "exception"
                t1 = time.perf_counter()
                if t0 >= record_from:
                    statuses[code] = statuses.get(code, 0) + 1
                    if ok:
                        lat.append(t1 - t0)
                    else:
                        errors += 1
                i += clients

        t_start = time.perf_counter()
        await asyncio.gather(*[worker(k) for k in range(clients)])
        wall = time.perf_counter() - t_start - warmup
    lat.sort()
    q = (lambda p: 1000 * lat[min(len(lat) - 1, int(p * len(lat)))]) if lat else (lambda p: None)
    return {"requests": len(lat) + errors, "ok": len(lat), "errors": errors, "statuses": {str(k): v for k, v in statuses.items()},
            "requests_per_s": len(lat) / wall, "texts_per_s": len(lat) / wall, "p50_ms": q(0.50), "p99_ms": q(0.99),
            "mean_ms": 1000 * statistics.mean(lat) if lat else None, "seconds": wall}


def run_server(cmd: list[str], ready: str, url: str, env: dict, sample, clients, seconds, warmup, key, log: Path) -> dict:
    # The server's log goes to a file: an unread pipe fills up and blocks the server mid-run.
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_ready(ready, proc)
        return asyncio.run(drive(url, key, sample, clients, seconds, warmup))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def peer_main(model_dir: str, port: int, threads: int) -> None:
    """The peer: the Hugging Face pipeline behind a minimal FastAPI endpoint."""
    import torch
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline

    torch.set_num_threads(threads)
    pipe = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1)
    app = FastAPI()

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.post("/predict")
    def predict(body: dict):
        return {"predictions": pipe(body["texts"])}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def default_run() -> Path:
    """A BANKING77 run to serve: the one trained here before, else a new one (configs/banking77.toml)."""
    run = ROOT / ".cache" / "bench-serve" / "run"
    if (run / "metrics.json").is_file():
        return run
    print(f"training a BANKING77 run into {run.relative_to(ROOT)} (configs/banking77.toml)", file=sys.stderr, flush=True)
    if run.exists():
        import shutil

        shutil.rmtree(run)  # a training that did not finish
    cmd = [sys.executable, "-m", "reflectlm.cli", "train", str(ROOT / "configs" / "banking77.toml"), "-o", str(run), "-q"]
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if done.returncode != 0:
        sys.exit("training the BANKING77 run failed (is REFLECTLM_DATA the shared data folder?)")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, nargs="?")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--int8-margin", type=float, default=None,
                    help="non-inferiority margin for the int8 ONNX export (default: the run's loop.margin)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    ap.add_argument("--peer", help=argparse.SUPPRESS)  # internal: run the peer server
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        peer_main(args.peer, args.port, args.threads)
        return
    prov = Provenance(threads=args.threads)
    if args.run is None:
        args.run = default_run()
    from reflectlm.deploy.predictor import resolve_model_dir

    run = args.run.resolve()
    model_dir = resolve_model_dir(run)
    exports = ensure_exports(run, args.int8_margin)
    metrics = json.loads((model_dir.parent / "metrics.json").read_text()) if (model_dir.parent / "metrics.json").is_file() else {}
    sample = texts()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "REFLECTLM_API_KEYS": f"bench:{KEY}"}
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    variants = {"ours-fp32": run}
    variants.update({f"ours-{k}": run / "exports" / k for k, v in exports.items() if v["status"] == "accepted"})
    for name, path in variants.items():
        port = free_port()
        cmd = [sys.executable, "-m", "reflectlm.cli", "serve", str(path), "--port", str(port),
               "--set", f"serve.threads={args.threads}", "--set", f'serve.store="{tmp / (name + ".sqlite")}"',
               "--set", "serve.rate_burst=1000000", "--set", "serve.rate_limit_per_minute=100000000",
               "--set", "serve.max_queue_texts=100000"]
        print(f"{name}: serving {path} on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        results[name] = run_server(cmd, f"http://127.0.0.1:{port}/readyz", f"http://127.0.0.1:{port}/v1/predict", env,
                                   sample, args.clients, args.seconds, args.warmup, "texts", tmp / f"{name}.log")
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    port = free_port()
    print(f"peer: HF pipeline on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    results["peer-hf-pipeline"] = run_server(
        [sys.executable, __file__, "--peer", str(model_dir), "--port", str(port), "--threads", str(args.threads)],
        f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{port}/predict", env, sample, args.clients, args.seconds,
        args.warmup, "texts", tmp / "peer.log")
    print(f"peer: {json.dumps(results['peer-hf-pipeline'])}", file=sys.stderr, flush=True)

    metric = exports["onnx-fp32"]["metric"]
    champion = exports["onnx-fp32"]["champion"]["selection_metric"]
    selection = {"ours-fp32": champion, "peer-hf-pipeline": champion}  # the same weights as the champion
    selection.update({f"ours-{k}": v["candidate"]["selection_metric"] for k, v in exports.items()
                      if v["status"] == "accepted"})
    for name in results:  # not measured here: the export gate's score of the same weights, named so
        results[name][f"selection_{metric}_from_export_gate"] = selection[name]
    peer = results["peer-hf-pipeline"]
    ours = {k: v for k, v in results.items() if k.startswith("ours")}
    best = max(ours, key=lambda k: ours[k]["texts_per_s"])
    b = ours[best]
    target = {"best_of_ours": best, "speedup_texts_per_s": b["texts_per_s"] / peer["texts_per_s"],
              "p99_ms_ours": b["p99_ms"], "p99_ms_peer": peer["p99_ms"], "errors_ours": b["errors"],
              "selection_points_vs_champion": 100 * (b[f"selection_{metric}_from_export_gate"] - champion)}
    target["met"] = bool(target["speedup_texts_per_s"] >= 3 and b["p99_ms"] <= peer["p99_ms"] and b["errors"] == 0
                         and abs(target["selection_points_vs_champion"]) <= 0.5)
    out = {"benchmark": "serve_load", "cpu": cpu(),
           "python": platform.python_version(), "clients": args.clients, "seconds": args.seconds,
           "threads": args.threads, "texts": f"BANKING77 test, first {len(sample)} sentences, one per request",
           "run": Path(run).name, "selection_metric": metric, "selection_split_examples": exports["onnx-fp32"]["selection_examples"],
           "champion_selection": champion, "champion_test": (metrics.get("test") or {}).get(metric),
           "export_gate": {k: {"status": v["status"], "margin": v["margin"], "reason": v["reason"],
                               "attempts": [{a: t[a] for a in ("remedy", "passed", "difference", "ci_low", "agreement")}
                                            for t in v["attempts"]],
                               **({"size_bytes": v["candidate"]["size_bytes"], "champion_size_bytes":
                                   v["champion"]["size_bytes"], "latency_ms_batch1": v["candidate"]["latency_ms_batch1"],
                                   "champion_latency_ms_batch1": v["champion"]["latency_ms_batch1"]}
                                  if v["status"] == "accepted" else {})} for k, v in exports.items()},
           "results": results, "target": target, "provenance": prov.block()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
