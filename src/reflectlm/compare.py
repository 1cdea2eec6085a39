"""Paired A/B test of a challenger model against the champion on the same selection examples.

Both models are scored on the SAME held-out examples, so every test here is paired: per-example
correctness feeds McNemar's test (exact, or its mid-p version: `mcnemar_test`, loop.mcnemar), and
the metric difference gets a paired bootstrap (one set of resampled indices drives both models, so
example difficulty cancels out).

Decision rule:
1. superiority (the challenger must be better): promote iff the difference is > 0 and the
   (1 - alpha) percentile CI of the difference lies above 0. For accuracy and exact match, the
   quantity McNemar tests, McNemar must agree (two-sided p < alpha with c > b; two-sided like the
   CI, so both are one-sided alpha/2 tests). For macro-F1, entity F1 and a mean token F1 (QA) the
   bootstrap decides and McNemar is reported as supporting evidence: those metrics can rise while
   exact correctness stands still.
   non_inferiority (for actions that buy size, speed or calibration, and for rounds that only add
   verified labels - active learning with a real oracle, label import, production corrections -
   which add information and change nothing else; the owner's decision in issue 16): promote iff
   the CI's lower end lies above -margin. Which mode a round gets is what its actions declare.
2. per-class guardrail (classification; for QA per question type, on exact answers): each class
   with >= MIN_CLASS_SUPPORT selection examples gets an exact McNemar test on its own examples
   (i.e. on its recall); a class where the
   challenger is worse (b > c) with p < guardrail_alpha blocks promotion unless
   allow_class_regressions. The per-class p-values are Holm-corrected over the tested classes
   (Holm 1979), so tens of classes do not veto good challengers by chance. NER has the same per
   entity type, on its gold entities found exactly (type_guardrail); QA per question type.
3. what it would take (reported, never part of the decision): for a superiority test rejected
   with a positive estimate, `detectable` gives the paired standard error of the difference (the
   bootstrap's), the smallest true effect this split detects with 80 % power at the same alpha,
   (z_{1-alpha/2} + z_{0.8}) * se, and how many selection examples would give the observed effect
   that power, n * ((z_{1-alpha/2} + z_{0.8}) * se / difference)^2 (se shrinks as 1/sqrt(n)).

Macro-F1 here averages F1 over the classes present in the selection y_true (a class without gold
examples cannot be measured), with zero_division=0 and that same set in every resample. It equals
sklearn's f1_score(average="macro", labels=<that set>, zero_division=0).

References: McNemar 1947, "Note on the sampling error of the difference between correlated
proportions or percentages"; Dror et al. 2018, "The Hitchhiker's Guide to Testing Statistical
Significance in Natural Language Processing"; Efron & Tibshirani 1993 (percentile bootstrap).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .findings import jsonable

MODES = ("superiority", "non_inferiority")
METRICS = ("accuracy", "macro_f1")  # classification; compare_ner uses "entity_f1"
# compare_scores: the mean of per-example scores (extractive QA; summarisation's ROUGE)
SCORE_METRICS = ("f1", "exact_match", "rouge_l", "rouge_1", "rouge_2")
STAT_METRICS = ("chrf",)  # compare_stats: a corpus score from summed per-example statistics (translation)
EXACT = ("accuracy", "exact_match")  # the share of examples exactly right: McNemar tests the same quantity
MIN_CLASS_SUPPORT = 5  # smaller classes carry too little evidence for the guardrail to test
_BLOCK = 4_000_000  # entries of the (k, n) resample-count matrix built at once (~32 MB)


@dataclass
class Comparison:
    metric: str
    mode: str
    champion: float  # metric of each model on the selection split
    challenger: float
    difference: float  # challenger - champion
    ci_low: float  # paired bootstrap percentile CI of the difference, level 1 - alpha
    ci_high: float
    p_bootstrap: float  # one-sided: (#resamples with diff <= 0, or <= -margin, + 1) / (B + 1)
    mcnemar: dict
    alpha: float
    margin: float
    guardrail: dict
    promote: bool
    reason: str
    n: int
    n_bootstrap: int
    seed: int
    detectable: dict | None = None  # rule 3: for a rejected positive estimate, what would resolve it

    def to_json(self) -> dict:
        return jsonable(asdict(self))


MCNEMAR_TESTS = ("exact", "mid_p")


def mcnemar_exact(champion_correct, challenger_correct, test: str = "exact") -> dict:
    """McNemar's test on paired correctness (bool arrays of equal length). Only discordant pairs
    carry evidence: b = champion right & challenger wrong, c = champion wrong & challenger right;
    under H0 (equal accuracy) c ~ Binomial(b + c, 1/2). statistic = min(b, c).

    Both p-values are reported; `p_value` is the one `test` names, the one a gate reads:
      exact  the exact conditional test, two-sided: 2 P(X <= min(b, c)), capped at 1;
      mid_p  its mid-p version, 2 [P(X <= min(b, c)) - P(X = min(b, c)) / 2] (Fagerland, Lydersen &
             Laake 2013, BMC Med. Res. Methodol. 13:91: the exact test is needlessly conservative for
             matched pairs; mid-p keeps close to the nominal level)."""
    from scipy.stats import binom, binomtest  # scipy.stats is slow to import; only this needs it

    if test not in MCNEMAR_TESTS:
        raise ValueError(f"unknown McNemar test {test!r}; use one of {MCNEMAR_TESTS}")
    a = np.asarray(champion_correct, dtype=bool)
    z = np.asarray(challenger_correct, dtype=bool)
    if a.ndim != 1 or a.shape != z.shape:
        raise ValueError(f"champion_correct and challenger_correct must be 1-D and of equal length; "
                         f"got shapes {a.shape} and {z.shape}")
    b, c = int(np.sum(a & ~z)), int(np.sum(~a & z))
    p = p_mid = p_better = 1.0  # no discordant pairs: no evidence either way
    if b + c:
        p = float(binomtest(c, b + c, 0.5, alternative="two-sided").pvalue)
        k = min(b, c)
        p_mid = float(min(1.0, 2.0 * binom.cdf(k, b + c, 0.5) - binom.pmf(k, b + c, 0.5)))
        p_better = float(binomtest(c, b + c, 0.5, alternative="greater").pvalue)
    return {"b": b, "c": c, "statistic": min(b, c), "test": test, "p_value": p_mid if test == "mid_p" else p,
            "p_exact": p, "p_mid": p_mid, "p_challenger_better": p_better}


def _features(metric: str, y: np.ndarray | None, pred: np.ndarray, label_ids: np.ndarray | None) -> np.ndarray:
    """Per-example columns whose sums over a (re)sample determine the metric: (n, m)."""
    if metric == "accuracy":
        return (y == pred).astype(np.float64)[:, None]  # (n, 1)
    if metric in SCORE_METRICS:  # pred: per-example scores in [0, 1] (a question's F1 or exact match)
        return np.asarray(pred, dtype=np.float64)[:, None]  # (n, 1)
    if metric in STAT_METRICS:  # pred: per-sentence chrF statistics (n, 18)
        return np.asarray(pred, dtype=np.float64)
    if metric == "macro_f1":
        gold = y[:, None] == label_ids[None, :]  # (n, L)
        said = pred[:, None] == label_ids[None, :]  # (n, L)
        return np.concatenate([gold, said, gold & said], axis=1).astype(np.float64)  # (n, 3L)
    return np.asarray(pred, dtype=np.float64)  # entity_f1: per-sentence (tp, fp, fn), (n, 3)


def _reduce(metric: str, sums: np.ndarray, n: int) -> np.ndarray:
    """Metric per resample from the column sums (k, m) -> (k,)."""
    if metric == "accuracy" or metric in SCORE_METRICS:
        return sums[:, 0] / n
    if metric == "chrf":
        from .tasks.textmetrics import chrf_from_stats

        return chrf_from_stats(sums)
    if metric == "macro_f1":
        support, predicted, tp = np.split(sums, 3, axis=1)  # (k, L) each
        denom = support + predicted  # 2tp + fp + fn
    else:
        tp, denom = sums[:, 0], 2 * sums[:, 0] + sums[:, 1] + sums[:, 2]  # micro entity F1
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)  # zero_division=0
    return f1.mean(1) if metric == "macro_f1" else f1


def _resample_sums(features: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """Column sums of features (n, m) over n_bootstrap resamples of its rows -> (B, m).
    Resample r uses the r-th rng.integers(0, n, size=n) of numpy.random.default_rng(seed)
    (drawing them in blocks gives the same indices), so a plain loop can reproduce it."""
    n, m = features.shape
    rng = np.random.default_rng(seed)
    out = np.empty((n_bootstrap, m))
    block = max(1, _BLOCK // n)
    for start in range(0, n_bootstrap, block):
        k = min(block, n_bootstrap - start)
        idx = rng.integers(0, n, size=(k, n))
        # times[r, i] = how often example i was drawn in resample r; sums = times @ features
        times = np.bincount((np.arange(k)[:, None] * n + idx).ravel(), minlength=k * n).reshape(k, n)
        out[start:start + k] = times.astype(np.float64) @ features
    return out


def _bootstrap(metric, y, pred_a, pred_b, n_bootstrap, seed, label_ids=None) -> tuple[float, float, np.ndarray]:
    """(metric A, metric B, diffs B - A over resamples (B,))."""
    n = len(pred_a)
    if callable(metric):  # slow path for other metrics: same indices, one call per resample
        rng, pa, pb = np.random.default_rng(seed), np.asarray(pred_a), np.asarray(pred_b)
        idxs = (rng.integers(0, n, size=n) for _ in range(n_bootstrap))
        diffs = np.array([metric(y[i], pb[i]) - metric(y[i], pa[i]) for i in idxs], dtype=np.float64)
        return float(metric(y, pa)), float(metric(y, pb)), diffs
    if metric == "macro_f1" and label_ids is None:
        label_ids = np.unique(y)
    fa, fb = _features(metric, y, pred_a, label_ids), _features(metric, y, pred_b, label_ids)
    m = fa.shape[1]
    feats = np.concatenate([fa, fb], axis=1)  # (n, 2m): one resampling pass serves both models
    sums = np.concatenate([feats.sum(0, keepdims=True), _resample_sums(feats, n_bootstrap, seed)])  # row 0: all data
    va, vb = _reduce(metric, sums[:, :m], n), _reduce(metric, sums[:, m:], n)  # (1 + B,)
    return float(va[0]), float(vb[0]), vb[1:] - va[1:]


def paired_bootstrap(metric_fn: str | Callable, y_true, pred_a, pred_b, n_bootstrap: int = 1000, seed: int = 0,
                     alpha: float = 0.05, label_ids=None) -> tuple[np.ndarray, float, float]:
    """Bootstrap distribution of metric(pred_b) - metric(pred_a) over the same resampled examples.
    metric_fn: "accuracy" or "macro_f1" (vectorised; int class arrays; label_ids defaults to the
    classes in y_true), "entity_f1" (pred_a / pred_b are per-sentence (tp, fp, fn) counts (N, 3),
    y_true unused), or a callable metric(y, pred) -> float run per resample (slow).
    Returns (diffs (B,), ci_low, ci_high): the percentile CI at level 1 - alpha."""
    if not callable(metric_fn) and metric_fn not in (*METRICS, "entity_f1"):
        raise ValueError(f"unknown metric {metric_fn!r}; use one of {(*METRICS, 'entity_f1')} or a callable")
    if callable(metric_fn) and y_true is None:
        raise ValueError("a callable metric is called as metric(y_true, pred); pass y_true")
    y = None if y_true is None else np.asarray(y_true)
    _check(n_bootstrap=n_bootstrap, alpha=alpha, pred_a=pred_a, pred_b=pred_b, **({} if y is None else {"y_true": y}))
    _, _, diffs = _bootstrap(metric_fn, y, np.asarray(pred_a), np.asarray(pred_b), n_bootstrap, seed,
                             None if label_ids is None else np.asarray(label_ids))
    lo, hi = np.percentile(diffs, [50 * alpha, 100 - 50 * alpha])
    return diffs, float(lo), float(hi)


def _check(n_bootstrap: int, alpha: float, **arrays) -> int:
    """Validate settings and that all arrays share one non-zero length; returns it."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), e.g. 0.05; got {alpha}")
    if int(n_bootstrap) < 1:
        raise ValueError(f"n_bootstrap must be >= 1 (1000 is usual); got {n_bootstrap}")
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"champion and challenger must be scored on the same examples; got lengths {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("nothing to compare: 0 selection examples; check that the selection split is not empty")
    return n


def _check_mode(mode: str, margin: float) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    if margin < 0:
        raise ValueError(f"margin is the tolerated loss and must be >= 0, e.g. 0.01; got {margin}")


def _class_guardrail(y: np.ndarray, pa: np.ndarray, pb: np.ndarray, labels: list[str], alpha: float,
                     allow: bool) -> dict:
    """Exact McNemar per class on that class's examples (so on its recall), Holm-corrected over
    the tested classes; lists the classes the challenger made significantly worse, most
    significant first. Without the correction, 77 classes at alpha 0.05 would veto good
    challengers by chance most rounds."""
    rows = []
    for k in np.unique(y):
        mask = y == k
        if mask.sum() < MIN_CLASS_SUPPORT:
            continue
        ra, rb = pa[mask] == k, pb[mask] == k
        t = mcnemar_exact(ra, rb)
        rows.append((t["p_value"], int(k), t, int(mask.sum()), float(ra.mean()), float(rb.mean())))
    tested = len(rows)
    rows.sort(key=lambda r: (r[0], r[1]))
    worse = []
    for rank, (p, k, t, n, ra, rb) in enumerate(rows):
        p_holm = min(1.0, p * (tested - rank))
        if p_holm >= alpha:
            break  # Holm's step-down: the first non-rejection ends it
        if t["b"] > t["c"]:
            worse.append({"class": labels[k], "n": n, "champion_recall": ra, "challenger_recall": rb,
                          "p_value": p, "p_holm": p_holm})
    worse.sort(key=lambda w: w["p_value"])
    return {"enabled": True, "worse_classes": worse, "tested_classes": tested, "min_support": MIN_CLASS_SUPPORT,
            "alpha": alpha, "correction": "holm", "allowed": not worse or allow}


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): sorted ascending, p_(i) * (m - i) for
    0-based rank i, made monotone and capped at 1. Rejecting every adjusted p < alpha controls the
    family-wise error at alpha, whatever the dependence between the tests."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    adj[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    return [float(v) for v in adj]


def gate_p_value(c: Comparison) -> float:
    """The p-value of a comparison's own gate (rule 1), for a correction over several challengers:
    the percentile CI at level 1 - a clears its threshold about when 2 * p_bootstrap < a (the CI is
    two-sided), and for accuracy McNemar must agree too, so its p-value joins (1 when the
    challenger is not the better one)."""
    p = min(1.0, 2.0 * c.p_bootstrap)
    if c.metric in EXACT and c.mode == "superiority":
        mc = c.mcnemar
        p = max(p, mc["p_value"] if mc["c"] > mc["b"] else 1.0)
    return p


DETECT_POWER = 0.8


def detectable_effect(se: float, n: int, alpha: float, observed: float | None = None,
                      power: float = DETECT_POWER) -> dict:
    """Rule 3 of the module docstring. se: the paired standard error of the metric difference on
    n examples; alpha: the two-sided level of the gate's CI. Returns {"se", "power", "effect" (the
    smallest true effect detected with that power), and, for an observed effect > 0, "examples_needed"
    (selection examples for the observed effect to be detected with that power) and "more_examples"}."""
    from scipy.stats import norm

    if se < 0 or n < 1 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"need se >= 0, n >= 1, alpha and power in (0, 1); got se={se}, n={n}, alpha={alpha}, "
                         f"power={power}")
    z = float(norm.ppf(1 - alpha / 2) + norm.ppf(power))
    out = {"se": float(se), "power": power, "alpha": alpha, "n": int(n), "effect": z * se}
    if observed is not None and observed > 0:
        needed = int(math.ceil(n * (z * se / observed) ** 2))
        out.update(observed=float(observed), examples_needed=needed, more_examples=max(0, needed - int(n)))
    return out


def _gate(metric: str, mode: str, alpha: float, margin: float, lo: float, hi: float, diff: float,
          mcn: dict) -> tuple[bool, str]:
    """Rule 1 alone (no guardrail): does the test pass, and why (or why not)."""
    if mode == "non_inferiority":
        ok = lo > -margin
        return ok, f"CI {'stays above' if ok else 'reaches below'} the -{margin:.4f} margin: " + (
            "non-inferior" if ok else "may be worse")
    if hi < 0:
        return False, "CI lies below 0: significantly worse"
    if lo <= 0:
        return False, "CI includes 0: not significant"
    if diff <= 0:
        return False, "no gain"
    if metric in EXACT and not (mcn["c"] > mcn["b"] and mcn["p_value"] < alpha):
        return False, f"McNemar does not confirm the gain (needs p < {alpha:g})"
    return True, "significant gain"


def gate_passed(c: Comparison) -> bool:
    """Whether rule 1 passed at the comparison's own alpha, whatever the guardrail (or a post step's
    own check) then decided: the test of the hypothesis that a correction over challengers steps on."""
    return _gate(c.metric, c.mode, c.alpha, c.margin, c.ci_low, c.ci_high, c.difference, c.mcnemar)[0]


def _decide(metric: str, mode: str, alpha: float, margin: float, n_bootstrap: int, seed: int, n: int,
            champion: float, challenger: float, diffs: np.ndarray, mcn: dict, guard: dict) -> Comparison:
    lo, hi = (float(v) for v in np.percentile(diffs, [50 * alpha, 100 - 50 * alpha]))
    diff = challenger - champion
    threshold = 0.0 if mode == "superiority" else -margin
    p_boot = (int(np.count_nonzero(diffs <= threshold)) + 1) / (n_bootstrap + 1)  # +1: never report p = 0
    test = " mid-p" if mcn.get("test") == "mid_p" else ""
    head = (f"{metric} {diff:+.4f} ({100 * (1 - alpha):g}% CI {lo:+.4f} to {hi:+.4f}), "
            f"McNemar{test} p={mcn['p_value']:.3g}")
    ok, why = _gate(metric, mode, alpha, margin, lo, hi, diff, mcn)
    reason = f"{head}: {why}; {'promoted' if ok else 'rejected'}"
    if guard["worse_classes"]:
        w, rest = guard["worse_classes"][0], len(guard["worse_classes"]) - 1
        cls = (f"class {w['class']!r} significantly worse (recall {w['champion_recall']:.2f} -> "
               f"{w['challenger_recall']:.2f}, p={w['p_value']:.3g})" + (f" and {rest} more" if rest else ""))
        if ok and not guard["allowed"]:
            ok, reason = False, f"{cls}: rejected by the per-class guardrail ({head})"
        else:
            reason += f"; {cls}" + (", allowed by allow_class_regressions" if guard["allowed"] else "")
    detectable = None
    if mode == "superiority" and not ok and diff > 0 and len(diffs) > 1:
        detectable = detectable_effect(float(np.std(diffs, ddof=1)), n, alpha, diff)
        reason += (f"; this split detects about {detectable['effect']:+.4f} (80% power); about "
                   f"{detectable['examples_needed']:,} selection examples would resolve {diff:+.4f}")
    return Comparison(metric=metric, mode=mode, champion=champion, challenger=challenger, difference=diff,
                      ci_low=lo, ci_high=hi, p_bootstrap=p_boot, mcnemar=mcn, alpha=alpha, margin=margin,
                      guardrail=guard, promote=bool(ok), reason=reason, n=n, n_bootstrap=int(n_bootstrap),
                      seed=int(seed), detectable=detectable)


def compare(y_true, champion_pred, challenger_pred, *, labels: list[str], metric: str = "macro_f1",
            mode: str = "superiority", alpha: float = 0.05, margin: float = 0.01, n_bootstrap: int = 1000,
            seed: int = 0, guardrail: bool = True, guardrail_alpha: float = 0.05,
            allow_class_regressions: bool = False, mcnemar_test: str = "exact") -> Comparison:
    """A/B test of two classifiers on the same selection examples. y_true, champion_pred and
    challenger_pred are class indices into labels, (N,) each. See the module docstring for the rule."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {METRICS} (for entity_f1 call compare_ner)")
    _check_mode(mode, margin)
    if not 0 < guardrail_alpha < 1:
        raise ValueError(f"guardrail_alpha must be in (0, 1), e.g. 0.05; got {guardrail_alpha}")
    y, pa, pb = (np.asarray(a) for a in (y_true, champion_pred, challenger_pred))
    n = _check(n_bootstrap, alpha, y_true=y, champion_pred=pa, challenger_pred=pb)
    for name, a in (("y_true", y), ("champion_pred", pa), ("challenger_pred", pb)):
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= len(labels):
            raise ValueError(f"{name} must be a 1-D array of class indices in [0, {len(labels)}) "
                             f"(pass probs.argmax(1), not probabilities or label names)")
    champ, chall, diffs = _bootstrap(metric, y, pa, pb, n_bootstrap, seed)
    mcn = mcnemar_exact(pa == y, pb == y, mcnemar_test)
    guard = (_class_guardrail(y, pa, pb, list(labels), guardrail_alpha, allow_class_regressions) if guardrail
             else {"enabled": False, "worse_classes": [], "allowed": True})
    return _decide(metric, mode, alpha, margin, n_bootstrap, seed, n, champ, chall, diffs, mcn, guard)


def compare_ner(champion_counts, challenger_counts, champion_correct, challenger_correct, *,
                mode: str = "superiority", alpha: float = 0.05, margin: float = 0.01, n_bootstrap: int = 1000,
                seed: int = 0, mcnemar_test: str = "exact", guard: dict | None = None) -> Comparison:
    """A/B test of two NER models on entity micro-F1. The unit of resampling is the sentence:
    *_counts are per-sentence entity (tp, fp, fn), (N, 3); *_correct say whether a sentence was
    fully right, (N,), for McNemar. F1 of a resample = 2TP / (2TP + FP + FN) over its sentences.
    guard: the per-type guardrail (type_guardrail), or None for none."""
    _check_mode(mode, margin)
    ca, cb = np.asarray(champion_counts), np.asarray(challenger_counts)
    n = _check(n_bootstrap, alpha, champion_counts=ca, challenger_counts=cb, champion_correct=champion_correct,
               challenger_correct=challenger_correct)
    for name, a in (("champion_counts", ca), ("challenger_counts", cb)):
        if a.ndim != 2 or a.shape[1] != 3 or (a < 0).any():
            raise ValueError(f"{name} must be per-sentence non-negative (tp, fp, fn) counts of shape (N, 3); "
                             f"got shape {a.shape}")
    champ, chall, diffs = _bootstrap("entity_f1", None, ca, cb, n_bootstrap, seed)
    mcn = mcnemar_exact(champion_correct, challenger_correct, mcnemar_test)
    guard = guard or {"enabled": False, "worse_classes": [], "allowed": True}
    return _decide("entity_f1", mode, alpha, margin, n_bootstrap, seed, n, champ, chall, diffs, mcn, guard)


def _group_guardrail(groups: np.ndarray, ca: np.ndarray, cb: np.ndarray, alpha: float, allow: bool) -> dict:
    """Exact McNemar per group (a question type) on its examples' exact correctness, Holm-corrected
    over the tested groups, as the per-class guardrail is on each class's recall."""
    rows = []
    for g in sorted(set(groups.tolist()), key=str):
        mask = groups == g
        if mask.sum() < MIN_CLASS_SUPPORT:
            continue
        t = mcnemar_exact(ca[mask], cb[mask])
        rows.append((t["p_value"], str(g), t, int(mask.sum()), float(ca[mask].mean()), float(cb[mask].mean())))
    tested = len(rows)
    rows.sort(key=lambda r: (r[0], r[1]))
    worse = []
    for rank, (p, g, t, n, ra, rb) in enumerate(rows):
        p_holm = min(1.0, p * (tested - rank))
        if p_holm >= alpha:
            break  # Holm's step-down: the first non-rejection ends it
        if t["b"] > t["c"]:
            worse.append({"class": g, "n": n, "champion_recall": ra, "challenger_recall": rb, "p_value": p,
                          "p_holm": p_holm})
    return {"enabled": True, "worse_classes": worse, "tested_classes": tested, "min_support": MIN_CLASS_SUPPORT,
            "alpha": alpha, "correction": "holm", "allowed": not worse or allow, "unit": "exact answers per group"}


def type_guardrail(types: np.ndarray, champion_found: np.ndarray, challenger_found: np.ndarray, alpha: float = 0.05,
                   allow: bool = False) -> dict:
    """The per-type guardrail of NER: McNemar on each entity type's gold entities (found exactly by
    each model: that type's recall), Holm-corrected over the types tested, as the per-class
    guardrail is on each class's recall."""
    out = _group_guardrail(types, np.asarray(champion_found, bool), np.asarray(challenger_found, bool), alpha, allow)
    return {**out, "unit": "gold entities found exactly, per entity type"}


def _exact_evidence(champion_correct, challenger_correct, groups, guardrail_alpha: float, allow: bool,
                    mcnemar_test: str) -> tuple[dict, dict]:
    """McNemar on the examples each model gets exactly right, and the per-group guardrail on them."""
    ca, cb = np.asarray(champion_correct, dtype=bool), np.asarray(challenger_correct, dtype=bool)
    guard = (_group_guardrail(np.asarray(groups), ca, cb, guardrail_alpha, allow)
             if groups is not None else {"enabled": False, "worse_classes": [], "allowed": True})
    return mcnemar_exact(ca, cb, mcnemar_test), guard


def compare_scores(champion_scores, challenger_scores, champion_correct, challenger_correct, *, metric: str = "f1",
                   groups=None, mode: str = "superiority", alpha: float = 0.05, margin: float = 0.01,
                   n_bootstrap: int = 1000, seed: int = 0, guardrail_alpha: float = 0.05,
                   allow_class_regressions: bool = False, mcnemar_test: str = "exact") -> Comparison:
    """A/B test of two models by the mean of a per-example score in [0, 1] (extractive QA: a
    question's F1, or its exact match), paired: one set of resampled examples drives both means.
    *_correct say whether each example is exactly right, (N,), for McNemar (decisive, as for
    accuracy, when the metric is exact match; supporting evidence for F1). groups (N,), e.g. the
    question type: the guardrail tests each group's exact answers, as the per-class guardrail does."""
    if metric not in SCORE_METRICS:
        raise ValueError(f"unknown metric {metric!r}; compare_scores compares {SCORE_METRICS}")
    _check_mode(mode, margin)
    sa, sb = np.asarray(champion_scores, dtype=np.float64), np.asarray(challenger_scores, dtype=np.float64)
    n = _check(n_bootstrap, alpha, champion_scores=sa, challenger_scores=sb, champion_correct=champion_correct,
               challenger_correct=challenger_correct)
    if sa.ndim != 1 or sb.ndim != 1 or (sa < 0).any() or (sa > 1).any() or (sb < 0).any() or (sb > 1).any():
        raise ValueError("champion_scores and challenger_scores must be 1-D per-example scores in [0, 1]")
    champ, chall, diffs = _bootstrap(metric, None, sa, sb, n_bootstrap, seed)
    mcn, guard = _exact_evidence(champion_correct, challenger_correct, groups, guardrail_alpha,
                                 allow_class_regressions, mcnemar_test)
    return _decide(metric, mode, alpha, margin, n_bootstrap, seed, n, champ, chall, diffs, mcn, guard)


def compare_stats(champion_stats, challenger_stats, champion_correct, challenger_correct, *, metric: str = "chrf",
                  groups=None, mode: str = "superiority", alpha: float = 0.05, margin: float = 0.01,
                  n_bootstrap: int = 1000, seed: int = 0, guardrail_alpha: float = 0.05,
                  allow_class_regressions: bool = False, mcnemar_test: str = "exact") -> Comparison:
    """A/B test of two models by a corpus score computed from summed per-example statistics
    (translation: chrF from each sentence's character n-gram counts, (N, 18) per model), paired:
    one set of resampled sentences drives both corpus scores, as sacrebleu's paired bootstrap does
    (Koehn 2004). *_correct (N,) say whether each output equals a reference, for McNemar
    (supporting evidence); groups (N,), e.g. the source length, get the guardrail on them."""
    if metric not in STAT_METRICS:
        raise ValueError(f"unknown metric {metric!r}; compare_stats compares {STAT_METRICS}")
    _check_mode(mode, margin)
    sa, sb = np.asarray(champion_stats, dtype=np.float64), np.asarray(challenger_stats, dtype=np.float64)
    if sa.ndim != 2 or sa.shape != sb.shape or (sa < 0).any() or (sb < 0).any():
        raise ValueError(f"champion_stats and challenger_stats must be (N, k) non-negative counts of the same shape; "
                         f"got {sa.shape} and {sb.shape}")
    n = _check(n_bootstrap, alpha, champion_stats=sa[:, 0], challenger_stats=sb[:, 0],
               champion_correct=champion_correct,
               challenger_correct=challenger_correct)
    champ, chall, diffs = _bootstrap(metric, None, sa, sb, n_bootstrap, seed)
    mcn, guard = _exact_evidence(champion_correct, challenger_correct, groups, guardrail_alpha,
                                 allow_class_regressions, mcnemar_test)
    return _decide(metric, mode, alpha, margin, n_bootstrap, seed, n, champ, chall, diffs, mcn, guard)
