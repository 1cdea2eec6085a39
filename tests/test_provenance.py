"""Every results file says what produced it: a provenance block (commit, dirty tree, command, start,
wall time, CPU, versions) whose commit is in the history, and no path of the machine it ran on."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
KEYS = ("commit", "dirty", "command", "started_utc", "wall_seconds", "cpu", "versions")
ABSOLUTE = re.compile(r'(?<![\w.~-])(/(tmp|work|home|root|Users|var|opt|mnt)/[^"\s]*)')


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_results_file_has_its_provenance(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    block = data.get("provenance")
    assert isinstance(block, dict), f"{path.name} has no provenance block (benchmarks/provenance.py)"
    missing = [k for k in KEYS if k not in block]
    assert not missing, f"{path.name}: provenance lacks {missing}"
    assert re.fullmatch(r"[0-9a-f]{40}", block["commit"] or ""), f"{path.name}: commit {block['commit']!r}"
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{block['commit']}^{{commit}}"],
                           capture_output=True)
    if (ROOT / ".git").exists() and subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"],
                                                   capture_output=True, text=True).stdout.strip() == "false":
        assert known.returncode == 0, f"{path.name}: commit {block['commit']} is not in the history"
    assert isinstance(block["command"], list) and block["command"], path.name
    if not block.get("reconstructed"):  # measured with the block: every field is what was seen
        assert isinstance(block["dirty"], bool) and block["started_utc"] and block["wall_seconds"] is not None
        assert block["cpu"].get("model") and block["versions"].get("torch"), path.name


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_results_file_holds_no_absolute_path(path):
    hits = ABSOLUTE.findall(path.read_text(encoding="utf-8"))
    assert not hits, f"{path.name} holds paths of the machine it ran on: {[h[0] for h in hits[:3]]}"
