"""`reflectlm serve RUN --backend ray`: the same FastAPI app (create_app) as a Ray Serve
deployment whose replicas autoscale between serve.ray.min_replicas and max_replicas.

Each replica builds the app itself (serve.ingress with a builder function, so the model is loaded
in the replica's lifespan, not pickled from here): the same routes, auth, error shape, limits and
Prometheus metrics as the single-process server. What is per replica, as with uvicorn --workers:
the micro-batch queue, the rate limiter's buckets (a key's limit holds per replica), the drift
monitor's window and the counters behind /metrics (a scrape through Ray's proxy reaches one
replica; Ray Serve's own per-deployment metrics count every request).

What replicas share is the production store. A SQLite file is shared safely only by processes
on one machine, so with several possible replicas (max_replicas > 1) it is allowed only on a
one-node Ray instance this command starts itself (serve.ray.address unset); on a cluster, whose
replicas may be placed on any node, the store must be a database URL (PostgreSQL).

API keys are read here and sent to the replicas as SHA-256 hashes (a replica needs no
REFLECTLM_API_KEYS of its own); a key file is re-read on a replica where it exists at the same path
(rotation without a redeploy), else the keys stay as deployed.

Ray is imported only here (the `[distributed]` extra).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ... import rundir

log = logging.getLogger("reflectlm.serve")


class ReflectLMReplica:
    """One replica; its HTTP routes are the app's (see application())."""


def check_store(store: str, max_replicas: int, one_node: bool) -> None:
    """Refuse a SQLite store that replicas on several machines could share."""
    from ...config import ConfigError
    from ..store import store_url

    url = store_url(store)
    if url.get_backend_name() != "sqlite" or max_replicas <= 1 or one_node:
        return
    raise ConfigError(f"serve.store {url.database} is a SQLite file, and up to {max_replicas} replicas "
                      "(serve.ray.max_replicas) may run on different machines of the Ray cluster, which cannot share "
                      "one SQLite file: set serve.store (or --store) to a database URL, e.g. "
                      "postgresql+psycopg://USER@HOST:5432/DB, or serve.ray.max_replicas = 1")


def application(served: str | Path, settings, keys=None):
    """The bound Ray Serve application for a served path (run directory, bundle or export)."""
    from ray import serve

    from .app import load_keys

    sc, rc = settings.serve, settings.serve.ray
    served = Path(served).resolve()  # replicas do not share our working directory
    settings = settings.model_copy(deep=True)
    settings.serve.store = sc.store if sc.store and "://" in sc.store else str(Path(sc.store or served / rundir.SERVING_STORE).resolve())
    if settings.serve.threads is None:
        # Ray sets OMP_NUM_THREADS=1 in workers that have none: the replica's CPUs are its threads.
        settings.serve.threads = max(1, int(rc.num_cpus))
    if sc.auth and keys is None:
        keys = load_keys(sc)  # fails here, with the fix, rather than in every replica

    def build():  # on the replica, at its start
        from reflectlm.deploy.serve.app import create_app

        return create_app(served, settings, keys)

    autoscaling = {"min_replicas": rc.min_replicas, "max_replicas": rc.max_replicas,
                   "target_ongoing_requests": rc.target_ongoing_requests,
                   "upscale_delay_s": rc.upscale_delay_s, "downscale_delay_s": rc.downscale_delay_s}
    if rc.initial_replicas is not None:
        autoscaling["initial_replicas"] = rc.initial_replicas
    deployment = serve.deployment(serve.ingress(build)(ReflectLMReplica), name="ReflectLM",
                                  autoscaling_config=autoscaling, max_ongoing_requests=rc.max_ongoing_requests,
                                  ray_actor_options={"num_cpus": rc.num_cpus, "num_gpus": rc.num_gpus})
    return deployment.bind(), settings.serve.store


def deploy(served: str | Path, settings, host: str | None = None, port: int | None = None, keys=None) -> str:
    """Deploy on Ray Serve (joining serve.ray.address, or the Ray instance already initialised in
    this process, or a new local one) and return the base URL once every replica is ready."""
    import ray
    from ray import serve

    from ..store import describe, store_url

    sc, rc = settings.serve, settings.serve.ray
    host, port = host or sc.host, port if port is not None else sc.port
    if not ray.is_initialized():
        if rc.address:
            ray.init(address=rc.address)
        else:
            ray.init(include_dashboard=False)
    one_node = rc.address is None and sum(1 for n in ray.nodes() if n.get("Alive")) == 1
    app, store = application(served, settings, keys)
    check_store(store, rc.max_replicas, one_node)
    # Cluster-wide and fixed once Serve runs: a Serve already started in this cluster keeps its own address.
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=rc.name, route_prefix="/")
    log.info("serving %s on Ray Serve at http://%s:%s: %s-%s replicas (target %g ongoing requests each), store %s",
             served, host, port, rc.min_replicas, rc.max_replicas, rc.target_ongoing_requests,
             describe(store_url(store)))
    return f"http://{host}:{port}"


def serve_forever(served: str | Path, settings, host: str | None = None, port: int | None = None) -> None:
    """`reflectlm serve --backend ray`: deploy, then block until Ctrl-C; the application is deleted
    on the way out (and the local Ray instance, if this command started it, stopped)."""
    import ray
    from ray import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started_here = not ray.is_initialized()
    url = deploy(served, settings, host, port)
    print(f"serving on {url} (Ray Serve application {settings.serve.ray.name!r}); Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("Ctrl-C: removing the deployment", flush=True)
    finally:
        serve.delete(settings.serve.ray.name)
        if started_here:
            serve.shutdown()
            ray.shutdown()
