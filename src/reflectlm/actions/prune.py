"""prune: remove weights the model barely uses, judged by non-inferiority (the challenger must
not be worse than the champion by more than the margin).

- magnitude: global L1 unstructured pruning of the encoder's linear weights (torch.nn.utils.prune),
  made permanent, so `amount` of them are exactly zero;
- heads: structured, per layer the `amount` share of attention heads with the smallest
  importance proxy (norm of the head's value rows times its output-projection columns) are
  zeroed, which removes their contribution exactly (the attention output of a zeroed head is 0).

References: Han et al. 2015 (magnitude pruning); Michel, Levy & Neubig 2019 (are sixteen heads
really better than one?)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import findings as K
from .base import NON_INFERIORITY, champion_post, params_of


@dataclass(frozen=True)
class Prune:
    name = "prune"
    addresses = {K.MODEL_SIZE: None}
    mode = NON_INFERIORITY
    retrains = False
    requires = ()
    unprompted = ("listed", K.MODEL_SIZE)  # compression is asked for (loop.actions), not diagnosed

    method: str = "magnitude"  # magnitude | heads
    amount: float = 0.3

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if recipe.get("model.kind") != "transformer" or "prune" in champion_post(inputs):
            return None  # pruning the pruned champion again would select the same zeros
        return cls()

    def apply(self, recipe, inputs):
        if self.method not in ("magnitude", "heads"):
            raise ValueError(f"prune.method must be 'magnitude' or 'heads', not {self.method!r}")
        out = recipe.evolve(post=recipe.post + [{"action": self.name, "params": self.params()}])
        out.changes.append({"action": self.name, **self.params()})
        return out

    def transform(self, model, post=None) -> dict:
        from torch.nn.utils import prune as tprune

        head = {id(m) for n, m in model.named_modules() if n.split(".")[0] in ("classifier", "pre_classifier")}
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and id(m) not in head]
        total = sum(m.weight.numel() for m in linears)
        if not linears:
            return {"pruned": 0, "total": 0}
        if self.method == "magnitude":
            tprune.global_unstructured([(m, "weight") for m in linears], pruning_method=tprune.L1Unstructured,
                                       amount=self.amount)
            for m in linears:
                tprune.remove(m, "weight")
            zeros = sum(int((m.weight == 0).sum()) for m in linears)
            return {"method": "magnitude", "zero_weights": zeros, "total_weights": total, "sparsity": zeros / total}
        return self._heads(model)

    def _heads(self, model) -> dict:
        cfg = model.config
        H = cfg.num_attention_heads
        d = cfg.hidden_size // H
        removed = {}
        for i, layer in enumerate(model.base_model.encoder.layer):
            att = layer.attention
            v, out = att.self.value.weight, att.output.dense.weight  # (D, D) each
            score = torch.stack([v[h * d:(h + 1) * d].norm() * out[:, h * d:(h + 1) * d].norm() for h in range(H)])
            k = int(self.amount * H)
            heads = sorted(int(h) for h in torch.argsort(score)[:k])
            with torch.no_grad():
                for h in heads:
                    sl = slice(h * d, (h + 1) * d)
                    for lin in (att.self.query, att.self.key, att.self.value):
                        lin.weight[sl] = 0
                        lin.bias[sl] = 0
                    out[:, sl] = 0
            removed[str(i)] = heads
        n = sum(len(v) for v in removed.values())
        return {"method": "heads", "heads_removed": removed, "removed": n, "heads_total": H * len(removed)}
