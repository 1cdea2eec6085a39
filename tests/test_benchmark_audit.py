"""The gate's audit (benchmarks/gate.py --rounds) and the loop benchmark's per-seed merge, on
hand-made results: the numbers docs/benchmarks.md reports are computed by these functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))


def _run(rounds, plain=0.80, clean=0.82, loop=0.84, reference=0.90):
    return {"plain": {"test_accuracy": plain}, "one_shot_clean": {"test_accuracy": clean},
            "loop": {"test_accuracy": loop, "rounds": rounds}, "reference": {"test_accuracy": reference},
            "recovery": (loop - plain) / (reference - plain)}


def _round(r, promoted, test, champion_test, against=0):
    return {"round": r, "actions": ["x"], "promoted": promoted, "difference": 0.01, "test_accuracy": test,
            "champion_test_accuracy": champion_test, "judged_against": against}


def test_gate_precision_and_misses_are_counted_on_test(tmp_path):
    from gate import audit_rounds

    data = {"per_seed": {
        "0": _run([{"round": 0, "promoted": True, "actions": []},
                   _round(1, True, 0.85, 0.80),          # promoted, better on test: right
                   _round(2, False, 0.862, 0.85, 1),     # rejected, +1.2 points: a miss
                   _round(3, False, 0.855, 0.85, 1)]),   # rejected, +0.5: not a miss
        "1": _run([{"round": 0, "promoted": True, "actions": []},
                   _round(1, True, 0.79, 0.80)])}}       # promoted, worse on test: wrong
    path = tmp_path / "loop_vs_baselines.json"
    path.write_text(json.dumps(data))
    out = audit_rounds([path])
    assert out["precision"]["promotions"] == 2 and out["precision"]["beat_their_champion_on_test"] == 1
    assert out["precision"]["value"] == pytest.approx(0.5)
    assert [(m["seed"], m["round"]) for m in out["misses"]] == [(0, 2)]
    assert out["misses"][0]["test_difference"] == pytest.approx(0.012)
    assert len(out["rounds_audited"]) == 4  # round 0 is the baseline, not a judged round


def test_seeds_merge_into_one_file_with_the_mean_recovery(tmp_path):
    from loop_vs_baselines import merge

    path = tmp_path / "r.json"
    merge(path, 0, _run([], loop=0.86))  # R = 0.6
    out = merge(path, 1, _run([], loop=0.81))  # R = 0.1; seed 0 kept
    assert list(out["per_seed"]) == ["0", "1"]
    assert out["recovery"]["per_seed"] == {"0": pytest.approx(0.6), "1": pytest.approx(0.1)}
    assert out["recovery"]["mean"] == pytest.approx(0.35)
    assert out["loop_above_one_shot_clean"] == {"0": True, "1": False}
    again = merge(path, 1, _run([], loop=0.87))  # a seed re-run replaces its entry
    assert again["recovery"]["per_seed"]["1"] == pytest.approx(0.7) and len(again["per_seed"]) == 2


def test_active_learning_seeds_merge_keyed_by_seed(tmp_path):
    """Seeds run apart land under per_seed keyed by seed; a re-run seed replaces its entry; the summary
    says whether the loop is above random at every budget on every seed; other setups are refused."""
    from active_learning import merge

    setup = {"rounds": 2, "size": 500, "start": 0.1, "epochs": 3, "quick": False}
    out = str(tmp_path / "active_learning.json")
    s0 = {"seed": 0, "budgets": [1400, 1900], "loop": [0.85, 0.89], "random": [0.83, 0.86]}
    s1 = {"seed": 1, "budgets": [1400, 1900], "loop": [0.84, 0.86], "random": [0.83, 0.87]}
    merge(out, setup, [s0])
    data = merge(out, setup, [s1])
    assert list(data["per_seed"]) == ["0", "1"] and data["seeds"] == [0, 1]
    assert data["loop"] == pytest.approx([0.845, 0.875]) and data["random"] == pytest.approx([0.83, 0.865])
    assert data["mean_gain"] == pytest.approx(0.0125)
    assert data["loop_above_random_at_every_budget"] and not data["above_random_at_every_budget_on_every_seed"]
    assert data["per_seed"]["1"]["gain"] == pytest.approx([0.01, -0.01])
    again = merge(out, setup, [dict(s1, loop=[0.85, 0.88])])  # seed 1 re-run: replaced, seed 0 kept
    assert again["above_random_at_every_budget_on_every_seed"] and json.loads(Path(out).read_text()) == again
    with pytest.raises(SystemExit, match="not .*use another --out"):
        merge(out, dict(setup, size=200), [s0])


def test_shaped_challengers_count_false_promotions_and_the_reuse_bias():
    """--shaped: a promotion is false when the challenger is not better on test; the reuse bias is the
    mean (selection - test) difference, with the A/A pairs' value beside it as the no-reuse baseline."""
    from gate import summarise_shaped

    def pair(source, promote, sel, test):
        return {"source": source, "promote": promote, "selection_difference": sel, "test_difference": test}

    pairs = [pair("selection", True, 0.030, -0.004), pair("selection", True, 0.020, 0.010),
             pair("selection", False, 0.010, 0.000), pair("train_oof", False, 0.004, 0.006),
             pair("train_oof", True, 0.020, 0.012)]
    aa = [{"verdicts": {"accuracy": {"difference": 0.01}}, "test_accuracy": [0.80, 0.805]},
          {"verdicts": {"accuracy": {"difference": -0.01}}, "test_accuracy": [0.80, 0.800]}]
    out = summarise_shaped(pairs, aa)
    sel, oof = out["selection"], out["train_oof"]
    assert (sel["pairs"], sel["promotions"], sel["false_promotions"]) == (3, 2, 1)
    assert sel["reuse_bias"] == pytest.approx((0.034 + 0.010 + 0.010) / 3)
    assert (oof["promotions"], oof["false_promotions"]) == (1, 0)
    assert oof["reuse_bias"] == pytest.approx((-0.002 + 0.008) / 2)
    assert out["aa_baseline"]["pairs"] == 2 and out["aa_baseline"]["reuse_bias"] == pytest.approx((0.005 - 0.01) / 2)


def test_mid_p_mcnemar_matches_hand_computation():
    """The mid-p McNemar test gate.py measures (the product's, compare.mcnemar_exact): for b != c the
    exact two-sided p minus P(X = min(b, c))."""
    from math import comb

    from gate import mcnemar_mid_p

    assert mcnemar_mid_p(0, 6) == pytest.approx(2 / 64 - 1 / 64)
    b, c, n = 14, 27, 41
    exact = 2 * sum(comb(n, k) for k in range(b + 1)) / 2**n
    assert mcnemar_mid_p(b, c) == pytest.approx(exact - comb(n, b) / 2**n)
    assert mcnemar_mid_p(b, c) < 0.05 < exact  # the case that made it worth measuring
    # b = c: 2 [P(X <= 5) - P(X = 5) / 2] = 1 exactly (the distribution is symmetric about 5).
    assert mcnemar_mid_p(5, 5) == pytest.approx(1.0)
    assert mcnemar_mid_p(0, 0) == 1.0


def test_the_mid_p_option_is_audited_on_the_recorded_paired_counts(tmp_path):
    """Where every round carries its paired counts, the audit also scores the mid-p accuracy gate (an
    option for the owner): a rejected round with CI above 0 and mid-p < alpha counts as its promotion;
    a guardrail veto, a CI through 0 or a non-inferiority round do not."""
    from gate import audit_rounds

    def gate(b, c, ci_low, **kw):
        return {"b": b, "c": c, "ci_low": ci_low, "alpha": 0.05, "mode": "superiority", "metric": "accuracy",
                "guardrail_blocked": False, **kw}

    rounds = [{"round": 0, "promoted": True, "actions": []},
              dict(_round(1, True, 0.85, 0.80), gate=gate(9, 39, 0.016)),
              dict(_round(2, False, 0.87, 0.85, 1), gate=gate(14, 27, 0.001)),  # exact p 0.060, mid-p 0.044
              dict(_round(3, False, 0.84, 0.85, 1), gate=gate(14, 27, 0.001, guardrail_blocked=True)),
              dict(_round(4, False, 0.86, 0.85, 1), gate=gate(16, 22, -0.007)),
              dict(_round(5, False, 0.86, 0.85, 1), gate=gate(14, 27, 0.001, mode="non_inferiority"))]
    path = tmp_path / "loop_vs_baselines.json"
    path.write_text(json.dumps({"per_seed": {"0": _run(rounds)}}))
    out = audit_rounds([path])
    assert out["precision"]["promotions"] == 1
    mid = out["options"]["accuracy_midp"]
    assert mid["precision"]["promotions"] == 2 and mid["precision"]["beat_their_champion_on_test"] == 2
    assert [m["round"] for m in mid["misses"]] == [4, 5]
    assert [m["round"] for m in out["misses"]] == [2, 4, 5]
    path.write_text(json.dumps({"per_seed": {"0": _run(rounds[:2] + [_round(2, False, 0.87, 0.85, 1)])}}))
    assert "options" not in audit_rounds([path])  # counts missing for a round: no option scored


def test_a_comparison_becomes_the_record_the_audit_judges():
    """gate_record reads what another gate needs from a real comparison (as compare.json holds it),
    and midp_would_promote agrees with the mid-p test on it."""
    import numpy as np

    from gate import gate_record, mcnemar_mid_p, midp_would_promote

    from reflectlm.compare import compare

    y = np.zeros(400, dtype=int)
    champ, chall = y.copy(), y.copy()
    champ[:27], chall[27:41] = 1, 1  # champion wrong on 27 (c), challenger wrong on 14 others (b)
    c = compare(y, champ, chall, labels=["a", "b"], metric="accuracy", alpha=0.05, n_bootstrap=2000, seed=0)
    g = gate_record(c.to_json())
    assert (g["b"], g["c"], g["mode"], g["metric"], g["guardrail_blocked"]) == (14, 27, "superiority", "accuracy", False)
    assert g["ci_low"] == c.ci_low and g["alpha"] == 0.05
    assert midp_would_promote(g, c.difference) == (c.ci_low > 0 and mcnemar_mid_p(14, 27) < 0.05)
    assert not midp_would_promote(dict(g, guardrail_blocked=True), c.difference)
