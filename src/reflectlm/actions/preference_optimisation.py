"""preference_optimisation: direct preference optimisation (DPO, through trl) of a generator on
pairs of its own answers ranked by the task's metric. The champion samples k answers for a
random subset of the training inputs; for each input the best-scoring answer (by per-example
ROUGE-L or sentence chrF against the reference) is "chosen" and the worst "rejected", where their
scores differ by at least min_margin. trl's DPOTrainer then trains the champion's LoRA adapter on
the pairs, against a frozen copy of that adapter as the reference (trl's own handling of an
adapter it is given). A post-training step: it works on the trained model, like tune_decoding,
and later challengers keep it (each then learns from its own samples).

References: Rafailov et al. 2023 (DPO); Xu et al. 2024 (contrastive preference optimisation for
translation); Yuan et al. 2024 (self-rewarding LMs: preference pairs from the model's own samples).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import findings as K
from .base import SUPERIORITY, params_of


@dataclass(frozen=True)
class PreferenceOptimisation:
    name = "preference_optimisation"
    addresses = {K.ERROR_KINDS: 2, K.PLATEAU: 3, K.UNDERFITTING: None, K.UNSUPPORTED_CONTENT: 0, K.COPYING: 1,
                 K.REPETITION: 1, K.LENGTH_ERRORS: 2, K.WRONG_LANGUAGE: 2}
    mode = SUPERIORITY
    retrains = False
    requires = ("generates",)
    unprompted = ("listed", K.ERROR_KINDS)  # named in loop.actions: tried even where no error kind stands out

    inputs: int = 256  # training inputs sampled for
    k: int = 4  # samples per input
    temperature: float = 0.8
    top_p: float = 0.95
    min_margin: float = 0.05  # chosen's score minus rejected's, at least
    beta: float = 0.1  # DPO's KL strength
    lr: float = 5e-5
    epochs: int = 1
    batch_size: int = 8

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def unavailable(cls) -> str | None:
        import importlib.util

        if importlib.util.find_spec("trl") is None:
            return "trl is not installed: pip install 'reflectlm[generate]'"
        return None

    @classmethod
    def propose(cls, inputs, recipe):
        if inputs.champion_model is None or "generates" not in inputs.task.capabilities:
            return None
        return cls()

    def apply(self, recipe, inputs):
        if self.k < 2 or self.inputs < 1 or self.epochs < 1 or self.beta <= 0 or self.lr <= 0:
            raise ValueError("preference_optimisation needs k >= 2 (a pair), inputs >= 1, epochs >= 1, beta > 0 "
                             "and lr > 0")
        out = recipe.evolve(post=recipe.post + [{"action": self.name, "params": self.params()}])
        out.changes.append({"action": self.name, "post": "DPO on the model's own ranked samples (trl)",
                            **self.params()})
        return out

    def pairs(self, c) -> list[tuple[int, int, int]]:
        """(input, chosen sample, rejected sample) where the best and worst differ by min_margin."""
        out = []
        for i in range(len(c.samples)):
            s = c.sample_scores[i]
            hi, lo = int(s.argmax()), int(s.argmin())
            if s[hi] - s[lo] >= self.min_margin and c.samples[i][hi]["text"].strip():
                out.append((i, hi, lo))
        return out

    def transform(self, model, post) -> dict:
        """Sample, pair and train the bundle's adapter in place; the record of what it did."""
        from .candidates import draw

        bundle, cfg = post.bundle, post.cfg
        c = draw(bundle, post.splits.train, n=self.inputs, k=self.k, temperature=self.temperature, top_p=self.top_p,
                 seed=cfg.train.seed, batch_size=cfg.train.eval_batch_size, precision=cfg.train.precision)
        pairs = self.pairs(c)
        info = {**c.record(), "pairs": len(pairs), "beta": self.beta, "sampling_seconds": round(c.seconds, 1)}
        if not pairs:
            info["refused"] = f"no sampled pair differs by {self.min_margin} in score: nothing to prefer"
            return info
        info.update(train_dpo(bundle, c, pairs, self, cfg))
        return info


def train_dpo(bundle, c, pairs, action, cfg) -> dict:
    """trl's DPOTrainer over the pairs (prompts as the task renders them), the adapter trained in
    place and the reference adapter trl adds removed afterwards."""
    import tempfile
    import time

    from datasets import Dataset as HFDataset
    from trl import DPOConfig, DPOTrainer

    from .. import lm
    from ..errors import ModelError
    from ..evaluate import encode_bundle
    from ..runtime import resolve_precision

    if not lm.is_adapter(bundle.model):
        raise ModelError("preference_optimisation trains LoRA adapters; set model.lora.r > 0 (full fine-tuning by "
                         "DPO would need a second copy of the model as the reference)")
    feats = encode_bundle(bundle, c.ds, labelled=False)
    tok = bundle.tokenizer
    prompt = [tok.decode(feats[i]["input_ids"][: feats[i]["prompt_len"]]) for i, _, _ in pairs]
    rows = {"prompt": prompt, "chosen": [c.samples[i][a]["text"] for i, a, _ in pairs],
            "rejected": [c.samples[i][b]["text"] for i, _, b in pairs]}
    precision = resolve_precision(cfg.train.precision)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(output_dir=tmp, beta=action.beta, learning_rate=action.lr, num_train_epochs=action.epochs,
                         per_device_train_batch_size=action.batch_size, gradient_accumulation_steps=1,
                         bf16=precision == "bf16", use_cpu=str(next(bundle.model.parameters()).device) == "cpu",
                         report_to=[], save_strategy="no", logging_steps=10**6, seed=cfg.train.seed,
                         max_length=bundle.meta["max_length"] + int(bundle.meta["options"].get("max_new_tokens", 64)),
                         disable_tqdm=True, dataloader_num_workers=0, dataset_num_proc=None)
        trainer = DPOTrainer(model=bundle.model, args=args, train_dataset=HFDataset.from_dict(rows),
                             processing_class=tok)
        result = trainer.train()
    model = trainer.model
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
    model.set_adapter("default")
    bundle.model = model
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return {"dpo_seconds": round(time.time() - t0, 1), "steps": int(result.global_step),
            "train_loss": float(result.training_loss), "log": logs[-3:]}
