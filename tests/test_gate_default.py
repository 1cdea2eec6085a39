"""The loop's McNemar test is the one the owner's rule adopted from the A/A pairs in
benchmarks/results/gate.json (mid-p once 100 pairs show at most 5 false promotions with it)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gate.json"


def test_the_default_mcnemar_test_is_the_adopted_one():
    from reflectlm.config import LoopConfig

    adopted = (json.loads(RESULTS.read_text(encoding="utf-8")).get("adopted_gate") or {}).get("mcnemar", "exact")
    assert LoopConfig().mcnemar == adopted
