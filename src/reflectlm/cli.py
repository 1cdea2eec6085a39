"""Command line: `reflectlm SUBCOMMAND`. COMMANDS is the one table of subcommands; each calls the
public function a library user would call.

Exit codes: 0 ok, 1 failed, 2 bad usage or bad input (config, data, model path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from . import rundir

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ReflectLM: fine-tune, diagnose and improve language models.")

BAD_INPUT = 2
FAILED = 1


def _fail(err: Exception, code: int) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False)
    raise typer.Exit(code)


def _guard(fn):
    """Our own bad-input errors (config, data, model, run directory, a missing file) become one clear
    message and exit 2; anything else is a failure, exit 1, with its traceback under REFLECTLM_DEBUG=1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.TyperException):
            raise  # usage errors (typer.BadParameter): click prints them and exits with 2
        except Exception as e:  # noqa: BLE001 - sorted by kind below
            # Imported here: modeling and train load torch, which `reflectlm show` never needs.
            from .config import ConfigError
            from .data import DataError
            from .modeling import ModelError
            from .rundir import RunError

            if isinstance(e, (ConfigError, DataError, ModelError, RunError, FileNotFoundError)):
                _fail(e, BAD_INPUT)
            if os.environ.get("REFLECTLM_DEBUG"):
                import traceback

                traceback.print_exc()
            _fail(f"{type(e).__name__}: {e} (set REFLECTLM_DEBUG=1 for the traceback)", FAILED)

    return wrapper


def _mask_argv() -> None:
    """Mask the password of any database URL on the command line: run.json records sys.argv, and
    logs may print it. The caller keeps the real value (typer has parsed it already)."""
    import sys

    from .deploy.store import mask_url

    sys.argv[:] = [mask_url(a) if "://" in a else a for a in sys.argv]


def _print_metrics(metrics: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from .tasks import TASKS

    table = Table(title=title)
    table.add_column("split")
    known = dict.fromkeys(k for t in TASKS.values() for k in (*t.report_metrics, *t.metric_names))
    keys = [k for k in known if any(isinstance((m or {}).get(k), (int, float)) for m in metrics.values())]
    for k in keys:
        table.add_column(k, justify="right")
    for split, m in metrics.items():
        if m:
            table.add_row(split, *[f"{m[k]:.4f}" if k in m else "-" for k in keys])
    Console().print(table)
    opened = {split: m["open_set"] for split, m in metrics.items() if m and isinstance(m.get("open_set"), dict)}
    if opened:  # a model with an out-of-scope detector (open_set.py)
        table = Table(title="out of scope")  # one row per number: they do not fit side by side
        table.add_column("")
        for split in opened:
            table.add_column(split, justify="right")
        for k in ("in_scope_accuracy", "in_scope_accuracy_without_detector", "false_rejection", "oos_precision",
                  "oos_recall", "f1_open", "f1_known", "auroc", "oos_recall_at_5pct_false_rejection"):
            table.add_row(k.replace("_", " "), *[f"{o[k]:.4f}" if isinstance(o.get(k), (int, float)) else "-"
                                                  for o in opened.values()])
        Console().print(table)


@_guard
def train_cmd(
    config: Path = typer.Argument(..., help="TOML config, e.g. configs/banking77.toml"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="run directory (default runs/<name>)"),
    set_: list[str] = typer.Option([], "--set", help="override a config key, e.g. --set train.lr=3e-5"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Fine-tune a model and write a run directory."""
    from .config import load_config
    from .train import train

    cfg = load_config(config, list(set_) + (["run.quiet=true"] if quiet else []))
    result = train(cfg, output_dir, stem=config.stem)
    from .runtime import is_main_process

    if not is_main_process():  # under accelerate launch the others trained alongside; one report
        return
    _print_metrics({k: result.metrics.get(k) for k in ("selection", "test")}, f"{config.stem}: best epoch {result.metrics['best_epoch']}")
    print(f"run directory: {result.run_dir}")


@_guard
def evaluate_cmd(
    run: Path = typer.Argument(..., help="run directory or model bundle"),
    data: Path = typer.Option(..., "--data", help="labelled file in the model's task format"),
    text_column: str = typer.Option("text", "--text-column"),
    label_column: str = typer.Option("label", "--label-column"),
    as_json: bool = typer.Option(False, "--json", help="print the full metrics as JSON"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Metrics of a trained model on a labelled file."""
    from .evaluate import evaluate

    m = evaluate(run, data, quiet=quiet, text_column=text_column, label_column=label_column)
    if as_json:
        print(json.dumps(m, indent=2))
    else:
        _print_metrics({data.name: m}, str(run))


@_guard
def predict_cmd(
    run: Path = typer.Argument(..., help="run directory or model bundle"),
    texts: list[str] = typer.Argument(None, help="texts to label"),
    file: Optional[Path] = typer.Option(None, "--file", help="one input per line: a text, or a JSON object of the "
                                                            "task's input fields (QA: question and context)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Predict for texts (labels, entities) or for JSON inputs (answers to questions about a context)."""
    from .evaluate import predict
    from .modeling import load_bundle
    from .tasks import get_task

    items = list(texts or [])
    if file is not None:
        items += [_input_line(ln, file, no) for no, ln in enumerate(file.read_text(encoding="utf-8").splitlines(), 1)
                  if ln.strip()]
    if not items:
        raise typer.BadParameter("give texts as arguments or --file FILE")
    task = get_task(load_bundle(run).task)
    preds = predict(run, items)
    for item, p in zip(items, preds):
        shown = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
        if as_json:
            print(json.dumps({"input": item, **p}, ensure_ascii=False))
        else:
            print(f"{task.prediction_text(p)}\t{p['confidence']:.3f}\t{shown}")


def _input_line(line: str, file: Path, no: int):
    """A text, or (a line that opens an object) the JSON object of one input's fields."""
    from .data import DataError

    if not line.lstrip().startswith("{"):
        return line
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{file}:{no}: not valid JSON ({e.msg} at column {e.colno}). Fix: write one input per line, "
                        'e.g. {"question": "...", "context": "..."}') from None
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise DataError(f"{file}:{no}: an input is an object of strings, e.g. {{\"question\": \"...\", "
                        "\"context\": \"...\"}}")
    return obj


@_guard
def demo_cmd(
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o"),
    set_: list[str] = typer.Option([], "--set", help="override a key of the demo config"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Run the self-improvement loop on its embedded demo: few labelled tweets, a pool and a labelling budget."""
    from .config import load_config
    from .loop import improve

    cfg = load_config(demo_config_path(), list(set_) + (["run.quiet=true"] if quiet else []))
    result = improve(cfg, output_dir, config_path=demo_config_path())
    _print_loop(result)


def _print_loop(result) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result.summary
    metric = s["selection_metric"]
    table = Table(title=f"rounds ({metric} on the selection split)")
    for col in ("round", "plan", metric, "difference (CI)", "McNemar p", "decision"):
        table.add_column(col)
    for r in s["rounds"]:
        ci = "" if r["difference"] is None else f"{r['difference']:+.4f} ({r['ci_low']:+.4f}, {r['ci_high']:+.4f})"
        p = "" if r["p_mcnemar"] is None else f"{r['p_mcnemar']:.3g}"
        table.add_row(str(r["round"]), " + ".join(r["actions"]) or "baseline", f"{r['selection']:.4f}", ci, p,
                      "promoted" if r["promoted"] else "rejected")
    Console().print(table)
    for r in s["rounds"]:  # a rejected gain: what this selection split can prove, and what would prove it
        d = r.get("detectable")
        if d and d.get("examples_needed"):
            print(f"round {r['round']}: {r['difference']:+.4f} is not proven; {d['n']:,} selection examples detect "
                  f"about {d['effect']:+.4f} ({100 * d['power']:.0f}% power at alpha {d['alpha']:g}); about "
                  f"{d['examples_needed']:,} would resolve {r['difference']:+.4f}")
    if s.get("test"):
        _print_metrics({"round 0 (test)": s.get("round0_test"), f"champion: round {s['champion_round']} (test)": s["test"]},
                       "test split (read once, at the end)")
        before, after = (s.get("round0_test") or {}).get(metric), s["test"].get(metric)
        if before is not None and after is not None:
            kept = [r for r in s["rounds"] if r["promoted"] and r["round"] > 0]
            what = ("; ".join(f"round {r['round']} {' + '.join(r['actions'])}" for r in kept) if kept
                    else "no round was promoted")
            g = s.get("test_gain") or {}
            ci = (f", paired 95% CI {g['ci_low']:+.4f} to {g['ci_high']:+.4f}"
                  if g.get("ci_low") is not None and g.get("ci_high") is not None else "")
            print(f"what changed: test {metric} {before:.4f} -> {after:.4f} ({after - before:+.4f}{ci}); {what}")
    print(f"stopped: {s['stop_reason']}")
    print(f"run directory: {result.run_dir}  (champion: {result.run_dir / rundir.CHAMPION})")


@_guard
def run_cmd(
    config: Path = typer.Argument(..., help=r"TOML config (its \[loop] section is optional), e.g. configs/banking77.toml"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="run directory (default runs/<name>)"),
    set_: list[str] = typer.Option([], "--set", help="override a config key, e.g. --set loop.rounds=5"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run after its last finished round"),
    feedback: Optional[str] = typer.Option(None, "--feedback", help="production store from `reflectlm serve` (its "
                                           "serving.sqlite, the served directory, or a database URL): its corrections "
                                           "become verified labels, its other texts the unlabelled pool"),
    backend: Optional[str] = typer.Option(None, "--backend", help="where challengers train: local (this process) or "
                                          "ray (Ray tasks; loop.parallel of them per round); default: loop.backend"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (HOST:6379 or auto; "
                                          "with --backend ray); default: loop.ray.address"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Improve a model round after round: diagnose, reflect, update, A/B test, promote or reject."""
    from .config import load_config
    from .loop import improve
    from .runtime import is_main_process

    if feedback is not None and resume:
        raise typer.BadParameter("a run started with --feedback resumes from its own config, which already holds the "
                                 "corrections: reflectlm run RUN/config.toml --resume --output-dir RUN")
    if feedback is not None:
        from .deploy.store import open_store

        _mask_argv()
        open_store(feedback).close()  # a wrong path or URL fails here, before a run directory is made
    if backend is not None and backend not in ("local", "ray"):
        raise typer.BadParameter(f"--backend must be local or ray, not {backend!r}")
    extra = [f"loop.backend={backend}"] if backend else []
    extra += [f"loop.ray.address={json.dumps(address)}"] if address else []
    cfg = load_config(config, list(set_) + extra + (["run.quiet=true"] if quiet else []))
    if address and cfg.loop.backend != "ray":
        raise typer.BadParameter("--address names a Ray cluster: add --backend ray (or set loop.backend = 'ray')")
    result = improve(cfg, output_dir, resume=resume, config_path=config, feedback=feedback)
    if not is_main_process():  # under accelerate launch the others trained alongside; one report
        return
    _print_loop(result)
    info = rundir.read_json(result.run_dir / rundir.RUN).get("feedback") if feedback is not None else None
    if info:
        print(f"production feedback: {info['used']} corrections used ({info['added']} new texts, {info['relabelled']} "
              f"relabelled, {info['corrected_model_errors']} where the served model was wrong), "
              f"{info['pool_texts_added']} texts added to the pool")


label_app = typer.Typer(no_args_is_help=True, help="Labels a person gives the loop (loop.oracle = 'queue').")


@label_app.command("import")
@_guard
def label_import_cmd(
    run: Path = typer.Argument(..., help="the loop's run directory (it holds label_queue.csv)"),
    file: Path = typer.Argument(..., help="the filled-in copy of label_queue.csv (id,text,label)"),
) -> None:
    """Read a person's labels for the queued examples; the next round (or --resume) uses them."""
    from .actions.oracle import import_labels

    info = rundir.read_json(run / rundir.RUN, {})
    labels = info.get("labels")
    if not labels:
        from .config import load_config
        from .data import load_splits

        cfg = load_config(run / rundir.CONFIG)
        labels = load_splits(cfg.data, cfg.train.seed, cfg.open_set).labels
    out = import_labels(run, file, labels)
    print(f"imported {out['imported']} new labels ({out['total']} of {out['queued']} queued examples answered); "
          f"continue with: reflectlm run <config> --resume --output-dir {run}")


@_guard
def diagnose_cmd(
    run: Path = typer.Argument(..., help="run directory from `reflectlm train`"),
    cv: str = typer.Option("fast", "--cv", help="cross-validation: fast (frozen embeddings + logistic regression) or full (fine-tune per fold)"),
    checks: Optional[str] = typer.Option(None, "--checks", help="comma-separated subset, e.g. performance,label_issues"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Find what is wrong with a model and what to try; writes findings.json and targets.json."""
    from rich.console import Console
    from rich.table import Table

    from .diagnose import run_diagnosis
    from .reflect import reflect_run

    if cv not in ("fast", "full"):
        raise typer.BadParameter(f"--cv must be fast or full, not {cv!r}")
    names = [c.strip() for c in checks.split(",") if c.strip()] if checks else None
    d = run_diagnosis(run, names, cv=cv, quiet=quiet)
    ranked = reflect_run(run, d)
    console = Console()
    table = Table(title=f"findings for {run}")
    for col in ("severity", "check", "kind", "summary"):
        table.add_column(col, justify="right" if col == "severity" else "left")
    for f in d.findings:
        if f.severity > 0:
            table.add_row(f"{f.severity:.2f}", f.check, f.kind, f.summary)
    console.print(table)
    plan_table = Table(title="improvement targets (highest priority first)")
    for col in ("priority", "finding", "actions", "why"):
        plan_table.add_column(col)
    for t in ranked[:8]:
        plan_table.add_row(f"{t.priority:.2f}", t.finding_kind, ", ".join(t.actions), t.reason)
    console.print(plan_table)
    for s in d.skipped:
        console.print(f"[yellow]skipped[/] {s['check']}: {s['reason']}")
    for s in d.failed:
        console.print(f"[red]failed[/] {s['check']}: {s['error']}")
    print(f"wrote {run / rundir.FINDINGS} and {run / rundir.TARGETS}")


# --------------------------------------------------------------------------- reports (reflectlm.report)


@_guard
def report_cmd(
    run: Path = typer.Argument(..., help="run directory (from `reflectlm run` or `reflectlm train`)"),
    tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard", help="also write <run>/tb/ event files"),
    mlflow: bool = typer.Option(False, "--mlflow", help=r"also log the run to MLflow (needs reflectlm\[mlflow])"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store (default sqlite:///<workspace>/mlflow.db)"),
) -> None:
    """Write the run's self-contained report.html (and TensorBoard events; MLflow with --mlflow)."""
    from .report import log_mlflow, write_report, write_tensorboard

    path = write_report(run)
    print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if tensorboard:
        print(f"tensorboard: {write_tensorboard(run)}  (view: tensorboard --logdir {run / rundir.TENSORBOARD})")
    if mlflow:
        print(f"mlflow run: {log_mlflow(run, tracking_uri)}")


@_guard
def runs_cmd(workspace: Path = typer.Argument(Path("runs"), help="folder holding run directories")) -> None:
    """List the runs in a workspace with their champion's metrics."""
    from .report import list_runs

    list_runs(workspace, print_table=True)


@_guard
def show_cmd(run: Path = typer.Argument(..., help="run directory")) -> None:
    """Print a run's summary: headline, rounds and decisions."""
    from .report import show

    show(run)


@_guard
def info_cmd(
    remeasure: bool = typer.Option(False, "--remeasure", help="forget this machine's stored precision decision and time it again"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """This machine as ReflectLM sees it: CPU, threads, versions, and what precision = "auto" chose and why."""
    from . import runtime

    if remeasure:
        runtime.forget_precision()
    import torch

    out = {"cpu": runtime.cpu_info(), "device": str(runtime.device()), "torch_threads": torch.get_num_threads(),
           "versions": runtime.versions(), "precision": runtime.precision_report("auto"),
           "precision_cache": str(runtime.precision_cache_path())}
    if as_json:
        print(json.dumps(out, indent=2))
        return
    cpu = out["cpu"]
    print(f"cpu: {cpu['model']}, {cpu['cores']} cores, bf16 flags: {', '.join(cpu['bf16_flags']) or 'none'}; "
          f"device {out['device']}, torch threads {out['torch_threads']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in out["versions"].items()))
    for purpose, c in out["precision"].items():
        timed = ", ".join(f"{p}/{a} {1000 * t:.1f} ms" for p, by in c["seconds"].items() for a, t in by.items())
        print(f"precision = auto for {purpose}: {c['precision']}, attention {c['attention']} - {c['reason']}"
              + (f" ({timed}; {c['source']})" if timed else f" ({c['source']})"))
    print(f"stored in {out['precision_cache']} (reflectlm info --remeasure times it again)")


# --------------------------------------------------------------------------- deployment (reflectlm.deploy)


@_guard
def export_cmd(
    run: Path = typer.Argument(..., help="run directory (its champion is exported)"),
    prune: Optional[float] = typer.Option(None, "--prune", help="share of weights to prune, e.g. 0.3"),
    prune_method: str = typer.Option("magnitude", "--prune-method", help="magnitude or heads"),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8 (dynamic) or bf16"),
    onnx: bool = typer.Option(False, "--onnx", help=r"export to ONNX (needs reflectlm\[onnx])"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="export directory (default RUN/exports/<variant>)"),
    margin: Optional[float] = typer.Option(None, "--margin", help="non-inferiority margin (default: the run's loop.margin)"),
    merge: bool = typer.Option(False, "--merge", help="a generator: its LoRA adapters folded into standalone safetensors"),
    gguf: Optional[str] = typer.Option(None, "--gguf", help="a generator: also a GGUF file (f16 or f32) for llama.cpp "
                                       "and Ollama"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Compress / convert the champion; kept only if not worse than it on the selection split."""
    from .deploy.export import ExportRefused, export

    try:
        info = export(run, output, prune=prune, prune_method=prune_method, quantize=quantize, onnx=onnx, margin=margin,
                      quiet=quiet, merge=merge, gguf=gguf)
    except ExportRefused as e:
        _fail(e, FAILED)
    if "latency_ms_batch1" not in info.get("candidate", {}):  # a generator's export: its artefacts' verdicts
        for a in info["attempts"]:
            print(f"{a['artifact']}: {'kept' if a['passed'] else 'refused'} - {a['reason']}")
        print(f"export directory: {info['output']}  (serve it: reflectlm serve {info['output']})")
        return
    c, k = info["candidate"], info["champion"]
    print(f"accepted: {info['reason']}")
    print(f"size {k['size_bytes'] / 1e6:.1f} MB -> {c['size_bytes'] / 1e6:.1f} MB; latency batch 1 "
          f"{k['latency_ms_batch1']:.1f} -> {c['latency_ms_batch1']:.1f} ms, batch 32 {k['latency_ms_batch32']:.1f} -> "
          f"{c['latency_ms_batch32']:.1f} ms; {c['throughput_texts_per_s']:.0f} texts/s")
    print(f"export directory: {info['output']}  (serve it: reflectlm serve {info['output']})")


@_guard
def serve_cmd(
    path: Path = typer.Argument(..., help="run directory (its champion), model bundle or export directory"),
    host: Optional[str] = typer.Option(None, "--host", help="address to bind (default 127.0.0.1: this machine only)"),
    port: Optional[int] = typer.Option(None, "--port", help="default 8000"),
    workers: Optional[int] = typer.Option(None, "--workers", help="processes, each with its own copy of the model"),
    store: Optional[str] = typer.Option(None, "--store", help="production store: a SQLite path (default "
                                        "PATH/serving.sqlite) or a database URL, e.g. postgresql+psycopg://USER@HOST/DB"),
    backend: Optional[str] = typer.Option(None, "--backend", help="uvicorn (one machine, the default) or ray "
                                          r"(a Ray Serve deployment with autoscaling; needs reflectlm\[distributed])"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (--backend ray; default: "
                                          "start a local one)"),
    min_replicas: Optional[int] = typer.Option(None, "--min-replicas", help="--backend ray: serve.ray.min_replicas"),
    max_replicas: Optional[int] = typer.Option(None, "--max-replicas", help="--backend ray: serve.ray.max_replicas"),
    target_ongoing: Optional[float] = typer.Option(None, "--target-ongoing-requests",
                                                   help="--backend ray: requests in flight per replica to scale for"),
    config: Optional[Path] = typer.Option(None, "--config", help=r"TOML with \[serve] / \[monitor] sections"),
    set_: list[str] = typer.Option([], "--set", help="override a setting, e.g. --set serve.max_batch=64"),
) -> None:
    r"""Serve a model over HTTP (needs reflectlm\[serve]): predict, feedback, health, metrics, a try-it page."""
    from .config import ConfigError, load_deploy_config
    from .deploy.predictor import EXPORT_FILE, resolve_model_dir

    _mask_argv()
    if not (path / EXPORT_FILE).is_file():
        resolve_model_dir(path)  # a path without a model fails now, with the fix, not inside uvicorn
    flags = {"serve.store": store, "serve.backend": backend, "serve.ray.address": address,
             "serve.ray.min_replicas": min_replicas, "serve.ray.max_replicas": max_replicas,
             "serve.ray.target_ongoing_requests": target_ongoing}
    settings = load_deploy_config(config, list(set_) + [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None])
    from .deploy.store import ProductionStore

    ProductionStore(settings.serve.store or path / rundir.SERVING_STORE)  # a malformed URL fails now, with the fix
    if settings.serve.backend == "ray":
        if workers is not None:
            raise ConfigError("--workers is for the uvicorn backend; with --backend ray set --min-replicas / "
                              "--max-replicas (serve.ray.*)")
        try:
            import ray  # noqa: F401
            from ray import serve as _  # noqa: F401
        except ImportError:
            raise ConfigError(r"--backend ray needs Ray Serve: pip install 'reflectlm\[distributed]'") from None
        from .deploy.serve.ray_app import serve_forever

        serve_forever(path, settings, host=host, port=port)
        return
    from .deploy.serve.app import serve

    serve(path, settings, host=host, port=port, workers=workers)


@_guard
def monitor_cmd(
    path: str = typer.Argument(..., help="served directory, its serving.sqlite store, or the store's database URL"),
    config: Optional[Path] = typer.Option(None, "--config", help=r"TOML with a \[monitor] section (thresholds, window)"),
    set_: list[str] = typer.Option([], "--set", help="e.g. --set monitor.window=1000"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Drift of the served traffic against the selection split: labels, confidence, embeddings."""
    from rich.console import Console
    from rich.table import Table

    from .config import load_deploy_config
    from .deploy.monitor import monitor_state

    _mask_argv()
    settings = load_deploy_config(config, list(set_))
    state = monitor_state(path, settings.monitor)
    if as_json:
        print(json.dumps(state, indent=2, default=float))
        return
    c = state["counts"]
    print(f"store {state['store']}: {c['predictions']} predictions ({c['low_confidence']} low-confidence), "
          f"{c['feedback']} corrections; window {state['n_current']} vs {state['n_reference']} selection examples")
    table = Table(title=f"drift: {state['status']}")
    for col in ("check", "value", "threshold", "alert"):
        table.add_column(col)
    for name, ch in state["checks"].items():
        table.add_row(name, f"{ch['value']:.4f}", f"{ch['threshold']:.4f}", "ALERT" if ch["alert"] else "ok")
    Console().print(table)
    if state.get("reason"):
        print(state["reason"])


keys_app = typer.Typer(no_args_is_help=True, help="API keys for `reflectlm serve` (stored hashed).")


@keys_app.command("add")
@_guard
def keys_add_cmd(name: str = typer.Argument(..., help="who the key is for, e.g. ci or alice"),
                 file: Path = typer.Option(..., "--file", help="key file (serve.api_keys_file)")) -> None:
    """Add a key (or rotate: a new key for an existing name). The key is printed once."""
    from .deploy.serve.auth import add_key

    key = add_key(file, name)
    print(key)
    typer.echo(f"stored its SHA-256 under [keys.{name}] in {file}; a running server picks it up within a second",
               err=True)


@keys_app.command("revoke")
@_guard
def keys_revoke_cmd(name: str = typer.Argument(...), file: Path = typer.Option(..., "--file")) -> None:
    """Revoke a key; a running server refuses it within a second."""
    from .deploy.serve.auth import revoke_key

    revoke_key(file, name)
    print(f"revoked {name!r} in {file}")


def demo_config_path() -> Path:
    return Path(__file__).parent / "defaults" / "demo.toml"


COMMANDS = {
    "train": train_cmd,
    "evaluate": evaluate_cmd,
    "predict": predict_cmd,
    "demo": demo_cmd,
    "diagnose": diagnose_cmd,
    "report": report_cmd,  # reports: reflectlm.report
    "runs": runs_cmd,
    "show": show_cmd,
    "run": run_cmd,
    "info": info_cmd,
    "export": export_cmd,  # deployment: reflectlm.deploy
    "serve": serve_cmd,
    "monitor": monitor_cmd,
}

for _name, _fn in COMMANDS.items():
    app.command(_name)(_fn)
app.add_typer(label_app, name="label")
app.add_typer(keys_app, name="keys")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
