"""Report size and render time for a BANKING77-sized run (77 classes, ~9,000 training examples).

    python benchmarks/report_size.py [--classes 77] [--train 9000] [--rounds 4]

Builds a synthetic loop run directory of that size (reflectlm.report.synthetic: no training),
writes its report.html and prints JSON:
  bytes               the report's size (budget: under 5 MB)
  write_seconds       building the page: reading the run, drawing and encoding the plots
  render_seconds      headless Chromium, navigation start to the load event with every image
                      decoded, measured inside the page (budget: under 2 s); null without Chromium
  browser_wall_seconds  the whole Chromium process including its start-up, for reference
  images, page_errors
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=77)
    ap.add_argument("--train", type=int, default=9000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--keep", type=Path, default=None, help="write the run here and keep it")
    args = ap.parse_args()

    from reflectlm.report import write_report
    from reflectlm.report.screenshot import check_page, find_chromium
    from reflectlm.report.synthetic import make_synthetic_run

    with tempfile.TemporaryDirectory() as tmp:
        run = make_synthetic_run(args.keep or Path(tmp) / "banking77-synthetic", classes=args.classes,
                                 n_train=args.train, rounds=args.rounds)
        t0 = time.perf_counter()
        report = write_report(run)
        write_seconds = time.perf_counter() - t0
        out = {"classes": args.classes, "train_examples": args.train, "rounds": args.rounds,
               "bytes": report.stat().st_size, "write_seconds": round(write_seconds, 2),
               "render_seconds": None, "browser_wall_seconds": None, "images": None, "page_errors": None}
        if find_chromium():
            r = check_page(report)
            out.update(render_seconds=None if r.load_ms is None else round(r.load_ms / 1000, 3),
                       browser_wall_seconds=round(r.wall_seconds, 2), images=r.images, page_errors=r.errors)
        else:
            print("chromium not found: render_seconds not measured (apt-get install chromium)", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
