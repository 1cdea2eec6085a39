"""The shape of the package, checked on its source: no file outside tasks/ (and config validation)
tests a task's name, no function runs over 80 lines, no file but rundir.py spells a run-directory
file name, and the import graph has no cycle and no arrow up to the package root."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "reflectlm"
PACKAGE = "reflectlm"


def sources() -> dict[str, Path]:
    """module name -> file, for every module of the package."""
    out = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


# A test of the task's name: task == "ner", data.task != "classification", is_ner, task in ("ner", ...).
TASK_TEST = re.compile(r"""\btask\w*\s*(?:==|!=)|(?:==|!=)\s*["'](?:classification|ner|qa)["']|\bis_ner\b"""
                       r"""|\btask\w*\s+(?:not\s+)?in\s+[(\[{]\s*["']""")


def test_no_file_outside_tasks_tests_a_task_name():
    hits = []
    for name, path in sources().items():
        if name.startswith(f"{PACKAGE}.tasks") or name == f"{PACKAGE}.config":
            continue
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if TASK_TEST.search(code):
                hits.append(f"{path.relative_to(SRC.parent)}:{no}: {line.strip()}")
    assert not hits, "a file names a task; ask the Task instead (tasks/base.py):\n" + "\n".join(hits)


def test_the_checker_would_see_a_task_test():
    for line in ('if cfg.data.task == "ner":', "if task != 'classification':", "x = is_ner(ds)",
                 'if inputs.task in ("ner", "qa"):'):
        assert TASK_TEST.search(line), line
    for line in ('head = "token"', 'if ctx.task.head == "sequence":', "task = get_task(name)"):
        assert not TASK_TEST.search(line), line


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in sources().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno + 1} lines)")
    assert not long, "split these functions:\n" + "\n".join(long)


def test_only_rundir_spells_the_run_directory_file_names():
    from reflectlm import rundir

    names = {v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str) and "." in v}
    assert {"config.toml", "decision.json", "train.jsonl", "serving.sqlite", "export.json"} <= names
    pattern = re.compile(r"""(["'])(%s)\1""" % "|".join(re.escape(n) for n in sorted(names)))
    hits = [f"{path.relative_to(SRC.parent)}:{no}: {line.strip()}"
            for name, path in sources().items() if name != f"{PACKAGE}.rundir"
            for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line.split("#", 1)[0])]
    assert not hits, "use the names in reflectlm/rundir.py:\n" + "\n".join(hits)


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules `name` imports (at any depth of its code, function bodies included)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in modules and t != name}
    return out


def test_the_import_graph_has_no_cycle_and_no_arrow_up_to_the_package_root():
    mods = sources()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    up = sorted(m for m, deps in graph.items() if PACKAGE in deps and m != PACKAGE)
    assert not up, f"these modules import from the package root {PACKAGE}/__init__.py: {up}"
    # Tarjan's strongly connected components: a cycle is a component of more than one module.
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    cycles = [sorted(c) for c in comps if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"
