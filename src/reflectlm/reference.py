"""The reference pages of the documentation, generated from the code so they cannot drift from it:
every config key (from the pydantic models: type, default, allowed values, and the comment that
documents the field in config.py), every diagnosis check and loop action (from their tables:
what they read, address and take, the tasks they run for), the CLI (from the Typer app's command
tree: every command, its usage, arguments and options) and the HTTP API (the OpenAPI document
FastAPI produces).

    python -m reflectlm.reference DIR     # writes cli.md, config.md, checks.md, actions.md, http.md into DIR

`make docs` builds the site with these pages (docs/hooks.py calls `pages()` at build time).
"""

from __future__ import annotations

import enum
import inspect
import io
import json
import sys
import tokenize
import types
import typing
from pathlib import Path

from pydantic import BaseModel

# --------------------------------------------------------------------------- config keys


def _comments(cls) -> dict[str, str]:
    """Field name -> the comment that documents it in the class's source: the full-line comments
    right above the field and the one at the end of its line."""
    lines, _ = inspect.getsourcelines(cls)
    src = "".join(lines)
    by_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            by_line[tok.start[0]] = tok.string.lstrip("#").strip()
    out = {}
    for name in cls.model_fields:
        for i, line in enumerate(lines, start=1):
            stripped = line.strip()
            if not stripped.startswith(f"{name}:") or line[: len(line) - len(line.lstrip())] != " " * 4:
                continue
            above, k = [], i - 1
            while k >= 1 and lines[k - 1].strip().startswith("#"):
                above.insert(0, by_line.get(k, ""))
                k -= 1
            inline = by_line.get(i, "") if "#" in line else ""
            out[name] = " ".join(p for p in (*above, inline) if p)
            break
    return out


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(json.dumps(v) for v in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    if tp is type(None):
        return "none"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(json.dumps(m.value) for m in tp)
    return getattr(tp, "__name__", str(tp))


def _bounds(field) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >="}
    out = []
    for m in field.metadata:
        for attr, sign in words.items():
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sign} {v:g}" if isinstance(v, float) else f"{sign} {v}")
    return ", ".join(out)


def _default(field) -> str:
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    return json.dumps(value, default=str)


def config_keys(model=None, prefix: str = "") -> list[dict]:
    """Every key of the config tree: {"key", "type", "default", "allowed", "doc"}, in source order."""
    from .config import Config

    model = model or Config
    docs = _comments(model)
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        tp = field.annotation
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            rows.append({"key": key, "type": "section", "default": "", "allowed": "",
                         "doc": docs.get(name) or " ".join((tp.__dict__.get("__doc__") or "").split())})
            rows += config_keys(tp, key + ".")
            continue
        rows.append({"key": key, "type": _type_name(tp), "default": _default(field), "allowed": _bounds(field),
                     "doc": docs.get(name, "")})
    return rows


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def config_markdown() -> str:
    from .config import DeployConfig

    head = ["# Configuration keys", "",
            "Generated from the pydantic models in `reflectlm/config.py`. A run's config is one TOML file; "
            "any key can be overridden with `--set section.key=value` (values parse as TOML). `[serve]` and "
            "`[monitor]` are read by `reflectlm serve` and `reflectlm monitor`, from their own file or a run's.", ""]
    out = head
    for title, rows in (("Run config", config_keys()), ("Serve and monitor config", config_keys(DeployConfig))):
        out += [f"## {title}", "", "| key | type | default | allowed | what it does |", "|---|---|---|---|---|"]
        out += [f"| `{r['key']}` | {_cell(r['type'])} | `{_cell(r['default'])}` | {_cell(r['allowed'])} | "
                f"{_cell(r['doc'])} |" if r["type"] != "section" else
                f"| **`[{r['key']}]`** | section | | | {_cell(r['doc'])} |" for r in rows]
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- checks and actions


def _summary(obj) -> str:
    """The first paragraph of an object's docstring (or its module's), on one line."""
    own = obj.__dict__.get("__doc__") or ""
    if own.startswith(f"{obj.__name__}("):  # the signature a dataclass writes when it has no docstring
        own = ""
    doc = inspect.cleandoc(own) if own else inspect.getdoc(sys.modules[obj.__module__]) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _param_rows(cls) -> list[tuple[str, str, str]]:
    """(name, default, comment) of a check's constructor or an action's dataclass fields."""
    try:
        src_lines, _ = inspect.getsourcelines(cls)
    except OSError:
        src_lines = []
    comments = {}
    for line in src_lines:
        if "#" in line:
            code, _, note = line.partition("#")
            for token in (code.split("=")[0].strip().removeprefix("self."), code.split(":")[0].strip()):
                if token.isidentifier():
                    comments.setdefault(token, note.strip())
    fields = getattr(cls, "__dataclass_fields__", None)
    if fields:
        import dataclasses

        return [(f.name, json.dumps(f.default if f.default is not dataclasses.MISSING else f.default_factory(),
                                    default=str), comments.get(f.name, ""))
                for f in fields.values() if f.init]
    sig = inspect.signature(cls.__init__)
    return [(n, json.dumps(p.default, default=str) if p.default is not inspect.Parameter.empty else "(required)",
             comments.get(n, "")) for n, p in sig.parameters.items() if n != "self"]


def _params_table(cls) -> list[str]:
    """A check's or an action's parameters as a markdown table (nothing when it has none)."""
    rows = _param_rows(cls)
    if not rows:
        return []
    return ["| parameter | default | meaning |", "|---|---|---|",
            *(f"| `{n}` | `{_cell(d)}` | {_cell(c)} |" for n, d, c in rows), ""]


def _tasks_for(thing) -> str:
    from .tasks import TASKS, applies

    return ", ".join(name for name, task in TASKS.items() if applies(task, thing))


def checks_markdown() -> str:
    from .diagnose import DIAGNOSTICS

    out = ["# Diagnosis checks", "", "Generated from `reflectlm.diagnose.DIAGNOSTICS`, the one table of checks. "
           "Choose some with `loop.checks` or `reflectlm diagnose --checks`. The parameters below are each "
           "check's defaults.", ""]
    for name, cls in DIAGNOSTICS.items():
        out += [f"## `{name}`", "", _summary(cls), "",
                f"- reads: {', '.join(f'`{n}`' for n in getattr(cls, 'needs', ())) or 'nothing beyond the run'}",
                f"- tasks: {_tasks_for(cls)}", ""]
        out += _params_table(cls)
    return "\n".join(out)


def actions_markdown() -> str:
    from .actions import ACTIONS

    out = ["# Loop actions", "", "Generated from `reflectlm.actions.ACTIONS`, the one table of actions, in the "
           "order a plan applies them. Allow some with `loop.actions`, forbid some with `loop.exclude_actions`; "
           "set an action's parameters with `[loop.action_params.NAME]`.", ""]
    for name, cls in ACTIONS.items():
        addressed = ", ".join(f"`{k}`" + (f" (rank {r})" if r is not None else " (not proposed)")
                              for k, r in sorted(getattr(cls, "addresses", {}).items()))
        out += [f"## `{name}`", "", _summary(cls), "",
                f"- addresses: {addressed or 'no finding (proposed on its own terms)'}",
                f"- judged by: {getattr(cls, 'mode', 'superiority').replace('_', '-')}",
                f"- retrains: {'yes' if getattr(cls, 'retrains', True) else 'no (a step after training)'}",
                f"- tasks: {_tasks_for(cls)}", ""]
        out += _params_table(cls)
    return "\n".join(out)


# --------------------------------------------------------------------------- the HTTP API


def openapi(task: str = "classification") -> dict:
    """The service's OpenAPI document for a model of this task (no model is loaded)."""
    from .config import DeployConfig
    from .deploy.serve.app import create_app

    settings = DeployConfig.model_validate({"serve": {"auth": False}})
    return create_app(".", settings, predictor=types.SimpleNamespace(task=task)).openapi()


def http_markdown() -> str:
    from .tasks import TASKS

    doc = openapi()
    out = ["# HTTP API", "", "Generated from the OpenAPI document of `reflectlm serve` (also served at "
           "`/openapi.json`, with an interactive page at `/docs`). " + doc["info"].get("description", ""), "",
           "| method | path | what it does |", "|---|---|---|"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            out.append(f"| {method.upper()} | `{path}` | {_cell(op.get('summary') or op.get('description') or '')} |")
    out.append("")
    by_task = {task: {k: v for k, v in openapi(task).get("components", {}).get("schemas", {}).items()
                      if k not in ("HTTPValidationError", "ValidationError")} for task in TASKS}
    common = {k: v for k, v in by_task["classification"].items() if all(t.get(k) == v for t in by_task.values())}
    out += _schema_tables("Schemas of every task", common)
    for task, schemas in by_task.items():
        out += _schema_tables(f"Schemas of a {task} model", {k: v for k, v in schemas.items() if k not in common})
    return "\n".join(out)


def _schema_tables(title: str, schemas: dict) -> list[str]:
    out = [f"## {title}", ""]
    for name, schema in schemas.items():
        out += [f"### {name}", "", "| field | type | required |", "|---|---|---|"]
        out += [f"| `{p}` | {_cell(_schema_type(s))} | {'yes' if p in schema.get('required', []) else ''} |"
                for p, s in schema.get("properties", {}).items()]
        out.append("")
    return out


def _schema_type(s: dict) -> str:
    if "$ref" in s:
        return s["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in s:
        return " or ".join(_schema_type(x) for x in s["anyOf"])
    if s.get("type") == "array":
        return f"array of {_schema_type(s.get('items', {}))}"
    return s.get("type", "any")


# --------------------------------------------------------------------------- the CLI


def cli_commands() -> list[tuple[str, object]]:
    """(full name, click command) of every command and sub-command of `reflectlm`, in order."""
    import click
    import typer

    from .cli import app

    def walk(group, prefix):
        out = []
        for name in group.list_commands(click.Context(group)):
            cmd = group.get_command(click.Context(group), name)
            if cmd is None or getattr(cmd, "hidden", False):
                continue
            out.append((f"{prefix} {name}", cmd))
            if isinstance(cmd, click.Group):
                out += walk(cmd, f"{prefix} {name}")
        return out

    return walk(typer.main.get_command(app), "reflectlm")


def cli_markdown() -> str:
    import click

    out = ["# Command line", "", "Generated from the Typer app (`reflectlm.cli`). Every command also answers "
           "`--help`. Exit codes: 0 ok, 1 the job failed, 2 bad usage or bad input (the message says how to fix it).",
           ""]
    for name, cmd in cli_commands():
        ctx = click.Context(cmd, info_name=name)
        out += [f"## `{name}`", "", inspect.cleandoc(cmd.help or cmd.short_help or ""), "", "```",
                cmd.get_usage(ctx).replace("Usage: ", ""), "```", ""]
        rows = [r for r in (p.get_help_record(ctx) for p in cmd.get_params(ctx)) if r]
        if rows:
            out += ["| argument or option | what it does |", "|---|---|"]
            out += [f"| `{_cell(flag)}` | {_cell(text)} |" for flag, text in rows]
            out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- the pages


def pages() -> dict[str, str]:
    """Path under docs/ -> the page's markdown."""
    return {"reference/cli.md": cli_markdown(), "reference/config.md": config_markdown(),
            "reference/checks.md": checks_markdown(),
            "reference/actions.md": actions_markdown(), "reference/http.md": http_markdown()}


def main(argv: list[str] | None = None) -> None:
    target = Path((argv or sys.argv[1:] or ["docs"])[0])
    for rel, text in pages().items():
        path = target / Path(rel).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
        print(path)


if __name__ == "__main__":
    main()
