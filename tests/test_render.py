"""docs/benchmarks.md is rendered from benchmarks/results/*.json by benchmarks/render.py: up to date,
one section per results file, and no absolute path on the page."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import render  # noqa: E402


def test_the_page_is_up_to_date():
    done = subprocess.run([sys.executable, "benchmarks/render.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_every_results_file_has_its_own_section():
    text = render.render()
    anchors = set(re.findall(r"^## .* \{#([\w-]+)\}$", text, flags=re.M))
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        assert render.anchor(path.stem) in anchors, f"no section for {path.name}"
    assert {"demo", "gate"} <= anchors  # other pages link to these


def test_the_page_names_no_absolute_path():
    text = render.render()
    for prefix in ("/" + d + "/" for d in ("tmp", "work", "home", "root")):  # machine paths, built here
        assert prefix not in text, prefix


def test_an_unknown_or_broken_results_file_is_not_skipped(tmp_path):
    (tmp_path / "something_new.json").write_text(json.dumps({"value": 0.5, "where": "/" + "tmp/x/run"}))
    text = render.render(tmp_path)
    assert "{#something_new}" in text and "/" + "tmp/" not in text
    (tmp_path / "broken.json").write_text("{not json")
    try:
        render.render(tmp_path)
    except render.ResultsError as e:
        assert "broken.json" in str(e)
    else:
        raise AssertionError("a results file that is not valid JSON was rendered")
