"""Sampled candidates from the champion for the actions that learn from its own outputs
(rejection_sampling, preference_optimisation): for a random subset of the training inputs, the
champion's greedy answer and k sampled ones, each scored against the references by the task's
primary metric (per-example ROUGE-L, sentence chrF)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Candidates:
    ds: object  # the sampled training examples (a Dataset subset)
    greedy: list[dict]  # (n,) the champion's own decoding of each
    samples: list[list[dict]]  # (n, k) sampled answers
    greedy_scores: np.ndarray  # (n,)
    sample_scores: np.ndarray  # (n, k)
    seconds: float

    def record(self) -> dict:
        """What was drawn (no timing: a plan's record replays exactly)."""
        best = self.sample_scores.max(1) if self.sample_scores.size else np.zeros(0)
        return {"inputs": len(self.greedy), "k": int(self.sample_scores.shape[1]) if self.sample_scores.ndim == 2
                else 0, "greedy_score": _mean(self.greedy_scores), "best_sample_score": _mean(best),
                "best_beats_greedy": int((best > self.greedy_scores).sum()) if len(best) else 0}


def _mean(x) -> float | None:
    return float(np.mean(x)) if len(x) else None


def draw(bundle, ds, *, n: int, k: int, temperature: float, top_p: float, seed: int, batch_size: int,
         precision: str) -> Candidates:
    """The candidates for n training examples drawn at random (seed) from ds."""
    import time

    from ..evaluate import encode_bundle, evaluate_features, pad_id
    from ..runtime import resolve_precision
    from ..tasks import get_task

    task = get_task(bundle.task)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds), size=min(n, len(ds)), replace=False)) if len(ds) else np.zeros(0, int)
    sub = ds.subset([int(i) for i in idx])
    precision = resolve_precision(precision)
    t0 = time.time()
    feats = encode_bundle(bundle, sub, labelled=False)
    options = dict(bundle.meta.get("options") or {})
    greedy = evaluate_features(bundle.model, sub, feats, task=bundle.task, labels=bundle.labels,
                               pad_id=pad_id(bundle.tokenizer), batch_size=batch_size, precision=precision,
                               options=options, tokenizer=bundle.tokenizer).probs if len(sub) else []
    samples = task.sample(bundle.model, bundle.tokenizer, sub, feats, k=k, temperature=temperature, top_p=top_p,
                          seed=seed, batch_size=batch_size, precision=precision, **options) if len(sub) else []
    g = task.candidate_scores(sub, [[o] for o in greedy])[:, 0] if len(sub) else np.zeros(0)
    s = task.candidate_scores(sub, samples) if len(sub) else np.zeros((0, k))
    return Candidates(sub, list(greedy), samples, g, s, time.time() - t0)
