"""Extractive QA on SQuAD v1.1: our fine-tuning and loop vs Hugging Face's run_qa recipe and QA pipeline.

    python benchmarks/qa.py                     # every part not yet in --out (about 3 hours on 2 cores)
    python benchmarks/qa.py --parts ours,trainer  # only these (gemm, ours, trainer, pipeline, loop)
    python benchmarks/qa.py --redo --parts loop   # measure a part again
    python benchmarks/qa.py --quick             # 2 articles, 300 dev questions, 1 epoch: minutes, a smoke run
    python benchmarks/qa.py --merge-only        # recompute the summary of --out

MiniLM (all-MiniLM-L6-v2) with a span head on the shared SQuAD v1.1 train questions (26 articles);
configs/squad.toml says how: 384-token windows 128 tokens apart, the selection split (10 %) cut
by article from train, the official dev set (10,570 questions, up to 6 references each) only
reported. Each part runs in its own process and lands in --out when it ends, so an interrupted
run resumes where it stopped:

  gemm      this machine's GEMM peak, a 2048^3 matmul in fp32 and bf16 (train_throughput.gemm_peak);
  ours      `reflectlm train configs/squad.toml`: dev EM / F1, training windows/s, utilisation (useful
            model FLOP/s of real, non-padding tokens over the GEMM peak of the precision it trained
            in; train_throughput.model_flops), and inference: `reflectlm.predict`'s path (raw
            question + context to answer text, precision "auto") over every dev question;
  trainer   the same model, windows, epochs and hyperparameters with transformers' Trainer as the
            run_qa example sets it up: windows padded to max_length (run_qa's default), [CLS] for
            an answer outside the window, the same optimizer groups (body lr, head lr, no decay on
            biases and norms: reflectlm.train.param_groups) and linear schedule with 6 % warmup,
            gradient clipping 1.0, dropout off, bf16 autocast where ours trained in bf16, seed 42;
            answers by run_qa's post-processing (top 20 start x end logits per window, answers at
            most 30 tokens, best start + end logit). Both sides are scored by the same official
            SQuAD v1.1 EM / F1 (reflectlm.tasks.qa). It trains on the same training questions (the
            selection split is left out; ours uses it to pick the epoch, the Trainer keeps its last);
  pipeline  transformers' pipeline("question-answering") on ours' trained model over every dev
            question, at its defaults (one question a call) and with batch_size=32, with ours'
            window settings (max_seq_len 384, doc_stride 128, max_answer_len 30). transformers 5.3
            removed that pipeline, so this part runs in its own environment with transformers
            5.2.0 (the last release that has it) and the same torch: --peer-python, else a venv
            made at .cache/qa-peer-venv. The peer is the faster set-up;
  loop      `reflectlm run configs/squad.toml` (3 rounds after round 0, patience 2), every round's
            model kept, then scored on dev beside the champion it was judged against. The loop
            itself sees only train and the selection split.

Samples/s counts training windows (the same windows on both sides) over the wall time of the
training call. F1 and EM are reported x 100, as the official script prints them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

REPO = HERE.parent
CONFIG = REPO / "configs" / "squad.toml"
PARTS = ("gemm", "ours", "trainer", "pipeline", "loop")
PEER_TRANSFORMERS = "5.2.0"  # the last transformers with pipeline("question-answering")
PIPELINE_SETUPS = {"pipeline": None, "pipeline_b32": 32}  # name -> batch_size (None: the default)
LOOP = {"rounds": 3, "patience": 2, "keep_models": True}


# ------------------------------------------------------------------ the setting


def _data_paths(work: Path, quick: bool) -> tuple[str, str]:
    """Train and dev files: the shared ones, or (--quick) two articles and 300 dev questions."""
    from reflectlm.config import data_root

    root = data_root() / "squad_v1.1"
    if not quick:
        return str(root / "train.jsonl"), str(root / "dev.jsonl")
    work.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (root / "train.jsonl").open(encoding="utf-8")]
    titles = list(dict.fromkeys(r["title"] for r in rows))[:2]
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["title"] in titles))
    dev = [json.loads(line) for _, line in zip(range(300), (root / "dev.jsonl").open(encoding="utf-8"))]
    (work / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev))
    return str(work / "train.jsonl"), str(work / "dev.jsonl")


def config(work: Path, quick: bool, name: str, loop: bool = False):
    """configs/squad.toml on this run's files, writing under work/."""
    from reflectlm.config import load_config

    train, dev = _data_paths(work, quick)
    sets = [f'data.train="{train}"', f'data.test="{dev}"', 'data.id_column="id"', f'run.output_dir="{work}"',
            f'run.name="{name}"', "run.quiet=true"]
    if quick:
        sets += ["train.epochs=1"]
    if loop:
        sets += [f"loop.{k}={str(v).lower()}" for k, v in LOOP.items()] + ["loop.report=true"]
    return load_config(CONFIG, overrides=sets)


def dev_set(cfg):
    from reflectlm.data import load

    return load(cfg.data.test, "qa", id_column="id")


def _items(ds) -> list[dict]:
    return [{"question": q, "context": c} for q, c in zip(ds.texts, ds.fields["context"])]


def _scores(ds, texts: list[str]) -> dict:
    """Official EM and F1 (x 100) of predicted answer texts."""
    from reflectlm.tasks import qa

    em, f1 = qa.scores(ds, [{"text": t} for t in texts])
    return {"exact_match": round(100 * float(em.mean()), 2), "f1": round(100 * float(f1.mean()), 2)}


# ------------------------------------------------------------------ parts


def part_gemm(work: Path, quick: bool) -> dict:
    from train_throughput import gemm_peak

    return {"gflops": {k: round(v, 1) for k, v in gemm_peak().items()}}


def part_ours(work: Path, quick: bool) -> dict:
    from train_throughput import model_flops, model_shape

    from reflectlm import rundir
    from reflectlm.evaluate import bundle_probs
    from reflectlm.modeling import load_bundle
    from reflectlm.tasks import get_task
    from reflectlm.train import encode, train

    cfg = config(work, quick, "ours")
    run = work / "ours"
    if not (run / rundir.METRICS).is_file():  # an interrupted invocation left no finished run
        if run.exists():
            import shutil

            shutil.rmtree(run)
        train(cfg)
    metrics = rundir.read_json(run / rundir.METRICS)
    bundle = load_bundle(run / rundir.MODEL)
    from reflectlm.data import load_splits

    splits = load_splits(cfg.data, cfg.train.seed)
    feats = encode(bundle, cfg, splits.train, splits.labels)
    epochs_run = metrics["examples_trained"] / len(feats)
    useful = epochs_run * model_flops([len(f["input_ids"]) for f in feats], **model_shape(bundle.model))

    dev = dev_set(cfg)
    items = _items(dev)
    task = get_task("qa")
    bundle_probs(bundle, items[:32])  # warm-up: kernel selection and allocation
    t0 = time.perf_counter()
    answers = [r["answer"] for r in task.readable(items, bundle_probs(bundle, items), bundle.labels)]
    infer_s = time.perf_counter() - t0
    (work / "ours_answers.json").write_text(json.dumps(answers))
    test = metrics["test"]
    return {"dev": {"f1": round(100 * test["f1"], 2), "exact_match": round(100 * test["exact_match"], 2),
                    "per_question_type": {k: round(100 * v["f1"], 2) for k, v in test["per_question_type"].items()}},
            "selection": {k: round(100 * metrics["selection"][k], 2) for k in ("f1", "exact_match")},
            "best_epoch": metrics["best_epoch"], "epochs": cfg.train.epochs, "precision": metrics["precision"],
            "attention": metrics["attention"], "train_windows": len(feats), "train_questions": len(splits.train),
            "selection_questions": len(splits.selection), "windows_trained": metrics["examples_trained"],
            "train_seconds": round(metrics["train_seconds"], 1),
            "samples_per_s": round(metrics["train_samples_per_s"], 2),
            "model_gflops": round(useful / metrics["train_seconds"] / 1e9, 1),
            "infer": {"questions": len(items), "seconds": round(infer_s, 1),
                      "questions_per_s": round(len(items) / infer_s, 2), "dev": _scores(dev, answers)}}


def _train_windows(tok, ds, max_length: int, stride: int):
    """run_qa's prepare_train_features: windows padded to max_length, start / end token of the
    first answer, [CLS] where the answer is not inside the window."""
    enc = tok([q.lstrip() for q in ds.texts], list(ds.fields["context"]), truncation="only_second",
              max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
              padding="max_length")
    rows = []
    for k, ids in enumerate(enc["input_ids"]):
        ans = ds.labels[enc["overflow_to_sample_mapping"][k]]
        cls, seq, offsets = ids.index(tok.cls_token_id), enc.sequence_ids(k), enc["offset_mapping"][k]
        s_char = ans["answer_start"][0]
        e_char = s_char + len(ans["text"][0])
        first = seq.index(1)
        last = len(seq) - 1 - seq[::-1].index(1)
        if not (offsets[first][0] <= s_char and offsets[last][1] >= e_char):
            start = end = cls
        else:
            start = first
            while start <= last and offsets[start][0] <= s_char:
                start += 1
            start -= 1
            end = last
            while end >= first and offsets[end][1] >= e_char:
                end -= 1
            end += 1
        row = {"input_ids": ids, "attention_mask": enc["attention_mask"][k], "start_positions": start,
               "end_positions": end}
        if "token_type_ids" in enc:
            row["token_type_ids"] = enc["token_type_ids"][k]
        rows.append(row)
    return rows


def _eval_windows(tok, ds, max_length: int, stride: int):
    """run_qa's prepare_validation_features: the question each window belongs to, and offsets kept
    for context tokens only."""
    enc = tok([q.lstrip() for q in ds.texts], list(ds.fields["context"]), truncation="only_second",
              max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
              padding="max_length")
    rows, example, offsets = [], [], []
    for k, ids in enumerate(enc["input_ids"]):
        seq = enc.sequence_ids(k)
        row = {"input_ids": ids, "attention_mask": enc["attention_mask"][k]}
        if "token_type_ids" in enc:
            row["token_type_ids"] = enc["token_type_ids"][k]
        rows.append(row)
        example.append(enc["overflow_to_sample_mapping"][k])
        offsets.append([o if seq[t] == 1 else None for t, o in enumerate(enc["offset_mapping"][k])])
    return rows, example, offsets


def _postprocess(ds, example, offsets, start_logits, end_logits, n_best: int = 20, max_answer: int = 30):
    """run_qa's postprocess_qa_predictions (SQuAD v1: no null answer): per question, the best
    start + end logit over the top n_best starts and ends of each of its windows."""
    import numpy as np

    best: dict[int, tuple[float, str]] = {}
    for k, i in enumerate(example):
        s_log, e_log, off = start_logits[k], end_logits[k], offsets[k]
        context = ds.fields["context"][i]
        for s in np.argsort(s_log)[-1: -n_best - 1: -1]:
            for e in np.argsort(e_log)[-1: -n_best - 1: -1]:
                if s >= len(off) or e >= len(off) or off[s] is None or off[e] is None:
                    continue
                if e < s or e - s + 1 > max_answer:
                    continue
                score = float(s_log[s] + e_log[e])
                if i not in best or score > best[i][0]:
                    best[i] = (score, context[off[s][0]: off[e][1]])
    return [best.get(i, (0.0, ""))[1] for i in range(len(ds))]


def part_trainer(work: Path, quick: bool) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Trainer, TrainingArguments
    from transformers.optimization import get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    from reflectlm.data import load_splits
    from reflectlm.modeling import packaged_minilm
    from reflectlm.train import make_optimizer, param_groups

    hf_logging.set_verbosity_error()
    cfg = config(work, quick, "trainer")
    ours = json.loads((work / "parts.json").read_text())["ours"]  # its precision decides bf16 for both
    tc, dc = cfg.train, cfg.data
    splits = load_splits(dc, tc.seed)
    path = packaged_minilm()
    tok = AutoTokenizer.from_pretrained(path)
    rows = _train_windows(tok, splits.train, dc.max_length, dc.doc_stride)
    if len(rows) != ours["train_windows"]:
        raise SystemExit(f"the recipe cut {len(rows)} training windows, ours {ours['train_windows']}: not alike")
    torch.manual_seed(tc.seed)
    model = AutoModelForQuestionAnswering.from_pretrained(path, hidden_dropout_prob=0.0,
                                                          attention_probs_dropout_prob=0.0)
    optimizer = make_optimizer(param_groups(model, tc), tc)
    steps = math.ceil(len(rows) / tc.batch_size) * tc.epochs
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(tc.warmup_ratio * steps), steps)
    bf16 = ours["precision"] == "bf16"
    args = TrainingArguments(output_dir=str(work / "trainer-out"), num_train_epochs=tc.epochs,
                             per_device_train_batch_size=tc.batch_size, per_device_eval_batch_size=128,
                             max_grad_norm=tc.max_grad_norm, bf16=bf16, use_cpu=True, seed=tc.seed, report_to=[],
                             save_strategy="no", logging_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows, optimizers=(optimizer, schedule))
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    dev = dev_set(cfg)
    eval_rows, example, offsets = _eval_windows(tok, dev, dc.max_length, dc.doc_stride)
    out = trainer.predict(eval_rows)
    start_logits, end_logits = (np.asarray(x, dtype=np.float32) for x in out.predictions)
    answers = _postprocess(dev, example, offsets, start_logits, end_logits, dc.n_best, dc.max_answer_tokens)
    (work / "trainer_answers.json").write_text(json.dumps(answers))
    return {"dev": _scores(dev, answers), "train_windows": len(rows), "windows_trained": len(rows) * tc.epochs,
            "train_seconds": round(train_s, 1), "samples_per_s": round(len(rows) * tc.epochs / train_s, 2),
            "precision": "bf16" if bf16 else "fp32", "padding": "max_length",
            "hyperparameters": {"epochs": tc.epochs, "batch_size": tc.batch_size, "lr": tc.lr, "head_lr": tc.head_lr,
                                "weight_decay": tc.weight_decay, "warmup_ratio": tc.warmup_ratio,
                                "max_grad_norm": tc.max_grad_norm, "seed": tc.seed, "dropout": 0.0}}


def part_loop(work: Path, quick: bool) -> dict:
    from reflectlm import rundir
    from reflectlm.evaluate import evaluate_bundle
    from reflectlm.loop import improve
    from reflectlm.modeling import load_bundle

    cfg = config(work, quick, "loop", loop=True)
    again = (work / "loop" / rundir.RUN).is_file()
    t0 = time.time()
    result = improve(cfg, resume=again, quiet=True)
    s = result.summary
    dev = dev_set(cfg)
    f1: dict[int, float] = {}
    for r in s["rounds"]:
        model = rundir.round_dir(result.run_dir, r["round"]) / rundir.MODEL
        if model.is_dir():
            f1[r["round"]] = round(100 * evaluate_bundle(load_bundle(model), dev).metrics["f1"], 2)
    rounds, champion = [], 0
    for r in s["rounds"]:
        row = {k: r.get(k) for k in ("round", "actions", "promoted", "difference", "ci_low", "ci_high", "reason",
                                     "examples_trained")}
        row["selection_f1"] = None if r.get("selection") is None else round(100 * r["selection"], 2)
        row["dev_f1"] = f1.get(r["round"])
        if r["round"] > 0:
            row["judged_against"] = champion
            row["decision"] = "promoted" if r["promoted"] else "kept champion"
            row["dev_f1_change"] = (None if f1.get(r["round"]) is None or f1.get(champion) is None
                                    else round(f1[r["round"]] - f1[champion], 2))
            if r["promoted"]:
                champion = r["round"]
        rounds.append(row)
    return {"rounds": rounds, "champion_round": s["champion_round"], "stop_reason": s["stop_reason"],
            "round0_dev_f1": f1.get(0), "champion_dev_f1": f1.get(s["champion_round"]),
            "examples_trained": s["examples_trained"], "run_dir": os.path.relpath(result.run_dir, work),
            "seconds": round(time.time() - t0, 1)}


def part_pipeline(work: Path, quick: bool) -> dict:
    """In the peer environment (no reflectlm there): times the pipeline, writes its answers."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    spec = json.loads((work / "pipeline_in.json").read_text())
    model_dir, items = spec["model"], spec["items"]
    pipe = pipeline("question-answering", model=AutoModelForQuestionAnswering.from_pretrained(model_dir),
                    tokenizer=AutoTokenizer.from_pretrained(model_dir), device=torch.device("cpu"))
    window = {"max_seq_len": spec["max_length"], "doc_stride": spec["doc_stride"],
              "max_answer_len": spec["max_answer_tokens"]}
    out = {}
    for name, batch in PIPELINE_SETUPS.items():
        kw = {**window, **({} if batch is None else {"batch_size": batch})}

        def call(xs):
            res = pipe(question=[x["question"] for x in xs], context=[x["context"] for x in xs], **kw)
            return [r["answer"] for r in (res if isinstance(res, list) else [res])]

        call(items[:32])  # warm-up
        t0 = time.perf_counter()
        answers = call(items)
        seconds = time.perf_counter() - t0
        (work / f"{name}_answers.json").write_text(json.dumps(answers))
        out[name] = {"questions_per_s": round(len(items) / seconds, 2), "seconds": round(seconds, 1),
                     "batch_size": batch or 1}
    import transformers

    out["versions"] = {"transformers": transformers.__version__, "torch": torch.__version__}
    return out


def _peer_python(work: Path, given: str | None) -> str:
    """A Python with transformers 5.2.0 and this environment's torch (made once, then reused)."""
    if given:
        return given
    venv = REPO / ".cache" / "qa-peer-venv"
    py = venv / "bin" / "python"
    if not py.is_file():
        import torch

        torch_version = torch.__version__.split("+")[0]
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"torch=={torch_version}",
                        f"transformers=={PEER_TRANSFORMERS}"], check=True)
    return str(py)


def run_pipeline(work: Path, quick: bool, peer: str | None) -> dict:
    """The pipeline part: inputs from here, timings from the peer environment, scores here."""
    from reflectlm import rundir
    from reflectlm.tasks import get_task

    cfg = config(work, quick, "ours")
    dev = dev_set(cfg)
    items = _items(dev)
    (work / "pipeline_in.json").write_text(json.dumps({
        "model": str(work / "ours" / rundir.MODEL), "items": items, "max_length": cfg.data.max_length,
        "doc_stride": cfg.data.doc_stride, "max_answer_tokens": cfg.data.max_answer_tokens}))
    res = _child("pipeline", work, quick, python=_peer_python(work, peer))
    ours = json.loads((work / "ours_answers.json").read_text())
    task = get_task("qa")
    for name in PIPELINE_SETUPS:
        answers = json.loads((work / f"{name}_answers.json").read_text())
        res[name]["dev"] = _scores(dev, answers)
        res[name]["agreement_with_ours"] = round(task.agreement([{"text": a} for a in answers],
                                                                [{"text": a} for a in ours]), 4)
    return res


CHILDREN = {"gemm": part_gemm, "ours": part_ours, "trainer": part_trainer, "loop": part_loop,
            "pipeline": part_pipeline}


def _child(part: str, work: Path, quick: bool, python: str | None = None) -> dict:
    cmd = [python or sys.executable, __file__, "--child", part, "--workdir", str(work)] + (["--quick"] if quick else [])
    env = {**os.environ, "USE_HUB_KERNELS": "NO"} if python else None
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"part {part} failed (exit {proc.returncode}); its error is above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ summary


def summary(parts: dict) -> dict:
    """The keys the checks read, from whichever parts have run."""
    out: dict = {}
    ours, trainer, pipe, gemm, loop = (parts.get(k) for k in ("ours", "trainer", "pipeline", "gemm", "loop"))
    if ours:
        out["dev"] = {"f1": ours["dev"]["f1"], "exact_match": ours["dev"]["exact_match"]}
        out["samples_per_s"] = ours["samples_per_s"]
        out["infer_questions_per_s"] = ours["infer"]["questions_per_s"]
    if ours and gemm:
        peak = gemm["gflops"].get(ours["precision"], gemm["gflops"]["fp32"])
        out["utilisation"] = round(ours["model_gflops"] / peak, 3)
        out["gemm_peak_gflops"] = peak
    if trainer:
        out["trainer"] = {"dev": trainer["dev"], "samples_per_s": trainer["samples_per_s"]}
    if ours and trainer:
        out["train_ratio_vs_trainer"] = round(ours["samples_per_s"] / trainer["samples_per_s"], 2)
        out["f1_minus_trainer"] = round(ours["dev"]["f1"] - trainer["dev"]["f1"], 2)
    if ours and pipe:
        peer = max(PIPELINE_SETUPS, key=lambda k: pipe[k]["questions_per_s"])
        out["pipeline"] = {"peer_setup": peer, "questions_per_s": pipe[peer]["questions_per_s"],
                           "dev": pipe[peer]["dev"], "agreement_with_ours": pipe[peer]["agreement_with_ours"]}
        out["infer_ratio_vs_pipeline"] = round(ours["infer"]["questions_per_s"] / pipe[peer]["questions_per_s"], 2)
    if loop:
        out["loop"] = {"rounds": loop["rounds"], "champion_round": loop["champion_round"],
                       "champion_dev_f1": loop["champion_dev_f1"], "stop_reason": loop["stop_reason"]}
    out["bars"] = {"dev_f1": ">= 65", "f1_minus_trainer": ">= -0.5", "train_ratio_vs_trainer": ">= 1.2",
                   "infer_ratio_vs_pipeline": ">= 2", "utilisation": ">= 0.5"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run (default: all)")
    ap.add_argument("--redo", action="store_true", help="run the parts even where --out already has them")
    ap.add_argument("--quick", action="store_true", help="a smoke run on 2 articles and 300 dev questions")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="runs and answers (default .cache/bench-qa, or .cache/bench-qa-quick)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results file (default benchmarks/results/qa.json; --quick: in the workdir)")
    ap.add_argument("--peer-python", default=None, help="a Python with transformers 5.2.0 for the pipeline part")
    ap.add_argument("--merge-only", action="store_true")
    args = ap.parse_args()
    work = (args.workdir or REPO / ".cache" / ("bench-qa-quick" if args.quick else "bench-qa")).resolve()
    if args.child:
        print(json.dumps(CHILDREN[args.child](work, args.quick)))
        return
    from provenance import Provenance, merged, relative

    out_path = args.out or (work / "qa.json" if args.quick else HERE / "results" / "qa.json")
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
        prov = Provenance(seeds=[42], command=sys.argv)
        (work / "parts.json").write_text(json.dumps(parts))  # what the later parts read (ours' precision)
        print(f"{part}: running", file=sys.stderr, flush=True)
        parts[part] = (run_pipeline(work, args.quick, args.peer_python) if part == "pipeline"
                       else _child(part, work, args.quick))
        parts[part]["provenance"] = prov.block()
        data = {**summary(parts), "parts": parts, "quick": args.quick}
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"{part}: {json.dumps(parts[part])[:400]}", file=sys.stderr, flush=True)
    data = {**summary(parts), "parts": parts, "quick": args.quick}
    data["provenance"] = merged({p: parts[p]["provenance"] for p in PARTS if p in parts and "provenance" in parts[p]})
    out_path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps({k: v for k, v in data.items() if k not in ("parts", "provenance")}, indent=2))


if __name__ == "__main__":
    main()
