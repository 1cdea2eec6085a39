"""diagnose() on a real (tiny) run directory: files written, skips and failures recorded, CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reflectlm.cli import app
from reflectlm.diagnose import DIAGNOSTICS, run_diagnosis
from reflectlm.train import train


@pytest.fixture
def tiny_run(tiny_config, cls_csv, tmp_path):
    return train(tiny_config(cls_csv, epochs=3), tmp_path / "run").run_dir


def test_diagnose_writes_findings_and_targets(tiny_run):
    from reflectlm.reflect import reflect_run

    d = run_diagnosis(tiny_run, cv="fast")
    assert not (tiny_run / "targets.json").exists()  # reflect's job, a layer above diagnose
    reflect_run(tiny_run, d)
    record = json.loads((tiny_run / "findings.json").read_text())
    targets = json.loads((tiny_run / "targets.json").read_text())
    ran = set(DIAGNOSTICS) - {s["check"] for s in record["skipped"]} - {s["check"] for s in record["failed"]}
    assert not record["failed"], record["failed"]
    assert {"performance", "gradients", "fit", "calibration", "label_issues", "crossval"} <= ran
    # A 3-epoch tiny model has not learned the typical example yet, so the data map skips, saying why.
    assert all(s["reason"] for s in record["skipped"])
    from reflectlm.tasks import applies, get_task

    clf = get_task("classification")
    assert set(record["checks"]) == {n for n, c in DIAGNOSTICS.items() if applies(clf, c)}  # output checks are for generators
    assert len(record["findings"]) == len(d.findings)
    assert [t["priority"] for t in targets] == sorted((t["priority"] for t in targets), reverse=True)
    assert record["cv"]["mode"] == "fast" and len(record["cv"]["fold_metrics"]) >= 2


def test_a_failing_check_is_recorded_and_the_rest_still_run(tiny_run, monkeypatch):
    from reflectlm.diagnose.calibration import Calibration

    def boom(self, ctx):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(Calibration, "run", boom)
    d = run_diagnosis(tiny_run, ["calibration", "fit"])
    assert d.failed == [{"check": "calibration", "error": "RuntimeError: kaboom"}]
    assert d.seconds.keys() == {"calibration", "fit"}


def test_cli_diagnose_prints_a_summary_and_rejects_unknown_checks(tiny_run):
    r = CliRunner().invoke(app, ["diagnose", str(tiny_run), "--checks", "fit,gradients,dynamics", "-q"])
    assert r.exit_code == 0, r.output
    assert "improvement targets" in r.output and "findings.json" in r.output
    r = CliRunner().invoke(app, ["diagnose", str(tiny_run), "--checks", "nope"])
    assert r.exit_code == 2 and "valid checks" in r.output


def test_library_entry_points_are_callable_after_their_modules_are_imported(tiny_run, tiny_config, cls_csv, tmp_path):
    import reflectlm
    import reflectlm.diagnose  # noqa: F401 - binds the submodule over the package attribute
    import reflectlm.train  # noqa: F401

    findings = reflectlm.diagnose(tiny_run, ["fit", "gradients"], write=False)
    assert isinstance(findings, list) and all(f.check in ("fit", "gradients") for f in findings)
    result = reflectlm.train(tiny_config(cls_csv, epochs=1), tmp_path / "again")
    assert (result.run_dir / "metrics.json").is_file()
