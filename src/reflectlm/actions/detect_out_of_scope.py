"""detect_out_of_scope: fit, choose and calibrate an out-of-scope detector on the champion.

No training: the champion's trained model gets a detector (open_set.py) fitted on its training
features, chosen with its threshold on the selection split (the detector with the highest AUROC
on the out-of-scope selection examples; the threshold that maximises the selection metric with
out of scope as a class, keeping in-scope accuracy within open_set.max_accuracy_drop). It also
turns open_set.enabled on, so every later challenger fits its own detector after training.

The paired A/B test then judges the challenger for superiority with out of scope as a class. The
detector and threshold were chosen on the very examples that judge them, so the step is also
cross-fitted (each fold of the selection split scored by a choice made on the other folds) and
refused unless, out of sample, the selection metric improves and in-scope accuracy stays within
max_accuracy_drop + loop.margin of the model without a detector: a customer with a real question
must still get an answer.

References: Podolskiy et al. 2021 (Mahalanobis on transformer features for out-of-scope intents);
Larson et al. 2019 (in-scope accuracy beside out-of-scope recall).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import findings as K
from .. import rundir
from .base import SUPERIORITY, params_of, unsupported


@dataclass(frozen=True)
class DetectOutOfScope:
    name = "detect_out_of_scope"
    addresses = {K.OUT_OF_SCOPE: 0}
    mode = SUPERIORITY
    retrains = False
    requires = ("class_probs",)
    record = rundir.OUT_OF_SCOPE  # the round file transform()'s result is also written to

    folds: int = 5  # cross-fitting folds of the selection split

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        finding = inputs.finding(K.OUT_OF_SCOPE)
        if finding is None or finding.severity <= 0 or recipe.get("open_set.enabled"):
            return None  # nothing absorbed, or the champion fits a detector already
        return cls()

    def apply(self, recipe, inputs):
        skipped = unsupported(inputs, self)
        if skipped:
            out = recipe.evolve()
            out.changes.append(skipped)
            return out
        out = recipe.set("open_set.enabled", True)
        out.post = out.post + [{"action": self.name, "params": self.params()}]
        out.changes.append({"action": self.name, "post": "out-of-scope detector fitted on the training features, "
                                                         "chosen with its threshold on the selection split",
                            "set": {"open_set.enabled": True}})
        return out

    def transform(self, model, post) -> dict:
        """Attach the fitted detector to post.bundle; return the round's out_of_scope.json."""
        from ..fit_open_set import cross_fitted, features_for, fit_bundle

        cfg, bundle = post.cfg, post.bundle
        settings, metric = cfg.open_set, cfg.selection_metric
        batch, precision = cfg.train.eval_batch_size, cfg.train.precision
        if settings.label not in bundle.labels:
            return {"refused": f"the label list has no {settings.label!r} (open_set.label): no out-of-scope "
                               "examples to choose a detector on"}
        arrays = features_for(bundle, post.splits.train, post.splits.selection, batch, precision)  # one pass each
        bundle.open_set = fit_bundle(bundle, post.splits.train, post.splits.selection, settings, metric=metric,
                                     arrays=arrays)
        meta, _ = bundle.open_set.to_json()
        cv = cross_fitted(bundle, arrays, settings, metric=metric, seed=cfg.train.seed, folds=self.folds)
        out = {k: meta[k] for k in ("detector", "threshold", "label", "chosen_by", "selection")}
        out["cross_fitted"] = cv
        if cv.get("with_detector") is None:
            out["refused"] = "too few selection examples to cross-fit the detector's choice"
        elif cv["with_detector"] <= cv["without_detector"]:
            out["refused"] = (f"cross-fitted selection {cv['metric']} does not improve ({cv['without_detector']:.4f} "
                              f"-> {cv['with_detector']:.4f}): the detector's choice does not carry to examples it "
                              "was not chosen on")
        elif cv["in_scope_accuracy"] is not None and cv["in_scope_accuracy"] < (
                cv["in_scope_accuracy_without_detector"] - settings.max_accuracy_drop - cfg.loop.margin):
            out["refused"] = (f"cross-fitted in-scope accuracy falls {cv['in_scope_accuracy_without_detector']:.4f} -> "
                              f"{cv['in_scope_accuracy']:.4f}, more than open_set.max_accuracy_drop "
                              f"{settings.max_accuracy_drop:g} + loop.margin {cfg.loop.margin:g}")
        if "refused" in out:
            bundle.open_set = None
        return out
