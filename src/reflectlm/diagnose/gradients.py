"""Gradient health per layer group, from the telemetry train.fit() records (gradients.npz).

Arrays read: layers (L,) bottom -> top (embeddings, layer.0, ..., head); step, lr (S,);
grad_norm, update_ratio (S, L) where update_ratio = ||W_after - W_before|| / ||W_after||.

Kinds (one Finding each, listing every layer it applies to; [] when nothing is wrong, this
module's convention):
  vanishing_gradients  a layer's median gradient norm is zero at every step (frozen), or more
                       than `vanish_orders` orders of magnitude below the median live layer's.
  exploding_gradients  a non-finite gradient norm; or a median norm more than `explode_orders`
                       orders of magnitude above the median live layer's; or a layer whose median
                       norm over the last half of training is > 10**explode_orders times its
                       median over the first tenth (sustained growth, not a one-off spike).
  gradient_spikes      steps where a layer's norm is > `spike_factor` times the median of its previous
                       `spike_window` records AND a robust z-score (median / MAD, log10 norms) above
                       `spike_z`, so a layer whose norm routinely swings by 10x is not flagged.
  vanishing_updates    a layer's median update/weight ratio below `min_update_ratio` (0 = frozen).
  unstable_updates     a non-finite ratio, or the `unstable_quantile` quantile of a layer's ratio above
                       `max_update_ratio`: instability lives in the worst steps, not the typical one.
Layers the config froze on purpose (train.freeze) are still reported, at severity 0.1, marked
"intended": frozen-by-design reads as such, frozen-by-bug (a detached graph) reads as severe.
Update ratios skip steps recorded at lr = 0 (the warm-up's first step updates nothing).
No randomness: the same context gives the same findings whatever ctx.seed.

References: the update/weight ratio heuristic (~1e-3 per step is healthy) from Karpathy's
CS231n notes, "Neural Networks Part 3: ratio of weights:updates"; robust z-scores with the MAD,
Iglewicz & Hoaglin 1993 (3.5 as the outlier cut).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np

from ..findings import EXPLODING_GRADIENTS, GRADIENT_SPIKES, UNSTABLE_UPDATES, VANISHING_GRADIENTS, VANISHING_UPDATES
from .base import Context, Finding, Skip, stored_params


class GradientHealth:
    name = "gradients"
    needs = ("gradients",)
    requires = ()

    def __init__(self, vanish_orders: float = 3.0, explode_orders: float = 2.0, spike_factor: float = 10.0,
                 spike_z: float = 3.5, spike_window: int = 5, min_update_ratio: float = 1e-5,
                 max_update_ratio: float = 1e-1, unstable_quantile: float = 0.9):
        # 3 orders below the median layer: layers of one transformer differ by ~1 order normally;
        # 1000x less means the layer's weights are effectively not trained.
        # 2 orders above (100x): one layer dominating the update direction by that much is blow-up.
        # 10x over the rolling median: batch-to-batch norms vary by 2-3x; 10x is a different regime.
        # Update ratios: ~1e-3 per step is the healthy band for Adam fine-tuning; 1e-5 barely moves
        # the layer in a whole run, 1e-1 rewrites a tenth of it in a single step.
        self.vanish_orders = vanish_orders
        self.explode_orders = explode_orders
        self.spike_factor = spike_factor
        self.spike_z = spike_z
        self.spike_window = spike_window
        self.min_update_ratio = min_update_ratio
        self.max_update_ratio = max_update_ratio
        self.unstable_quantile = unstable_quantile

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx: Context) -> list[Finding]:
        ctx.need(*self.needs)
        t = self._telemetry(ctx)
        table, spikes, ref = self._layers(t)
        shared = {"layers": table, "median_layer_grad_norm": ref, "steps": int(t.S),
                  "step_range": [int(t.steps[0]), int(t.steps[-1])]}

        def common() -> dict:
            # A fresh copy per Finding: findings are edited and serialised independently downstream.
            return copy.deepcopy(shared)

        found = [self._vanishing(t, table, common), self._exploding(t, table, common),
                 self._spiking(t, spikes, common), self._slow_updates(t, table, common),
                 self._unstable(t, table, common)]
        return [f for f in found if f is not None]

    def _telemetry(self, ctx: Context) -> SimpleNamespace:
        """The recorded telemetry as arrays: grad (S, L), ratio (S, L), steps, where the rate moved, ..."""
        g = ctx.gradients
        layers = [str(x) for x in np.asarray(g.get("layers", [])).reshape(-1)]
        grad = np.asarray(g.get("grad_norm", np.zeros((0, len(layers)))), dtype=np.float64)
        ratio = np.asarray(g.get("update_ratio", np.zeros_like(grad)), dtype=np.float64)
        S, L = (grad.shape if grad.ndim == 2 else (0, 0))
        if S == 0 or L == 0 or L != len(layers):
            raise Skip("no gradient telemetry was recorded (train.telemetry_every = 0, or no optimizer step ran)")
        steps = np.asarray(g.get("step", np.arange(1, S + 1))).reshape(-1)
        steps = steps if len(steps) == S else np.arange(1, S + 1)
        lr = np.asarray(g.get("lr", np.ones(S)), dtype=np.float64).reshape(-1)
        has_ratio = ratio.shape == grad.shape  # older or hand-made telemetry may lack it
        return SimpleNamespace(layers=layers, grad=grad, ratio=ratio if has_ratio else np.zeros_like(grad), S=S,
                               steps=steps, moving=lr > 0 if len(lr) == S and (lr > 0).any() else np.ones(S, bool),
                               has_ratio=has_ratio, intended=frozen_by_config(layers, ctx.train_config or {}),
                               clipped=bool((ctx.train_config or {}).get("max_grad_norm", 1.0)))

    def _layers(self, t) -> tuple[dict, dict, float | None]:
        """Per-layer summaries over finite values only (non-finite ones are reported separately), the
        spikes found per layer, and the median layer's median gradient norm."""
        table, spikes = {}, {}
        for j, name in enumerate(t.layers):
            gn, ur = t.grad[:, j], t.ratio[t.moving, j]
            fin_g, fin_u = gn[np.isfinite(gn)], ur[np.isfinite(ur)]
            frozen = bool(len(fin_g) == len(gn) and (fin_g == 0).all() and (fin_u == 0).all())
            found = [] if frozen else spike_steps(gn, self.spike_window, self.spike_factor, self.spike_z)
            if found:
                spikes[name] = [{"step": int(t.steps[i]), "factor": f} for i, f in found]
            table[name] = {
                "median_grad_norm": float(np.median(fin_g)) if len(fin_g) else None,
                "median_update_ratio": float(np.median(fin_u)) if len(fin_u) and t.has_ratio else None,
                self._qkey: float(np.quantile(fin_u, self.unstable_quantile)) if len(fin_u) and t.has_ratio else None,
                "frozen": frozen,
                "intended_frozen": name in t.intended,
                "nonfinite_grad_steps": [int(s) for s in t.steps[~np.isfinite(gn)]],
                "spike_steps": [int(t.steps[i]) for i, _ in found],
            }
        live = [n for n in t.layers if not table[n]["frozen"]]
        live_meds = [table[n]["median_grad_norm"] for n in live if (table[n]["median_grad_norm"] or 0) > 0]
        ref = float(np.median(live_meds)) if live_meds else None
        for n in t.layers:
            med = table[n]["median_grad_norm"]
            table[n]["log10_vs_median_layer"] = (float(np.log10(med / ref)) if ref and med and med > 0 else None)
        return table, spikes, ref

    @property
    def _qkey(self) -> str:
        return f"q{int(round(100 * self.unstable_quantile))}_update_ratio"

    def _vanishing(self, t, table: dict, common) -> Finding | None:
        vanish = {}
        for n in t.layers:
            row = table[n]
            if row["frozen"]:
                vanish[n] = "frozen: gradient norm exactly 0 at every recorded step"
            elif row["median_grad_norm"] == 0:
                vanish[n] = "median gradient norm is 0"
            elif row["log10_vs_median_layer"] is not None and row["log10_vs_median_layer"] < -self.vanish_orders:
                vanish[n] = f"median gradient norm 10^{row['log10_vs_median_layer']:.1f} of the median layer's"
        if not vanish:
            return None
        bad = [n for n in vanish if not table[n]["intended_frozen"]]
        sev = 0.1 if not bad else (0.9 if any(table[n]["frozen"] for n in bad) else 0.7)
        return Finding(
            check=self.name, kind=VANISHING_GRADIENTS, severity=sev,
            summary=(f"Gradients vanish in {_names(vanish)}"
                     + (" (frozen by train.freeze, as configured)." if not bad else "; these layers are not learning.")),
            evidence={**common(), "flagged": vanish, "unintended": bad})

    def _exploding(self, t, table: dict, common) -> Finding | None:
        explode = {}
        S, head = t.S, max(2, t.S // 10)
        for j, n in enumerate(t.layers):
            row = table[n]
            if row["nonfinite_grad_steps"]:
                explode[n] = {"reason": "non-finite gradient norm", "steps": row["nonfinite_grad_steps"][:20]}
                continue
            if row["frozen"]:
                continue
            if row["log10_vs_median_layer"] is not None and row["log10_vs_median_layer"] > self.explode_orders:
                explode[n] = {"reason": "far above the median layer", "orders": row["log10_vs_median_layer"]}
                continue
            if S >= 2 * head:
                early, late = np.median(t.grad[:head, j]), np.median(t.grad[S // 2:, j])
                if early > 0 and late / early > 10 ** self.explode_orders:
                    explode[n] = {"reason": "grew during training", "orders": float(np.log10(late / early)),
                                  "early_median": float(early), "late_median": float(late)}
        if not explode:
            return None
        nonfinite = any(v["reason"].startswith("non-finite") for v in explode.values())
        worst = max((v["orders"] for v in explode.values() if "orders" in v), default=self.explode_orders)
        sev = 1.0 if nonfinite else min(1.0, 0.6 + 0.15 * (worst - self.explode_orders))
        return Finding(
            check=self.name, kind=EXPLODING_GRADIENTS, severity=sev,
            summary=(f"Gradients explode in {_names(explode)}"
                     + ("" if t.clipped else " with clipping off (train.max_grad_norm = 0)")
                     + "; lower the learning rate or clip gradients."),
            evidence={**common(), "flagged": explode, "clipping": t.clipped})

    def _spiking(self, t, spikes: dict, common) -> Finding | None:
        if not spikes:
            return None
        n_steps = len({s["step"] for v in spikes.values() for s in v})
        # Clipping bounds what a spike does to the weights; without it each spike lands in full.
        sev = min(1.0, (0.3 if t.clipped else 0.6) + 0.05 * (n_steps - 1))
        return Finding(
            check=self.name, kind=GRADIENT_SPIKES, severity=sev,
            summary=(f"Gradient norm spiked >{self.spike_factor:g}x above its recent level at {n_steps} "
                     f"recorded step(s) in {_names(spikes)}."),
            evidence={**common(), "flagged": spikes, "clipping": t.clipped})

    def _slow_updates(self, t, table: dict, common) -> Finding | None:
        medians = {n: table[n]["median_update_ratio"] for n in t.layers}
        slow = {n: r for n, r in medians.items() if r is not None and r < self.min_update_ratio}
        if not slow:
            return None
        bad = [n for n in slow if not table[n]["intended_frozen"]]
        worst = min(slow[n] for n in bad) if bad else None
        if not bad:
            sev = 0.1
        elif worst == 0:
            sev = 0.9
        else:  # 0.5 at the threshold, +0.1 per order of magnitude below it
            sev = min(0.9, 0.5 + 0.1 * np.log10(self.min_update_ratio / worst))
        return Finding(
            check=self.name, kind=VANISHING_UPDATES, severity=float(sev),
            summary=(f"{_names(slow)} barely change: median update/weight ratio below "
                     f"{self.min_update_ratio:g} per step"
                     + (" (frozen by train.freeze, as configured)." if not bad else
                        " (about 1e-3 is healthy); raise their learning rate or unfreeze them.")),
            evidence={**common(), "flagged": slow, "unintended": bad, "healthy_update_ratio": 1e-3})

    def _unstable(self, t, table: dict, common) -> Finding | None:
        qkey, unstable = self._qkey, {}
        for j, n in enumerate(t.layers):
            if not t.has_ratio:
                break
            if (~np.isfinite(t.ratio[t.moving, j])).any():
                unstable[n] = {"reason": "non-finite update ratio"}
            elif table[n][qkey] is not None and table[n][qkey] > self.max_update_ratio:
                unstable[n] = {"reason": "large updates", qkey: table[n][qkey],
                               "fraction_of_steps_above": float((t.ratio[t.moving, j] > self.max_update_ratio).mean())}
        if not unstable:
            return None
        worst = max((v.get(qkey, 0.0) for v in unstable.values()), default=0.0)
        nonfinite = any("non-finite" in v["reason"] for v in unstable.values())
        sev = 1.0 if nonfinite else min(1.0, 0.5 + 0.5 * np.log10(worst / self.max_update_ratio))
        return Finding(
            check=self.name, kind=UNSTABLE_UPDATES, severity=float(sev),
            summary=(f"Updates are unstable in {_names(unstable)}: in the worst "
                     f"{100 * (1 - self.unstable_quantile):.0f}% of steps a single update "
                     f"moves more than {self.max_update_ratio:g} of the weights' norm; lower the learning rate."),
            evidence={**common(), "flagged": unstable, "healthy_update_ratio": 1e-3})


def spike_steps(norms: np.ndarray, window: int, factor: float, z_cut: float) -> list[tuple[int, float]]:
    """(index, norm / rolling median) of each spike in one layer's (S,) gradient norms.

    Judged against the previous `window` records only (a trailing window: a spike is a break from
    what came before), needing at least 3 of them. Zero and non-finite norms are skipped."""
    x = np.where(np.isfinite(norms) & (norms > 0), norms, np.nan)
    logx = np.log10(x)
    out = []
    for t in range(len(x)):
        if np.isnan(logx[t]):
            continue
        prev = logx[max(0, t - window):t]
        prev = prev[~np.isnan(prev)]
        if len(prev) < 3:
            continue
        med = np.median(prev)
        # MAD floor 0.05 decades (~12%): on a near-constant window the MAD is ~0 and any wobble
        # would score a huge z; the 10x factor still has to hold on its own.
        scale = max(1.4826 * np.median(np.abs(prev - med)), 0.05)
        jump = logx[t] - med
        if jump > np.log10(factor) and jump / scale > z_cut:
            out.append((t, float(10 ** jump)))
    return out


def frozen_by_config(layers: list[str], tc: dict) -> set[str]:
    """Layer groups the [train] section froze on purpose (mirrors train.param_groups)."""
    freeze = tc.get("freeze", "none")
    if freeze == "head_only":
        return {n for n in layers if n != "head"}
    if freeze == "last_n":
        n_keep = int(tc.get("unfreeze_last_n", 2) or 0)
        blocks = [n for n in layers if n.startswith("layer.")]
        keep = set(blocks[len(blocks) - n_keep:]) if n_keep else set()
        return {n for n in layers if n != "head" and n not in keep}
    return set()


def _names(d: dict) -> str:
    names = list(d)
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
