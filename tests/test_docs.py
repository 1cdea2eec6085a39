"""The documentation: a short README that starts with the set-up commands, a site that builds with
--strict, and reference pages that list everything the code has (the CLI, every config key, every
check and action) because they are generated from it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_starts_with_the_set_up_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    first_block = "\n".join(lines[: lines.index("```", lines.index("```bash") + 1)])
    assert "make demo" in first_block and "make test" in first_block


def test_reference_pages_list_every_config_key_check_and_action():
    from reflectlm.actions import ACTIONS
    from reflectlm.config import DeployConfig
    from reflectlm.diagnose import DIAGNOSTICS
    from reflectlm.reference import config_keys, pages

    p = pages()
    for row in config_keys() + config_keys(DeployConfig):
        assert f"`{row['key']}`" in p["reference/config.md"] or f"`[{row['key']}]`" in p["reference/config.md"]
        assert row["doc"], f"config key {row['key']} has no comment in config.py to document it"
    assert all(f"## `{name}`" in p["reference/checks.md"] for name in DIAGNOSTICS)
    assert all(f"## `{name}`" in p["reference/actions.md"] for name in ACTIONS)
    assert "/v1/predict" in p["reference/http.md"] and "/v1/feedback" in p["reference/http.md"]


def _commands(group, prefix="") -> list[str]:
    import click

    out = []
    for name, cmd in group.commands.items():
        out.append(f"{prefix}{name}")
        if isinstance(cmd, click.Group):
            out += _commands(cmd, f"{prefix}{name} ")
    return out


def test_the_site_builds_strict_and_its_cli_page_lists_every_command(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocs_typer2")
    import typer

    from reflectlm.cli import app

    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    # mkdocs-typer2 runs the `typer` command of this environment.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", " ", cli)
    for name in _commands(typer.main.get_command(app)):
        assert name.split()[-1] in text, f"reflectlm {name} is missing from the CLI reference"
    for page in ("reference/config", "reference/checks", "reference/actions", "reference/http", "benchmarks"):
        assert (tmp_path / "site" / page / "index.html").is_file()


def test_the_docs_describe_the_product_not_work_sessions():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    diary = re.compile(r"\bwork(ing)? sessions?\b|\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth) "
                       r"(session|period)\b|\bthe last run of\b", re.I)
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in pages
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if diary.search(line)]
    assert not hits, hits
