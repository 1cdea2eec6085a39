"""The FastAPI app factory. The model is loaded once, in the lifespan; every route answers JSON,
and every error has one shape:

    {"error": {"code": "text_too_long", "message": "text 3 has 2412 characters; the limit is 2000", "status": 413}}

No stack trace ever reaches a client: unexpected errors are logged (masked) with a request id and
answered as 500 internal_error with that id.

Routes: POST /v1/predict, POST /v1/feedback, GET /v1/model, GET /healthz, GET /readyz,
GET /metrics (Prometheus), GET / (a small page to try the model), /docs and /openapi.json.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..masking import MaskingFilter, mask
from ..store import StoreUnavailable
from .auth import AuthError, KeyRing, RateLimiter, retry_after
from .batching import MicroBatcher, Overloaded

log = logging.getLogger("reflectlm.serve")
_WORD = re.compile(r"\S+")  # the words an NER model sees (evaluate.text_dataset splits on whitespace)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# --------------------------------------------------------------------------- schemas


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Strict):
    texts: list[str] = Field(..., min_length=1, description="texts to label (limits: serve.max_texts, "
                                                              "serve.max_text_chars)")


class Span(_Strict):
    type: str
    start: int = Field(..., ge=0, description="character offset of the first character")
    end: int = Field(..., ge=0, description="character offset after the last character")


class Entity(Span):
    text: str
    score: float


class Prediction(BaseModel):
    id: str = Field(..., description="send it back with POST /v1/feedback to correct this prediction")
    confidence: float
    low_confidence: bool
    label: str | None = None
    probabilities: dict[str, float] | None = None
    entities: list[Entity] | None = None


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: str


class FeedbackRequest(_Strict):
    prediction_id: str = Field(..., min_length=1, max_length=64)
    label: str | None = Field(None, description="classification: the correct label")
    entities: list[Span] | None = Field(None, description="NER: the correct entity spans (character offsets)")


class FeedbackResponse(BaseModel):
    status: Literal["stored"]
    feedback_id: int
    prediction_id: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    status: int
    request_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ModelInfo(BaseModel):
    task: str
    labels: list[str]
    format: str
    precision: str
    max_texts: int
    max_text_chars: int


class Health(BaseModel):
    status: str


ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 429, 500, 503)}


# --------------------------------------------------------------------------- state


class _State:
    """What the lifespan builds: the predictor, the batcher, the store, metrics, keys, monitor."""

    def __init__(self, served: Path, settings, keys: KeyRing | None):
        self.served, self.settings, self.keys = served, settings, keys
        self.predictor = self.batcher = self.store = self.monitor = None
        self.ready = False
        self.limiter = RateLimiter(settings.serve.rate_limit_per_minute, settings.serve.rate_burst)


def _metrics():
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    reg = CollectorRegistry()  # one per app: several apps in one process (tests) do not collide
    return reg, {
        "requests": Counter("reflectlm_requests", "HTTP requests", ["route", "status"], registry=reg),
        "latency": Histogram("reflectlm_request_latency_seconds", "request latency", ["route"], registry=reg,
                             buckets=(.002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10)),
        "batch": Histogram("reflectlm_batch_size", "texts per model forward", registry=reg,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)),
        "labels": Counter("reflectlm_predicted_label", "predictions by label (NER: entity types)", ["label"],
                          registry=reg),
        "predictions": Counter("reflectlm_predictions", "texts predicted", registry=reg),
        "low": Counter("reflectlm_low_confidence", "texts predicted below serve.low_confidence", registry=reg),
        "low_rate": Gauge("reflectlm_low_confidence_rate", "low-confidence share of the drift window", registry=reg),
        "errors": Counter("reflectlm_errors", "error answers by code", ["code"], registry=reg),
        "queue": Gauge("reflectlm_queue_texts", "texts waiting or computing", registry=reg),
        "feedback": Counter("reflectlm_feedback", "corrections stored", registry=reg),
        "drift": Gauge("reflectlm_drift_alert", "1 while a drift check is alerting", ["check"], registry=reg),
        "drift_value": Gauge("reflectlm_drift_value", "latest value of each drift check", ["check"], registry=reg),
    }


# --------------------------------------------------------------------------- the app


def create_app(served: str | Path, settings=None, keys: KeyRing | None = None, predictor=None) -> FastAPI:
    """The service for a run directory (its champion), a bundle or an export directory.
    settings: a DeployConfig (default: defaults); keys: a KeyRing (default: from settings and
    the environment); predictor: an already loaded Predictor (tests, benchmarks)."""
    from ...config import DeployConfig

    settings = settings or DeployConfig()
    sc = settings.serve
    served = Path(served)
    if sc.auth and keys is None:
        keys = load_keys(sc)
    state = _State(served, settings, keys if sc.auth else None)
    registry, m = _metrics()
    if sc.mask_pii and not any(isinstance(f, MaskingFilter) for f in log.filters):
        log.addFilter(MaskingFilter(sc.pii_region))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from ..monitor import LiveMonitor, reference_sample
        from ..predictor import load_predictor
        from ..store import ProductionStore

        loop = asyncio.get_running_loop()
        state.predictor = predictor or await loop.run_in_executor(None, load_predictor, served, sc.threads)
        state.store = await loop.run_in_executor(None, ProductionStore(sc.store or served / "serving.sqlite").open)
        state.store.set_meta(served=str(served.resolve()), task=state.predictor.task, labels=state.predictor.labels,
                             low_confidence=sc.low_confidence, masked=sc.mask_pii)
        reference = await loop.run_in_executor(None, reference_sample, state.predictor, served)
        if reference is not None:
            def on_result(result):
                for name, c in result.get("checks", {}).items():
                    m["drift"].labels(name).set(1.0 if c["alert"] else 0.0)
                    m["drift_value"].labels(name).set(c["value"])
                if "low_confidence" in result.get("checks", {}):
                    m["low_rate"].set(result["checks"]["low_confidence"]["value"])

            state.monitor = LiveMonitor(reference, settings.monitor, sc.low_confidence, on_result)
        else:
            log.warning("no run directory behind %s: drift monitoring is off", served)
        state.batcher = MicroBatcher(_run_batch, sc.max_batch, sc.max_wait_ms / 1000.0, sc.max_queue_texts,
                                     on_batch=lambda n, s: m["batch"].observe(n))
        await state.batcher.start()
        state.ready = True
        log.info("serving %s (%s %s, %s labels) with store %s", served, state.predictor.info.get("format"),
                 state.predictor.info.get("precision"), len(state.predictor.labels), state.store.name)
        try:
            yield
        finally:
            state.ready = False
            await state.batcher.stop()
            state.store.close()

    def _run_batch(texts: list[str], contexts: list[dict]) -> list[dict]:
        """On the batch worker thread: one forward, then the store, metrics and monitor."""
        from ..monitor import text_label

        p = state.predictor
        probs, emb = p.run(texts)
        readable = p.readable(texts, probs)
        conf = p.confidence(probs)
        rows = []
        for text, r, c in zip(texts, readable, conf):
            stored = mask(text, sc.pii_region, keep_words=p.task == "ner") if sc.mask_pii else text
            # NER entities are stored without their text (it may hold personal data)
            output = ({"label": r["label"]} if p.task != "ner" else
                      {"entities": [{k: e[k] for k in ("type", "start", "end", "score")} for e in r["entities"]]})
            words = [[w.start(), w.end()] for w in _WORD.finditer(text)] if p.task == "ner" else None
            rows.append({"text": stored, "output": output, "confidence": float(c),
                         "low_confidence": bool(c < sc.low_confidence), "words": words})
        keys = [ctx.get("key") for ctx in contexts]
        ids: list[str] = []
        start = 0
        while start < len(rows):  # one insert per run of texts from the same key
            end = start
            while end < len(rows) and keys[end] == keys[start]:
                end += 1
            ids += state.store.add_predictions(rows[start:end], keys[start])
            start = end
        labels = [text_label(p.task, r) for r in readable]
        for lab, row in zip(labels, rows):
            m["labels"].labels(lab).inc()
            if row["low_confidence"]:
                m["low"].inc()
                log.info("low confidence %.2f (%s): %s", row["confidence"], lab, row["text"][:200])
        m["predictions"].inc(len(rows))
        if state.monitor is not None:
            state.monitor.add(labels, conf, emb)
        return [{"id": i, "low_confidence": row["low_confidence"], **r} for i, row, r in zip(ids, rows, readable)]

    app = FastAPI(title="ReflectLM model service", version="1", lifespan=lifespan,
                  description="Predictions from a ReflectLM champion, corrections back into the next run. "
                              "Send the API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.")
    app.state.reflectlm = state
    app.state.metrics_registry = registry

    # ----------------------------------------------------------------- errors

    def error(status: int, code: str, message: str, headers: dict | None = None, request_id: str | None = None):
        m["errors"].labels(code).inc()
        body = {"error": {"code": code, "message": message, "status": status}}
        if request_id:
            body["error"]["request_id"] = request_id
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error(e.status, e.code, e.message, e.headers)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, e: StoreUnavailable):
        # The database is gone for a moment (a restart, a fail-over): nothing was stored, the client retries.
        log.error("%s", e)
        return error(503, "store_unavailable", "the production store cannot be reached; nothing was stored, retry "
                                               "after the indicated time", {"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        # loc and msg only: the offending input is not echoed (it may hold personal data)
        parts = [f"{'.'.join(str(x) for x in err.get('loc', ()) if x != 'body') or 'body'}: {err.get('msg')}"
                 for err in e.errors()[:5]]
        return error(422, "invalid_request", "; ".join(parts) or "the request body is not valid JSON for this route")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "payload_too_large"}
        return error(e.status_code, codes.get(e.status_code, "http_error"), str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        rid = uuid.uuid4().hex[:12]
        log.error("request %s failed: %s: %s", rid, type(e).__name__, e, exc_info=e)
        return error(500, "internal_error", f"internal error; the server log has the details under request id {rid}",
                     request_id=rid)

    # ----------------------------------------------------------------- middleware

    @app.middleware("http")
    async def _limits_and_metrics(request: Request, call_next):
        t0 = time.perf_counter()
        route = request.url.path if request.url.path in _ROUTES else "other"
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > sc.max_body_bytes):
            response = error(413, "body_too_large", f"the request body is larger than {sc.max_body_bytes} bytes "
                                                    "(serve.max_body_bytes); send fewer or shorter texts")
        else:
            try:
                response = await call_next(request)
            except Exception as e:  # noqa: BLE001 - last line of defence: never a trace to the client
                response = await _unexpected(request, e)
        m["requests"].labels(route, str(response.status_code)).inc()
        m["latency"].labels(route).observe(time.perf_counter() - t0)
        return response

    # ----------------------------------------------------------------- auth

    def authenticate(request: Request) -> str | None:
        if state.keys is None:
            return None
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
        try:
            name = state.keys.verify(key)
        except AuthError as e:
            raise ApiError(401, e.code, e.message, {"WWW-Authenticate": "Bearer"}) from None
        wait = state.limiter.take(name)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"key {name!r} is over its rate limit of "
                                                f"{sc.rate_limit_per_minute:g} requests per minute; retry later",
                           {"Retry-After": retry_after(wait)})
        return name

    def require_ready():
        if not state.ready:
            raise ApiError(503, "not_ready", "the model is still loading; retry shortly", {"Retry-After": "1"})

    # ----------------------------------------------------------------- routes

    @app.post("/v1/predict", response_model=PredictResponse, response_model_exclude_none=True, responses=ERRORS,
              summary="Label a batch of texts")
    async def predict(body: PredictRequest, request: Request):
        key = authenticate(request)
        require_ready()
        if len(body.texts) > sc.max_texts:
            raise ApiError(413, "too_many_texts", f"{len(body.texts)} texts in one request; the limit is {sc.max_texts} "
                                                  "(serve.max_texts): split the batch")
        for i, t in enumerate(body.texts):
            if len(t) > sc.max_text_chars:
                raise ApiError(413, "text_too_long", f"text {i} has {len(t)} characters; the limit is "
                                                     f"{sc.max_text_chars} (serve.max_text_chars)")
            if not t.strip():
                raise ApiError(422, "empty_text", f"text {i} is empty or blank; send text to label")
        m["queue"].set(state.batcher.pending + len(body.texts))
        try:
            results = await state.batcher.submit(body.texts, {"key": key}, sc.request_timeout_s)
        except Overloaded as e:
            raise ApiError(503, "overloaded", f"the server is at capacity ({state.batcher.pending} texts queued); "
                                              "retry after the indicated time",
                           {"Retry-After": retry_after(e.retry_after_s)}) from None
        finally:
            m["queue"].set(state.batcher.pending)
        return {"predictions": results, "model": state.predictor.info.get("format", "torch") + "-" +
                state.predictor.info.get("precision", "fp32")}

    @app.post("/v1/feedback", response_model=FeedbackResponse, status_code=201, responses=ERRORS,
              summary="Correct a past prediction")
    def feedback(body: FeedbackRequest, request: Request):
        # A plain def: FastAPI runs it on a worker thread, so the store's commit does not block the loop.
        key = authenticate(request)
        require_ready()
        p = state.predictor
        row = state.store.prediction(body.prediction_id)
        if row is None:
            raise ApiError(404, "unknown_prediction", f"no prediction with id {body.prediction_id!r}; send an id that "
                                                      "POST /v1/predict returned")
        tags = None
        if p.task == "ner":
            if body.entities is None or body.label is not None:
                raise ApiError(422, "invalid_feedback", "this is an NER model: send entities (a list of "
                                                        "{type, start, end}, possibly empty), not label")
            tags = _spans_to_tags(body.entities, row["words"] or [], p.labels)
        else:
            if body.label is None or body.entities is not None:
                raise ApiError(422, "invalid_feedback", "send label (the correct class) for a classification model")
            if body.label not in p.labels:
                raise ApiError(422, "unknown_label", f"label {body.label!r} is not one of the model's labels: "
                                                     f"{', '.join(p.labels[:30])}")
        fid = state.store.add_feedback(body.prediction_id, body.label, tags, key)
        m["feedback"].inc()
        return {"status": "stored", "feedback_id": fid, "prediction_id": body.prediction_id}

    @app.get("/v1/model", response_model=ModelInfo, responses=ERRORS, summary="What is served")
    async def model_info(request: Request):
        authenticate(request)
        require_ready()
        p = state.predictor
        return {"task": p.task, "labels": p.labels, "format": p.info.get("format", "torch"),
                "precision": p.info.get("precision", "fp32"), "max_texts": sc.max_texts, "max_text_chars": sc.max_text_chars}

    @app.get("/healthz", response_model=Health, summary="The process is alive")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}}, summary="The model is loaded")
    async def readyz():
        if not (state.ready and state.batcher is not None and state.batcher.running):
            raise ApiError(503, "not_ready", "the model is not loaded yet", {"Retry-After": "1"})
        return {"status": "ready"}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, summary="A page to try the model and send corrections")
    async def page():
        from .ui import PAGE

        return HTMLResponse(PAGE)

    _ROUTES = {"/v1/predict", "/v1/feedback", "/v1/model", "/healthz", "/readyz", "/metrics", "/", "/docs",
               "/openapi.json"}
    return app


def load_keys(sc) -> KeyRing:
    """The API keys serve.auth asks for (serve.api_keys_file and REFLECTLM_API_KEYS), or an error that says how."""
    keys = KeyRing(sc.api_keys_file)
    if not len(keys):
        from ...config import ConfigError

        raise ConfigError("serve.auth is on but no API key is configured: set REFLECTLM_API_KEYS=name:key, or "
                          "serve.api_keys_file (`reflectlm keys add NAME --file keys.toml`), or serve.auth = false "
                          "to serve without keys on a trusted machine")
    return keys


def _spans_to_tags(entities: list, words: list, labels: list[str]) -> list[str]:
    """Character-offset spans -> one BIO tag per word of the served text (a span covers the words
    it overlaps). Raises ApiError 422 for a span outside the text or an unknown type."""
    types = {lab[2:] for lab in labels if lab != "O"}
    tags = ["O"] * len(words)
    end_of_text = words[-1][1] if words else 0
    for e in sorted(entities, key=lambda e: e.start):
        if e.type not in types:
            raise ApiError(422, "unknown_label", f"entity type {e.type!r} is not one of {', '.join(sorted(types))}")
        if not 0 <= e.start < e.end <= end_of_text:
            raise ApiError(422, "invalid_span", f"span [{e.start}, {e.end}) is not inside the text (0..{end_of_text})")
        covered = [i for i, (s, t) in enumerate(words) if s < e.end and t > e.start]
        if not covered or any(tags[i] != "O" for i in covered):
            raise ApiError(422, "invalid_span", f"span [{e.start}, {e.end}) covers no word or overlaps another span")
        for k, i in enumerate(covered):
            tags[i] = ("B-" if k == 0 else "I-") + e.type
    return tags


def serve(served: str | Path, settings=None, host: str | None = None, port: int | None = None,
          workers: int | None = None) -> None:
    """Run the service with uvicorn (blocks). workers > 1 starts processes that each load the model."""
    import os

    import uvicorn

    from ...config import DeployConfig

    settings = settings or DeployConfig()
    sc = settings.serve
    host, port, workers = host or sc.host, port or sc.port, workers or sc.workers
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if workers == 1:
        uvicorn.run(create_app(served, settings), host=host, port=port, log_level="info", access_log=False)
        return
    # Several processes: uvicorn imports the app by name in each; the settings travel as JSON.
    os.environ["REFLECTLM_SERVE_PATH"] = str(served)
    os.environ["REFLECTLM_SERVE_SETTINGS"] = settings.model_dump_json()
    uvicorn.run("reflectlm.deploy.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="info", access_log=False)


def app_from_env() -> FastAPI:
    """uvicorn's factory for worker processes (see serve)."""
    import os

    from ...config import DeployConfig

    return create_app(os.environ["REFLECTLM_SERVE_PATH"],
                      DeployConfig.model_validate_json(os.environ["REFLECTLM_SERVE_SETTINGS"]))
