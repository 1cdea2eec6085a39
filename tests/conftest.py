"""Shared fixtures: a tiny BERT (2 layers, hidden 32) and a tiny causal LM saved as local model
directories, and small synthetic classification / NER / question-answering datasets a model can
learn in a few epochs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = {
    "pos": ["great", "good", "love", "happy", "nice", "excellent"],
    "neg": ["bad", "awful", "hate", "sad", "poor", "terrible"],
    "neu": ["table", "chair", "blue", "walk", "paper", "window"],
}
FILLER = ["the", "a", "it", "was", "and", "so", "very", "this"]


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # Tiny models gain nothing from a second thread, and two busy processes on two cores make
    # OpenMP threads spin against each other (a 30x slow-down was seen here).
    import torch

    torch.set_num_threads(1)


def _tokenizer():
    from transformers import BertTokenizerFast

    from reflectlm.modeling import packaged_minilm

    return BertTokenizerFast.from_pretrained(packaged_minilm())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT encoder with the MiniLM vocabulary, random weights, saved like a hub model."""
    import torch
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tinybert")
    tok = _tokenizer()
    tok.save_pretrained(out)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A tiny causal LM: SmolLM2's real tokenizer and chat template on a random 2-layer Llama body."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from reflectlm import lm

    tok = AutoTokenizer.from_pretrained(lm.packaged_lm("smollm2"))
    out = tmp_path_factory.mktemp("tinylm")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_cls_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        y = list(WORDS)[i % 3]
        words = [rng.choice(WORDS[y]) for _ in range(rng.randint(2, 4))] + rng.sample(FILLER, rng.randint(0, 2))
        rng.shuffle(words)
        rows.append((" ".join(words) + f" n{i}", y))
    return rows


@pytest.fixture
def cls_csv(tmp_path) -> Path:
    path = tmp_path / "cls.csv"
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in make_cls_rows(240)), encoding="utf-8")
    return path


def make_ner_sentences(n: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    people = [["John", "Smith"], ["Mary"], ["Ann", "Lee"]]
    places = [["Paris"], ["New", "York"], ["Berlin"]]
    sents = []
    for _ in range(n):
        sent = [(w, "O") for w in rng.sample(FILLER, 3)]
        ent, kind = (rng.choice(people), "person") if rng.random() < 0.5 else (rng.choice(places), "location")
        sent += [(w, ("B-" if k == 0 else "I-") + kind) for k, w in enumerate(ent)]
        sent += [(w, "O") for w in rng.sample(FILLER, 2)]
        sents.append(sent)
    return sents


@pytest.fixture
def ner_conll(tmp_path) -> Path:
    path = tmp_path / "ner.conll"
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in make_ner_sentences(120)), encoding="utf-8")
    return path


QA_SLOTS = {"colour": ["red", "green", "blue", "white"], "animal": ["cat", "dog", "bird", "horse"],
            "place": ["lake", "hill", "farm", "town"]}


def make_qa_rows(n: int, seed: int = 0, long_every: int = 4, articles: int = 10, facts: int = 1) -> list[dict]:
    """SQuAD-layout questions on short paragraphs that state `facts` facts ("the colour is red3 .")
    among filler words; the question names the slot of one of them. One fact is what a tiny random
    BERT learns to point at in a few epochs (with three, picking the right one by the question takes
    it far longer). Every `long_every`-th paragraph has a long filler head, so the fact sits past a
    short window (several windows)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        order = rng.sample(list(QA_SLOTS), facts)
        facts_of = {k: rng.choice(QA_SLOTS[k]) + str(rng.randint(0, 9)) for k in order}
        head = " ".join(rng.choice(FILLER) for _ in range(rng.randint(30, 50) if long_every and i % long_every == 0
                                                                         else rng.randint(1, 4)))
        context = head + " " + " ".join(f"the {k} is {facts_of[k]} ." for k in order) + " " + rng.choice(FILLER)
        slot = rng.choice(order)
        start = context.index(f"the {slot} is ") + len(f"the {slot} is ")
        rows.append({"id": f"q{i}", "title": f"article{i % articles}", "question": f"what is the {slot} ?",
                     "context": context, "answers": {"text": [facts_of[slot]], "answer_start": [start]}})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def qa_jsonl(tmp_path) -> Path:
    return write_jsonl(tmp_path / "qa.jsonl", make_qa_rows(240))


# The tiny BERT knows 128 positions: QA windows of 64 tokens, 24 apart.
QA_DATA = {"max_length": 64, "doc_stride": 24}


@pytest.fixture
def tiny_config(tiny_bert_dir):
    """Build a validated Config for the tiny model: tiny_config(train_path, task, **train_overrides)."""
    from reflectlm.config import load_config

    def make(train: Path, task: str = "classification", **train_kw):
        tree = {
            "data": {"task": task, "train": str(train), "selection_fraction": 0.2, "test_fraction": 0.2,
                     **(QA_DATA if task == "qa" else {})},
            # dropout 0.1 (BERT's own): the random-init tiny model learns the toy tasks reliably
            # with it; the default (off) is chosen for pretrained encoders, measured on real data.
            "model": {"name": str(tiny_bert_dir), "dropout": 0.1},
            "train": {"epochs": 2, "batch_size": 16, "lr": 1e-2, "head_lr": 0.0, "telemetry_every": 2, "precision": "fp32",
                      **train_kw},
            "run": {"quiet": True},
        }
        return load_config(tree=tree)

    return make


def make_context(task: str = "classification", n: int = 60, classes=("a", "b", "c"), seed: int = 0, epochs: int = 4,
                 layers=("embeddings", "layer.0", "layer.1", "head"), steps: int = 12):
    """A synthetic diagnosis Context with every input filled, no model needed: probabilities
    that mostly agree with the labels, dynamics, gradient telemetry, a history, and fake
    predict / embed functions. n = 0 and one-class inputs are allowed (the contract test uses them)."""
    import hashlib

    import numpy as np

    from reflectlm.data import Dataset
    from reflectlm.diagnose.base import Context

    rng = np.random.default_rng(seed)
    classes = list(classes)
    if task == "ner":
        types = classes
        labels = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]

        def sentences(m, off):
            toks, tags = [], []
            for i in range(m):
                t = types[i % len(types)] if types else None
                words = ["w", f"x{off + i}", "y"]
                toks.append(words)
                tags.append(["O", f"B-{t}", "O"] if t else ["O", "O", "O"])
            return Dataset(task="ner", ids=[f"s{off + i}" for i in range(m)], labels=tags,
                           texts=[" ".join(w) for w in toks], tokens=toks, lines=list(range(1, m + 1)))

        train, selection = sentences(n, 0), sentences(max(n // 2, 0), 10_000)

        def probs_for(ds):
            out = []
            for tags in ds.labels:
                p = rng.dirichlet(np.ones(len(labels)), size=len(tags)).astype(np.float32) * 0.3
                for j, tag in enumerate(tags):
                    p[j, labels.index(tag)] += 0.7
                out.append(p / p.sum(1, keepdims=True))
            return out
    elif task == "qa":
        labels = []

        def sentences(m, off):
            rows = make_qa_rows(m if len(classes) != 1 else 4 * m, seed + off, long_every=0)
            if len(classes) == 1:  # one question type: colour questions only
                rows = [r for r in rows if "colour" in r["question"]][:m]
            return Dataset(task="qa", ids=[f"q{off + i}" for i in range(m)], labels=[r["answers"] for r in rows],
                           texts=[r["question"] for r in rows], tokens=None, lines=list(range(1, m + 1)),
                           fields={"context": [r["context"] for r in rows], "title": [r["title"] for r in rows]})

        train, selection = sentences(n, 0), sentences(max(n // 2, 0), 10_000)

        def answer(context: str, question: str, right: bool) -> dict:
            slot = question.split()[3] if len(question.split()) > 3 else "colour"
            at = context.find(f"the {slot} is ")
            other = context.find(" is ", at + 4) if not right else -1
            s = (other + 4 if other >= 0 else at + len(f"the {slot} is ")) if at >= 0 else 0
            e = context.find(" ", s) if context.find(" ", s) >= 0 else len(context)
            p = float(rng.uniform(0.5, 0.95))
            return {"text": context[s:e], "start": s, "end": e, "score": p, "gold_prob": None,
                    "candidates": [(context[s:e], s, e, p), ("x", 0, 1, 1.0 - p)]}

        def probs_for(ds):
            return [answer(c, q, rng.random() < 0.8) for q, c in zip(ds.texts, ds.fields["context"])]
    elif task == "translation":
        labels = []
        words = {"one": "eins", "two": "zwei", "three": "drei", "house": "Haus", "dog": "Hund", "red": "rot"}
        en = list(words)

        def sentences(m, off):
            src = [" ".join(en[(off + i + j) % len(en)] for j in range(3 + i % 3)) for i in range(m)]
            return Dataset(task="translation", ids=[f"t{off + i}" for i in range(m)],
                           labels=[[" ".join(words[w] for w in s.split())] for s in src], texts=src, tokens=None,
                           lines=list(range(2, m + 2)))

        train, selection = sentences(n, 0), sentences(max(n // 2, 0), 10_000)

        def probs_for(ds):
            # mostly right; every 5th copies its source, every 7th loops, every 9th is empty,
            # every 11th invents a name: the output checks' cases
            out = []
            for i, (src, refs) in enumerate(zip(ds.texts, ds.labels)):
                text = refs[0] if len(classes) != 1 else src
                if i % 5 == 4:
                    text = src
                elif i % 7 == 6:
                    text = " ".join([refs[0].split()[0]] * 12)
                elif i % 9 == 8:
                    text = ""
                elif i % 11 == 10:
                    text = refs[0] + " Berlin 1999"
                out.append({"text": text, "tokens": len(text.split()), "logprob": float(-rng.uniform(0.1, 2.0)),
                            "entropy": float(rng.uniform(0.1, 2.0)), "seconds": 0.01})
            return out
    else:
        labels = classes

        def make(m, off):
            ys = [classes[i % len(classes)] for i in range(m)] if classes else []
            return Dataset(task="classification", ids=[f"e{off + i}" for i in range(m)], labels=ys,
                           texts=[f"text {off + i} about {y}" for i, y in enumerate(ys)], tokens=None,
                           lines=list(range(2, m + 2)))

        train, selection = make(n, 0), make(max(n // 2, 0), 10_000)

        def probs_for(ds):
            C = len(labels)
            if len(ds) == 0 or C == 0:
                return np.zeros((len(ds), C), dtype=np.float32)
            p = rng.dirichlet(np.ones(C), size=len(ds)) * 0.4
            p[np.arange(len(ds)), [labels.index(y) for y in ds.labels]] += 0.6
            return (p / p.sum(1, keepdims=True)).astype(np.float32)

    E, N, L = epochs, len(train), len(layers)
    gold = np.clip(rng.uniform(0.3, 1.0, size=(E, N)) * np.linspace(0.7, 1.0, E)[:, None], 1e-4, 1).astype(np.float32)
    dynamics = {"ids": np.array(train.ids), "gold_prob": gold, "loss": -np.log(gold), "correct": (gold > 0.5).astype(np.float32)}
    grad = rng.uniform(0.5, 1.5, size=(steps, L)).astype(np.float32)
    weight = rng.uniform(5, 10, size=(steps, L)).astype(np.float32)
    gradients = {"layers": np.array(layers), "step": np.arange(1, steps + 1) * 10, "lr": np.full(steps, 1e-4, np.float32),
                 "loss": np.linspace(1.0, 0.3, steps).astype(np.float32), "grad_norm": grad, "weight_norm": weight,
                 "update_ratio": rng.uniform(1e-4, 1e-3, size=(steps, L)).astype(np.float32)}
    history = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "train_accuracy": 0.6 + 0.08 * e,
                "selection_loss": 1.1 / (e + 1) + 0.05, "selection_macro_f1": 0.55 + 0.07 * e,
                "selection_entity_f1": 0.4 + 0.05 * e} for e in range(E)]

    def predict_texts(texts):
        if task == "qa":  # raw inputs: {question, context}; the answer is right for 4 in 5 (by hash)
            return [answer(x["context"], x["question"], int(hashlib.sha1(x["question"].encode() + x["context"].encode())
                                                                .hexdigest(), 16) % 5 > 0) for x in texts]
        if task == "translation":
            return probs_for(Dataset(task="translation", ids=[str(i) for i in range(len(texts))],
                                     labels=[[t] for t in texts], texts=list(texts), tokens=None))
        if task == "ner":
            fake = Dataset(task="ner", ids=[str(i) for i in range(len(texts))], labels=[["O"] * len(t.split()) for t in texts],
                           texts=list(texts), tokens=[t.split() for t in texts])
            return probs_for(fake)
        C = len(labels)
        out = np.zeros((len(texts), C), dtype=np.float32)
        for i, t in enumerate(texts):
            h = int(hashlib.sha1(t.encode()).hexdigest(), 16)
            out[i, h % max(C, 1)] = 1.0 if C else 0.0
        return out

    def embed_texts(texts):
        vecs = np.array([np.random.default_rng(int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)).normal(size=16)
                         for t in texts], dtype=np.float32).reshape(len(texts), 16)
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)

    sel_probs = probs_for(selection)
    return Context(task=task, labels=labels, train=train, selection=selection, selection_probs=sel_probs,
                   selection_metrics=None, oof_probs=None if task in ("qa", "translation") else probs_for(train),
                   cv={"mode": "fast", "folds": 5, "fold_metrics": [0.8, 0.82, 0.79, 0.81, 0.8], "seconds": 1.0},
                   dynamics=dynamics, gradients=gradients, history=history,
                   train_config={"lr": 1e-4, "epochs": E, "freeze": "none"},
                   predict_texts=predict_texts, embed_texts=embed_texts, seed=seed,
                   options={"source_lang": "en", "target_lang": "de"} if task == "translation" else None)


def _train_tiny_run(root: Path, tiny_bert_dir: Path, task: str) -> Path:
    """A trained run directory of the tiny BERT (deploy tests export, serve and monitor it)."""
    from reflectlm.config import load_config
    from reflectlm.train import train

    if task == "ner":
        data = root / "ner.conll"
        data.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in make_ner_sentences(160)),
                        encoding="utf-8")
    elif task == "qa":
        data = write_jsonl(root / "qa.jsonl", make_qa_rows(300))
    else:
        data = root / "cls.csv"
        data.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in make_cls_rows(300)), encoding="utf-8")
    tree = {"data": {"task": task, "train": str(data), "selection_fraction": 0.25, "test_fraction": 0.15,
                     **(QA_DATA if task == "qa" else {})},
            "model": {"name": str(tiny_bert_dir), "dropout": 0.1},
            "train": {"epochs": 4, "batch_size": 16, "lr": 1e-2, "head_lr": 0.0, "telemetry_every": 0,
                      "precision": "fp32", "record_dynamics": False},
            "run": {"quiet": True}}
    return train(load_config(tree=tree), root / "run").run_dir


@pytest.fixture(scope="session")
def tiny_cls_run(tmp_path_factory, tiny_bert_dir) -> Path:
    return _train_tiny_run(tmp_path_factory.mktemp("cls-run"), tiny_bert_dir, "classification")


@pytest.fixture(scope="session")
def tiny_ner_run(tmp_path_factory, tiny_bert_dir) -> Path:
    return _train_tiny_run(tmp_path_factory.mktemp("ner-run"), tiny_bert_dir, "ner")


@pytest.fixture(scope="session")
def tiny_qa_run(tmp_path_factory, tiny_bert_dir) -> Path:
    return _train_tiny_run(tmp_path_factory.mktemp("qa-run"), tiny_bert_dir, "qa")


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray cluster for a test module (2 CPUs, no dashboard), shut down after it."""
    ray = pytest.importorskip("ray", reason="needs Ray: pip install reflectlm[distributed]")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def postgres_url():
    """A URL (with a password) of a fresh database on a PostgreSQL server started for this test
    session (tests/_postgres.py); skipped with the reason where no server can be started."""
    pytest.importorskip("psycopg")
    from _postgres import Postgres, Unavailable

    pg = None
    try:
        pg = Postgres()
        url = pg.start()
    except Unavailable as e:
        if pg is not None:
            pg.stop()
        pytest.skip(f"PostgreSQL is not available here: {e}")
    yield url
    pg.stop()


@pytest.fixture
def postgres_db(postgres_url):
    """A URL of a new, empty database on the session's PostgreSQL server (one per test)."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database,
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def first_plan(targets, inputs, recipe, cfg, run_dir, rejected, r, **budgets):
    """The planner's best plan for one challenger: (actions in the order they apply, the ranking,
    the finding kinds they address)."""
    from reflectlm.loop.planner import choose_plans

    plans, ranking = choose_plans(targets, inputs, recipe, cfg, run_dir, rejected, r, 1, **budgets)
    plan, addressed = plans[0] if plans else ([], [])
    return plan, ranking, addressed
