"""Render a report in headless Chromium: a PNG screenshot, and a check that the page loads
without a console error, a script error or an image that fails to decode.

    python -m reflectlm.report.screenshot runs/demo/report.html docs/report.png [--width 1280] [--height N]

The check loads a copy of the page with a small probe script prepended: it records errors
(window.onerror, failed resource loads, console.error, images that did not decode) and, on the
load event, writes the verdict and the time the page took into document.title, which
`--dump-dom` prints. Chromium's own console log (--enable-logging=stderr) is scanned too; the
report has no scripts of its own, so any console message from the page counts as an error.
Chromium: Debian's `chromium` package (`make test` installs it), or set REFLECTLM_CHROMIUM.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import rundir

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
         "--mute-audio", "--enable-logging=stderr", "--v=0"]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

PROBE = """<script>(function(){var errs=[];
function mark(m){errs.push(String(m).slice(0,200));document.title='REPORT_ERROR '+errs.join(' | ');}
window.addEventListener('error',function(e){var t=e.target;
 if(t&&t!==window&&t.tagName){mark('failed to load '+t.tagName+' '+String(t.src||t.href||'').slice(0,80));}
 else{mark('script error: '+e.message);}},true);
window.addEventListener('unhandledrejection',function(e){mark('unhandled rejection: '+e.reason);});
var ce=console.error;console.error=function(){mark('console.error: '+Array.prototype.join.call(arguments,' '));
 return ce.apply(console,arguments);};
window.addEventListener('load',function(){
 var bad=[].filter.call(document.images,function(i){return !i.complete||i.naturalWidth===0;});
 if(bad.length){mark(bad.length+' image(s) did not decode');}
 if(!errs.length){document.title='REPORT_OK '+performance.now().toFixed(1)+' '+document.images.length+' '+
  Math.max(document.body.scrollHeight,document.documentElement.scrollHeight);}});
})();</script>"""


@dataclass
class Rendered:
    ok: bool  # loaded with no error of any kind
    errors: list[str] = field(default_factory=list)  # what the probe and Chromium's console log saw
    load_ms: float | None = None  # navigation start -> load event, in the page (all images decoded)
    images: int | None = None  # <img> elements that decoded
    height: int | None = None  # the page's full height in CSS pixels at the window width
    wall_seconds: float = 0.0  # the whole headless Chromium run, start-up included
    screenshot: Path | None = None


def find_chromium() -> str | None:
    """The Chromium binary: $REFLECTLM_CHROMIUM, else the first of CANDIDATES on PATH."""
    env = os.environ.get("REFLECTLM_CHROMIUM")
    if env:
        return env if Path(env).exists() or shutil.which(env) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="reflectlm-chromium-") as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


def _console_lines(stderr: str) -> list[str]:
    return [ln.strip() for ln in stderr.splitlines() if ":CONSOLE" in ln]


def check_page(html_path: str | Path, width: int = 1280, timeout: float = 90.0) -> Rendered:
    """Load the page (a probed copy of it) in headless Chromium and report every error."""
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("Chromium not found: apt-get install chromium (or set REFLECTLM_CHROMIUM)")
    src = Path(html_path).resolve()
    page = src.read_text(encoding="utf-8")
    probed = re.sub(r"(<head[^>]*>)", lambda m: m.group(1) + PROBE, page, count=1, flags=re.I)
    if probed == page:
        probed = PROBE + page
    with tempfile.TemporaryDirectory(prefix="reflectlm-probe-") as tmp:
        copy = Path(tmp) / src.name  # same name, other folder: a relative reference would fail to load here too
        copy.write_text(probed, encoding="utf-8")
        t0 = time.perf_counter()
        proc = _run(browser, [f"--window-size={width},1000", "--dump-dom", copy.as_uri()], timeout)
        wall = time.perf_counter() - t0
    m = re.search(r"<title>(.*?)</title>", proc.stdout, flags=re.S)
    title = m.group(1).strip() if m else ""
    errors = [f"console: {ln}" for ln in _console_lines(proc.stderr)]
    out = Rendered(ok=False, errors=errors, wall_seconds=wall)
    if title.startswith("REPORT_OK"):
        parts = title.split()
        out.load_ms, out.images, out.height = float(parts[1]), int(parts[2]), int(parts[3])
    elif title.startswith("REPORT_ERROR"):
        out.errors.insert(0, title[len("REPORT_ERROR "):])
    else:
        out.errors.insert(0, f"the page did not finish loading (exit code {proc.returncode}; title {title[:80]!r}; "
                             f"stderr: {proc.stderr.strip()[-300:]!r})")
    out.ok = not out.errors
    return out


def screenshot(html_path: str | Path, png: str | Path, width: int = 1280, height: int | None = 4000,
               timeout: float = 90.0) -> Rendered:
    """Check the page, then save a PNG of it; height None = the page's full height (at most 16384)."""
    result = check_page(html_path, width, timeout)
    if height is None:
        height = min(max(result.height or 4000, 600), 16384)
    browser = find_chromium()
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = _run(browser, [f"--window-size={width},{height}", f"--screenshot={png}",
                          Path(html_path).resolve().as_uri()], timeout)
    result.wall_seconds += time.perf_counter() - t0
    result.errors += [f"console: {ln}" for ln in _console_lines(proc.stderr)]
    if not png.is_file():
        result.errors.append(f"no screenshot written (exit code {proc.returncode}): {proc.stderr.strip()[-300:]}")
    else:
        result.screenshot = png
    result.ok = not result.errors
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m reflectlm.report.screenshot", description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help=f"the run's {rundir.REPORT}")
    ap.add_argument("out", type=Path, help="PNG to write")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=None, help="window height in pixels (default: the full page)")
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(f"error: {args.report} does not exist; write it with `reflectlm report RUN`", file=sys.stderr)
        return 2
    if find_chromium() is None:
        print("error: Chromium not found: apt-get install chromium (or set REFLECTLM_CHROMIUM)", file=sys.stderr)
        return 2
    r = screenshot(args.report, args.out, args.width, args.height)
    for e in r.errors:
        print(f"page error: {e}", file=sys.stderr)
    if r.screenshot:
        print(f"wrote {r.screenshot} ({args.width} px wide; page loaded in "
              f"{'?' if r.load_ms is None else f'{r.load_ms:.0f} ms'}, {r.images} images)")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
