"""The self-improvement loop end to end on a tiny model: the run directory, decisions, the sealed
test split, learned action values across runs, kill-and-resume, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_cls_rows
from reflectlm.tasks import get_task

CHECKS = ["performance", "label_issues", "dynamics", "fit", "descent", "gradients", "calibration"]


def noisy_csv(path: Path, n: int = 300, noise: float = 0.15, seed: int = 1) -> Path:
    rng = random.Random(seed)
    rows = [(t, rng.choice(["pos", "neg", "neu"]) if rng.random() < noise else y) for t, y in make_cls_rows(n)]
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


def loop_tree(train: Path, model: Path, out: Path, **loop) -> dict:
    return {"data": {"task": "classification", "train": str(train), "selection_fraction": 0.2, "test_fraction": 0.2},
            "model": {"name": str(model)},
            "train": {"epochs": 3, "batch_size": 16, "lr": 1e-2, "head_lr": 0.0, "telemetry_every": 2,
                      "precision": "fp32", "threads": 1},
            "run": {"quiet": True, "output_dir": str(out)},
            "loop": {"rounds": 3, "patience": 3, "report": False, "checks": CHECKS, "n_bootstrap": 200, **loop}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_bert_dir):
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    tmp = tmp_path_factory.mktemp("loop")
    cfg = load_config(tree=loop_tree(noisy_csv(tmp / "cls.csv"), tiny_bert_dir, tmp / "runs"))
    return improve(cfg)


def test_run_directory_has_the_documented_files(finished_run):
    from reflectlm.loop import ROUND_FILES

    run = finished_run.run_dir
    top = {p.name for p in run.iterdir()}
    assert top == {"config.toml", "run.json", "store.sqlite", "champion", "summary.json", "rounds"}
    assert (run / "champion").resolve() == (run / "rounds" / f"{finished_run.champion_round:02d}").resolve()
    info = json.loads((run / "run.json").read_text())  # what the machine chose, and why
    assert info["precision"]["train"]["precision"] == "fp32" and info["precision"]["train"]["source"] == "config"
    assert info["cpu"]["cores"] >= 1
    rounds = sorted((run / "rounds").iterdir())
    assert [p.name for p in rounds] == ["00", "01", "02", "03"]
    for rd in rounds:
        d = json.loads((rd / "decision.json").read_text())
        files = {p.name for p in rd.iterdir()}
        must = {"config.toml", "run.json", "metrics.json", "dynamics.npz", "gradients.npz", "train.jsonl",
                "plan.json", "decision.json"}
        if d.get("no_op"):  # the plan changed nothing: recorded, not trained
            assert files == {"findings.json", "targets.json", "plan.json", "decision.json"}
            continue
        if d["round"] > 0:
            must |= {"findings.json", "targets.json", "compare.json"}
        kept = d["promoted"] or d.get("next_base") == d["round"]  # promoted, or the next round builds on it
        if kept:
            must |= {"model", "recipe.json"}
        assert must <= files, (rd.name, must - files)
        assert files <= set(f.rstrip("/") for f in ROUND_FILES), files - set(f.rstrip("/") for f in ROUND_FILES)
        assert ("model" in files) == kept  # other rejected challengers' weights are not kept


def test_every_round_is_decided_by_its_comparison(finished_run):
    run = finished_run.run_dir
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == finished_run.stop_reason == "round budget spent (3 rounds)"
    champion = 0
    for r in summary["rounds"][1:]:
        rd = run / "rounds" / f"{r['round']:02d}"
        if not (rd / "compare.json").exists():
            assert "changed nothing" in r["reason"] and not r["promoted"]
            continue
        cmp = json.loads((rd / "compare.json").read_text())
        plan = json.loads((rd / "plan.json").read_text())
        assert r["promoted"] == cmp["promote"]
        assert plan["actions"] and [a["action"] for a in plan["actions"]] == r["actions"]
        assert cmp["ci_low"] <= cmp["difference"] <= cmp["ci_high"] or cmp["ci_low"] == cmp["ci_high"]
        if r["promoted"]:
            # promoted only on a significant gain, or (calibrate / prune) when provably not worse
            assert cmp["ci_low"] > (0 if cmp["mode"] == "superiority" else -cmp["margin"])
            champion = r["round"]
    assert summary["champion_round"] == champion
    # The champion's selection metric is at least the baseline's: nothing worse was promoted.
    assert summary["selection"] >= summary["round0_selection"]
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0 and "round0_test" in summary


def test_store_records_each_round_and_the_action_values(finished_run):
    from reflectlm import store

    rows = store.rounds(finished_run.run_dir)
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    values = store.action_values(finished_run.run_dir.parent, "classification")
    tried = {a for r in finished_run.summary["rounds"][1:] for a in r["actions"]}
    assert {v.action for v in values} == tried
    for v in values:
        assert v.n >= 1 and np.isfinite(v.mean_gain)


def test_test_split_is_read_only_at_the_end(tmp_path, tiny_bert_dir, monkeypatch):
    """Every evaluation (early stopping inside training, the champion's diagnosis, the A/B test)
    sees only selection examples until every round is decided; then the test split, once."""
    import reflectlm.evaluate as ev
    import reflectlm.train as train_mod
    from reflectlm.config import load_config
    from reflectlm.data import load_splits
    from reflectlm.loop import improve

    runs = tmp_path / "runs"
    calls = []
    real = ev.evaluate_features

    def spy(model, ds, *a, **k):
        calls.append((set(ds.ids), len(list(runs.glob("*/rounds/*/decision.json")))))
        return real(model, ds, *a, **k)

    monkeypatch.setattr(ev, "evaluate_features", spy)
    monkeypatch.setattr(train_mod, "evaluate_features", spy)
    cfg = load_config(tree=loop_tree(noisy_csv(tmp_path / "cls.csv"), tiny_bert_dir, runs, rounds=2))
    res = improve(cfg)
    test_ids = set(load_splits(cfg.data, cfg.train.seed).test.ids)
    on_test = [decided for ids, decided in calls if ids & test_ids]
    assert on_test, "the champion was never evaluated on test"
    assert all(decided == len(res.summary["rounds"]) for decided in on_test), "test split read before the end"
    assert len(calls) > 2 * len(on_test)  # the spy saw the loop's own evaluations too


def test_learned_values_from_earlier_runs_rank_the_next_plan(tmp_path):
    """A workspace where `regularize` paid off before puts it first for the same findings."""
    from reflectlm import store
    from reflectlm.actions import ActionInputs, Recipe
    from reflectlm.config import load_config
    from reflectlm.data import Dataset
    from conftest import first_plan
    from reflectlm.reflect import Target

    targets = [Target("high_error_class", "performance", ["reweight_classes", "active_learning", "fix_labels"], 0.5,
                      0.05, "", ""),
               Target("overfitting", "fit", ["early_stop", "regularize", "augment_noise"], 0.3, 0.03, "", "")]
    ds = Dataset(task="classification", ids=["a", "b"], labels=["x", "y"], texts=["a a", "b b"], tokens=None)
    tree = {"data": {"train": "x.csv"}, "train": {"epochs": 3}, "model": {}}
    inputs = ActionInputs(task="classification", labels=["x", "y"], selection_metrics={"per_class": {}},
                          history=[{"epoch": 1, "selection_macro_f1": 0.5}, {"epoch": 2, "selection_macro_f1": 0.4}])
    cfg = load_config(tree={"data": {"train": "x.csv"}, "loop": {"exploration": "greedy", "max_actions": 1}})
    ws = tmp_path / "ws"
    fresh = ws / "run-b"
    fresh.mkdir(parents=True)
    plan, ranking, _ = first_plan(targets, inputs, Recipe(tree, ds), cfg, fresh, set(), 1)
    assert plan[0].name == "reweight_classes"  # the rules' prior alone

    old = ws / "run-a"
    old.mkdir()
    for r in (1, 2, 3):  # an earlier run in the same workspace: regularize helped three times
        store.record_round(old, {"round": r, "promoted": True, "selection": 0.9}, {"difference": 0.06},
                           [{"action": "regularize", "params": {}}], ["overfitting"], "classification")
        store.record_round(old, {"round": r + 3, "promoted": False, "selection": 0.8}, {"difference": -0.02},
                           [{"action": "reweight_classes", "params": {}}], ["high_error_class"], "classification")
    plan, ranking, _ = first_plan(targets, inputs, Recipe(tree, ds), cfg, fresh, set(), 1)
    assert plan[0].name == "regularize"
    row = next(x for x in ranking if x["action"] == "regularize")
    assert row["observed"] == 3 and row["observed_mean"] == pytest.approx(0.06)
    # Values are per task: an NER workspace's history does not leak into classification.
    assert store.action_values(ws, "ner") == []


def test_a_plan_that_would_overrun_the_compute_budget_is_left_out(tmp_path):
    """Masked-LM pre-training costs steps x batch examples on top of fine-tuning: with too little
    budget left, the next-best plan that fits is taken instead, and the ranking says why."""
    from reflectlm.actions import ActionInputs, Recipe, get_action
    from reflectlm.config import load_config
    from reflectlm.data import Dataset
    from reflectlm.loop import plan_cost
    from conftest import first_plan
    from reflectlm.reflect import Target

    ds = Dataset(task="classification", ids=[str(i) for i in range(100)], labels=["x", "y"] * 50,
                 texts=[f"t {i}" for i in range(100)], tokens=None)
    tree = {"data": {"train": "x.csv"}, "train": {"epochs": 3}, "model": {"kind": "transformer"}}
    recipe = Recipe(tree, ds)
    dp = get_action("domain_pretraining", steps=100, batch_size=32)
    assert plan_cost([dp], recipe) == 100 * 3 + 100 * 32
    assert plan_cost([get_action("more_epochs")], recipe) == 100 * 5  # 3 epochs x 1.5, rounded up
    assert plan_cost([get_action("calibrate")], recipe) == 0  # post-only: no training
    targets = [Target("underfitting", "fit", ["domain_pretraining", "more_epochs"], 0.5, 0.05, "", "")]
    inputs = ActionInputs(task="classification", labels=["x", "y"], selection_metrics={"per_class": {}},
                          history=[{"epoch": 3, "selection_macro_f1": 0.5}], work_dir=tmp_path)
    cfg = load_config(tree={"data": {"train": "x.csv"}, "loop": {"exploration": "greedy", "max_actions": 1,
                                                                  "action_params": {"domain_pretraining": {"steps": 100}}}})
    plan, _, _ = first_plan(targets, inputs, recipe, cfg, tmp_path, set(), 1)
    assert plan[0].name == "domain_pretraining"  # the rules rank it first
    plan, ranking, _ = first_plan(targets, inputs, recipe, cfg, tmp_path, set(), 1, examples_left=1000)
    assert [a.name for a in plan] == ["more_epochs"]
    row = next(x for x in ranking if x["action"] == "domain_pretraining")
    assert "3500 training examples" in row["skipped"] and "1000 are left" in row["skipped"]
    plan, _, _ = first_plan(targets, inputs, recipe, cfg, tmp_path, set(), 1, examples_left=400)
    assert plan == []  # nothing fits: the loop stops, saying the budget is spent
    # The same with time: 10 ms per example, 20 s left -> 3,500 examples (35 s) do not fit, 500 (5 s) do.
    plan, ranking, _ = first_plan(targets, inputs, recipe, cfg, tmp_path, set(), 1, seconds_left=20.0,
                                   seconds_per_example=0.01)
    assert [a.name for a in plan] == ["more_epochs"]
    row = next(x for x in ranking if x["action"] == "domain_pretraining")
    assert "about 35 s" in row["skipped"] and "20 s are left of loop.time_budget_s" in row["skipped"]


def test_the_loop_stops_when_no_plan_fits_the_compute_budget(tmp_path, tiny_bert_dir, capsys):
    """Active learning with an oracle is always worth a round, but 500 more labels x 3 epochs do
    not fit in what round 0 left of the budget: the loop says so instead of overrunning it."""
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    pool = tmp_path / "pool.csv"  # texts unlike the training set's (repeats are left out of a pool)
    pool.write_text("text,label\n" + "".join(f"{t} pool {k},{y}\n" for k, (t, y) in enumerate(make_cls_rows(120))),
                    encoding="utf-8")
    tree = loop_tree(noisy_csv(tmp_path / "cls.csv", n=150), tiny_bert_dir, tmp_path / "runs",
                     actions=["active_learning"], checks=["performance"], pool=str(pool), oracle="column",
                     pool_label_column="label", examples_budget=700)
    res = improve(load_config(tree=tree), quiet=False)
    # Who answers the queries is said plainly: the pool file's labels stand in for a person.
    assert "pool: 120 unlabelled examples; the labels active learning asks for (no limit) come from the pool " \
           "file's own label column, standing in for a person" in capsys.readouterr().out
    assert [r["round"] for r in res.summary["rounds"]] == [0]
    assert 2 * res.summary["examples_trained"] <= 700  # round 0 left room for a round like itself...
    assert res.stop_reason.startswith("compute budget spent: no applicable plan fits in the "), res.stop_reason


def test_value_posterior_moves_from_the_prior_to_the_data(tmp_path):
    from reflectlm import store

    mean, sd = store.posterior(0.05, [])
    assert mean == pytest.approx(0.05) and sd == pytest.approx(store.PRIOR_SD)
    mean, sd = store.posterior(0.05, [0.0] * 10)
    assert mean < 0.01 and sd < store.PRIOR_SD / 3  # data outweigh the prior


def _hash_dir(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_kill_mid_round_and_resume(tmp_path, tiny_bert_dir):
    """The process is SIGKILLed in the middle of round 2; --resume finishes the run without
    touching rounds 0 and 1 and redoes round 2 from its start."""
    tree = loop_tree(noisy_csv(tmp_path / "cls.csv"), tiny_bert_dir, tmp_path / "runs")
    tree["run"]["name"] = "killed"
    cfg_path = tmp_path / "loop.toml"
    cfg_path.write_text(_toml(tree), encoding="utf-8")
    env = {**os.environ, "REFLECTLM_DEBUG": "1"}
    cmd = [sys.executable, "-m", "reflectlm.cli", "run", str(cfg_path), "--quiet"]
    # The same command, with a hook that kills the process hard once round 2 has trained.
    killed = [sys.executable, "-c", KILL_AT.format(point="2:after_train"), "run", str(cfg_path), "--quiet"]
    p = subprocess.run(killed, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    run = tmp_path / "runs" / "killed"
    assert (run / "rounds" / "02").is_dir() and not (run / "rounds" / "02" / "decision.json").exists()
    before = {r: _hash_dir(run / "rounds" / r) for r in ("00", "01")}
    assert json.loads((run / "run.json").read_text())["status"] == "running"

    p = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert {r: _hash_dir(run / "rounds" / r) for r in ("00", "01")} == before  # never redone or rewritten
    summary = json.loads((run / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2, 3]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["resumed"] == 1
    from reflectlm import store

    assert [r["round"] for r in store.rounds(run)] == [0, 1, 2, 3]  # each round recorded once

    # The same run without a kill decides every round the same way (in its own workspace: the
    # killed run's action values would otherwise, rightly, change its plans).
    tree["run"].update(name="straight", output_dir=str(tmp_path / "other"))
    cfg_path.write_text(_toml(tree), encoding="utf-8")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    straight = json.loads((tmp_path / "other" / "straight" / "summary.json").read_text())
    key = [(r["actions"], r["promoted"], round(r["selection"], 6)) for r in summary["rounds"]]
    assert key == [(r["actions"], r["promoted"], round(r["selection"], 6)) for r in straight["rounds"]]


KILL_AT = """
import os, signal
from reflectlm.cli import main
from reflectlm.loop.round import CHECKPOINTS
CHECKPOINTS.append(lambda point: point == {point!r} and os.kill(os.getpid(), signal.SIGKILL))
main()
"""


def _toml(tree: dict) -> str:
    from reflectlm.config import dump_toml, load_config

    return dump_toml(load_config(tree=tree))


def test_resume_refuses_a_changed_config(tmp_path, finished_run):
    from reflectlm.config import load_config
    from reflectlm.loop import improve
    from reflectlm.train import RunError

    cfg = load_config(finished_run.run_dir / "config.toml", ["train.lr=0.5"])
    with pytest.raises(RunError, match=r"\[train\] section differs"):
        improve(cfg, finished_run.run_dir, resume=True)


def test_cli_run_prints_rounds_and_stops_on_target(tmp_path, tiny_bert_dir):
    tree = loop_tree(noisy_csv(tmp_path / "cls.csv"), tiny_bert_dir, tmp_path / "runs", target=0.0)
    cfg_path = tmp_path / "loop.toml"
    cfg_path.write_text(_toml(tree), encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "reflectlm.cli", "run", str(cfg_path), "--quiet"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "target reached" in p.stdout and "baseline" in p.stdout and "run directory:" in p.stdout


def test_queue_oracle_and_label_import(tmp_path, tiny_bert_dir):
    """Active learning with a person as the oracle: the loop queues pool examples, `reflectlm
    label import` reads the answers back, and the resumed run trains on them."""
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    rows = make_cls_rows(400, seed=3)
    pool = tmp_path / "pool.csv"
    pool.write_text("text\n" + "".join(f"{t} p\n" for t, _ in rows[300:]), encoding="utf-8")
    truth = {f"{t} p": y for t, y in rows[300:]}
    tree = loop_tree(noisy_csv(tmp_path / "cls.csv", noise=0.0), tiny_bert_dir, tmp_path / "runs", rounds=1,
                     pool=str(pool), oracle="queue", actions=["active_learning"])
    tree["run"]["name"] = "al"
    res = improve(load_config(tree=tree))
    queue = res.run_dir / "label_queue.csv"
    assert queue.is_file()
    import csv

    with queue.open() as fh:
        queued = list(csv.DictReader(fh))
    assert 0 < len(queued) <= 500 and all(r["label"] == "" for r in queued)
    filled = tmp_path / "filled.csv"
    with filled.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        w.writeheader()
        w.writerows({**r, "label": truth[r["text"]]} for r in queued[:20])
    p = subprocess.run([sys.executable, "-m", "reflectlm.cli", "label", "import", str(res.run_dir), str(filled)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "imported 20 new labels" in p.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text,label\n" + f"{queued[0]['id']},x,nonsense\n")
    p = subprocess.run([sys.executable, "-m", "reflectlm.cli", "label", "import", str(res.run_dir), str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "unknown label 'nonsense'" in p.stderr

    tree["loop"]["rounds"] = 2
    res2 = improve(load_config(tree=tree), res.run_dir, resume=True)
    plan = json.loads((res2.run_dir / "rounds" / "02" / "plan.json").read_text())
    al = next(c for c in plan["changes"] if c["action"] == "active_learning")
    assert al["labelled"] == 20 and al["oracle"] == "queue"
    train_ids = {json.loads(line)["id"] for line in (res2.run_dir / "rounds" / "02" / "train.jsonl").read_text().splitlines()}
    assert {r["id"] for r in queued[:20]} <= train_ids


def test_a_round_replays_exactly_from_its_plan(finished_run):
    """plan.json + findings.json + the champion's recipe give back exactly what the round trained on."""
    from reflectlm.loop import replay
    from reflectlm.rundir import load_train as _load_train

    run = finished_run.run_dir
    replayed = 0
    for r in (1, 2, 3):
        rd = run / "rounds" / f"{r:02d}"
        if not (rd / "train.jsonl").exists():
            continue  # a no-op round trained nothing
        recipe = replay(run, r)
        trained = _load_train(rd / "train.jsonl", get_task("classification"), "")
        assert recipe.train.ids == trained.ids and recipe.train.labels == trained.labels
        plan = json.loads((rd / "plan.json").read_text())
        assert json.loads(json.dumps(recipe.changes)) == plan["changes"]
        replayed += 1
    assert replayed >= 1


def test_a_promising_rejected_challenger_is_built_on_and_the_chain_is_tested_against_the_champion(
        tmp_path, tiny_bert_dir, monkeypatch):
    """Round 1 is rejected with a positive estimate (forced): round 2 builds on round 1's data and
    model - the same cleaning plan may run again there - and is compared with the champion, round
    0. Round 2 is rejected without promise (forced): round 3 is back on the champion, where round
    1's plan is not tried again. Replay and the saved state agree with what each round trained on."""
    from reflectlm import compare as compare_mod
    from reflectlm.config import load_config
    from reflectlm.loop import improve, replay
    from reflectlm.rundir import load_train as _load_train

    real = compare_mod.compare
    forced = {1: +0.02, 2: -0.01}
    seen_champion = {}

    def fake(y, champ_pred, chall_pred, **kw):
        res = real(y, champ_pred, chall_pred, **kw)
        r = kw["seed"]  # the loop seeds each round's test with train.seed + r (seed 0 here)
        seen_champion[r] = np.asarray(champ_pred).copy()
        if r in forced:
            res.difference, res.promote = forced[r], False
            res.reason = f"forced {forced[r]:+.2f}; rejected"
        return res

    monkeypatch.setattr(compare_mod, "compare", fake)
    tree = loop_tree(noisy_csv(tmp_path / "cls.csv", noise=0.25), tiny_bert_dir, tmp_path / "runs",
                     actions=["fix_labels", "drop_suspects", "reweight_classes", "regularize"], max_actions=1)
    tree["train"]["seed"] = 0
    res = improve(load_config(tree=tree))
    run = res.run_dir
    dec = {d["round"]: json.loads((run / "rounds" / f"{d['round']:02d}" / "decision.json").read_text())
           for d in res.summary["rounds"]}
    assert dec[1]["promoted"] is False and dec[1]["next_base"] == 1 and "builds on this one" in dec[1]["reason"]
    assert (run / "rounds" / "01" / "model").is_dir() and (run / "rounds" / "01" / "recipe.json").is_file()
    assert dec[2]["built_on"] == 1 and dec[2]["champion_round"] == 0
    # round 2 was judged against the champion (round 0), not against round 1
    np.testing.assert_array_equal(seen_champion[2], seen_champion[1])
    # round 2 started from round 1's training data
    t1 = _load_train(run / "rounds" / "01" / "train.jsonl", get_task("classification"), "")
    t2 = _load_train(run / "rounds" / "02" / "train.jsonl", get_task("classification"), "")
    r2 = replay(run, 2)
    assert r2.train.ids == t2.ids and r2.train.labels == t2.labels
    plan2 = json.loads((run / "rounds" / "02" / "plan.json").read_text())
    relabelled = {x["id"] for ch in plan2["changes"] if ch["action"] == "fix_labels" for x in ch["relabels"]}
    old = dict(zip(t1.ids, t1.labels))
    assert set(t2.ids) <= set(t1.ids)
    assert all(old[i] == y for i, y in zip(t2.ids, t2.labels) if i not in relabelled)
    if t1.weights is not None:  # e.g. round 1 weighted examples: round 2 keeps it
        w1 = dict(zip(t1.ids, t1.weights))
        assert t2.weights is not None and all(w1[i] == w for i, w in zip(t2.ids, t2.weights))
    # ... and from round 1's config: what round 1 changed there (e.g. class weights), round 2 trained with
    tree0 = json.loads((run / "rounds" / "00" / "recipe.json").read_text())["tree"]["train"]
    tree1 = json.loads((run / "rounds" / "01" / "recipe.json").read_text())["tree"]["train"]
    changed = {k for k in tree1 if tree1[k] != tree0.get(k)}
    base0 = _load_train(run / "rounds" / "00" / "train.jsonl", get_task("classification"), "")
    assert changed or (t1.ids, t1.labels) != (base0.ids, base0.labels)  # round 1 changed something
    trained2 = load_config(run / "rounds" / "02" / "config.toml").model_dump()["train"]
    # ... except the keys round 2's own plan set again (reweight_classes re-read on round 1's model,
    # regularize stepping up): each action records the keys it set, by name, in plan.json's changes
    reset2 = {k for ch in plan2["changes"] for k in ch} & changed
    assert all(trained2[k] == tree1[k] for k in changed - reset2), (changed, reset2)
    # round 2 was forced negative: the chain ends; round 3 is built on the champion again
    assert dec[2]["next_base"] == 0 and not (run / "rounds" / "02" / "model").exists()
    if 3 in dec:
        assert dec[3]["built_on"] == 0
        t0 = _load_train(run / "rounds" / "00" / "train.jsonl", get_task("classification"), "")
        r3 = replay(run, 3)
        t3 = _load_train(run / "rounds" / "03" / "train.jsonl", get_task("classification"), "")
        assert r3.train.ids == t3.ids and set(t3.ids) <= set(t0.ids)
        p1 = json.loads((run / "rounds" / "01" / "plan.json").read_text())["actions"]
        p3 = json.loads((run / "rounds" / "03" / "plan.json").read_text())["actions"]
        assert p3 != p1  # tried on this base already
    assert [r["built_on"] for r in res.summary["rounds"]][:3] == [None, 0, 1]
    from reflectlm.report import write_report

    page = write_report(run).read_text(encoding="utf-8")
    assert page.count("on round 1&#x27;s data and model") + page.count("on round 1's data and model") == 1


@pytest.mark.parametrize("loop, decisions, expect", [
    ({"target": 0.8}, [(True, 0.85, 100)], "target reached"),
    ({"rounds": 2}, [(True, 0.5, 100), (False, 0.5, 100), (True, 0.6, 100)], "round budget spent (2 rounds)"),
    ({"patience": 2}, [(True, 0.5, 100), (False, 0.5, 100), (False, 0.5, 100)], "no promotion in the last 2 rounds"),
    ({"time_budget_s": 10.0}, [(True, 0.5, 100)], "time budget spent"),
    ({"examples_budget": 250}, [(True, 0.5, 100), (True, 0.6, 100)], "compute budget spent (200 of 250"),
    # a champion that trained longer than round 0 (here 160 against 100): 90 left is too little even
    # for round 0's cost, 110 left leaves room for a plan that trains less than the champion did
    ({"examples_budget": 350}, [(True, 0.5, 100), (True, 0.6, 160)], "a round needs about 100"),
    ({"examples_budget": 370}, [(True, 0.5, 100), (True, 0.6, 160)], None),
    ({"label_budget": 50, "oracle": "column"}, [(True, 0.5, 100)], "label budget spent (60 of 50)"),
    ({}, [(True, 0.5, 100)], None),
])
def test_stop_rules(loop, decisions, expect):
    from reflectlm.actions import Recipe
    from reflectlm.config import load_config
    from reflectlm.loop.engine import should_stop as _should_stop
    from reflectlm.loop.state import State as _State

    cfg = load_config(tree={"data": {"train": "x.csv"}, "loop": {"rounds": 5, "patience": 3, **loop}})
    ds = [{"round": k, "promoted": p, "selection": v, "examples_trained": n, "seconds": 20.0,
           "champion_round": max(j for j in range(k + 1) if decisions[j][0])}
          for k, (p, v, n) in enumerate(decisions)]
    champion = ds[-1]["champion_round"]
    state = _State(ds, champion, Recipe(cfg, None), sum(d["examples_trained"] for d in ds), 60, {})
    reason = _should_stop(state, cfg)
    assert (reason is None) if expect is None else (expect in reason), reason


def test_patience_waits_for_the_round_that_builds_on_a_promising_challenger():
    from reflectlm.actions import Recipe
    from reflectlm.config import load_config
    from reflectlm.loop.engine import should_stop as _should_stop
    from reflectlm.loop.state import State as _State

    cfg = load_config(tree={"data": {"train": "x.csv"}, "loop": {"rounds": 9, "patience": 2}})
    ds = [{"round": 0, "promoted": True, "selection": 0.5, "examples_trained": 100, "seconds": 1.0,
           "champion_round": 0},
          {"round": 1, "promoted": False, "selection": 0.51, "examples_trained": 100, "seconds": 1.0,
           "champion_round": 0, "built_on": 0, "next_base": 1},
          {"round": 2, "promoted": False, "selection": 0.52, "examples_trained": 100, "seconds": 1.0,
           "champion_round": 0, "built_on": 1, "next_base": 2}]
    chained = _State(ds, 0, Recipe(cfg, None), 300, 0, {}, base=2)
    assert _should_stop(chained, cfg) is None  # round 3 builds on round 2
    assert chained.chained and not _State(ds, 0, Recipe(cfg, None), 300, 0, {}).chained
    ended = _State(ds[:2] + [{**ds[2], "next_base": 0}], 0, Recipe(cfg, None), 300, 0, {}, base=0)
    assert "no promotion in the last 2 rounds" in _should_stop(ended, cfg)


def test_ner_loop_compares_on_entity_f1(tmp_path, tiny_bert_dir):
    """NER: the A/B test resamples sentences and scores entity F1; actions that cannot handle
    NER (fix_labels, self_training, calibrate) are never proposed."""
    from conftest import make_ner_sentences
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    path = tmp_path / "ner.conll"
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in make_ner_sentences(150)))
    tree = loop_tree(path, tiny_bert_dir, tmp_path / "runs", rounds=2,
                     checks=["performance", "dynamics", "fit", "descent", "gradients"])
    tree["data"]["task"] = "ner"
    res = improve(load_config(tree=tree))
    rounds = res.summary["rounds"]
    assert len(rounds) >= 2 and "entity_f1" in res.summary["test"]
    for r in rounds[1:]:
        assert not {"fix_labels", "self_training", "calibrate"} & set(r["actions"])
        cmp = res.run_dir / "rounds" / f"{r['round']:02d}" / "compare.json"
        if cmp.exists():
            c = json.loads(cmp.read_text())
            assert c["metric"] == "entity_f1" and c["n"] == 30  # sentences of the selection split


def test_keep_models_keeps_every_trained_challenger(tmp_path, tiny_bert_dir):
    """loop.keep_models: rejected challengers keep their weights too, so the gate can be audited on a
    test split after the run (benchmarks/loop_vs_baselines.py scores every round this way)."""
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    cfg = load_config(tree=loop_tree(noisy_csv(tmp_path / "cls.csv"), tiny_bert_dir, tmp_path / "runs", rounds=2,
                                     keep_models=True))
    run = improve(cfg).run_dir
    trained = [json.loads((rd / "decision.json").read_text()) for rd in sorted((run / "rounds").iterdir())]
    trained = [d for d in trained if not d.get("no_op")]
    assert len(trained) >= 2
    for d in trained:  # promoted or not
        assert (run / "rounds" / f"{d['round']:02d}" / "model").is_dir(), d["round"]
