"""loop.backend = "ray" on a local Ray cluster (2 CPUs, one per test module): K challengers per
round trained as Ray tasks, Holm-corrected, at most one promoted; K = 1 decides as the local
backend does; a kill mid-round resumes as it does locally. Holm's step-down itself is tested on
hand-made outputs, without training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from test_loop import KILL_AT, _hash_dir, _toml, loop_tree, noisy_csv

ray = pytest.importorskip("ray", reason="the [distributed] extra (ray) is not installed")


@pytest.fixture(scope="module")
def cluster():
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["address"]
    ray.shutdown()


def _decided(run_dir) -> dict:
    """Every round's plan / compare / decision files, timing fields aside."""
    out = {}
    for rd in sorted((run_dir / "rounds").iterdir()):
        for name in ("plan.json", "compare.json", "decision.json"):
            if (rd / name).is_file():
                doc = json.loads((rd / name).read_text())
                doc.pop("seconds", None)
                out[f"{rd.name}/{name}"] = doc
    return out


def test_two_parallel_challengers_are_holm_corrected_and_at_most_one_is_promoted(cluster, tmp_path, tiny_bert_dir):
    from reflectlm.compare import holm
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    cfg = load_config(tree=loop_tree(noisy_csv(tmp_path / "cls.csv"), tiny_bert_dir, tmp_path / "runs", rounds=2,
                                     backend="ray", parallel=2, ray={"num_cpus": 1, "threads": 1}))
    res = improve(cfg)
    run = res.run_dir
    assert ray.is_initialized(), "the loop leaves a Ray session it did not open"
    multi = 0
    for r in (1, 2):
        rd = run / "rounds" / f"{r:02d}"
        d = json.loads((rd / "decision.json").read_text())
        if "challengers" not in d:  # one applicable plan this round: one challenger, no correction
            continue
        multi += 1
        cmp = json.loads((rd / "compare.json").read_text())
        plan = json.loads((rd / "plan.json").read_text())
        cs = d["challengers"]
        assert [c["challenger"] for c in cs] == [0, 1] == [c["challenger"] for c in plan["challengers"]]
        assert not set(cs[0]["actions"]) & set(cs[1]["actions"]), "each plan is led by an action no other plan uses"
        tested = [c for c in cs if not c["no_op"]]
        h = cmp["holm"]
        assert h["family"] == len(tested) and h["alpha"] == cfg.loop.alpha
        assert [c["p_holm"] for c in h["challengers"]] == pytest.approx(holm([c["p_gate"] for c in h["challengers"]]))
        levels = sorted(c["level"] for c in h["challengers"])
        assert levels == pytest.approx([cfg.loop.alpha / (len(tested) - i) for i in range(len(tested))])
        passed = [c for c in h["challengers"] if c["passed"]]
        # At most one promoted: the best that passed, and the round's files are its.
        assert d["promoted"] == bool(passed)
        if passed:
            best = max(passed, key=lambda c: (c["difference"], -c["challenger"]))
            assert d["kept"] == best["challenger"] and cmp["promote"]
        else:
            assert not cmp["promote"]
            assert d["kept"] == max(tested, key=lambda c: (c["difference"], -c["challenger"]))["challenger"]
        kept = cs[d["kept"]]
        assert d["actions"] == kept["actions"] == [a["action"] for a in plan["actions"]]
        assert d["selection"] == pytest.approx(json.loads((rd / "metrics.json").read_text())["selection"]["macro_f1"])
        assert cmp["difference"] == pytest.approx(kept["difference"])
        for c in tested:  # each challenger's own record; only a kept challenger's weights survive
            cdir = rd / "challengers" / str(c["challenger"])
            own = json.loads((cdir / "compare.json").read_text())
            assert own["holm"]["p_holm"] == pytest.approx(c["p_holm"]) and own["promote"] == c["passed"]
            assert json.loads((cdir / "plan.json").read_text())["actions"][0]["action"] == c["actions"][0] or \
                c["actions"][0] in [a["action"] for a in json.loads((cdir / "plan.json").read_text())["actions"]]
            assert not (cdir / "model").exists()
        assert d["examples_trained"] > json.loads((rd / "metrics.json").read_text())["examples_trained"] or \
            any(c["no_op"] for c in cs), "the round's compute counts every challenger"
    assert multi >= 1, "no round had two challengers"
    summary = json.loads((run / "summary.json").read_text())
    assert sum(r["promoted"] for r in summary["rounds"][1:]) <= 2  # at most one a round

    # The report and `reflectlm show` read such a run.
    from reflectlm import report

    report.write_report(run)
    assert (run / "report.html").stat().st_size > 0
    p = subprocess.run([sys.executable, "-m", "reflectlm.cli", "show", str(run)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "challenger 1: " in p.stdout and "Holm-adjusted" in p.stdout  # each challenger listed


def test_one_challenger_on_ray_decides_as_the_local_backend(cluster, tmp_path, tiny_bert_dir):
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    csv = noisy_csv(tmp_path / "cls.csv")
    runs = {}
    for backend in ("local", "ray"):  # each in its own workspace: learned action values stay apart
        tree = loop_tree(csv, tiny_bert_dir, tmp_path / backend, rounds=2, backend=backend, parallel=1)
        tree["loop"]["ray"] = {"num_cpus": 1, "threads": 1}  # train.threads = 1 too: the same arithmetic
        runs[backend] = improve(load_config(tree=tree)).run_dir
    local, on_ray = _decided(runs["local"]), _decided(runs["ray"])
    assert sorted(local) == sorted(on_ray) and len(local) >= 6
    assert local == on_ray
    assert not list(runs["ray"].glob("rounds/*/challengers"))


def test_kill_mid_round_and_resume_on_ray(cluster, tmp_path, tiny_bert_dir):
    """SIGKILL once round 1's two challengers have trained as Ray tasks; --resume (joining the same
    cluster by --address) redoes round 1 and decides as a run that was never killed."""
    from reflectlm.config import load_config
    from reflectlm.loop import improve

    tree = loop_tree(noisy_csv(tmp_path / "cls.csv"), tiny_bert_dir, tmp_path / "runs", rounds=2, parallel=2,
                     ray={"num_cpus": 1, "threads": 1})
    tree["run"]["name"] = "killed"
    cfg_path = tmp_path / "loop.toml"
    cfg_path.write_text(_toml(tree), encoding="utf-8")
    env = {**os.environ, "REFLECTLM_DEBUG": "1"}
    args = ["run", str(cfg_path), "--quiet", "--backend", "ray", "--address", cluster]
    p = subprocess.run([sys.executable, "-c", KILL_AT.format(point="1:after_train"), *args], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    run = tmp_path / "runs" / "killed"
    assert (run / "rounds" / "01" / "challengers").is_dir() and not (run / "rounds" / "01" / "decision.json").exists()
    before = _hash_dir(run / "rounds" / "00")

    p = subprocess.run([sys.executable, "-m", "reflectlm.cli", *args, "--resume"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert _hash_dir(run / "rounds" / "00") == before  # never redone or rewritten
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["resumed"] == 1
    summary = json.loads((run / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]

    tree["run"].update(name="straight", output_dir=str(tmp_path / "other"))
    tree["loop"]["backend"] = "ray"
    straight = improve(load_config(tree=tree))
    assert _decided(run) == _decided(straight.run_dir)


# --------------------------------------------------------------------------- Holm's step-down, by hand


def _round(tmp_path, outs: list, champ):
    from reflectlm.actions import get_action
    from reflectlm.config import load_config
    from reflectlm.data import Dataset, Splits
    from reflectlm.loop.round import Challenger, Round
    from reflectlm.loop.state import State

    labels = ["a", "b"]
    n = 200
    y = ["a" if i % 2 else "b" for i in range(n)]
    selection = Dataset(task="classification", ids=[str(i) for i in range(n)], labels=y, texts=["t"] * n,
                        tokens=None)
    cfg = load_config(tree={"data": {"train": "unused.csv"}, "loop": {"n_bootstrap": 2000}})
    state = State([{"round": 0, "selection": 0.5}], 0, None, 0, 0, {})
    rnd = Round(1, tmp_path, cfg, Splits(selection, selection, None, labels, []), state)
    rnd.dir.mkdir(parents=True)
    rnd.champ_out = rnd.base_out = champ
    actions = ["more_epochs", "tune_lr", "regularize"]
    for k, out in enumerate(outs):
        cdir = rnd.dir / "challengers" / str(k)
        cdir.mkdir(parents=True)
        (cdir / "plan.json").write_text(json.dumps({"actions": [], "ranking": [], "addressed": [], "changes": []}))
        rnd.challengers.append(Challenger(k, [get_action(actions[k])], [], cdir, SimpleNamespace(labels_used=0),
                                          metrics={}, chall_out=out))
    return rnd


def _probs(correct: np.ndarray) -> SimpleNamespace:
    y = np.array([0 if i % 2 else 1 for i in range(len(correct))])
    pred = np.where(correct, y, 1 - y)
    return SimpleNamespace(probs=np.eye(2)[pred], metrics={"macro_f1": float(correct.mean())})


def test_holm_step_down_keeps_the_best_that_passes_at_its_level(tmp_path):
    from reflectlm.loop.round import judge

    base = np.zeros(200, bool)
    base[:100] = True  # the champion: half right
    strong = base.copy()
    strong[100:150] = True  # +25 points: passes at any level here
    weak = base.copy()
    weak[100:112] = True  # 12 gained, 4 lost: +4 points, gate p about 0.044 alone (between alpha / 2 and alpha)
    weak[:4] = False
    rnd = _round(tmp_path, [_probs(weak), _probs(strong)], _probs(base))
    judge(rnd)
    w, s = rnd.challengers
    assert 0.025 < w.holm["p_gate"] < 0.05 and s.holm["p_gate"] < 0.001
    assert s.holm["rank"] == 0 and s.holm["level"] == pytest.approx(0.025) and s.holm["passed"]
    assert w.holm["rank"] == 1 and w.holm["level"] == pytest.approx(0.05) and w.holm["passed"]
    assert w.holm["p_holm"] == pytest.approx(w.holm["p_gate"]) and s.holm["p_holm"] == pytest.approx(2 * s.holm["p_gate"])
    assert rnd.promoted and rnd.plan[0].name == "tune_lr"  # both pass: only the best is kept
    saved = json.loads((rnd.dir / "compare.json").read_text())
    assert saved["holm"]["kept"] == 1 and saved["promote"]
    assert saved["alpha"] == pytest.approx(0.025)  # the kept one's test ran at its Holm level
    assert [c["passed"] for c in saved["holm"]["challengers"]] == [True, True]

    # Two challengers each significant alone at alpha, neither at alpha / 2: none is promoted.
    rnd = _round(tmp_path / "b", [_probs(weak), _probs(weak.copy())], _probs(base))
    judge(rnd)
    assert not rnd.promoted and not any(c.holm["passed"] for c in rnd.challengers)
    assert all(c.holm["p_gate"] < 0.05 < c.holm["p_holm"] for c in rnd.challengers)
    assert "not promoted: Holm's step-down stopped" in rnd.challengers[1].result.reason
    assert "Holm level 0.025" in rnd.challengers[0].result.reason and "CI includes 0" in rnd.challengers[0].result.reason
