"""The terminal view of runs: `reflectlm runs [WORKSPACE]` and `reflectlm show RUN`."""

from __future__ import annotations

from pathlib import Path

from .. import rundir
from .runs import _num, is_run_dir, load_run


def summarize(run_dir: str | Path) -> dict:
    """A run's summary as plain data: what `show` prints and `list_runs` lists."""
    run = load_run(run_dir)
    champ = run.champion
    r0 = run.round0
    sel = champ.selection(run.metric) if champ else None
    sel0 = r0.selection(run.metric) if r0 else None
    test = run.test_metrics() or {}
    rounds = []
    for r in run.rounds:
        c = r.compare or {}
        rounds.append({"round": r.number, "actions": r.actions, "selection": r.selection(run.metric),
                       "promoted": r.promoted, "difference": _num(c.get("difference")), "ci_low": _num(c.get("ci_low")),
                       "ci_high": _num(c.get("ci_high")), "p_mcnemar": _num((c.get("mcnemar") or {}).get("p_value")),
                       "reason": (r.decision or {}).get("reason") or c.get("reason"),
                       # loop.parallel > 1: every challenger of the round, the kept one included
                       "challengers": (r.decision or {}).get("challengers")})
    return {
        "name": run.name, "path": str(run.path), "kind": run.kind, "status": run.status, "task": run.task,
        "model": (run.config.get("model") or {}).get("name"), "created": run.info.get("created"),
        "selection_metric": run.metric, "champion_round": run.champion_round if run.kind == "loop" else None,
        "selection": sel, "gain": None if sel is None or sel0 is None else sel - sel0,
        "test": {k: v for k, v in test.items() if _num(v) is not None},
        "rounds_run": len(run.challengers), "stop_reason": run.stop_reason(), "wall_seconds": run.wall_seconds(),
        "rounds": rounds, "report": str(run.path / rundir.REPORT) if (run.path / rundir.REPORT).is_file() else None,
    }


def list_runs(workspace: str | Path = "runs", print_table: bool = False) -> list[dict]:
    """Every run directory directly under `workspace` (newest first) with its champion's metrics."""
    ws = Path(workspace)
    if not ws.is_dir():
        raise FileNotFoundError(f"workspace {ws} does not exist; pass the folder that holds your runs (default runs/)")
    rows = []
    for p in sorted(ws.iterdir()):
        if is_run_dir(p):
            try:
                rows.append(summarize(p))
            except (OSError, ValueError) as e:
                rows.append({"name": p.name, "path": str(p), "status": f"unreadable: {e}"})
    rows.sort(key=lambda r: (r.get("created") or "", r["name"]), reverse=True)
    if print_table:
        _print_runs(rows, ws)
    return rows


def _fmt(x, digits: int = 4) -> str:
    v = _num(x)
    return "-" if v is None else f"{v:.{digits}f}"


def _duration(s) -> str:
    s = _num(s)
    if s is None:
        return "-"
    return f"{s:.0f}s" if s < 60 else f"{s / 60:.1f}m" if s < 3600 else f"{s / 3600:.1f}h"


def _print_runs(rows: list[dict], ws: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs in {ws}")
    table.add_column("run", overflow="fold")
    for col in ("kind", "status", "metric", "selection", "gain", "test", "rounds", "wall"):
        table.add_column(col, justify="right" if col in ("selection", "gain", "test", "rounds", "wall") else "left")
    for r in rows:
        test = r.get("test") or {}
        metric = r.get("selection_metric")
        gain = _num(r.get("gain"))
        table.add_row(r["name"], r.get("kind", "-"), r.get("status", "-"), metric or "-", _fmt(r.get("selection")),
                      "-" if gain is None or r.get("kind") != "loop" else
                      f"[{'green' if gain > 0 else 'red' if gain < 0 else 'white'}]{gain:+.4f}[/]",
                      _fmt(test.get(metric) if metric else None), str(r.get("rounds_run", "-")),
                      _duration(r.get("wall_seconds")))
    console = Console()
    console.print(table)
    if not rows:
        console.print(f"no run directories in {ws}")


def show(run_dir: str | Path, console=None) -> dict:
    """Print a run's summary (headline, rounds, decisions) to the terminal; returns it as data."""
    from rich.console import Console
    from rich.table import Table

    s = summarize(run_dir)
    console = console or Console()
    metric = s["selection_metric"]
    gain = _num(s["gain"])
    console.print(f"[bold]{s['name']}[/]  {s['kind']} run · {s['task']} · {s['status']}", highlight=False)
    console.print(f"model {s['model'] or '-'}", highlight=False)
    line = f"selection {metric} [bold]{_fmt(s['selection'])}[/]"
    if gain is not None:
        line += f" ({gain:+.4f} over round 0)"
    if s["test"]:
        keys = [k for k in ("accuracy", "macro_f1", "entity_f1") if k in s["test"]]
        line += "   test " + "  ".join(f"{k} {s['test'][k]:.4f}" for k in keys)
    console.print(line, highlight=False)
    if s["kind"] == "loop":
        console.print(f"champion round {s['champion_round']} · {s['rounds_run']} challenger rounds · "
                      f"stopped: {s['stop_reason'] or '-'} · wall {_duration(s['wall_seconds'])}", highlight=False)
        table = Table()
        for col in ("round", "plan", metric, "difference", "95% CI", "McNemar p", "decision"):
            table.add_column(col, justify="right" if col in (metric, "difference", "McNemar p") else "left")
        for r in s["rounds"]:
            decision = ("baseline" if r["round"] == 0 else "[green]promote[/]" if r["promoted"]
                        else "[red]reject[/]" if r["promoted"] is False else "[yellow]pending[/]")
            ci = "-" if r["ci_low"] is None else f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
            diff = "-" if r["difference"] is None else f"{r['difference']:+.4f}"
            p = "-" if r["p_mcnemar"] is None else f"{r['p_mcnemar']:.2g}"
            table.add_row(str(r["round"]), " + ".join(r["actions"]) or "-", _fmt(r["selection"]), diff, ci, p, decision)
        console.print(table)
        for r in s["rounds"]:  # reasons are sentences: below the table, not squeezed into a column
            if r["reason"] and r["round"] > 0:
                console.print(f"round {r['round']}: {r['reason']}", highlight=False)
            for c in r.get("challengers") or []:
                what = "no change, not trained" if c.get("no_op") else (
                    f"{metric} {_fmt(c.get('selection'))}, difference {c['difference']:+.4f}, gate p "
                    f"{c['p_gate']:.2g}, Holm-adjusted {c['p_holm']:.2g}, {'passed' if c['passed'] else 'not passed'}")
                console.print(f"  challenger {c['challenger']}: {' + '.join(c['actions'])}: {what}", highlight=False)
    else:
        console.print(f"a plain training run · wall {_duration(s['wall_seconds'])}", highlight=False)
    if s["report"]:
        console.print(f"report: {s['report']}", highlight=False)
    return s
