"""The planner reads what actions declare: a new action is one class and one table entry."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from reflectlm import findings as K
from reflectlm.actions import ACTIONS, ActionInputs, Recipe
from reflectlm.actions.base import SUPERIORITY, params_of
from reflectlm.config import load_config
from reflectlm.data import Dataset
from reflectlm.findings import Finding


@dataclass(frozen=True)
class HalveBatch:
    """A toy action, file-sized: smaller batches for a plateau (more, noisier steps)."""

    name = "halve_batch"
    addresses = {K.PLATEAU: 0}
    mode = SUPERIORITY
    retrains = True
    conflicts = ("tune_lr",)

    factor: float = 0.5

    def params(self) -> dict:
        return params_of(self)

    @classmethod
    def propose(cls, inputs, recipe):
        return cls() if inputs.finding(K.PLATEAU) is not None else None

    def apply(self, recipe, inputs):
        before = int(recipe.get("train.batch_size"))
        out = recipe.set("train.batch_size", max(1, int(before * self.factor)))
        out.changes.append({"action": self.name, "batch_size": [before, out.get("train.batch_size")]})
        return out


def test_a_registered_toy_action_is_proposed_and_applied_with_no_other_edit(monkeypatch, tmp_path):
    from conftest import first_plan
    from reflectlm.reflect import reflect

    monkeypatch.setitem(ACTIONS, "halve_batch", HalveBatch)  # the one table entry
    findings = [Finding("descent", K.PLATEAU, 0.8, "the loss plateaus")]
    targets = reflect(findings, 0.5)
    assert targets[0].actions[0] == "halve_batch"  # reflect lists it from its declaration
    ds = Dataset(task="classification", ids=["a", "b"], labels=["x", "y"], texts=["a a", "b b"], tokens=None)
    allowed = ["halve_batch", "tune_lr", "more_epochs"]
    cfg = load_config(tree={"data": {"train": "x.csv"},
                            "loop": {"exploration": "greedy", "max_actions": 2, "actions": allowed}})
    recipe = Recipe({"data": {"train": "x.csv"}}, ds)
    inputs = ActionInputs(task="classification", labels=["x", "y"], findings=findings)
    plan, ranking, addressed = first_plan(targets, inputs, recipe, cfg, tmp_path, set(), 1)
    assert ranking[0]["action"] == "halve_batch" and ranking[0]["chosen"]  # ranked first, it leads the plan
    assert [a.name for a in plan] == ["more_epochs", "halve_batch"]  # tune_lr is its conflict; table order applies
    assert addressed == [K.PLATEAU]
    out = recipe
    for action in plan:
        out = action.apply(out, inputs)
    assert out.get("train.batch_size") == recipe.get("train.batch_size") // 2
    assert [c["action"] for c in out.changes] == ["more_epochs", "halve_batch"]


def test_an_unknown_action_in_the_config_is_refused_with_the_valid_names(tmp_path):
    from reflectlm.config import ConfigError
    from conftest import first_plan

    cfg = load_config(tree={"data": {"train": "x.csv"}, "loop": {"actions": ["halve_batch"]}})
    with pytest.raises(ConfigError, match="unknown actions \\['halve_batch'\\]; valid: fix_labels"):
        first_plan([], ActionInputs(task="classification", labels=[]), Recipe(cfg, None), cfg, tmp_path, set(), 1)


@pytest.mark.parametrize("budget_left, level", [(500, True), (None, True), (0, False)])
def test_asking_the_oracle_ranks_level_with_the_best_remedy_while_budget_is_left(budget_left, level):
    """Issue 16: bought labels are kept whatever the round's verdict, so they are bought early -
    asking ranks with the most promising diagnosed remedy while label budget is left, not last."""
    from reflectlm.loop.planner import _candidates
    from reflectlm.reflect import reflect

    findings = [Finding("label_issues", K.LABEL_ISSUES, 0.8, "labels look wrong"),
                Finding("fit", K.UNDERFITTING, 0.5, "still improving")]
    targets = reflect(findings, 0.7)
    cfg = load_config(tree={"data": {"train": "x.csv"}})
    inputs = ActionInputs(task="classification", labels=["x", "y"], findings=findings, oracle=object(),
                          label_budget_left=budget_left)
    prior, kinds = _candidates(targets, inputs, cfg)
    best = max(v for a, v in prior.items() if a != "active_learning")
    assert best == pytest.approx(targets[0].expected_gain)
    assert prior["active_learning"] == (pytest.approx(best) if level else 0.001)
    assert kinds["active_learning"] == [K.UNLABELLED_POOL]
    # without an oracle nothing is asked
    prior, _ = _candidates(targets, ActionInputs(task="classification", labels=["x", "y"], findings=findings), cfg)
    assert "active_learning" not in prior


def test_k_plans_are_led_by_different_actions_and_the_first_is_choose_plans_plan(monkeypatch, tmp_path):
    from conftest import first_plan
    from reflectlm.loop.planner import choose_plans
    from reflectlm.reflect import reflect

    monkeypatch.setitem(ACTIONS, "halve_batch", HalveBatch)
    findings = [Finding("descent", K.PLATEAU, 0.8, "the loss plateaus")]
    targets = reflect(findings, 0.5)
    ds = Dataset(task="classification", ids=["a", "b"], labels=["x", "y"], texts=["a a", "b b"], tokens=None)
    cfg = load_config(tree={"data": {"train": "x.csv"},
                            "loop": {"exploration": "greedy", "max_actions": 2,
                                     "actions": ["halve_batch", "tune_lr", "more_epochs"]}})
    recipe = Recipe({"data": {"train": "x.csv"}}, ds)
    inputs = ActionInputs(task="classification", labels=["x", "y"], findings=findings)
    one, ranking1, addressed1 = first_plan(targets, inputs, recipe, cfg, tmp_path, set(), 1)
    plans, ranking = choose_plans(targets, inputs, recipe, cfg, tmp_path, set(), 1, k=3)
    assert [a.name for a in plans[0][0]] == [a.name for a in one] and plans[0][1] == addressed1
    # The second plan: the best action the first does not use (tune_lr, halve_batch's conflict).
    assert [[a.name for a in p] for p, _ in plans] == [["more_epochs", "halve_batch"], ["tune_lr"]]
    assert {r["action"]: r.get("challenger") for r in ranking} == {"halve_batch": 0, "more_epochs": 0, "tune_lr": 1}
    def bare(rows):
        return [{k: v for k, v in r.items() if k not in ("challenger", "chosen")} for r in rows]

    assert bare(ranking) == bare(ranking1)  # the same numbers; the first plan's rows are the ones chosen for k = 1
    assert [r["action"] for r in ranking1 if r.get("chosen")] == [r["action"] for r in ranking if r.get("challenger") == 0]
    # Together they must fit the compute budget: with room for one plan, one plan.
    cost = 2 * int(recipe.get("train.epochs")) * 2  # more_epochs doubles the epochs of 2 examples
    plans, ranking = choose_plans(targets, inputs, recipe, cfg, tmp_path, set(), 1, k=3, examples_left=cost)
    assert [[a.name for a in p] for p, _ in plans] == [["more_epochs", "halve_batch"]]
    assert "loop.examples_budget" in next(r for r in ranking if r["action"] == "tune_lr")["skipped"]


def test_a_round_built_on_a_rejected_challenger_only_tries_what_can_prove_a_gain(tmp_path):
    """Built on a promising rejected challenger, a round carries its unproven change: a calibration
    (non-inferiority) on top would be judged not-worse and let the change through, so the planner
    skips it and the next superiority action leads."""
    from reflectlm.loop.planner import choose_plans
    from reflectlm.reflect import reflect

    findings = [Finding("calibration", K.MISCALIBRATION, 0.9, "over-confident"),
                Finding("fit", K.UNDERFITTING, 0.3, "still improving")]
    targets = reflect(findings, 0.5)
    ds = Dataset(task="classification", ids=["a", "b"], labels=["x", "y"], texts=["a a", "b b"], tokens=None)
    cfg = load_config(tree={"data": {"train": "x.csv"},
                            "loop": {"exploration": "greedy", "actions": ["calibrate", "more_epochs"]}})
    recipe = Recipe({"data": {"train": "x.csv"}}, ds)
    inputs = ActionInputs(task="classification", labels=["x", "y"], findings=findings)
    plans, _ = choose_plans(targets, inputs, recipe, cfg, tmp_path, set(), 1)
    assert [a.name for a in plans[0][0]] == ["calibrate"]  # on the champion, calibration leads
    plans, ranking = choose_plans(targets, inputs, recipe, cfg, tmp_path, set(), 1, chained=True)
    assert [a.name for a in plans[0][0]] == ["more_epochs"]
    row = next(r for r in ranking if r["action"] == "calibrate")
    assert "must prove a gain" in row["skipped"] and not row.get("chosen")
