"""The path of the training loss, and a judgement of the learning rate from it.

Reads the telemetry train.fit() records (gradients.npz): loss (S,) is the mini-batch loss at each
recorded optimizer step, lr (S,) the scheduled rate, update_ratio (S, L) the per-layer
||update|| / ||weight||. With fewer than `min_points` recorded steps it falls back to the
per-epoch train_loss of ctx.history (coarser, but a loss curve all the same).

Levels are medians of an even number k = max(2, 2 * (n // 16)) of points (one mini-batch loss is
noisy, one spike should not move a level, and an even count keeps a loss that alternates high/low
from reading as all-high or all-low): start = the first k, end = the last k, third = the k before
the two-thirds mark.

Kinds (one Finding each; [] when nothing is wrong, this module's convention):
  divergence    a non-finite loss; or end > start by more than `rise` x start; or the loss climbed by
                more than `rise` x start over the last third (late blow-up after a good start).
  oscillation   after light smoothing (moving mean of 3), the successive loss differences change sign
                in >= `sign_changes` of the pairs (pure noise gives 0.5), AND the bounce around a
                rolling-mean trend (median |loss - trend|) is >= `amplitude` of the loss level and
                >= half the total descent: the loss bounces more than it descends.
  plateau       a straight line through the last half improves by < `plateau_eps` of its level while
                the end is still above `plateau_level` x start (not converged, just stuck).
  lr_too_high   divergence or oscillation with median update/weight ratio (trainable layers, steps
                with lr > 0) above `high_update_ratio`.
  lr_too_low    plateau, or a whole-run drop under `slow_descent`, with that ratio below
                `low_update_ratio`.
The lr findings carry the direction and a factor: (1e-3 / median ratio), since with Adam the
per-step update scales with the rate, clipped to [0.1, 10] (one round should not jump further)
and snapped to x0.1 / x0.3 / x3 / x10.
No randomness: the same context gives the same findings whatever ctx.seed.

References: update/weight ratio ~1e-3 as the healthy band, Karpathy's CS231n notes ("Neural
Networks Part 3"); reading lr from the loss curve, Smith 2018 ("A disciplined approach to neural
network hyper-parameters", arXiv:1803.09820).
"""

from __future__ import annotations

import copy
import math

import numpy as np

from ..findings import DIVERGENCE, LR_TOO_HIGH, LR_TOO_LOW, OSCILLATION, PLATEAU
from .base import Context, Finding, Skip, stored_params

_HEALTHY_RATIO = 1e-3


class DescentPath:
    name = "descent"
    needs = ("gradients",)
    requires = ()

    def __init__(self, rise: float = 0.1, sign_changes: float = 0.6, amplitude: float = 0.1,
                 plateau_eps: float = 0.05, plateau_level: float = 0.5, slow_descent: float = 0.1,
                 high_update_ratio: float = 1e-2, low_update_ratio: float = 1e-4, min_points: int = 6):
        # rise 10% of the start: medians of k mini-batch losses wobble by a few percent, not ten.
        # sign_changes 0.6: above the 0.5 that independent noise gives after a 3-point mean.
        # amplitude 10% of the level: mini-batch noise of a batch of 16+ is usually below that.
        # plateau_eps 5%: the fitted line over half a run is noisy by ~2%; 5% is real progress.
        # plateau_level 0.5: a loss that has halved is converging, not stuck.
        # update ratios: 1e-3 is healthy for Adam; 10x above it with a bad path means the rate is the
        # cause; 10x below with no progress means it is too small to move the weights.
        self.rise = rise
        self.sign_changes = sign_changes
        self.amplitude = amplitude
        self.plateau_eps = plateau_eps
        self.plateau_level = plateau_level
        self.slow_descent = slow_descent
        self.high_update_ratio = high_update_ratio
        self.low_update_ratio = low_update_ratio
        self.min_points = min_points

    def params(self) -> dict:
        return stored_params(self)

    def run(self, ctx: Context) -> list[Finding]:
        ctx.need(*self.needs)
        g = ctx.gradients
        loss = np.asarray(g.get("loss", []), dtype=np.float64).reshape(-1)
        steps = np.asarray(g.get("step", np.arange(1, len(loss) + 1))).reshape(-1)
        epoch_loss = [float(r["train_loss"]) for r in (ctx.history or [])
                      if isinstance(r, dict) and r.get("train_loss") is not None]
        source = "telemetry"
        if len(loss) < max(3, self.min_points):
            if len(epoch_loss) >= 3:
                loss, steps, source = np.asarray(epoch_loss), np.arange(1, len(epoch_loss) + 1), "history"
            else:
                raise Skip(f"the loss path needs >= {self.min_points} recorded steps (train.telemetry_every) or "
                           f">= 3 epochs of history; this run has {len(loss)} and {len(epoch_loss)}")
        if len(steps) != len(loss):
            steps = np.arange(1, len(loss) + 1)
        ratio = trainable_update_ratio(g)
        med_ratio = float(np.median(ratio[np.isfinite(ratio)])) if np.isfinite(ratio).any() else None
        ratio_nonfinite = bool((~np.isfinite(ratio)).any())
        lrs = np.asarray(g.get("lr", []), dtype=np.float64)
        base = {"source": source, "points": int(len(loss)), "median_update_ratio": med_ratio,
                "healthy_update_ratio": _HEALTHY_RATIO, "configured_lr": (ctx.train_config or {}).get("lr"),
                "peak_scheduled_lr": float(lrs.max()) if lrs.size and np.isfinite(lrs).all() else None,
                "epoch_train_loss": epoch_loss or None}
        findings = []

        bad = ~np.isfinite(loss)
        if bad.any():
            first = int(steps[np.flatnonzero(bad)[0]])
            findings.append(Finding(
                check=self.name, kind=DIVERGENCE, severity=1.0,
                summary=f"Training diverged: the loss became non-finite at step {first}.",
                evidence=copy.deepcopy({**base, "first_nonfinite_step": first})))
            if ratio_nonfinite or (med_ratio is not None and med_ratio > self.high_update_ratio):
                findings.append(self._lr(ctx, LR_TOO_HIGH, med_ratio, [DIVERGENCE], base))
            return findings

        path = describe(loss)
        start, end, third = path["start"], path["end"], path["third"]
        denom = max(abs(start), 1e-12)
        rise_total, rise_late = (end - start) / denom, (end - third) / denom
        diverged = rise_total > self.rise or rise_late > self.rise
        oscillating = (path["sign_change_fraction"] >= self.sign_changes
                       and path["relative_amplitude"] >= self.amplitude
                       and path["amplitude"] >= 0.5 * abs(start - end))
        plateau = (not diverged and path["last_half_improvement"] < self.plateau_eps
                   and end > self.plateau_level * start)
        slow = not diverged and (start - end) / denom < self.slow_descent
        base = {**base, "path": path}

        if diverged:
            rise = max(rise_total, rise_late)
            where = "ended above where it started" if rise_total > self.rise else "climbed over the last third"
            findings.append(Finding(
                check=self.name, kind=DIVERGENCE, severity=0.6 + 0.4 * min(1.0, rise),
                summary=(f"Training diverged: the loss {where} ({start:.3g} -> {end:.3g}, up {100 * rise:.0f}% "
                         "of its start)."),
                evidence=copy.deepcopy({**base, "relative_rise": rise_total,
                                        "relative_rise_last_third": rise_late})))
        if oscillating:
            findings.append(Finding(
                check=self.name, kind=OSCILLATION,
                severity=0.4 + 0.4 * min(1.0, path["relative_amplitude"] / 0.5),
                summary=(f"The loss oscillates: it bounces by {100 * path['relative_amplitude']:.0f}% of its level "
                         f"around its trend, more than it descends."),
                evidence=copy.deepcopy(base)))
        if plateau:
            findings.append(Finding(
                check=self.name, kind=PLATEAU, severity=0.3 + 0.3 * min(1.0, end / denom),
                summary=(f"The loss plateaued: it improved {100 * path['last_half_improvement']:.1f}% over the "
                         f"last half while still at {100 * end / denom:.0f}% of its starting value."),
                evidence=copy.deepcopy(base)))

        causes_high = [k for k, on in (("divergence", diverged), ("oscillation", oscillating)) if on]
        if causes_high and (ratio_nonfinite or (med_ratio is not None and med_ratio > self.high_update_ratio)):
            findings.append(self._lr(ctx, LR_TOO_HIGH, med_ratio, causes_high, base))
        causes_low = [k for k, on in (("plateau", plateau), ("slow_descent", slow)) if on]
        if causes_low and med_ratio is not None and med_ratio < self.low_update_ratio:
            findings.append(self._lr(ctx, LR_TOO_LOW, med_ratio, causes_low, base))
        return findings

    def _lr(self, ctx: Context, kind: str, med_ratio: float | None, causes: list[str], base: dict) -> Finding:
        high = kind == LR_TOO_HIGH
        factor = suggested_factor(med_ratio, high)
        lr = (ctx.train_config or {}).get("lr")
        what = "high" if high else "low"
        ratio_txt = f"{med_ratio:.1e}" if med_ratio is not None else "non-finite"
        return Finding(
            check=self.name, kind=kind, severity=(0.8 if DIVERGENCE in causes else 0.6) if high else 0.5,
            summary=(f"The learning rate looks too {what}: {' and '.join(causes).replace('_', ' ')} with a median "
                     f"update/weight ratio of {ratio_txt} per step (about 1e-3 is healthy); try lr x{factor:g}."),
            evidence=copy.deepcopy({**base, "because": causes, "direction": "down" if high else "up",
                                    "factor": factor,
                                    "suggested_lr": lr * factor if isinstance(lr, (int, float)) else None}))


def describe(loss: np.ndarray) -> dict:
    """Levels, trend and bounce of a finite (n,) loss curve, n >= 3. All plain floats."""
    n = len(loss)
    k = max(2, 2 * (n // 16)) if n >= 6 else 1
    start = float(np.median(loss[:k]))
    end = float(np.median(loss[-k:]))
    i3 = max(k, round(2 * n / 3))
    third = float(np.median(loss[i3 - k:i3]))
    # A rolling mean, not a median: the median of an odd window over a loss that alternates
    # high / low follows the majority parity, i.e. the bounce itself, and would hide it.
    trend = rolling_mean(loss, max(3, (n // 5) | 1))
    level = float(np.median(trend))
    amp = float(np.median(np.abs(loss - trend)))
    smooth = np.convolve(loss, np.ones(3) / 3, mode="valid") if n >= 5 else loss
    d = np.diff(smooth)
    d = d[np.abs(d) > 1e-9 * max(abs(level), 1e-12)]  # flat stretches have no sign
    flips = float((np.sign(d[1:]) != np.sign(d[:-1])).mean()) if len(d) >= 3 else 0.0
    # Straight line through the last half: the improvement it predicts over that half, relative
    # to the half's mean level. Uses every point, so noise averages out better than two medians.
    h = loss[n // 2:]
    if len(h) >= 2:
        slope = float(np.polyfit(np.arange(len(h)), h, 1)[0])
        improvement = -slope * (len(h) - 1) / max(abs(float(h.mean())), 1e-12)
    else:
        improvement = 0.0
    return {"start": start, "end": end, "third": third, "level": level, "amplitude": amp,
            "relative_amplitude": amp / max(abs(level), 1e-12), "sign_change_fraction": flips,
            "last_half_improvement": improvement, "k": k}


def rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Centred rolling mean, window w (odd), shrinking at the ends."""
    h = w // 2
    return np.array([np.mean(x[max(0, i - h):i + h + 1]) for i in range(len(x))])


def trainable_update_ratio(g: dict) -> np.ndarray:
    """Update ratios of layers that moved at all, at steps with lr > 0, flattened.

    Frozen layers (ratio 0 throughout) say nothing about the learning rate; nor does the warm-up's
    first step, recorded at lr = 0."""
    r = np.asarray(g.get("update_ratio", np.zeros((0, 0))), dtype=np.float64)
    if r.ndim != 2 or r.size == 0:
        return np.zeros(0)
    lr = np.asarray(g.get("lr", []), dtype=np.float64).reshape(-1)
    if len(lr) == len(r) and (lr > 0).any():
        r = r[lr > 0]
    live = ~np.all(r == 0, axis=0)
    return r[:, live].reshape(-1)


def suggested_factor(med_ratio: float | None, high: bool) -> float:
    """Multiply the learning rate by this: toward a 1e-3 update ratio, clipped and snapped."""
    ladder = (0.1, 0.3) if high else (3.0, 10.0)
    if med_ratio is None or not math.isfinite(med_ratio) or med_ratio <= 0:
        return ladder[0] if high else ladder[-1]
    raw = min(10.0, max(0.1, _HEALTHY_RATIO / med_ratio))
    return min(ladder, key=lambda f: abs(math.log10(f) - math.log10(raw)))
