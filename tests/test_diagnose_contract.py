"""One contract for every DIAGNOSTICS entry: parameters stored and JSON-able, valid findings,
deterministic for a seed, JSON round trip, and it copes with empty and one-class inputs."""

from __future__ import annotations

import json

import pytest
from conftest import make_context

from reflectlm.diagnose import DIAGNOSTICS, Finding, Skip, get_check
from reflectlm.reflect import RULES, reflect

CASES = [("classification", 60, ("a", "b", "c")), ("ner", 40, ("person", "location")),
         ("qa", 30, ("colour", "animal", "place")), ("translation", 40, ("x",))]


def run(check, ctx):
    from reflectlm.tasks import applies

    if not applies(ctx.task, check):
        return None  # run_diagnosis skips it, saying so
    try:
        return check.run(ctx)
    except Skip as e:
        assert str(e), "a Skip says why"
        return None


def test_unknown_check_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid checks: performance"):
        get_check("nope")


@pytest.mark.parametrize("name", list(DIAGNOSTICS))
def test_params_are_stored_and_json_able(name):
    check = get_check(name)
    assert check.name == name
    assert isinstance(check.needs, tuple) and check.needs
    params = check.params()
    assert json.loads(json.dumps(params)) == params
    assert type(check)(**params).params() == params


@pytest.mark.parametrize("task,n,classes", CASES, ids=["classification", "ner", "qa", "translation"])
@pytest.mark.parametrize("name", list(DIAGNOSTICS))
def test_findings_are_valid_deterministic_and_round_trip(name, task, n, classes):
    check = get_check(name)
    first = run(check, make_context(task, n, classes, seed=3))
    second = run(get_check(name), make_context(task, n, classes, seed=3))
    if first is None:
        assert second is None
        return
    assert [f.to_json() for f in first] == [f.to_json() for f in second], "same seed, same findings"
    for f in first:
        assert isinstance(f, Finding) and f.check == name and f.kind and f.summary
        assert 0.0 <= f.severity <= 1.0
        if f.scores is not None:
            assert all(0.0 <= v <= 1.0 for v in f.scores.values())
            assert f.split in ("train", "selection")
        text = json.dumps(f.to_json())
        assert Finding.from_json(json.loads(text)).to_json() == f.to_json()


@pytest.mark.parametrize("task,classes", [("classification", ("a", "b")), ("ner", ("person",)), ("qa", ("colour",)),
                                          ("translation", ("x",))], ids=["cls", "ner", "qa", "translation"])
@pytest.mark.parametrize("name", list(DIAGNOSTICS))
def test_copes_with_empty_and_one_class_inputs(name, task, classes):
    for ctx in (make_context(task, 0, classes), make_context(task, 12, classes[:1])):
        findings = run(get_check(name), ctx)
        for f in findings or []:
            assert 0.0 <= f.severity <= 1.0
            json.dumps(f.to_json())


def test_targets_are_ranked_and_kinds_without_a_rule_yield_none():
    findings = [Finding("x", "label_issues", 0.5, "s"), Finding("x", "miscalibration", 0.9, "s"),
                Finding("x", "divergence", 0.9, "s"), Finding("x", "selection_performance", 1.0, "s"),
                Finding("x", "plateau", 0.01, "s")]
    targets = reflect(findings, current_metric=0.8)
    assert [t.finding_kind for t in targets] == ["divergence", "label_issues", "miscalibration"]
    assert targets[0].priority == pytest.approx(0.9 * RULES["divergence"].weight)
    assert targets[0].expected_gain == pytest.approx(0.9 * RULES["divergence"].weight * 0.2, abs=1e-4)
    assert targets[1].actions == ["correct_noise", "fix_labels", "drop_suspects", "early_learning"]


def test_a_misspelt_finding_kind_is_an_error_not_a_silent_non_target():
    with pytest.raises(ValueError, match="unknown finding kind 'label_issue'; did you mean 'label_issues'"):
        Finding("x", "label_issue", 0.5, "s")


def test_every_rule_is_for_a_known_kind_that_some_action_addresses():
    from reflectlm.actions import remedies
    from reflectlm.findings import KINDS

    assert set(RULES) <= KINDS, set(RULES) - KINDS
    assert all(remedies().get(kind) for kind in RULES), [k for k in RULES if not remedies().get(k)]
    assert all(0 < r.weight <= 1 and r.why for r in RULES.values())


def test_headroom_follows_the_selection_metric():
    from reflectlm.metric import get_metric

    f = [Finding("x", "label_issues", 0.5, "s")]
    assert reflect(f, 0.8, metric=get_metric("accuracy"))[0].expected_gain == pytest.approx(0.5 * 0.2)
    assert reflect(f, 0.3, metric=get_metric("loss"))[0].expected_gain == pytest.approx(0.5)  # unbounded: 1
