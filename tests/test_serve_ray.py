"""The served model as a Ray Serve deployment (local cluster, 2 CPUs, one per module): the same
answers as the plain server, the same auth, error shape and metrics; a SQLite store refused where
replicas on several machines could share it."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from _server import free_port  # noqa: E402
from reflectlm.config import ConfigError, load_deploy_config  # noqa: E402
from reflectlm.deploy.serve.app import create_app  # noqa: E402
from reflectlm.deploy.serve.auth import KeyRing  # noqa: E402
from reflectlm.deploy.serve.ray_app import check_store, deploy  # noqa: E402
from reflectlm.deploy.store import open_store  # noqa: E402

TEXTS = ["great good love", "awful bad hate", "a blue chair by the window", "so very happy"]
A = {"Authorization": "Bearer key-alice"}


def settings(store, *extra):
    return load_deploy_config(None, [f'serve.store="{store}"', "serve.threads=1", "serve.ray.num_cpus=1",
                                     "serve.ray.min_replicas=1", "serve.ray.max_replicas=1", *extra])


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield free_port()  # Serve's HTTP port: fixed for the cluster once Serve starts
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def deployed(cluster, tiny_cls_run, tmp_path_factory):
    store = tmp_path_factory.mktemp("ray-store") / "serving.sqlite"
    url = deploy(tiny_cls_run, settings(store), host="127.0.0.1", port=cluster, keys=KeyRing(env="alice:key-alice"))
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c, store


def test_the_deployment_answers_like_the_plain_server(deployed, tiny_cls_run, tmp_path):
    c, _ = deployed
    r = c.post("/v1/predict", json={"texts": TEXTS}, headers=A)
    assert r.status_code == 200, r.text
    got = r.json()
    with TestClient(create_app(tiny_cls_run, settings(tmp_path / "plain.sqlite"), KeyRing(env="alice:key-alice"))) as plain:
        want = plain.post("/v1/predict", json={"texts": TEXTS}, headers=A).json()
    assert got["model"] == want["model"]
    for g, w in zip(got["predictions"], want["predictions"]):
        assert g["label"] == w["label"] and g["low_confidence"] == w["low_confidence"]
        assert g["confidence"] == pytest.approx(w["confidence"], abs=1e-5)
        assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-5)
    assert len({p["id"] for p in got["predictions"]}) == len(TEXTS)


def test_auth_errors_and_metrics_are_the_plain_servers(deployed):
    c, _ = deployed
    for headers, code in (({}, "missing_key"), ({"Authorization": "Bearer nope"}, "invalid_key")):
        r = c.post("/v1/predict", json={"texts": ["hi"]}, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json() == {"error": {"code": code, "message": r.json()["error"]["message"], "status": 401}}
    r = c.post("/v1/predict", json={"texts": ["x" * 3000]}, headers=A)
    assert r.status_code == 413 and r.json()["error"]["code"] == "text_too_long"
    r = c.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert c.get("/readyz").json() == {"status": "ready"}
    assert c.get("/v1/model", headers=A).json()["labels"] == ["neg", "neu", "pos"]
    text = c.get("/metrics").text
    assert 'reflectlm_errors_total{code="invalid_key"} 1.0' in text
    assert 'reflectlm_requests_total{route="/v1/predict",status="401"}' in text
    assert "reflectlm_batch_size_count" in text


def test_feedback_through_the_deployment_lands_in_the_store(deployed):
    c, store = deployed
    pid = c.post("/v1/predict", json={"texts": ["nice and happy"]}, headers=A).json()["predictions"][0]["id"]
    r = c.post("/v1/feedback", json={"prediction_id": pid, "label": "pos"}, headers=A)
    assert r.status_code == 201, r.text
    s = open_store(store)
    try:
        assert [x["label"] for x in s.corrections() if x["prediction_id"] == pid] == ["pos"]
        assert s.meta()["task"] == "classification"
    finally:
        s.close()


def test_a_sqlite_store_is_refused_where_replicas_may_span_machines(tmp_path):
    store = str(tmp_path / "serving.sqlite")
    with pytest.raises(ConfigError, match="cannot share one SQLite file.*postgresql"):
        check_store(store, max_replicas=4, one_node=False)
    check_store(store, max_replicas=4, one_node=True)  # one machine: SQLite's WAL locking is enough
    check_store(store, max_replicas=1, one_node=False)  # one replica
    check_store("postgresql+psycopg://u:secret@db.example:5432/prod", max_replicas=8, one_node=False)


def test_replica_settings_are_validated():
    with pytest.raises(ConfigError, match="min_replicas"):
        load_deploy_config(None, ["serve.ray.min_replicas=3", "serve.ray.max_replicas=2"])
    with pytest.raises(ConfigError, match="target_ongoing_requests"):
        load_deploy_config(None, ["serve.ray.target_ongoing_requests=100", "serve.ray.max_ongoing_requests=10"])
    with pytest.raises(ConfigError, match="max_replicas"):
        load_deploy_config(None, ["serve.ray.max_replicas=0"])


def test_two_replicas_share_a_postgresql_store(cluster, deployed, tiny_cls_run, postgres_db):
    # After the tests above: the application is replaced by one with two replicas on PostgreSQL.
    import concurrent.futures

    from ray import serve

    url = deploy(tiny_cls_run, settings(postgres_db, "serve.ray.min_replicas=2", "serve.ray.max_replicas=2"),
                 host="127.0.0.1", port=cluster, keys=KeyRing(env="alice:key-alice"))
    states = serve.status().applications["reflectlm"].deployments["ReflectLM"].replica_states
    assert states.get("RUNNING") == 2, states

    def one(i):
        with httpx.Client(base_url=url, timeout=30, headers=A) as c:
            pid = c.post("/v1/predict", json={"texts": [f"good day {i}", f"bad day {i}"]}).json()["predictions"][0]["id"]
            return pid, c.post("/v1/feedback", json={"prediction_id": pid, "label": "pos"}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(24)))
    # a correction may reach the other replica than its prediction: it finds it in the shared store
    assert [code for _, code in results] == [201] * 24
    s = open_store(postgres_db)
    try:
        counts = s.counts()
        assert (counts["predictions"], counts["feedback"]) == (48, 24)
        assert {c["prediction_id"] for c in s.corrections()} == {pid for pid, _ in results}
    finally:
        s.close()
