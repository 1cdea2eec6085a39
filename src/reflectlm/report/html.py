"""One self-contained report.html per run directory, read top to bottom in a minute.

Sections, in order: headline, rounds timeline, decisions, errors by class, findings, training
dynamics, gradient health and descent path, calibration, learned action values, reproduce.

Self-contained means viewable offline and forever: plots are base64 PNG data URIs, the CSS is
inline, there is no script and no font or file outside the page. A section whose inputs the run
does not have (yet) says so in one line instead of disappearing, so a half-finished run renders
too; while the run is still going the page reloads itself every 30 s (live progress).
"""

from __future__ import annotations

import base64
import html
import json
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path

from .. import rundir
from ..atomic import write_text
from .runs import Round, Run, _num, load_run

SECTIONS = {  # id -> heading, in page order (tests assert every one is present)
    "headline": "Headline",
    "timeline": "Rounds timeline",
    "decisions": "Decisions",
    "errors": "Errors by class",
    "findings": "Findings",
    "dynamics": "Training dynamics",
    "gradients": "Gradient health and descent path",
    "calibration": "Calibration",
    "action-values": "Learned action values",
    "reproduce": "Reproduce",
}
REFRESH_SECONDS = 30  # a running loop's report reloads itself this often
TOP_EXAMPLES = 10  # example rows shown per finding

CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#f6f8fa;--good:#1a7f37;--bad:#cf222e;--accent:#0969da}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
margin:0 auto;max-width:1180px;padding:16px 24px 64px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;border-bottom:1px solid var(--line);padding-bottom:4px;
margin-top:36px}h3{font-size:15px;margin:18px 0 6px}
nav{font-size:13px;color:var(--muted);margin-bottom:8px}nav a{color:var(--accent);text-decoration:none;margin-right:10px}
.sub{color:var(--muted);margin:0 0 12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:10px;margin:12px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:#fff}
.card .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
.card .v{font-size:20px;font-weight:600;margin-top:2px;word-break:break-word}
.card .n{font-size:12px;color:var(--muted)}
.pos{color:var(--good)}.neg{color:var(--bad)}.muted{color:var(--muted)}
table{border-collapse:collapse;margin:8px 0;font-size:13px;width:100%}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.b-promote{background:var(--good)}.b-reject{background:var(--bad)}.b-base{background:#6e7781}.b-wait{background:#9a6700}
.finding{border:1px solid var(--line);border-left:6px solid var(--sev);border-radius:6px;padding:8px 12px;margin:10px 0}
.finding .head{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.sevbar{display:inline-block;width:80px;height:8px;background:var(--bg);border-radius:4px;overflow:hidden;
vertical-align:middle}.sevbar i{display:block;height:100%;background:var(--sev)}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
pre{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:10px;overflow:auto;max-height:480px}
img.plot{max-width:100%;height:auto;display:block;margin:8px 0;border:1px solid var(--bg)}
details summary{cursor:pointer;color:var(--accent)}
.note{color:var(--muted);font-style:italic}
.text{max-width:520px;word-break:break-word}
"""


# --------------------------------------------------------------------------- public entry


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write `<run_dir>/report.html` (or `output`) from whatever the run directory holds now;
    returns its path. Safe to call after every round: the file is replaced atomically."""
    run = load_run(run_dir)
    page = render(run)
    out = Path(output) if output is not None else run.path / rundir.REPORT
    write_text(out, page)
    return out


def render(run: Run) -> str:
    """The report page for a loaded run, as one HTML string."""
    t0 = time.perf_counter()
    parts = []
    for sid, heading in SECTIONS.items():
        builder = _BUILDERS[sid]
        try:
            body = builder(run)
        except Exception as e:  # noqa: BLE001 - one broken input must not cost the whole report
            body = f'<p class="note">this section could not be drawn: {_e(type(e).__name__)}: {_e(str(e))}</p>'
        parts.append(f'<section id="{sid}"><h2>{_e(heading)}</h2>\n{body}\n</section>')
    nav = " ".join(f'<a href="#{sid}">{_e(h)}</a>' for sid, h in SECTIONS.items())
    running = run.status == "running"
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if running else ""
    title = f"ReflectLM report: {run.name}"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    footer = (f'<p class="muted" style="margin-top:40px">Written {stamp} by reflectlm.report in '
              f'{time.perf_counter() - t0:.1f} s from {_e(str(run.path))}.'
              + (f" The run is still going; this page reloads every {REFRESH_SECONDS} s." if running else "")
              + "</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{refresh}"
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
            f"<h1>{_e(title)}</h1><nav>{nav}</nav>\n" + "\n".join(parts) + footer + "\n</body></html>\n")


# --------------------------------------------------------------------------- helpers


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _img(fig, alt: str) -> str:
    from .plots import to_png

    data = base64.b64encode(to_png(fig)).decode("ascii")
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _f(x, digits: int = 4) -> str:
    v = _num(x)
    if v is None:
        return "–"
    if v != 0 and abs(v) < 10 ** -digits:
        return f"{v:.1e}"
    return f"{v:.{digits}f}"


def _pct(x) -> str:
    v = _num(x)
    return "–" if v is None else f"{100 * v:.1f}%"


def _signed(x, digits: int = 4) -> str:
    v = _num(x)
    if v is None:
        return "–"
    cls = "pos" if v > 0 else "neg" if v < 0 else "muted"
    return f'<span class="{cls}">{v:+.{digits}f}</span>'


def _p(x) -> str:
    v = _num(x)
    if v is None:
        return "–"
    return f"{v:.2g}" if v >= 1e-4 else "<1e-4"


def _duration(seconds) -> str:
    s = _num(seconds)
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """Rows are pre-escaped HTML cells."""
    th = "".join(f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _card(key: str, value: str, note: str = "") -> str:
    return (f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{value}</div>'
            + (f'<div class="n">{note}</div>' if note else "") + "</div>")


def _gain(now, before, baseline: bool) -> str:
    if baseline:
        return "the round-0 model (no gain to report)"
    return "gain over round 0: " + _signed(None if _num(now) is None or _num(before) is None else now - before)


def _label_list(labels: list, n: int = 6) -> str:
    if not labels:
        return ""
    shown = ", ".join(map(str, labels[:n]))
    return f"{len(labels)} labels: {shown}" + (" …" if len(labels) > n else "")


def _round_label(r: Round | None) -> str:
    return "–" if r is None else f"round {r.number}"


# --------------------------------------------------------------------------- 1. headline


def _found_simulated(run: Run, flipped: set[str]) -> int:
    """How many of the flipped ids a label_issues finding of any round (or the run's own diagnosis) flagged."""
    flagged: set[str] = set()
    for rec in [r.findings for r in run.rounds] + [run.diagnosis()[1]]:
        for f in (rec or {}).get("findings", []) if isinstance(rec, dict) else []:
            if f.get("kind") == "label_issues":
                flagged |= set((f.get("evidence") or {}).get("flagged") or [])
    return len(flagged & flipped)


def _test_gain_line(run: Run) -> str:
    """One line: what the loop's promotions did on test, with the paired interval ("" without one)."""
    gain = (run.summary or {}).get("test_gain")
    if not isinstance(gain, dict) or _num(gain.get("difference")) is None:
        return ""
    return (f'<p class="verdict" id="test-gain">On test, the champion (round {run.champion_round}) changes '
            f'{_e(gain.get("metric"))} by {_num(gain["difference"]):+.4f} over round 0 '
            f'({_f(gain.get("round0"))} → {_f(gain.get("champion"))}; paired 95 % CI '
            f'{_num(gain.get("ci_low")):+.4f} to {_num(gain.get("ci_high")):+.4f}, '
            f'{int(gain.get("n") or 0):,} test examples).</p>')


def _headline(run: Run) -> str:
    metric = run.metric
    champ = run.champion
    r0 = run.round0
    sel = champ.selection(metric) if champ else None
    sel0 = r0.selection(metric) if r0 else None
    test, test0 = run.test_metrics() or {}, run.round0_test() or {}
    data = run.info.get("data") or {}
    if not data and run.config.get("data"):
        data = {k: {"source": v} for k, v in run.config["data"].items() if k in ("train", "selection", "test") and v}
    model = (run.config.get("model") or {}).get("name") or "–"
    n_rounds = len(run.challengers)
    baseline = run.champion_round == 0
    cards = [
        _card("task", _e(run.task), _e(_label_list(run.info.get("labels") or []))),
        _card("base model", _e(Path(str(model)).name or model), _e(str(model))),
        _card("champion", _e(_round_label(champ)) if run.kind == "loop" else "the trained model",
              _e(f"status: {run.status}")),
        _card(f"selection {metric}", _f(sel), _gain(sel, sel0, baseline)),
    ]
    for k in run.spec.report_metrics:
        if k in test:
            cards.append(_card(f"test {k}", _f(test[k]), _gain(test[k], test0.get(k), baseline)))
    sim = run.info.get("simulated_label_noise")
    if isinstance(sim, dict) and sim.get("count"):  # label errors flipped on purpose: how many the loop found
        found = _found_simulated(run, set(sim.get("flipped") or {}))
        cards.append(_card("simulated label errors found", f"{found} of {sim['count']}",
                           _e(f"{sim['fraction']:.0%} of training labels flipped on purpose "
                              "(data.simulated_label_noise); flagged by a label check in any round")))
    opened = test.get("open_set") if isinstance(test.get("open_set"), dict) else None
    if opened:  # a model with an out-of-scope detector (open_set.py): what it turns away, what it keeps
        cards.append(_card("test out of scope caught", _f(opened.get("oos_recall")),
                           _e(f"{opened.get('n_out_of_scope', 0)} out-of-scope test messages; {opened.get('detector')} "
                              f"detector, AUROC {_f(opened.get('auroc'))}")))
        cards.append(_card("test in-scope accuracy", _f(opened.get("in_scope_accuracy")),
                           _e(f"{_f(opened.get('in_scope_accuracy_without_detector'))} without the detector; "
                              f"{_f(opened.get('false_rejection'))} of in-scope messages turned away")))
    cards += [
        _card("rounds run", str(n_rounds), "challengers trained after round 0" if run.kind == "loop" else "a plain training run"),
        _card("why it stopped", _e(run.stop_reason() or "–") if run.kind == "loop" else "–",
              "" if run.kind == "loop" else "a single training run: no improvement rounds"),
        _card("wall time", _duration(run.wall_seconds()),
              _e(f"{int(run.summary['examples_trained']):,} examples trained") if run.summary
              and _num(run.summary.get("examples_trained")) is not None else ""),
    ]
    rows = [[_e(split), _e(v.get("source", "–")), f"{int(v['examples']):,}" if _num(v.get("examples")) is not None else "–"]
            for split, v in data.items() if isinstance(v, dict)]
    parts = [f'<p class="sub">{_e(run.name)} — {_e(run.kind)} run, created {_e(run.info.get("created", "–"))}</p>']
    parts += [_test_gain_line(run), '<div class="cards">' + "".join(cards) + "</div>"]
    if rows:
        parts.append("<h3>Data</h3>" + _table(["split", "source", "examples"], rows, {2}))
    warnings = run.info.get("warnings") or []
    if warnings:
        parts.append("<h3>Data warnings</h3><ul>" + "".join(f"<li>{_e(w)}</li>" for w in warnings[:20]) + "</ul>")
    fb = run.info.get("feedback")
    if isinstance(fb, dict):  # reflectlm run --feedback STORE (deploy/feedback.py)
        labels = ", ".join(f"{k} {v}" for k, v in sorted((fb.get("added_labels") or {}).items()))
        parts.append("<h3>Production feedback</h3><p>" + _e(
            f"{fb.get('used', 0)} corrections from {fb.get('store', '?')} used: {fb.get('added', 0)} new training texts"
            f"{f' ({labels})' if labels else ''}, {fb.get('relabelled', 0)} training labels replaced, "
            f"{fb.get('corrected_model_errors', 0)} where the served model had been wrong; "
            f"{fb.get('skipped_held_out', 0)} left out (selection / test texts); "
            f"{fb.get('pool_texts_added', 0)} uncorrected texts added to the unlabelled pool.") + "</p>")
    sel_m = ((champ.metrics or {}).get("selection") or {}) if champ else {}
    if test or sel_m:
        keys = [k for k in ("accuracy", "macro_f1", "weighted_f1", "entity_precision", "entity_recall", "entity_f1",
                            "entity_macro_f1", "token_accuracy", "loss") if k in (test or sel_m)]
        trows = [[_e(name)] + [_f(m.get(k)) for k in keys] for name, m in
                 (("champion: selection", sel_m), ("champion: test", test),
                  ("round 0: test", None if baseline else test0)) if m]
        parts.append("<h3>Champion metrics</h3>" + _table(["split"] + keys, trows, set(range(1, len(keys) + 1))))
        if not test and run.kind == "loop":
            parts.append(_note("the test split is read once, when the loop finishes"))
    return "\n".join(parts)


# --------------------------------------------------------------------------- 2. timeline


def _timeline_rows(run: Run) -> list[dict]:
    before = run.champion_before()
    rows = []
    for r in run.rounds:
        c = r.compare or {}
        rows.append({"round": r.number, "selection": r.selection(run.metric), "promoted": r.promoted,
                     "champion_before": before.get(r.number), "difference": _num(c.get("difference")),
                     "ci_low": _num(c.get("ci_low")), "ci_high": _num(c.get("ci_high")), "margin": _num(c.get("margin"))})
    return rows


def _timeline(run: Run) -> str:
    from .plots import rounds_timeline

    if run.kind == "train":
        return _note("a plain training run has a single round (round 0); there is no challenger to compare. "
                     "`reflectlm run` adds rounds.")
    rows = _timeline_rows(run)
    if not any(r["selection"] is not None for r in rows):
        return _note("no round has finished yet")
    return _img(rounds_timeline(rows, run.metric), "selection metric per round")


# --------------------------------------------------------------------------- 3. decisions


def _plan_cell(r: Round) -> tuple[str, str]:
    plan = r.plan or {}
    addressed, steps = [], []
    for a in plan.get("actions", []):
        if not isinstance(a, dict):
            steps.append(_e(a))
            continue
        addressed += [x for x in a.get("addresses", []) if x not in addressed]
        params = a.get("params") or {}
        ps = ", ".join(f"{k}={_short_json(v)}" for k, v in params.items())
        steps.append(f"<code>{_e(a.get('action', '?'))}</code>" + (f" <span class='muted'>({_e(ps)})</span>" if ps else ""))
    return (", ".join(_e(x) for x in addressed) or "–"), ("<br>".join(steps) or "–")


def _short_json(v, n: int = 40) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


def _decisions(run: Run) -> str:
    if run.kind == "train":
        return _note("no decisions: a plain training run is its own champion")
    if not run.rounds:
        return _note("no round has started yet")
    rows = []
    champion = 0  # the champion round when each round started
    for r in run.rounds:
        c, d = r.compare or {}, r.decision or {}
        if r.number == 0:
            badge = '<span class="badge b-base">baseline</span>'
            reason = d.get("reason") or "round 0 trains the starting champion"
        elif r.promoted is True:
            badge, reason = '<span class="badge b-promote">promote</span>', d.get("reason") or c.get("reason") or ""
        elif r.promoted is False:
            badge, reason = '<span class="badge b-reject">reject</span>', d.get("reason") or c.get("reason") or ""
        else:
            badge, reason = '<span class="badge b-wait">pending</span>', "the challenger has not been compared yet"
        found, plan = _plan_cell(r)
        if isinstance(d.get("built_on"), int) and d["built_on"] != champion:
            # a chained round: built on a promising rejected challenger, judged against the champion
            plan = f"<span class='muted'>on round {d['built_on']}'s data and model:</span><br>" + plan
        if r.promoted is True:
            champion = r.number
        mc = c.get("mcnemar") or {}
        ci = "–" if _num(c.get("ci_low")) is None else f"[{_f(c.get('ci_low'))}, {_f(c.get('ci_high'))}]"
        rows.append([str(r.number), found, plan, _f(r.selection(run.metric)), _signed(c.get("difference")), ci,
                     _p(mc.get("p_value")), badge, _e(reason)])
    return (_table(["round", "findings acted on", "plan", f"selection {run.metric}", "difference", "95% CI",
                    "McNemar p", "decision", "reason"], rows, {0, 3, 4, 5, 6})
            + '<p class="muted">difference = challenger − champion on the selection split (paired); the interval is '
              "a paired bootstrap; the test split never decides.</p>")


# --------------------------------------------------------------------------- 4. errors by class


def _errors(run: Run) -> str:
    """Errors by the task's groups: a confusion matrix where the metrics carry one (classes), a
    table of the groups where they do not (entity types, question types), and the task's error kinds."""
    from .plots import per_class_bars

    champ = run.champion
    if champ is None or not champ.metrics:
        return _note("no metrics yet")
    split, cur, base = run.champion_eval()
    spec = run.spec
    parts = [f'<p class="sub">the champion ({_e(_round_label(champ))}) on the {split} split</p>']
    groups, title = cur.get(spec.group_metrics) or {}, f"per-{spec.group_name.replace(' ', '-')} F1"
    confusion = _confusion(run, split, cur)
    parts += confusion
    if groups:
        parts.append(_img(per_class_bars(groups, (base or {}).get(spec.group_metrics), "f1", title), title))
        if not confusion:
            cols = [c for c in ("precision", "recall", "exact_match", "f1", "support", "n")
                    if any(c in v for v in groups.values())]
            rows = [[_e(g)] + [str(v.get(c, "–")) if c in ("support", "n") else _f(v.get(c)) for c in cols]
                    for g, v in sorted(groups.items())]
            parts.append(_table([spec.group_name] + [c.replace("_", " ") for c in cols], rows,
                                set(range(1, len(cols) + 1))))
    if spec.error_kinds:
        parts += _error_kinds(run)
    return "\n".join(parts)


def _error_kinds(run: Run) -> list[str]:
    from .plots import ner_error_kinds

    _, diag = run.diagnosis()
    kinds = next((f for f in (diag or {}).get("findings", []) if f.get("kind") == "error_kinds"), None)
    if kinds:
        ev = kinds.get("evidence") or {}
        order = list((ev.get("counts") or {}).keys())
        parts = []
        if ev.get("per_type") and order:
            parts.append(_img(ner_error_kinds(ev["per_type"], order), "errors by kind"))
        rows = [[_e(k), str(v), _pct((ev.get("rates") or {}).get(k))] for k, v in (ev.get("counts") or {}).items()]
        return parts + ["<h3>Error kinds</h3>" + _table(["kind", "count", "rate"], rows, {1, 2})]
    if diag is not None and any(f.get("check") == "performance" for f in diag.get("findings", [])):
        return [_note("the diagnosis found no errors of these kinds on the selection split")]
    return [_note("the error-kind breakdown comes from `reflectlm diagnose` (not run on this model yet)")]


def _confusion(run: Run, split: str, cur: dict) -> list[str]:
    """The confusion heatmap, the most frequent confusions and the worst classes, where the metrics
    carry a confusion matrix (one class per example)."""
    from .plots import confusion_heatmap, error_order

    conf, labels = cur.get("confusion"), cur.get("labels") or run.info.get("labels") or list(cur.get("per_class") or {})
    if not (conf and labels and len(conf) == len(labels)):
        return []
    import numpy as np

    parts = [_img(confusion_heatmap(conf, labels, title=f"{split} confusion"), "confusion matrix")]
    c = np.asarray(conf)
    off = [(int(c[i, j]), labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels))
           if i != j and c[i, j] > 0]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    sup = c.sum(1)
    if off:
        idx = {n: i for i, n in enumerate(labels)}
        rows = [[_e(a), _e(b), str(n), _pct(n / max(sup[idx[a]], 1))] for n, a, b in off[:10]]
        parts.append("<h3>Most frequent confusions</h3>" + _table(["true", "predicted as", "count", "share of true"],
                                                                  rows, {2, 3}))
    else:
        parts.append(_note(f"no confusions: every {split} example is classified correctly"))
    worst = [f"{labels[i]} ({_pct(1 - c[i, i] / sup[i])})" for i in error_order(c)[:5] if sup[i] and c[i, i] < sup[i]]
    if worst:
        parts.append(f'<p class="muted">highest error rates: {_e(", ".join(worst))}</p>')
    return parts


# --------------------------------------------------------------------------- 5. findings

SEV_COLORS = ((0.66, "#cf222e"), (0.33, "#d4a72c"), (0.0001, "#54aeff"), (-1, "#afb8c1"))


def _sev_color(s: float) -> str:
    return next(c for t, c in SEV_COLORS if s >= t)


def _examples_table(rows: list[dict]) -> str:
    """Example rows from evidence (label issues: given / suggested; data map: confidence...)."""
    rows = [r for r in rows if isinstance(r, dict)][:TOP_EXAMPLES]
    if not rows:
        return ""
    preferred = ["id", "line", "text", "label", "given", "suggested", "score", "confidence", "variability",
                 "correctness", "oof_gold_prob", "train_gold_prob"]
    keys = [k for k in preferred if any(k in r for r in rows)]
    keys += [k for k in rows[0] if k not in keys and not isinstance(rows[0][k], (dict, list))][:3]

    def cell(k, v):
        if isinstance(v, float):
            return _f(v, 3)
        if k == "text":
            return f'<div class="text">{_e(v if v is not None else "–")}</div>'
        if isinstance(v, list):
            return _e(" ".join(map(str, v)))
        return _e("–" if v is None else v)

    return _table(keys, [[cell(k, r.get(k)) for k in keys] for r in rows],
                  {i for i, k in enumerate(keys) if all(isinstance(r.get(k), (int, float)) or r.get(k) is None
                                                        for r in rows) and k not in ("id",)})


def _evidence(ev: dict) -> str:
    parts = []
    scalars = {k: v for k, v in ev.items() if isinstance(v, (int, float, str, bool)) or v is None}
    if scalars:
        parts.append('<p class="muted">' + " · ".join(
            f"{_e(k)} = {_e(_f(v, 4) if isinstance(v, float) else v)}" for k, v in list(scalars.items())[:14]) + "</p>")
    for key in ("ranked", "top_examples", "examples", "pairs", "top_confusions"):
        v = ev.get(key)
        if isinstance(v, list) and v and isinstance(v[0], dict):
            title = {"ranked": "top suspected label errors", "top_examples": "examples"}.get(key, key.replace("_", " "))
            if key == "pairs" and "given" in v[0]:
                title = "given → suggested label pairs"
            parts.append(f"<h3>{_e(title)}</h3>" + _examples_table(v))
        elif isinstance(v, dict) and v and all(isinstance(x, list) for x in v.values()):  # NER: kind -> examples
            for kind, exs in list(v.items())[:5]:
                if exs and isinstance(exs[0], dict):
                    parts.append(f"<h3>examples: {_e(kind)}</h3>" + _examples_table(exs))
    rest = {k: v for k, v in ev.items() if k not in scalars and k not in ("ranked", "top_examples", "flagged")}
    if rest:
        text = json.dumps(rest, indent=1, default=str)
        if len(text) > 6000:
            text = text[:6000] + "\n… (truncated; findings.json has it all)"
        parts.append(f"<details><summary>all evidence</summary><pre>{_e(text)}</pre></details>")
    return "\n".join(parts)


def _findings(run: Run) -> str:
    where, diag = run.diagnosis()
    if diag is None:
        cmd = f"reflectlm diagnose {run.path}" if run.kind == "train" else "the next round's diagnosis"
        return _note(f"no diagnosis yet (run `{cmd}`)")
    found = sorted(diag.get("findings") or [], key=lambda f: -(_num(f.get("severity")) or 0))
    source = (f"the diagnosis of the champion that motivated round {where.number}'s plan"
              if where is not None and where.number > 0 else "the diagnosis of the trained model")
    parts = [f'<p class="sub">{_e(source)}: {len(found)} findings</p>']
    active = [f for f in found if (_num(f.get("severity")) or 0) > 0]
    quiet = [f for f in found if (_num(f.get("severity")) or 0) <= 0]
    for f in active:
        s = _num(f.get("severity")) or 0.0
        parts.append(
            f'<div class="finding" style="--sev:{_sev_color(s)}"><div class="head">'
            f'<span class="sevbar"><i style="width:{100 * s:.0f}%"></i></span><b>{s:.2f}</b>'
            f"<code>{_e(f.get('kind', '?'))}</code><span class='muted'>{_e(f.get('check', ''))}"
            f"{' · ' + _e(f['split']) if f.get('split') else ''}</span></div>"
            f"<p>{_e(f.get('summary', ''))}</p>{_evidence(f.get('evidence') or {})}</div>")
    if quiet:
        parts.append("<details><summary>" + f"{len(quiet)} checks with nothing to act on</summary><ul>"
                     + "".join(f"<li><code>{_e(f.get('kind'))}</code> {_e(f.get('summary', ''))}</li>" for f in quiet)
                     + "</ul></details>")
    for key, what in (("skipped", "reason"), ("failed", "error")):
        items = diag.get(key) or []
        if items:
            parts.append(f"<p class='muted'>{key}: " + "; ".join(f"{_e(i.get('check'))} ({_e(i.get(what))})"
                                                                  for i in items) + "</p>")
    targets = (where.targets if where is not None else None) or _top_targets(run)
    if targets:
        rows = [[_f(t.get("priority"), 2), _e(t.get("finding_kind", "")), _e(", ".join(t.get("actions", []))),
                 _e(t.get("reason", ""))] for t in targets[:8]]
        parts.append("<h3>Improvement targets</h3>" + _table(["priority", "finding", "actions", "why"], rows, {0}))
    return "\n".join(parts)


def _top_targets(run: Run):

    t = rundir.read_json(run.path / rundir.TARGETS, None)
    return t if isinstance(t, list) else None


# --------------------------------------------------------------------------- 6. dynamics


def _dynamics(run: Run) -> str:
    from .plots import data_map, data_map_stats

    champ = run.champion
    dyn = champ.dynamics() if champ else None
    if not dyn or "gold_prob" not in dyn or dyn["gold_prob"].size == 0:
        return _note("no training dynamics recorded (train.record_dynamics off, or the round has not finished)")
    conf, var, corr = data_map_stats(dyn)
    import numpy as np

    ok = np.isfinite(conf)
    hard = float(np.mean(conf[ok] < 0.2)) if ok.any() else 0.0
    easy = float(np.mean(conf[ok] > 0.8)) if ok.any() else 0.0
    return (f'<p class="sub">the champion\'s training run ({_e(_round_label(champ))}): '
            f"{_pct(easy)} of examples easy (confidence &gt; 0.8), {_pct(hard)} hard to learn (&lt; 0.2)</p>"
            + _img(data_map(dyn), "data map"))


# --------------------------------------------------------------------------- 7. gradients


def _gradients(run: Run) -> str:
    from .plots import gradient_heatmap, loss_curves

    champ = run.champion
    if champ is None:
        return _note("no round has finished yet")
    parts = []
    g = champ.gradients()
    if g and "grad_norm" in g and g["grad_norm"].size:
        parts.append(_img(gradient_heatmap(g), "gradient norm per layer"))
    else:
        parts.append(_note("no gradient telemetry recorded"))
    hist = (champ.metrics or {}).get("history") or []
    base = None
    if run.round0 is not None and run.round0 is not champ:
        base = (run.round0.metrics or {}).get("history")
    if hist:
        parts.append(_img(loss_curves(hist, run.metric, g, base), "loss curves"))
    else:
        parts.append(_note("no per-epoch history yet"))
    return "\n".join(parts)


# --------------------------------------------------------------------------- 8. calibration


def _calibration(run: Run) -> str:
    from .plots import reliability_diagram

    champ = run.champion
    cal = None
    for r in ([champ] if champ else []) + list(reversed(run.rounds)):
        if r is not None and r.calibration:
            cal = (r, r.calibration)
            break
    if cal:
        r, c = cal
        fig = reliability_diagram(c.get("bins_before"), c.get("bins_after"), _num(c.get("ece_before")),
                                  _num(c.get("ece_after")), _num(c.get("temperature")))
        fate = ("" if r.promoted is None else " (promoted: the champion is calibrated)" if r.promoted
                else " (rejected: the champion is not calibrated)")
        return (f'<p class="sub">temperature scaling ran in {_e(_round_label(r))}{fate}: temperature {_f(c.get("temperature"), 3)}, '
                f'ECE {_f(c.get("ece_before"), 4)} → {_f(c.get("ece_after"), 4)}</p>' + _img(fig, "reliability diagram"))
    _, diag = run.diagnosis()
    f = next((f for f in (diag or {}).get("findings", []) if f.get("kind") == "miscalibration"), None)
    if f and (f.get("evidence") or {}).get("reliability"):
        ev = f["evidence"]
        fig = reliability_diagram(ev["reliability"], None, _num(ev.get("ece")))
        return (f'<p class="sub">from the diagnosis (temperature scaling has not been applied to the model): '
                f'ECE {_f(ev.get("ece"))}; a temperature of {_f(ev.get("temperature"), 2)} would bring it to '
                f'{_f(ev.get("ece_after_temperature"))}</p>' + _img(fig, "reliability diagram"))
    return _note("no calibration data: temperature scaling did not run and the calibration check has not run")


# --------------------------------------------------------------------------- 9. action values


def _action_values(run: Run) -> str:
    rows = run.action_values()
    if not rows:
        return _note("no learned action values yet (they are written when the loop finishes a round)")
    rows = sorted(rows, key=lambda r: (-(_num(r.get("mean_gain")) or 0), str(r.get("finding_kind")), str(r.get("action"))))
    cells = [[_e(r.get("finding_kind", "–")), f"<code>{_e(r.get('action', '–'))}</code>", _e(r.get("n", "–")),
              _signed(r.get("mean_gain")), _e(r.get("promotions", "–"))] for r in rows]
    return _table(["finding kind", "action", "tries", "mean gain", "promotions"], cells, {2, 3, 4})


# --------------------------------------------------------------------------- 10. reproduce


def _command(argv) -> str | None:
    if isinstance(argv, str):
        return argv
    if not argv:
        return None
    argv = [str(a) for a in argv]
    if Path(argv[0]).name.startswith("reflectlm"):
        return shlex.join(["reflectlm", *argv[1:]])
    return None


def _reproduce(run: Run) -> str:
    cmds = []
    original = _command(run.info.get("command"))
    if original:
        cmds.append(("the command that made this run", original))
    verb = "run" if run.kind == "loop" else "train"
    cmds.append(("the same run from its resolved config",
                 shlex.join(["reflectlm", verb, str(run.path / rundir.CONFIG), "--output-dir", f"{run.path}-again"])))
    if run.kind == "train":
        cmds.append(("its diagnosis", shlex.join(["reflectlm", "diagnose", str(run.path)])))
    cmds.append(("this report", shlex.join(["reflectlm", "report", str(run.path)])))
    parts = ["<pre>" + "\n".join(f"# {_e(what)}\n{_e(c)}" for what, c in cmds) + "</pre>"]
    versions = run.info.get("versions")
    if versions:
        parts.append('<p class="muted">versions: ' + ", ".join(f"{_e(k)} {_e(v)}" for k, v in versions.items()) + "</p>")
    if run.config_text:
        parts.append("<h3>Resolved config</h3><pre>" + _e(run.config_text) + "</pre>")
    return "\n".join(parts)


_BUILDERS = {
    "headline": _headline,
    "timeline": _timeline,
    "decisions": _decisions,
    "errors": _errors,
    "findings": _findings,
    "dynamics": _dynamics,
    "gradients": _gradients,
    "calibration": _calibration,
    "action-values": _action_values,
    "reproduce": _reproduce,
}
assert list(_BUILDERS) == list(SECTIONS)

__all__ = ["SECTIONS", "render", "write_report"]

