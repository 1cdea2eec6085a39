"""Optional MLflow tracking of a run directory (`pip install reflectlm[mlflow]`).

One MLflow run per run directory (logged again = replaced): the resolved config as params, the
per-round comparison as metrics (step = round), the champion's test metrics, the report and
summary as artifacts, the champion's model under `champion/`, and the last challenger's round
record under `challenger/`. Both are registered under one model name with the aliases
`champion` and `challenger`.

By default the store is a local SQLite file beside the runs, `sqlite:///<workspace>/mlflow.db`
(workspace = the run directory's parent), with artifacts in `<workspace>/mlartifacts/`; nothing
leaves the machine. mlflow is imported here only.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from .. import rundir
from .runs import Run, _num, load_run

EXPERIMENT = "reflectlm"
RUN_TAG = "reflectlm.run_dir"
MAX_PARAM = 500  # characters; MLflow rejects longer parameter values on some stores


def log_mlflow(run_dir: str | Path, tracking_uri: str | None = None, *, experiment: str = EXPERIMENT,
               model_name: str | None = None) -> str:
    """Log the run directory to MLflow; returns the MLflow run id."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise RuntimeError("MLflow tracking needs the mlflow extra: pip install 'reflectlm[mlflow]'") from e

    run = load_run(run_dir)
    workspace = run.path.resolve().parent
    uri = tracking_uri or f"sqlite:///{workspace / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        exp_id = client.create_experiment(experiment, artifact_location=(workspace / "mlartifacts").as_uri()
                                          if uri.startswith("sqlite:") else None)
    else:
        exp_id = exp.experiment_id
    key = str(run.path.resolve())
    for old in client.search_runs([exp_id], filter_string=f"tags.`{RUN_TAG}` = '{_quote(key)}'"):
        client.delete_run(old.info.run_id)

    tags = {RUN_TAG: key, "reflectlm.kind": run.kind, "reflectlm.task": run.task, "reflectlm.status": run.status}
    mrun = client.create_run(exp_id, run_name=run.name, tags=tags)
    rid = mrun.info.run_id
    now = int(time.time() * 1000)
    params = [Param(k, v) for k, v in _params(run).items()]
    metrics = [Metric(k, v, now, step) for k, v, step in _metrics(run)]
    for i in range(0, len(params), 100):  # log_batch takes at most 100 params ...
        client.log_batch(rid, params=params[i: i + 100])
    for i in range(0, len(metrics), 1000):  # ... and 1000 metrics per call
        client.log_batch(rid, metrics=metrics[i: i + 1000])

    for name in (rundir.REPORT, rundir.SUMMARY, rundir.RUN, rundir.CONFIG):
        if (run.path / name).is_file():
            client.log_artifact(rid, str(run.path / name))
    champ = run.champion
    name = model_name or f"reflectlm-{run.name}"
    versions = {}
    if champ is not None and (champ.path / rundir.MODEL).is_dir():
        client.log_artifacts(rid, str(champ.path / rundir.MODEL), "champion")
        versions["champion"] = f"{mrun.info.artifact_uri}/champion"
    last = run.challengers[-1] if run.challengers else None
    if last is not None:
        if last.number == run.champion_round and "champion" in versions:
            versions["challenger"] = versions["champion"]  # promoted: the same weights
        else:
            with tempfile.TemporaryDirectory() as tmp:  # the round's record without weights (a rejected challenger has none)
                for p in last.path.iterdir():
                    if p.is_file() and p.suffix in (".json", ".toml"):
                        (Path(tmp) / p.name).write_bytes(p.read_bytes())
                client.log_artifacts(rid, tmp, "challenger")
            versions["challenger"] = f"{mrun.info.artifact_uri}/challenger"
    if versions:
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - MlflowException(RESOURCE_DOES_NOT_EXIST)
            client.create_registered_model(name, description="ReflectLM champion and last challenger per run")
        made = {}
        for alias, source in versions.items():
            if source not in made:
                rnd = run.champion_round if alias == "champion" else last.number
                v = client.create_model_version(name, source, run_id=rid,
                                                tags={"round": str(rnd), "weights": str(alias == "champion" or
                                                                                        (last.path / rundir.MODEL).is_dir())})
                made[source] = v.version
            client.set_registered_model_alias(name, alias, made[source])
    client.log_batch(rid, tags=[RunTag("reflectlm.registered_model", name)] if versions else [])
    client.set_terminated(rid, "FAILED" if run.status == "failed" else "FINISHED")
    return rid


def _quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            s = v if isinstance(v, str) else json.dumps(v, default=str)
            out[f"{prefix}{k}"] = s[:MAX_PARAM]
    return out


def _params(run: Run) -> dict:
    p = _flatten(run.config)
    p.update({"reflectlm.kind": run.kind, "reflectlm.task": run.task, "reflectlm.selection_metric": str(run.metric)})
    return p


def _metrics(run: Run) -> list[tuple[str, float, int]]:
    out = []
    metric = run.metric
    before = run.champion_before()
    for r in run.rounds:
        sel = r.selection(metric)
        if sel is not None:
            out.append((f"selection_{metric}", sel, r.number))
        champ = before.get(r.number) if r.number else sel
        if champ is not None:
            out.append((f"champion_{metric}", champ, r.number))
        c = r.compare or {}
        for k in ("difference", "ci_low", "ci_high"):
            if _num(c.get(k)) is not None:
                out.append((k, _num(c[k]), r.number))
        p = _num((c.get("mcnemar") or {}).get("p_value"))
        if p is not None:
            out.append(("p_mcnemar", p, r.number))
        if r.promoted is not None:
            out.append(("promoted", float(r.promoted), r.number))
    for prefix, m in (("test_", run.test_metrics() or {}), ("round0_test_", run.round0_test() or {})):
        for k, v in m.items():
            if _num(v) is not None:
                out.append((prefix + k, _num(v), 0))
    if run.wall_seconds() is not None:
        out.append(("wall_seconds", run.wall_seconds(), 0))
    return out
