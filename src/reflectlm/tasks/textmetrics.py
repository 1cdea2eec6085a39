"""Metrics and output checks for generated text: ROUGE (rouge-score), BLEU and chrF (sacrebleu),
and the cheap signals of a bad output (empty, copied, repeating, inventing content).

Every metric is a fraction in [0, 1], as the other tasks' metrics are (sacrebleu prints BLEU and
chrF x 100; the report says so where it shows them).

- ROUGE-1/2/L: rouge_score's F-measure with the Porter stemmer on; with several references an
  example scores its best (as the DialogSum test split's three are used). The split's value is
  the mean over examples, so the per-example score is exactly what the A/B test resamples.
- chrF: sacrebleu's CHRF (character 6-grams, beta 2). The corpus score comes from the summed
  per-sentence n-gram statistics, not the mean of sentence scores: `chrf_stats` gives them per
  sentence (n, 18) and `chrf_from_stats` turns a sum (or many resampled sums at once) into the
  score, so the paired bootstrap resamples sentences and recomputes the corpus chrF, as
  sacrebleu's own paired bootstrap does (Koehn 2004).
- BLEU: sacrebleu's corpus BLEU (13a tokenisation), reported with its signature.

References: Lin 2004 (ROUGE); Popovic 2015 (chrF); Papineni et al. 2002 (BLEU); Post 2018
(sacreBLEU and signatures); Koehn 2004 (paired bootstrap resampling for MT).
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import numpy as np

CHRF_ORDER = 6  # sacrebleu's default character order (word order 0: chrF, not chrF++)
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]{2,}\b")


@lru_cache(maxsize=2)
def _rouge(types: tuple[str, ...]):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(types), use_stemmer=True)


def rouge(predictions: list[str], references: list[list[str]]) -> dict[str, np.ndarray]:
    """Per-example ROUGE-1, ROUGE-2 and ROUGE-L F-measure, each (N,), best over an example's references."""
    scorer = _rouge(("rouge1", "rouge2", "rougeL"))
    out = {k: np.zeros(len(predictions)) for k in ("rouge_1", "rouge_2", "rouge_l")}
    for i, (p, refs) in enumerate(zip(predictions, references)):
        best = {k: 0.0 for k in out}
        for r in refs:
            s = scorer.score(r, p)
            for key, name in (("rouge_1", "rouge1"), ("rouge_2", "rouge2"), ("rouge_l", "rougeL")):
                best[key] = max(best[key], s[name].fmeasure)
        for k in out:
            out[k][i] = best[k]
    return out


@lru_cache(maxsize=1)
def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


def chrf_stats(predictions: list[str], references: list[list[str]]) -> np.ndarray:
    """(N, 3 * 6) chrF statistics per sentence: [hypothesis n-grams, reference n-grams, matches] for
    character orders 1-6. With several references a sentence keeps the one sacrebleu picks (the best)."""
    if not predictions:
        return np.zeros((0, 3 * CHRF_ORDER))
    n_refs = max(len(r) for r in references)
    # sacrebleu takes references as streams: stream k holds every sentence's k-th reference.
    streams = [[refs[k] if k < len(refs) else refs[0] for refs in references] for k in range(n_refs)]
    return np.asarray(_chrf()._extract_corpus_statistics(list(predictions), streams), dtype=np.float64)


def chrf_from_stats(stats: np.ndarray) -> np.ndarray:
    """chrF in [0, 1] from summed statistics: (18,) -> (), or (k, 18) -> (k,): sacrebleu's formula
    (beta 2, the mean precision and recall over the orders where both sides have n-grams), vectorised."""
    s = np.asarray(stats, dtype=np.float64)
    one = s.ndim == 1
    s = s.reshape(-1, CHRF_ORDER, 3)  # (k, orders, [hyp, ref, match])
    hyp, ref, match = s[..., 0], s[..., 1], s[..., 2]
    both = (hyp > 0) & (ref > 0)
    prec = np.divide(match, hyp, out=np.zeros_like(match), where=hyp > 0)
    rec = np.divide(match, ref, out=np.zeros_like(match), where=ref > 0)
    k = both.sum(1)
    avg_p = np.divide((prec * both).sum(1), k, out=np.zeros(len(s)), where=k > 0)
    avg_r = np.divide((rec * both).sum(1), k, out=np.zeros(len(s)), where=k > 0)
    beta2 = 4.0
    denom = beta2 * avg_p + avg_r
    f = np.divide((1 + beta2) * avg_p * avg_r, denom, out=np.zeros(len(s)), where=denom > 0)
    return f[0] if one else f


def sentence_chrf(stats: np.ndarray) -> np.ndarray:
    """(N,) each sentence's own chrF in [0, 1] (what the diagnosis ranks examples by)."""
    return chrf_from_stats(stats) if len(stats) else np.zeros(0)


def bleu(predictions: list[str], references: list[list[str]]) -> tuple[float, str]:
    """Corpus BLEU in [0, 1] and sacrebleu's signature."""
    from sacrebleu.metrics import BLEU

    if not predictions:
        return 0.0, ""
    n_refs = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else refs[0] for refs in references] for k in range(n_refs)]
    b = BLEU()
    return float(b.corpus_score(list(predictions), streams).score) / 100.0, str(b.get_signature())


def chrf_signature() -> str:
    return str(_chrf().get_signature())


# --------------------------------------------------------------------------- output checks


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def repetition(text: str, n: int = 3) -> float:
    """The share of the output's word n-grams that repeat an earlier one, in [0, 1] (a loop scores high)."""
    w = words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def copy_rate(output: str, source: str, n: int = 4) -> float:
    """The share of the output's word 4-grams found in the source, in [0, 1]: high = copied (an
    untranslated sentence; an extract instead of a summary)."""
    w, s = words(output), words(source)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    if not grams:
        return float(bool(w) and all(x in set(s) for x in w))  # short outputs: every word from the source
    have = Counter(tuple(s[i:i + n]) for i in range(len(s) - n + 1))
    return sum(1 for g in grams if have[g]) / len(grams)


def unsupported(output: str, source: str) -> list[str]:
    """Numbers and capitalised names in the output that the source never mentions (the cheap
    hallucination signal): case-insensitive against the source's words and numbers."""
    src_words = set(words(source))
    src_numbers = set(_NUMBER.findall(source))
    found = [x for x in _NUMBER.findall(output) if x not in src_numbers]
    found += [x for x in _CAPITALISED.findall(output) if x.lower() not in src_words]
    return list(dict.fromkeys(found))


@lru_cache(maxsize=4)
def _detector(languages: tuple[str, ...]):
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = [getattr(IsoCode639_1, c.upper()) for c in languages]
    return LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_preloaded_language_models().build()


def languages(texts: list[str], candidates: tuple[str, ...]) -> list[str | None]:
    """Each text's language among the ISO 639-1 codes `candidates` (lingua), None when it cannot tell
    (an empty or too short text)."""
    det = _detector(tuple(sorted(set(candidates))))
    out = []
    for t in texts:
        lang = det.detect_language_of(t) if t.strip() else None
        out.append(None if lang is None else lang.iso_code_639_1.name.lower())
    return out
