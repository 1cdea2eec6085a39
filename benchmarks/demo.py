"""The demo as a newcomer runs it, on several seeds of its sampling: does a promotion hold on test?

    python benchmarks/demo.py                           # configs/demo.toml, seeds 0-2, each not yet in --out
    python benchmarks/demo.py --config configs/X.toml   # a candidate demo
    python benchmarks/demo.py --merge-only

Each seed is one `reflectlm run CONFIG --set train.seed=S` in its own process (the seed also draws
the demo's stratified sample and, with data.simulated_label_noise, which labels are flipped), timed
from start to finish. From its summary.json: the champion's test gain over round 0 with the paired
95 % interval (summary test_gain), which rounds were promoted, and, where labels were flipped on
purpose, how many of them a label check flagged. Each seed lands in --out as it finishes, so a
stopped run resumes.

Keys: `seeds` (each with `test_gain`, `ci_low`, `ci_high`, `wall_seconds`), `all_positive`,
`max_wall_seconds`, `config`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import REPO, Provenance, merged, relative  # noqa: E402

SEEDS = (0, 1, 2)


def one(config: Path, seed: int, work: Path, extra: list[str]) -> dict:
    out = work / f"seed{seed}"
    cmd = [sys.executable, "-m", "reflectlm.cli", "run", str(config), "-o", str(out), "-q",
           "--set", f"train.seed={seed}", *sum((["--set", s] for s in extra), [])]
    t0 = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    wall = time.time() - t0
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: reflectlm run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    s = json.loads((out / "summary.json").read_text())
    info = json.loads((out / "run.json").read_text())
    g = s.get("test_gain") or {}
    row = {"seed": seed, "wall_seconds": round(wall, 1), "champion_round": s["champion_round"],
           "promoted": [r["round"] for r in s["rounds"] if r["promoted"] and r["round"] > 0],
           "actions": {r["round"]: r["actions"] for r in s["rounds"] if r["round"] > 0},
           "metric": g.get("metric") or s["selection_metric"], "test_gain": g.get("difference", 0.0),
           "ci_low": g.get("ci_low"), "ci_high": g.get("ci_high"), "round0_test": g.get("round0"),
           "champion_test": g.get("champion"), "stop_reason": s["stop_reason"],
           "output_tail": done.stdout[-1500:].replace(f"{work}/", "")}  # run directories relative to the work dir
    sim = info.get("simulated_label_noise")
    if sim:
        flagged: set = set()
        for rd in sorted((out / "rounds").iterdir()):
            f = rd / "findings.json"
            if f.is_file():
                for x in json.loads(f.read_text()).get("findings", []):
                    if x["kind"] == "label_issues":
                        flagged |= set(x["evidence"].get("flagged") or [])
        row["simulated"] = {"count": sim["count"], "flagged": len(flagged & set(sim["flipped"]))}
    return row


def summarise(rows: dict) -> dict:
    seeds = [rows[k] for k in sorted(rows, key=int)]
    return {"seeds": seeds, "all_positive": bool(seeds) and all(r["test_gain"] > 0 for r in seeds),
            "max_wall_seconds": max((r["wall_seconds"] for r in seeds), default=None),
            "provenance": merged({str(r["seed"]): r["provenance"] for r in seeds if r.get("provenance")})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "demo.json")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="a config override for every seed")
    ap.add_argument("--merge-only", action="store_true")
    args = ap.parse_args()
    have = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if have and have.get("config") != relative(args.config):
        have = {}  # another demo: start afresh
    rows = {str(r["seed"]): r for r in have.get("seeds", [])}
    work = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    if not args.merge_only:
        for seed in (int(s) for s in args.seeds.split(",")):
            if str(seed) in rows:
                continue
            prov = Provenance(seeds=[seed])
            print(f"seed {seed}: running", file=sys.stderr, flush=True)
            rows[str(seed)] = {**one(args.config, seed, work, args.extra), "provenance": prov.block()}
            result = {"config": relative(args.config), "overrides": args.extra, **summarise(rows)}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    result = {"config": relative(args.config), "overrides": args.extra, **summarise(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "seeds"} | {
        "gains": [(r["seed"], r["test_gain"], r["ci_low"], r["ci_high"], r["wall_seconds"]) for r in result["seeds"]]},
        indent=2))


if __name__ == "__main__":
    main()
