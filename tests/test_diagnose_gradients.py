"""Gradient health (diagnose/gradients.py): vanishing / frozen layers, explosions, spikes and
update ratios, on synthetic telemetry built to show each, healthy telemetry, degenerate inputs,
and a real tiny run with a frozen encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_context

from reflectlm.diagnose.base import Context, Finding, Skip
from reflectlm.diagnose.gradients import GradientHealth, frozen_by_config, spike_steps

LAYERS = ["embeddings", "layer.0", "layer.1", "head"]


def _telemetry(S: int = 40, seed: int = 0) -> dict:
    """Healthy: norms ~1 (+-10%), update ratios ~5e-4, a linear decay from lr 1e-4; recorded every 10 steps."""
    rng = np.random.default_rng(seed)
    L = len(LAYERS)
    return {"layers": np.array(LAYERS), "step": np.arange(1, S + 1) * 10,
            "lr": np.linspace(1e-4, 1e-5, S).astype(np.float32), "loss": np.linspace(1.0, 0.3, S).astype(np.float32),
            "grad_norm": rng.uniform(0.9, 1.1, size=(S, L)), "weight_norm": rng.uniform(5, 10, size=(S, L)),
            "update_ratio": rng.uniform(3e-4, 7e-4, size=(S, L))}


def _ctx(g: dict, train_config=None, seed: int = 0) -> Context:
    return Context(task="classification", labels=["a", "b"], gradients=g,
                   train_config=train_config if train_config is not None else {"freeze": "none", "max_grad_norm": 1.0},
                   seed=seed)


def _kinds(findings):
    return {f.kind: f for f in findings}


def test_healthy_telemetry_is_quiet():
    assert GradientHealth().run(_ctx(_telemetry())) == []
    assert GradientHealth().run(make_context()) == []


def test_zero_gradients_are_a_frozen_vanishing_layer():
    g = _telemetry()
    g["grad_norm"][:, 1] = 0.0
    g["update_ratio"][:, 1] = 0.0
    by = _kinds(GradientHealth().run(_ctx(g)))
    assert set(by) == {"vanishing_gradients", "vanishing_updates"}
    van = by["vanishing_gradients"]
    assert list(van.evidence["flagged"]) == ["layer.0"] and "frozen" in van.evidence["flagged"]["layer.0"]
    assert van.evidence["layers"]["layer.0"]["frozen"] and not van.evidence["layers"]["head"]["frozen"]
    assert van.evidence["unintended"] == ["layer.0"] and van.severity == pytest.approx(0.9)
    upd = by["vanishing_updates"]
    assert upd.evidence["flagged"] == {"layer.0": 0.0} and upd.severity == pytest.approx(0.9)
    # The median layer is taken over live layers only: the frozen zeros do not drag it down.
    assert van.evidence["median_layer_grad_norm"] == pytest.approx(1.0, abs=0.05)


def test_freezing_asked_for_by_the_config_is_reported_as_intended():
    g = _telemetry()
    g["grad_norm"][:, :3] = 0.0
    g["update_ratio"][:, :3] = 0.0
    by = _kinds(GradientHealth().run(_ctx(g, {"freeze": "head_only"})))
    assert set(by["vanishing_gradients"].evidence["flagged"]) == {"embeddings", "layer.0", "layer.1"}
    assert by["vanishing_gradients"].severity == pytest.approx(0.1)
    assert by["vanishing_updates"].severity == pytest.approx(0.1) and "as configured" in by["vanishing_updates"].summary


def test_frozen_by_config_mirrors_param_groups():
    assert frozen_by_config(LAYERS, {"freeze": "head_only"}) == {"embeddings", "layer.0", "layer.1"}
    assert frozen_by_config(LAYERS, {"freeze": "last_n", "unfreeze_last_n": 1}) == {"embeddings", "layer.0"}
    assert frozen_by_config(LAYERS, {"freeze": "last_n", "unfreeze_last_n": 0}) == {"embeddings", "layer.0", "layer.1"}
    assert frozen_by_config(LAYERS, {"freeze": "none"}) == set() == frozen_by_config(LAYERS, {})


def test_tiny_gradients_vanish_without_being_frozen():
    g = _telemetry()
    g["grad_norm"][:, 0] *= 1e-4  # 4 orders below the median layer
    van = _kinds(GradientHealth().run(_ctx(g)))["vanishing_gradients"]
    assert list(van.evidence["flagged"]) == ["embeddings"]
    assert van.evidence["layers"]["embeddings"]["log10_vs_median_layer"] == pytest.approx(-4, abs=0.1)
    assert not van.evidence["layers"]["embeddings"]["frozen"] and van.severity == pytest.approx(0.7)
    g["grad_norm"][:, 0] *= 100  # now 2 orders below: within the usual spread of layers
    assert GradientHealth().run(_ctx(g)) == []


def test_exploding_gradients():
    g = _telemetry()
    g["grad_norm"][:, 3] *= 1e3  # the head 1000x the median layer
    ex = _kinds(GradientHealth().run(_ctx(g)))["exploding_gradients"]
    assert list(ex.evidence["flagged"]) == ["head"]
    assert ex.evidence["flagged"]["head"]["reason"] == "far above the median layer"
    assert ex.severity == pytest.approx(0.6 + 0.15 * (ex.evidence["flagged"]["head"]["orders"] - 2))

    g = _telemetry()
    g["grad_norm"][:, 2] *= np.logspace(0, 3, 40)  # layer.1 grows 10^3 over training, smoothly
    flagged = _kinds(GradientHealth().run(_ctx(g)))["exploding_gradients"].evidence["flagged"]
    assert flagged["layer.1"]["reason"] == "grew during training" and flagged["layer.1"]["orders"] > 2

    g = _telemetry()
    g["grad_norm"][17, 1] = np.inf
    g["grad_norm"][18, 1] = np.nan
    ex = _kinds(GradientHealth().run(_ctx(g, {"max_grad_norm": 0.0})))["exploding_gradients"]
    assert ex.severity == 1.0 and ex.evidence["flagged"]["layer.0"]["steps"] == [180, 190]
    assert "clipping off" in ex.summary and ex.evidence["clipping"] is False
    assert json.dumps(ex.to_json())  # inf / nan never reach the JSON


def test_a_spike_injected_at_a_known_step_is_found():
    g = _telemetry()
    g["grad_norm"][23, 2] *= 50
    by = _kinds(GradientHealth().run(_ctx(g)))
    assert set(by) == {"gradient_spikes"}
    sp = by["gradient_spikes"]
    assert sp.evidence["flagged"] == {"layer.1": [{"step": 240, "factor": pytest.approx(50, rel=0.15)}]}
    assert sp.evidence["layers"]["layer.1"]["spike_steps"] == [240]
    assert sp.evidence["layers"]["head"]["spike_steps"] == []
    assert sp.severity == pytest.approx(0.3)  # clipped: one spike is worth knowing, not alarming
    no_clip = _kinds(GradientHealth().run(_ctx(g, {"max_grad_norm": 0})))["gradient_spikes"]
    assert no_clip.severity == pytest.approx(0.6)


def test_spikes_need_both_the_factor_and_the_robust_z():
    rng = np.random.default_rng(1)
    calm = rng.uniform(0.9, 1.1, 30)
    calm[20] = 8.0  # 8x: large, but under the 10x factor
    assert spike_steps(calm, 5, 10.0, 3.5) == []
    wild = 10 ** rng.uniform(-1, 1, 30)  # a layer that routinely swings by 100x
    wild[20] = 10 * np.median(wild[15:20]) * 1.1
    assert 20 not in [i for i, _ in spike_steps(wild, 5, 10.0, 3.5)]
    assert spike_steps(np.array([1.0, 1.0, 50.0]), 5, 10.0, 3.5) == [], "needs 3 earlier records to judge"
    assert spike_steps(np.array([1.0, 0.0, 1.0, 1.0, 40.0]), 5, 10.0, 3.5) == [(4, pytest.approx(40.0))]


def test_update_ratios_out_of_range():
    g = _telemetry()
    g["update_ratio"][:, 0] = 1e-7  # the embeddings barely move
    g["update_ratio"][::5, 3] = 0.3  # the head jumps by 30% of its norm every fifth record
    by = _kinds(GradientHealth().run(_ctx(g)))
    assert set(by) == {"vanishing_updates", "unstable_updates"}
    assert by["vanishing_updates"].evidence["flagged"] == {"embeddings": pytest.approx(1e-7)}
    assert by["vanishing_updates"].severity == pytest.approx(0.5 + 0.1 * 2)
    un = by["unstable_updates"]
    assert list(un.evidence["flagged"]) == ["head"]
    assert un.evidence["flagged"]["head"]["fraction_of_steps_above"] == pytest.approx(0.2)
    assert un.evidence["layers"]["head"]["median_update_ratio"] < 1e-3  # the typical step is fine
    # Judged by the median step instead, the head's occasional jumps go unnoticed.
    assert "unstable_updates" not in _kinds(GradientHealth(unstable_quantile=0.5).run(_ctx(g)))


def test_warmup_step_at_lr_zero_is_not_a_vanishing_update():
    g = _telemetry()
    g["lr"][0] = 0.0
    g["update_ratio"][0] = 0.0  # what train.fit() records at the first warm-up step
    g["update_ratio"][1:6] = 0.0
    g["lr"][1:6] = 0.0
    assert GradientHealth().run(_ctx(g)) == []


def test_empty_and_degenerate_telemetry():
    with pytest.raises(Skip, match="no gradient telemetry"):
        GradientHealth().run(_ctx(_telemetry(S=0)))
    with pytest.raises(Skip, match="needs gradients"):
        GradientHealth().run(Context(task="classification", labels=["a"]))
    one = _telemetry(S=1)
    assert GradientHealth().run(_ctx(one)) == []
    g = _telemetry()
    g["update_ratio"] = g["update_ratio"][:, :2]  # a malformed ratio array is ignored, not a crash
    assert GradientHealth().run(_ctx(g)) == []


@pytest.mark.parametrize("kw", [dict(), dict(n=0), dict(classes=("a",)), dict(task="ner"), dict(steps=0), dict(steps=1),
                                dict(layers=("embeddings", "layer.0", "head"))])
def test_synthetic_contexts_do_not_crash_and_findings_round_trip(kw):
    try:
        findings = GradientHealth().run(make_context(**kw))
    except Skip:
        return
    for f in findings:
        assert 0 <= f.severity <= 1 and f.check == "gradients" and f.summary
        assert Finding.from_json(json.loads(json.dumps(f.to_json()))) == f


def test_deterministic_round_trip_and_params():
    g = _telemetry()
    g["grad_norm"][23, 2] *= 50
    g["update_ratio"][:, 0] = 1e-7
    a = [f.to_json() for f in GradientHealth().run(_ctx(g, seed=1))]
    b = [f.to_json() for f in GradientHealth().run(_ctx(g, seed=1))]
    assert a == b and len(a) == 2
    for d in a:
        assert Finding.from_json(json.loads(json.dumps(d))).to_json() == d
    p = GradientHealth(max_update_ratio=0.05).params()
    assert p["max_update_ratio"] == 0.05 and json.loads(json.dumps(p)) == p


def test_real_run_with_a_frozen_encoder_shows_vanishing_updates(tiny_config, cls_csv, tmp_path):
    from reflectlm.train import train

    cfg = tiny_config(cls_csv, epochs=1, freeze="head_only", telemetry_every=1)
    run = train(cfg, tmp_path / "run").run_dir
    with np.load(run / "gradients.npz") as d:
        g = {k: d[k] for k in d.files}
    by = _kinds(GradientHealth().run(_ctx(g, cfg.train.model_dump())))
    upd = by["vanishing_updates"]
    assert upd.evidence["flagged"] == {"embeddings": 0.0, "layer.0": 0.0, "layer.1": 0.0}
    assert upd.evidence["unintended"] == [] and upd.severity == pytest.approx(0.1)
    assert upd.evidence["layers"]["head"]["median_update_ratio"] > 1e-3
    van = by["vanishing_gradients"]
    assert set(van.evidence["flagged"]) == {"embeddings", "layer.0", "layer.1"}
    assert all(van.evidence["layers"][n]["frozen"] for n in van.evidence["flagged"])
    # The same telemetry, read as if nothing had been frozen on purpose, is a serious problem.
    worse = _kinds(GradientHealth().run(_ctx(g, {"freeze": "none"})))["vanishing_updates"]
    assert worse.severity == pytest.approx(0.9) and len(worse.evidence["unintended"]) == 3
