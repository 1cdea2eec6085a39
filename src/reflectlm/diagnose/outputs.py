"""What the output checks share: each reads the task's per-output measures of the selection
split's generated outputs (Task.output_measures; the "generates" capability), flags the outputs
its rule picks, and reports one finding: severity = the share flagged, with the counts, the
worst examples and the flagged ids as scores. The checks differ only in what they flag
(length.py, copying.py, repetition.py, unsupported.py, language.py)."""

from __future__ import annotations

import numpy as np

from ..tasks.base import clip as clip_text
from .base import Finding, Skip

GENERATED = ("generates",)
NEEDS = ("selection", "selection_probs")


def measures(ctx) -> dict:
    """The task's per-output measures of the selection outputs, computed once per context: the five
    checks read the same ones (language identification and the metric are not cheap)."""
    ctx.need(*NEEDS)
    ds, outputs = ctx.selection, ctx.selection_probs
    if len(outputs) != len(ds):
        raise Skip(f"{len(outputs)} outputs for {len(ds)} selection examples")
    cached = getattr(ctx, "_output_measures", None)
    if cached is not None and cached[0] is outputs:
        return cached[1]
    m = ctx.task.output_measures(ds, outputs, **(ctx.options or {}))
    ctx._output_measures = (outputs, m)
    return m


def finding(check, ctx, m: dict, kind: str, flagged: np.ndarray, value: np.ndarray, what: str,
            evidence: dict | None = None, examples: int = 5, extra=None) -> list[Finding]:
    """One finding for the flagged outputs (none flagged: severity 0, so it stays on the record),
    the worst (by `value`, highest first) shown with their source, output and reference."""
    ds, outputs = ctx.selection, ctx.selection_probs
    n, k = len(ds), int(np.sum(flagged))
    idx = sorted(np.flatnonzero(flagged), key=lambda i: (-float(value[i]), int(i)))[:examples]
    shown = [{"id": ds.ids[i], "source": clip_text(ds.texts[i]), "output": clip_text(outputs[i]["text"]),
              "reference": clip_text(ds.labels[i][0] if ds.labels[i] else ""), "value": round(float(value[i]), 4),
              "score": round(float(m["score"][i]), 4), **(extra(i) if extra else {})} for i in idx]
    share = k / n if n else 0.0
    mean_flagged = float(np.mean(m["score"][flagged])) if k else None
    mean_rest = float(np.mean(m["score"][~flagged])) if n - k else None
    summary = f"{k} of {n} selection outputs {what}" + (
        f" (their mean score {mean_flagged:.3f} against {mean_rest:.3f} for the rest)." if k and mean_rest is not None
        else ".")
    return [Finding(check=check.name, kind=kind, severity=share, summary=summary,
                    evidence={"n_outputs": n, "n_flagged": k, "share": share, "mean_score_flagged": mean_flagged,
                              "mean_score_rest": mean_rest, **(evidence or {}), "examples": shown},
                    scores={ds.ids[i]: float(bool(flagged[i])) for i in range(n)}, split="selection")]
