"""The example configs in configs/ stay valid, open with the command that runs them, and the
packaged demo config is the one in configs/."""

from __future__ import annotations

from pathlib import Path

import pytest

from reflectlm.cli import demo_config_path
from reflectlm.config import load_config

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.toml"))


def test_the_issue_configs_exist():
    assert {p.name for p in CONFIGS} >= {"banking77.toml", "financial_tweets.toml", "wnut17.toml",
                                         "wnut17_lstm.toml", "demo.toml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_and_names_its_command(path, monkeypatch):
    monkeypatch.setenv("REFLECTLM_DATA", "/data")
    cfg = load_config(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# reflectlm ") and (path.name in first or "demo" in first)
    for split in (cfg.data.train, cfg.data.selection, cfg.data.test):
        assert split is None or split.startswith("/data/") or split.startswith("builtin:")


def test_packaged_demo_config_is_configs_demo():
    assert demo_config_path().read_text() == Path(CONFIGS[0].parent, "demo.toml").read_text()
