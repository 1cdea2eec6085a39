"""The report in a real browser: headless Chromium loads it with no console error, script error
or undecodable image, and takes a screenshot. Skipped only when Chromium is not installed
(`make test` installs Debian's chromium package)."""

from __future__ import annotations

import pytest

from reflectlm.report import write_report
from reflectlm.report.screenshot import check_page, find_chromium, main
from reflectlm.report.synthetic import make_synthetic_run

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="Chromium not found (apt-get install chromium, or set REFLECTLM_CHROMIUM)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_synthetic_run(tmp_path_factory.mktemp("browser") / "run", classes=12, n_train=600, n_eval=240,
                             rounds=3, steps=60)
    return write_report(run)


def test_report_renders_in_chromium_without_errors(report):
    r = check_page(report)
    assert r.ok, r.errors
    assert r.images == report.read_text().count("<img ")  # every image decoded
    assert r.height > 3000  # the whole report laid out, not an error page


def test_the_check_catches_broken_pages(tmp_path):
    """The negative control: the same check flags a missing file, a script error and console.error."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><title>t</title></head><body><h1>x</h1>"
                    '<img src="missing.png"><script>console.error("boom"); undefinedFunction();</script>'
                    "</body></html>", encoding="utf-8")
    r = check_page(page)
    assert not r.ok
    text = " ".join(r.errors)
    assert "failed to load IMG" in text and "boom" in text and "undefinedFunction" in text


def test_screenshot_command_line_writes_a_png_of_the_page(report, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "docs" / "report.png"
    assert main([str(report), str(out), "--width", "1280", "--height", "2000"]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.size == (1280, 2000)
        assert im.convert("L").getextrema()[0] < 100  # text and plots, not a blank page
    assert main([str(tmp_path / "nope.html"), str(out)]) == 2
