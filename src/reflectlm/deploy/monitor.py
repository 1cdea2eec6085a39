"""Drift of served traffic against the selection split.

Checks (each a value, a threshold and an alert flag):
- label_psi: population stability index of the predicted label distribution (the task's summary
  label of a prediction: the class; the entity types a text contains, "(none)" for none; an
  answer's length);
- confidence_psi and confidence_ks: the confidence distribution, PSI over the reference's deciles
  and the two-sample Kolmogorov-Smirnov test;
- low_confidence: the share of texts below serve.low_confidence, against the reference's share;
- input_length_psi and input_length_ks: the inputs' length in words (every text field of an input
  together: a question and its context, a dialogue), PSI over the reference's deciles and the KS
  test: longer documents, one-word queries, a new client that sends whole pages. A generator's
  output length is its summary label, so label_psi above is its output-length drift;
- out_of_scope_rate: for a model with an out-of-scope detector, the share of texts it turns away,
  against the reference's share (a new kind of request, or a detector that no longer fits);
- embedding_auc: a domain classifier (logistic regression, 5-fold out-of-fold) that tells
  reference from current by the encoder's pooled embeddings; ROC AUC 0.5 = indistinguishable.
  This is Evidently's default method for embedding drift.

The server keeps a rolling window of its latest predictions (LiveMonitor) and checks it every
`monitor.every` predictions: an alert is a log line, a gauge on /metrics and, if configured, a
JSON POST to a webhook. `reflectlm monitor RUN_OR_STORE` prints the same checks for the store's
latest window.

References: Yurdakul 2018 (PSI); Rabanser, Günnemann & Lipton 2019, "Failing loudly" (domain
classifiers for dataset shift).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import rundir
from ..tasks.base import OUT_OF_SCOPE

log = logging.getLogger("reflectlm.serve")
EPS = 1e-4


@dataclass
class Sample:
    labels: list[str]  # predicted label per text
    confidence: np.ndarray  # (N,)
    embeddings: np.ndarray | None  # (N, H)
    lengths: np.ndarray | None = None  # (N,) each input's length in words


def input_words(item) -> int:
    """An input's length in words: a text, or every text field of a structured input (QA's
    question and context) together."""
    if isinstance(item, str):
        return len(item.split())
    if isinstance(item, dict):
        return sum(len(v.split()) for v in item.values() if isinstance(v, str))
    return 0


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (proportions)."""
    r = np.clip(np.asarray(reference, float), EPS, None)
    c = np.clip(np.asarray(current, float), EPS, None)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def label_psi(ref: list[str], cur: list[str]) -> float:
    names = sorted(set(ref) | set(cur))
    return psi([ref.count(n) for n in names], [cur.count(n) for n in names])


def confidence_psi(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    return psi(np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1),
               np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1))


def domain_auc(ref: np.ndarray, cur: np.ndarray, seed: int = 0, cap: int = 1000) -> float:
    """Out-of-fold ROC AUC of a classifier that tells reference (0) from current (1) embeddings;
    both sides subsampled to the same size so the AUC is not driven by imbalance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(ref), len(cur), cap)
    a, b = ref[rng.choice(len(ref), n, replace=False)], cur[rng.choice(len(cur), n, replace=False)]
    x, y = np.concatenate([a, b]), np.r_[np.zeros(n), np.ones(n)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, x, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def drift(reference: Sample, current: Sample, cfg, low_confidence: float) -> dict:
    """Every check of current against reference; cfg is a MonitorConfig."""
    from scipy.stats import ks_2samp

    out = {"n_reference": len(reference.labels), "n_current": len(current.labels), "checks": {}}
    if len(current.labels) < cfg.min_samples:
        out.update(status="insufficient data", alert=False,
                   reason=f"{len(current.labels)} predictions in the window; a verdict needs monitor.min_samples = "
                          f"{cfg.min_samples}")
        return out
    checks = out["checks"]

    def check(name, value, threshold, alert, **extra):
        checks[name] = {"value": float(value), "threshold": float(threshold), "alert": bool(alert), **extra}

    v = label_psi(reference.labels, current.labels)
    check("label_psi", v, cfg.psi_threshold, v > cfg.psi_threshold)
    v = confidence_psi(reference.confidence, current.confidence)
    check("confidence_psi", v, cfg.psi_threshold, v > cfg.psi_threshold)
    ks = ks_2samp(reference.confidence, current.confidence)
    check("confidence_ks", ks.statistic, cfg.ks_alpha, ks.pvalue < cfg.ks_alpha, p_value=float(ks.pvalue))
    r_low = float(np.mean(reference.confidence < low_confidence))
    c_low = float(np.mean(current.confidence < low_confidence))
    check("low_confidence", c_low, r_low + cfg.low_confidence_increase, c_low > r_low + cfg.low_confidence_increase,
          reference=r_low)
    r_oos, c_oos = (float(np.mean([lab == OUT_OF_SCOPE for lab in s.labels])) for s in (reference, current))
    if r_oos or c_oos:  # a model with an out-of-scope detector (open_set.py): its rejection rate
        check("out_of_scope_rate", c_oos, r_oos + cfg.out_of_scope_increase, c_oos > r_oos + cfg.out_of_scope_increase,
              reference=r_oos)
    if reference.lengths is not None and current.lengths is not None and len(reference.lengths):
        v = confidence_psi(reference.lengths, current.lengths)  # the same decile binning, of lengths
        check("input_length_psi", v, cfg.psi_threshold, v > cfg.psi_threshold,
              reference_median=float(np.median(reference.lengths)), median=float(np.median(current.lengths)))
        ks = ks_2samp(reference.lengths, current.lengths)
        check("input_length_ks", ks.statistic, cfg.ks_alpha, ks.pvalue < cfg.ks_alpha, p_value=float(ks.pvalue))
    if reference.embeddings is not None and current.embeddings is not None:
        v = domain_auc(reference.embeddings, current.embeddings)
        check("embedding_auc", v, cfg.auc_threshold, v > cfg.auc_threshold)
    alerts = [k for k, c in checks.items() if c["alert"]]
    out.update(status="drift" if alerts else "ok", alert=bool(alerts), alerts=alerts)
    return out


# --------------------------------------------------------------------------- reference


def run_dir_of(path: str | Path) -> Path | None:
    """The run directory behind a served path: an export's source run, or the run itself."""
    return rundir.run_of(path)


def reference_sample(predictor, served: str | Path, limit: int | None = None) -> Sample | None:
    """The predictor's own outputs on its run's selection split (at most `limit` examples, a seeded
    sample), or None when there is no run."""
    from ..config import load_config
    from ..data import load_splits

    run = run_dir_of(served)
    if run is None or not (run / rundir.CONFIG).is_file():
        return None
    cfg = load_config(run / rundir.CONFIG)
    sel = load_splits(cfg.data, cfg.train.seed, cfg.open_set).selection
    if limit is not None and len(sel) > limit:
        sel = sel.subset(np.sort(np.random.default_rng(cfg.train.seed).choice(len(sel), limit, replace=False)))
    return sample_of(predictor, [predictor.spec.inputs(sel, i) for i in range(len(sel))])


def sample_of(predictor, items: list) -> Sample:
    outputs, emb, scores = predictor.scored(items)
    readable = predictor.readable(items, outputs, scores)
    return Sample([predictor.spec.summary_label(r) for r in readable], predictor.confidence(outputs), emb,
                  np.array([input_words(x) for x in items], dtype=np.float64))


class LiveMonitor:
    """A rolling window of served predictions, checked every `cfg.every` additions on a
    background thread (the domain classifier takes a second; serving does not wait for it)."""

    def __init__(self, reference: Sample, cfg, low_confidence: float, on_result=None):
        self.reference, self.cfg, self.low_confidence, self.on_result = reference, cfg, low_confidence, on_result
        self._window: deque = deque(maxlen=cfg.window)
        self._since = 0
        self._lock = threading.Lock()
        self._busy = False
        self.last: dict | None = None
        self._alerting: set[str] = set()

    def add(self, labels: list[str], confidence: np.ndarray, embeddings: np.ndarray | None,
            lengths=None) -> None:
        with self._lock:
            for i, lab in enumerate(labels):
                self._window.append((lab, float(confidence[i]), None if embeddings is None else embeddings[i],
                                     None if lengths is None else float(lengths[i])))
            self._since += len(labels)
            due = self._since >= self.cfg.every and not self._busy
            if due:
                self._since, self._busy = 0, True
                window = list(self._window)
        if due:
            threading.Thread(target=self._check, args=(window,), daemon=True).start()

    def check_now(self) -> dict:
        with self._lock:
            window = list(self._window)
        return self._check(window, background=False)

    def _check(self, window: list, background: bool = True) -> dict:
        try:
            embs = [w[2] for w in window]
            lens = [w[3] for w in window]
            cur = Sample([w[0] for w in window], np.array([w[1] for w in window]),
                         np.stack(embs) if embs and all(e is not None for e in embs) else None,
                         np.array(lens) if lens and all(n is not None for n in lens) else None)
            result = drift(self.reference, cur, self.cfg, self.low_confidence)
            self.last = result
            turned_on = set(result.get("alerts", [])) - self._alerting
            self._alerting = set(result.get("alerts", []))
            if turned_on:
                log.warning("drift alert: %s", json.dumps({k: result["checks"][k] for k in sorted(turned_on)}))
                if self.cfg.webhook:
                    send_webhook(self.cfg.webhook, {"event": "drift_alert", "alerts": sorted(turned_on), **result})
            if self.on_result is not None:
                self.on_result(result)
            return result
        except Exception:  # noqa: BLE001 - a failed check must not take the server down
            log.exception("drift check failed")
            return {"status": "error"}
        finally:
            if background:
                with self._lock:
                    self._busy = False


def send_webhook(url: str, payload: dict, timeout: float = 5.0) -> None:
    import urllib.request

    def post():
        try:
            req = urllib.request.Request(url, data=json.dumps(payload, default=float).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            urllib.request.urlopen(req, timeout=timeout).close()
        except Exception as e:  # noqa: BLE001 - an unreachable webhook is logged, never fatal
            log.warning("drift webhook %s failed: %s", url, e)

    threading.Thread(target=post, daemon=True).start()


# --------------------------------------------------------------------------- reflectlm monitor


def monitor_state(path: str | Path, cfg=None, low_confidence: float | None = None) -> dict:
    """The drift checks for the latest window of a production store (a path, the served directory
    that holds serving.sqlite, or a database URL), with the counts in the store."""
    from ..config import MonitorConfig
    from .predictor import load_predictor
    from .store import is_url, open_store

    cfg = cfg or MonitorConfig()
    store = open_store(path)  # a store file, the served directory that holds serving.sqlite, or a database URL
    try:
        meta = store.meta()
        served = meta.get("served") or (None if is_url(path) else str(path))
        if not served:
            raise FileNotFoundError(f"{store.name} does not say which model it served (no 'served' in its meta table); "
                                    "it was not written by `reflectlm serve`")
        low = meta.get("low_confidence", 0.5) if low_confidence is None else low_confidence
        predictor = load_predictor(served)
        reference = reference_sample(predictor, served, cfg.reference_examples)
        if reference is None:
            raise FileNotFoundError(f"{served} has no run directory to take the selection split from; monitor needs it")
        recent = store.recent(cfg.window)
        counts = store.counts()
    finally:
        store.close()
    # Embeddings of the stored (masked) texts: the same model, run again.
    task = predictor.spec
    current = sample_of(predictor, [task.stored_input(r["text"]) for r in recent]) if recent else Sample(
        [], np.zeros(0), None)
    current.labels = [task.summary_label(r["output"]) for r in recent]
    current.confidence = np.array([r["confidence"] for r in recent])
    return {"store": store.name, "served": served, "counts": counts, **drift(reference, current, cfg, low)}
