"""The report's figures: matplotlib (Agg) figures in, PNG bytes out.

Every function takes plain arrays / dicts (no run directory) and returns a matplotlib Figure, so
the HTML report embeds them as base64 PNG and TensorBoard logs the same pictures. matplotlib is
imported here only, and this module only by the report functions (`import reflectlm` stays fast).
"""

from __future__ import annotations

import io
import math

import numpy as np

PROMOTED, REJECTED, CHAMPION, BASE = "#1a9850", "#d73027", "#2c7bb6", "#7f7f7f"
DPI = 100


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
                         "figure.dpi": DPI, "savefig.dpi": DPI})
    return plt


def to_png(fig, dpi: int = DPI) -> bytes:
    """Render and close the figure (figures are not kept: a report draws a dozen)."""
    plt = _plt()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    return buf.getvalue()


def _short(name: str, n: int = 28) -> str:
    name = str(name)
    return name if len(name) <= n else name[: n - 1] + "…"


# --------------------------------------------------------------------------- 2. rounds timeline


def rounds_timeline(rows: list[dict], metric: str):
    """rows: {"round", "selection", "champion_before", "promoted" (None for round 0),
    "difference", "ci_low", "ci_high", "margin"} per round. Top: the selection metric of every
    round's model with the champion as a step line; bottom: the A/B difference with its bootstrap
    interval per challenger."""
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    rounds = [r["round"] for r in rows]
    # The champion after each round: round 0, then each promoted challenger's value.
    champ, current = [], None
    for r in rows:
        if r["round"] == 0 or r.get("promoted"):
            current = r.get("selection") if r.get("selection") is not None else current
        champ.append(current)
    if any(c is not None for c in champ):
        top.step(rounds, [np.nan if c is None else c for c in champ], where="post", color=CHAMPION, lw=2,
                 label="champion", zorder=1)
    for r in rows:
        y = r.get("selection")
        if y is None:
            continue
        if r["round"] == 0:
            top.scatter([0], [y], s=70, marker="s", color=BASE, zorder=3, label="round 0 (baseline)")
        elif r.get("promoted"):
            top.scatter([r["round"]], [y], s=80, marker="o", color=PROMOTED, edgecolor="black", zorder=3,
                        label="challenger: promoted")
        elif r.get("promoted") is False:
            top.scatter([r["round"]], [y], s=70, marker="X", color=REJECTED, zorder=3, label="challenger: rejected")
        else:
            top.scatter([r["round"]], [y], s=60, marker="o", facecolor="white", edgecolor=BASE, zorder=3,
                        label="challenger: undecided")
        base = r.get("champion_before")
        if base is not None and r.get("ci_low") is not None and r.get("ci_high") is not None:
            top.vlines(r["round"], base + r["ci_low"], base + r["ci_high"], color=BASE, lw=1, alpha=0.6, zorder=2)
    handles, labels = top.get_legend_handles_labels()
    seen = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    if seen:
        top.legend(seen.values(), seen.keys(), fontsize=8, loc="best", frameon=False)
    top.set_ylabel(f"selection {metric}")
    top.set_title(f"selection {metric} per round (grey bars: champion + 95% bootstrap interval of the difference)")
    top.grid(alpha=0.3)

    ch = [r for r in rows if r["round"] > 0 and r.get("difference") is not None]
    if ch:
        for r in ch:
            color = PROMOTED if r.get("promoted") else REJECTED if r.get("promoted") is False else BASE
            lo, hi = r.get("ci_low"), r.get("ci_high")
            if lo is not None and hi is not None:
                bottom.errorbar([r["round"]], [r["difference"]], yerr=[[r["difference"] - lo], [hi - r["difference"]]],
                                fmt="o", color=color, capsize=4, lw=1.5)
            else:
                bottom.plot([r["round"]], [r["difference"]], "o", color=color)
        margins = {r.get("margin") for r in ch if r.get("margin")}
        for m in margins:
            bottom.axhline(m, color=PROMOTED, lw=0.8, ls=":", label=f"margin {m:g}")
        if margins:
            bottom.legend(fontsize=8, frameon=False)
    else:
        bottom.text(0.5, 0.5, "no challenger compared yet", ha="center", va="center", transform=bottom.transAxes,
                    color=BASE)
    bottom.axhline(0, color="black", lw=0.8)
    bottom.set_ylabel("challenger − champion")
    bottom.set_xlabel("round")
    bottom.grid(alpha=0.3)
    bottom.set_xticks(rounds)
    return fig


# --------------------------------------------------------------------------- 4. errors by class


def error_order(confusion: np.ndarray) -> np.ndarray:
    """Class indices, highest error rate (1 - recall) first; classes without support last."""
    conf = np.asarray(confusion, dtype=float)
    support = conf.sum(1)
    err = np.where(support > 0, 1 - np.diag(conf) / np.maximum(support, 1), -1.0)
    return np.lexsort((np.arange(len(err)), -err))


def confusion_heatmap(confusion, labels: list[str], label_at_most: int = 30, worst: int = 20, title: str = ""):
    """Row-normalised confusion matrix (each row: where that class's examples went), classes
    sorted by error rate. All classes are labelled up to `label_at_most`; above that only the
    `worst` ones are, so 77 classes stay readable."""
    plt = _plt()
    conf = np.asarray(confusion, dtype=float)
    C = len(labels)
    order = error_order(conf)
    m = conf[np.ix_(order, order)]
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = float(np.clip(2.5 + 0.11 * C, 4.5, 11))
    fig, ax = plt.subplots(figsize=(size + 1.4, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's examples")
    support = conf.sum(1)[order]
    err = 1 - np.diag(m) / np.maximum(support, 1)
    if C <= label_at_most:
        ticks = np.arange(C)
    else:
        ticks = np.arange(min(worst, C))
    names = [f"{_short(labels[order[i]], 24)} ({100 * err[i]:.0f}%)" for i in ticks]
    font = 8 if C <= 15 else 7 if len(ticks) <= 30 else 6
    ax.set_yticks(ticks, names, fontsize=font)
    ax.set_xticks(ticks, [_short(labels[order[i]], 24) for i in ticks], fontsize=font, rotation=90)
    if C <= 12:
        for i in range(C):
            for j in range(C):
                if m[i, j]:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (error rate)")
    shown = "" if C <= label_at_most else f"; the {len(ticks)} worst of {C} classes labelled"
    ax.set_title((title or "confusion matrix") + f" — rows normalised, sorted by error{shown}")
    return fig


def per_class_bars(now: dict, before: dict | None, score: str = "f1", title: str = "per-class F1"):
    """Horizontal bars of each class's score (lowest on top), with round 0's score as a tick
    and the change written beside it."""
    plt = _plt()
    names = sorted(now, key=lambda k: (now[k].get(score, 0.0), k))
    C = len(names)
    fig, ax = plt.subplots(figsize=(8.5, float(np.clip(0.6 + 0.2 * C, 2.2, 16))))
    y = np.arange(C)
    vals = np.array([now[k].get(score, 0.0) for k in names])
    ax.barh(y, vals, color=CHAMPION, alpha=0.85, label="champion")
    if C <= 40:
        for i, v in enumerate(vals):
            ax.text(min(v, 0.92) + 0.01, i, f"{v:.2f}", va="center", fontsize=7, color="black")
    if before:
        prev = np.array([(before.get(k) or {}).get(score, np.nan) for k in names], dtype=float)
        ax.scatter(prev, y, marker="|", s=120, color="black", zorder=3, label="round 0")
        for i, (v, p) in enumerate(zip(vals, prev)):
            if np.isfinite(p) and abs(v - p) >= 0.005:
                d = v - p
                ax.text(1.01, i, f"{d:+.2f}", va="center", fontsize=7 if C > 30 else 8,
                        color=PROMOTED if d > 0 else REJECTED, transform=ax.get_yaxis_transform())
    ax.set_yticks(y, [_short(n) for n in names], fontsize=6 if C > 40 else 7 if C > 20 else 8)
    ax.set_xlim(0, 1)
    ax.set_ylim(C - 0.4, -0.6)  # lowest score on top
    ax.set_xlabel(score)
    ax.set_title(title + (" — bars: champion, black ticks: round 0, change at the right" if before else ""))
    ax.grid(axis="x", alpha=0.3)
    return fig


def ner_error_kinds(per_type: dict, kinds: list[str]):
    """Stacked bars: per entity type, how many errors of each kind."""
    plt = _plt()
    types = sorted(per_type)
    fig, ax = plt.subplots(figsize=(8, max(2.2, 0.5 + 0.4 * len(types))))
    left = np.zeros(len(types))
    cmap = plt.get_cmap("Set2")
    for k, kind in enumerate(kinds):
        vals = np.array([float(per_type[t].get(kind, 0) or 0) for t in types])
        ax.barh(types, vals, left=left, color=cmap(k % 8), label=kind)
        left += vals
    ax.legend(fontsize=8, frameon=False, ncol=min(len(kinds), 5), loc="upper center", bbox_to_anchor=(0.5, -0.15))
    ax.set_xlabel("errors")
    ax.set_title("entity errors by type and kind (selection split)")
    return fig


# --------------------------------------------------------------------------- 6. training dynamics


def data_map_stats(dynamics: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """confidence, variability, correctness per example (N,) over the recorded epochs (NaN-aware:
    an example dropped in an epoch has NaN there)."""
    gold = np.asarray(dynamics["gold_prob"], dtype=np.float64)  # (E, N)
    correct = np.asarray(dynamics.get("correct", gold > 0.5), dtype=np.float64)  # (E, N)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            conf = np.nanmean(gold, 0)
            var = np.nanstd(gold, 0)
            corr = np.nanmean(correct, 0)
    return conf, var, corr


def data_map(dynamics: dict, max_points: int = 20000, seed: int = 0):
    """Confidence vs variability per training example, coloured by correctness (Swayamdipta et
    al. 2020). More than `max_points` examples are subsampled (the plot looks the same)."""
    plt = _plt()
    conf, var, corr = data_map_stats(dynamics)
    ok = np.isfinite(conf) & np.isfinite(var)
    idx = np.flatnonzero(ok)
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    E = np.asarray(dynamics["gold_prob"]).shape[0]
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    sc = ax.scatter(var[idx], conf[idx], c=corr[idx], cmap="RdYlGn", vmin=0, vmax=1, s=6 if len(idx) > 2000 else 14,
                    alpha=0.7, linewidths=0, rasterized=True)
    fig.colorbar(sc, ax=ax, label=f"correctness (share of {E} epochs right)")
    ax.set_xlabel("variability (std of the gold-label probability across epochs)")
    ax.set_ylabel("confidence (mean gold-label probability)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=-0.01)
    ax.text(0.98, 0.98, "easy to learn", ha="right", va="top", transform=ax.transAxes, fontsize=8, color=BASE)
    ax.text(0.02, 0.02, "hard to learn", ha="left", va="bottom", transform=ax.transAxes, fontsize=8, color=BASE)
    ax.text(0.98, 0.5, "ambiguous", ha="right", va="center", transform=ax.transAxes, fontsize=8, color=BASE)
    ax.set_title(f"data map: {len(conf)} training examples over {E} epochs"
                 + (f" ({len(idx)} drawn)" if len(idx) < ok.sum() else ""))
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------- 7. gradients and losses


def gradient_heatmap(gradients: dict):
    """Per-layer gradient norm over telemetry steps (log colour scale), and the update-to-weight
    ratio per layer over steps."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    layers = [str(x) for x in np.asarray(gradients["layers"]).tolist()]
    steps = np.asarray(gradients["step"])
    g = np.asarray(gradients["grad_norm"], dtype=np.float64)  # (S, L)
    L = len(layers)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, max(3.2, 1.2 + 0.28 * L)), gridspec_kw={"width_ratios": [3, 2]})
    pos = g[np.isfinite(g) & (g > 0)]
    if pos.size:
        norm = LogNorm(vmin=max(pos.min(), pos.max() * 1e-6), vmax=pos.max())
        shown = np.where(np.isfinite(g) & (g > 0), g, np.nan).T  # (L, S)
        extent = (steps[0] - 0.5, steps[-1] + 0.5, L - 0.5, -0.5) if len(steps) > 1 else None
        im = a.imshow(shown, aspect="auto", cmap="magma", norm=norm, interpolation="nearest", extent=extent)
        fig.colorbar(im, ax=a, label="gradient norm (log)")
    a.set_yticks(np.arange(L), [_short(x, 22) for x in layers], fontsize=7 if L > 12 else 8)
    a.set_xlabel("step")
    a.set_title("gradient norm per layer group")
    r = np.asarray(gradients.get("update_ratio", np.full_like(g, np.nan)), dtype=np.float64)
    cmap = plt.get_cmap("viridis")
    for j, name in enumerate(layers):
        col = r[:, j]
        if np.isfinite(col).any() and (col[np.isfinite(col)] > 0).any():
            b.plot(steps, np.where(col > 0, col, np.nan), color=cmap(j / max(L - 1, 1)), lw=1,
                   label=_short(name, 18))
    b.set_yscale("log")
    b.axhline(1e-3, color=BASE, ls=":", lw=0.8)
    b.text(steps[0] if len(steps) else 0, 1e-3, " 1e-3 (a common healthy scale)", fontsize=7, va="bottom", color=BASE)
    b.set_xlabel("step")
    b.set_title("update / weight ratio per layer group")
    if L <= 14:
        b.legend(fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    b.grid(alpha=0.3)
    return fig


def loss_curves(history: list[dict], metric: str | None, gradients: dict | None = None,
                baseline: list[dict] | None = None):
    """Train and selection loss per epoch (left; round 0 dashed when given), and the selection
    metric per epoch (right). The per-step training loss from telemetry, when present, is drawn
    faintly on the epoch axis."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))

    def draw(hist, style, tag):
        ep = [h.get("epoch", i + 1) for i, h in enumerate(hist)]
        for key, color in (("train_loss", CHAMPION), ("selection_loss", "#fdae61")):
            ys = [h.get(key) for h in hist]
            if any(y is not None for y in ys):
                a.plot(ep, [np.nan if y is None else y for y in ys], style, color=color, marker="o", ms=3,
                       label=f"{key.replace('_', ' ')}{tag}")
        key = f"selection_{metric}"
        ys = [h.get(key) for h in hist]
        if any(y is not None for y in ys):
            b.plot(ep, [np.nan if y is None else y for y in ys], style, color=PROMOTED, marker="o", ms=3,
                   label=f"selection {metric}{tag}")

    if baseline:
        draw(baseline, "--", " (round 0)")
    if history:
        draw(history, "-", "")
        if gradients is not None and len(np.asarray(gradients.get("loss", []))) > 1:
            steps = np.asarray(gradients["step"], dtype=float)
            # Steps to fractional epochs: the last telemetry step ends the last epoch.
            E = len(history)
            x = steps / max(steps.max(), 1) * E
            a.plot(x, np.asarray(gradients["loss"], dtype=float), color=CHAMPION, alpha=0.25, lw=0.8,
                   label="train loss per step")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.set_title("descent path: loss per epoch")
    a.legend(fontsize=7, frameon=False)
    a.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    b.set_xlabel("epoch")
    b.set_title(f"selection {metric} per epoch")
    b.legend(fontsize=7, frameon=False)
    b.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------- 8. calibration


def _bins_xy(bins) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability bins as (confidence, accuracy, count): a list of {"lower", "upper", "count",
    "confidence", "accuracy"} (diagnose/calibration.py's table) or a list of per-bin accuracies."""
    xs, ys, ns = [], [], []
    B = len(bins)
    for k, b in enumerate(bins):
        if isinstance(b, dict):
            acc = b.get("accuracy")
            if acc is None:
                continue
            x = b.get("confidence")
            if x is None:  # bin edges: "lower"/"upper" (diagnose) or "low"/"high" (the calibrate action)
                x = (b.get("lower", b.get("low", k / B)) + b.get("upper", b.get("high", (k + 1) / B))) / 2
            xs.append(x), ys.append(acc), ns.append(b.get("count", 1) or 0)
        elif b is not None and not (isinstance(b, float) and math.isnan(b)):
            xs.append((k + 0.5) / B), ys.append(float(b)), ns.append(1)
    return np.array(xs, float), np.array(ys, float), np.array(ns, float)


def reliability_diagram(before, after=None, ece_before=None, ece_after=None, temperature=None):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.plot([0, 1], [0, 1], color=BASE, ls="--", lw=1, label="perfectly calibrated")
    for bins, color, marker, name, ece in ((before, REJECTED, "o", "before", ece_before),
                                           (after, PROMOTED, "s", f"after temperature {temperature:.2f}"
                                            if temperature else "after", ece_after)):
        if not bins:
            continue
        x, y, n = _bins_xy(bins)
        if not len(x):
            continue
        size = 20 + 180 * n / max(n.max(), 1)
        ax.plot(x, y, color=color, lw=1.2, alpha=0.8)
        ax.scatter(x, y, s=size, color=color, marker=marker, alpha=0.8,
                   label=name + (f" (ECE {ece:.3f})" if ece is not None else ""))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability diagram (marker size: examples in the bin)")
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    return fig
