"""domain_pretraining: continued masked-language-model training of the encoder on the pool and
training texts before fine-tuning - the self-supervised step. The adapted encoder is written to
the round directory and becomes the base model of this and later challengers.

References: Gururangan et al. 2020 (don't stop pretraining: domain- and task-adaptive pretraining);
Devlin et al. 2019 (masked language modelling)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import findings as K
from .base import SUPERIORITY, params_of


def mlm_loss(mlm, input_ids, attention_mask, labels):
    """The masked-LM loss with the vocabulary projection computed only at the masked positions.

    The model's own forward projects every token onto the whole vocabulary (384 x 30,522 for
    MiniLM) and then ignores the 85 % that are not masked; that projection is most of a step's
    cost. Same loss, a fraction of the work. Falls back to the model's forward for an
    architecture whose head we do not know."""
    import torch.nn.functional as F

    head = getattr(mlm, "cls", None) or getattr(mlm, "lm_head", None)
    if head is None:
        return mlm(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    hidden = mlm.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    masked = labels != -100
    return F.cross_entropy(head(hidden[masked]).float(), labels[masked])


@dataclass(frozen=True)
class DomainPretraining:
    name = "domain_pretraining"
    addresses = {K.UNDERFITTING: 3, K.ERROR_KINDS: 2, K.NOISE_SENSITIVITY: None}
    mode = SUPERIORITY
    retrains = True
    requires = ("encoder",)  # masked-LM pre-training of an encoder body

    steps: int = 300
    batch_size: int = 32
    lr: float = 5e-5
    mask_prob: float = 0.15
    max_length: int = 64

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        if recipe.get("model.kind") != "transformer" or inputs.work_dir is None:
            return None
        if "adapted" in str(recipe.get("model.name")):
            return None  # already adapted in an earlier round
        return cls()

    def estimate(self, n: int, epochs: int, extra: int) -> tuple[int, int, int]:
        return n, epochs, extra + self.steps * self.batch_size  # the masked-LM steps (at most)

    def apply(self, recipe, inputs):
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

        from .. import runtime
        from ..modeling import _quiet_transformers, resolve
        from ..ui import progress

        # The task's in-domain text: the texts, or a question's context.
        texts = inputs.task.domain_texts(recipe.train) + (inputs.task.domain_texts(recipe.pool)
                                                          if recipe.pool is not None else [])
        if not texts or inputs.work_dir is None:
            return recipe.evolve(changes=recipe.changes + [{"action": self.name, "skipped": "no texts"}])
        _quiet_transformers()
        base = resolve(recipe.get("model.name"))
        tok = AutoTokenizer.from_pretrained(base)
        torch.manual_seed(inputs.seed)
        # A sentence encoder's checkpoint has no MLM head: it starts fresh and is thrown away after;
        # only the adapted encoder is kept.
        mlm = AutoModelForMaskedLM.from_pretrained(base)
        collator = DataCollatorForLanguageModeling(tok, mlm_probability=self.mask_prob, seed=inputs.seed)
        enc = tok(texts, truncation=True, max_length=self.max_length)
        rng = np.random.default_rng(inputs.seed)
        opt = torch.optim.AdamW(mlm.parameters(), lr=self.lr, weight_decay=0.01, fused=True)  # 5x faster step on CPU
        precision = runtime.resolve_precision("auto", purpose="train")
        mlm.train()
        losses = []
        with progress(self.steps, "domain pre-training (MLM)", inputs.quiet) as bar:
            for step in range(self.steps):
                idx = rng.choice(len(texts), size=min(self.batch_size, len(texts)), replace=False)
                batch = collator([{"input_ids": enc["input_ids"][i]} for i in idx])
                with runtime.compute(precision, "train"):
                    loss = mlm_loss(mlm, batch["input_ids"], (batch["input_ids"] != tok.pad_token_id).long(),
                                    batch["labels"])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(mlm.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                bar.advance(1, loss=float(np.mean(losses[-20:])))
        out_dir = (inputs.work_dir / "adapted").resolve()  # absolute: resumable from any directory
        mlm.base_model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
        out = recipe.set("model.name", str(out_dir))
        out.extra_examples += self.steps * min(self.batch_size, len(texts))
        out.changes.append({"action": self.name, "texts": len(texts), "steps": self.steps,
                            "mlm_loss": [float(np.mean(losses[:20])), float(np.mean(losses[-20:]))],
                            "encoder": str(out_dir)})
        return out
