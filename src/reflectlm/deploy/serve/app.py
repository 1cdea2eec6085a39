"""The FastAPI app factory. The model is loaded once, in the lifespan; every route answers JSON,
and every error has one shape:

    {"error": {"code": "text_too_long", "message": "text 3 has 2412 characters; the limit is 2000", "status": 413}}

No stack trace ever reaches a client: unexpected errors are logged (masked) with a request id and
answered as 500 internal_error with that id.

Routes: POST /v1/predict, POST /v1/feedback, GET /v1/model, GET /healthz, GET /readyz,
GET /metrics (Prometheus), GET / (a small page to try the model), /docs and /openapi.json; for a
model whose task generates text, POST /v1/generate: one text's output, or with "stream": true its
tokens as server-sent events while the model decodes (the other models answer it 404).

What a request holds and what a prediction or a correction looks like is the served task's
(task.input_fields, task.api_schema): `{"texts": [...]}` for a text task, `{"inputs": [{...}]}` for
any task (a question with its context), and one input's fields at the top level for one input.
"""


import asyncio
import json
import logging
import queue
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from ... import rundir
from ..masking import MaskingFilter, mask
from ..store import StoreUnavailable
from .auth import AuthError, KeyRing, RateLimiter, retry_after
from .batching import MicroBatcher, Overloaded

log = logging.getLogger("reflectlm.serve")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# --------------------------------------------------------------------------- schemas


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    input_fields: list[str]
    generates: bool = Field(False, description="the model generates text: POST /v1/generate answers")
    format: str
    precision: str
    max_texts: int
    max_text_chars: int


class Health(BaseModel):
    status: str


class GenerateRequest(_Strict):
    text: str = Field(..., description="the input (limit: serve.max_text_chars)")
    stream: bool = Field(False, description="answer text/event-stream (as does 'Accept: text/event-stream'): a "
                                            "{\"token\"} event per decoded piece, then {\"done\": true, ...}")


class GenerateResponse(BaseModel):
    id: str = Field(..., description="send it back with POST /v1/feedback to correct this output")
    output: str
    tokens: int = Field(..., description="generated tokens")
    seconds: float = Field(..., description="the model's time for this output")
    confidence: float | None = None
    low_confidence: bool
    model: str


ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 429, 500, 503)}


def schemas(task) -> dict:
    """The request and response models of the served task (tasks/base.py Task.api_schema)."""
    fields = task.input_fields
    api = task.api_schema()
    item = create_model("Input", __base__=_Strict, **{f: (str, ...) for f in fields})
    one = {f: (str | None, Field(None, description=f"one input's {f} (instead of inputs)")) for f in fields
           if fields != ("text",)}
    texts = {"texts": (list[str] | None, Field(None, min_length=1, description="texts to label (limits: "
                                                                               "serve.max_texts, serve.max_text_chars)"))}
    request = create_model("PredictRequest", __base__=_Strict, **(texts if fields == ("text",) else {}),
                           inputs=(list[item] | None, Field(None, min_length=1, description="inputs, each with "
                                                                                           f"{', '.join(fields)}")),
                           **one)
    prediction = create_model(
        "Prediction", id=(str, Field(..., description="send it back with POST /v1/feedback to correct this prediction")),
        confidence=(float, ...), low_confidence=(bool, ...),
        **{k: (t | None, None) for k, (t, _) in api["prediction"].items()})
    response = create_model("PredictResponse", predictions=(list[prediction], ...), model=(str, ...))
    feedback = create_model("FeedbackRequest", __base__=_Strict,
                            prediction_id=(str, Field(..., min_length=1, max_length=64)), **api["correction"])
    return {"request": request, "response": response, "feedback": feedback}


def request_items(body, task) -> list:
    """The raw inputs of a predict request, whichever form it took."""
    data = body.model_dump()
    single = {f: data.get(f) for f in task.input_fields if f in data}
    forms = [data.get("texts") is not None, data.get("inputs") is not None, any(v is not None for v in single.values())]
    if sum(forms) != 1:
        how = ("texts (a list of strings), inputs (a list of objects) or one input's fields"
               if "texts" in data else f"inputs (a list of {{{', '.join(task.input_fields)}}}) or one input's fields")
        raise ApiError(422, "invalid_request", f"send exactly one of {how}")
    if data.get("texts") is not None:
        return list(data["texts"])
    if data.get("inputs") is not None:
        rows = data["inputs"]
    else:
        missing = [f for f, v in single.items() if v is None]
        if missing:
            raise ApiError(422, "invalid_request", f"one input needs {', '.join(task.input_fields)}; missing "
                                                   f"{', '.join(missing)}")
        rows = [single]
    return [r["text"] for r in rows] if task.input_fields == ("text",) else rows


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
        "labels": Counter("reflectlm_predicted_label", "predictions by label (the task's summary label)", ["label"],
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


def served_task(served: Path, predictor=None):
    """The task of what is served, read from its model bundle (no model is loaded)."""
    from ...modeling import ModelError
    from ...tasks import get_task

    if predictor is not None:
        return get_task(predictor.task)
    model = rundir.model_of(served) or rundir.model_of(Path(served) / rundir.MODEL)
    meta = rundir.read_json(model / rundir.BUNDLE, None) if model is not None else None
    if meta is None:
        raise ModelError(f"{served} holds no model: pass a run directory (from `reflectlm run` or `reflectlm train`), "
                         f"a model bundle, or an export directory from `reflectlm export` (with {rundir.EXPORT})")
    return get_task(meta["task"])


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
    task = served_task(served, predictor)
    app = FastAPI(title="ReflectLM model service", version="1", lifespan=_lifespan(state, m, predictor),
                  description="Predictions from a ReflectLM champion, corrections back into the next run. "
                              "Send the API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.")
    app.state.reflectlm = state
    app.state.metrics_registry = registry
    error = _error_handlers(app, m)
    _middleware(app, m, sc, error)
    _predict_routes(app, state, m, task, schemas(task))
    _generate_routes(app, state, m, task, error)
    _info_routes(app, state, registry)
    return app


def _lifespan(state: _State, m: dict, predictor):
    sc = state.settings.serve

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from ..monitor import LiveMonitor, reference_sample
        from ..predictor import load_predictor
        from ..store import ProductionStore

        loop = asyncio.get_running_loop()
        state.predictor = predictor or await loop.run_in_executor(None, load_predictor, state.served, sc.threads)
        store = ProductionStore(sc.store or state.served / rundir.SERVING_STORE)
        state.store = await loop.run_in_executor(None, store.open)
        state.store.set_meta(served=str(state.served.resolve()), task=state.predictor.task,
                             labels=state.predictor.labels, low_confidence=sc.low_confidence, masked=sc.mask_pii)
        reference = await loop.run_in_executor(None, reference_sample, state.predictor, state.served,
                                               state.settings.monitor.reference_examples)
        if reference is not None:
            def on_result(result):
                for name, c in result.get("checks", {}).items():
                    m["drift"].labels(name).set(1.0 if c["alert"] else 0.0)
                    m["drift_value"].labels(name).set(c["value"])
                if "low_confidence" in result.get("checks", {}):
                    m["low_rate"].set(result["checks"]["low_confidence"]["value"])

            state.monitor = LiveMonitor(reference, state.settings.monitor, sc.low_confidence, on_result)
        else:
            log.warning("no run directory behind %s: drift monitoring is off", state.served)
        state.batcher = MicroBatcher(lambda items, contexts: _run_batch(state, m, items, contexts), sc.max_batch,
                                     sc.max_wait_ms / 1000.0, sc.max_queue_texts,
                                     on_batch=lambda n, s: m["batch"].observe(n))
        await state.batcher.start()
        state.ready = True
        log.info("serving %s (%s %s, %s labels) with store %s", state.served, state.predictor.info.get("format"),
                 state.predictor.info.get("precision"), len(state.predictor.labels), state.store.name)
        try:
            yield
        finally:
            state.ready = False
            await state.batcher.stop()
            state.store.close()

    return lifespan


def _run_batch(state: _State, m: dict, items: list, contexts: list[dict]) -> list[dict]:
    """On the batch worker thread: one forward, then the store, metrics and monitor."""
    p = state.predictor
    outputs, emb, scores = p.scored(items)
    return _record(state, m, items, contexts, p.readable(items, outputs, scores), p.confidence(outputs), emb)


def _record(state: _State, m: dict, items: list, contexts: list[dict], readable: list[dict], conf, emb) -> list[dict]:
    """Served predictions into the store (masked), the metrics and the drift monitor; each returned as
    the API answers it, with its id. On the worker thread."""
    sc = state.settings.serve
    task = state.predictor.spec

    def masked(text: str, keep_words: bool = False) -> str:
        return mask(text, sc.pii_region, keep_words=keep_words) if sc.mask_pii else text

    rows = []
    for item, r, c in zip(items, readable, conf):
        row = task.stored_row(item, r, masked)
        rows.append({**row, "confidence": float(c), "low_confidence": bool(c < sc.low_confidence)})
    keys = [ctx.get("key") for ctx in contexts]
    ids: list[str] = []
    start = 0
    while start < len(rows):  # one insert per run of inputs from the same key
        end = start
        while end < len(rows) and keys[end] == keys[start]:
            end += 1
        ids += state.store.add_predictions(rows[start:end], keys[start])
        start = end
    labels = [task.summary_label(r) for r in readable]
    for lab, row in zip(labels, rows):
        m["labels"].labels(lab).inc()
        if row["low_confidence"]:
            m["low"].inc()
            log.info("low confidence %.2f (%s): %s", row["confidence"], lab, row["text"][:200])
    m["predictions"].inc(len(rows))
    if state.monitor is not None:
        from ..monitor import input_words

        state.monitor.add(labels, conf, emb, [input_words(x) for x in items])
    return [{"id": i, "low_confidence": row["low_confidence"], **r} for i, row, r in zip(ids, rows, readable)]


def _error_handlers(app: FastAPI, m: dict):
    def error(status: int, code: str, message: str, headers: dict | None = None, request_id: str | None = None):
        m["errors"].labels(code).inc()
        body = {"error": {"code": code, "message": message, "status": status}}
        if request_id:
            body["error"]["request_id"] = request_id
        return JSONResponse(body, status_code=status, headers=headers)

    def of(e: Exception):
        """The error answer to an exception raised while serving a request (also mid-stream)."""
        if isinstance(e, ApiError):
            return error(e.status, e.code, e.message, e.headers)
        if isinstance(e, StoreUnavailable):
            # The database is gone for a moment (a restart, a fail-over): nothing was stored, the client retries.
            log.error("%s", e)
            return error(503, "store_unavailable", "the production store cannot be reached; nothing was stored, "
                                                   "retry after the indicated time", {"Retry-After": "5"})
        return unexpected(e)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return of(e)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, e: StoreUnavailable):
        return of(e)

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
        return unexpected(e)

    def unexpected(e: Exception):
        rid = uuid.uuid4().hex[:12]
        log.error("request %s failed: %s: %s", rid, type(e).__name__, e, exc_info=e)
        return error(500, "internal_error", f"internal error; the server log has the details under request id {rid}",
                     request_id=rid)

    error.unexpected, error.of = unexpected, of
    return error


ROUTES = {"/v1/predict", "/v1/generate", "/v1/feedback", "/v1/model", "/healthz", "/readyz", "/metrics", "/", "/docs",
          "/openapi.json"}


def _middleware(app: FastAPI, m: dict, sc, error) -> None:
    @app.middleware("http")
    async def _limits_and_metrics(request: Request, call_next):
        t0 = time.perf_counter()
        route = request.url.path if request.url.path in ROUTES else "other"
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > sc.max_body_bytes):
            response = error(413, "body_too_large", f"the request body is larger than {sc.max_body_bytes} bytes "
                                                    "(serve.max_body_bytes); send fewer or shorter texts")
        else:
            try:
                response = await call_next(request)
            except Exception as e:  # noqa: BLE001 - last line of defence: never a trace to the client
                response = error.unexpected(e)
        m["requests"].labels(route, str(response.status_code)).inc()
        m["latency"].labels(route).observe(time.perf_counter() - t0)
        return response


def _guards(state: _State):
    """authenticate(request) -> the key's name (or None without auth); require_ready()."""
    sc = state.settings.serve

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

    return authenticate, require_ready


def _check_items(items: list, sc, task) -> None:
    if len(items) > sc.max_texts:
        raise ApiError(413, "too_many_texts", f"{len(items)} texts in one request; the limit is {sc.max_texts} "
                                              "(serve.max_texts): split the batch")
    for i, item in enumerate(items):
        for name, t in (item.items() if isinstance(item, dict) else [("text", item)]):
            what = f"text {i}" if name == "text" else f"input {i}'s {name}"
            if len(t) > sc.max_text_chars:
                raise ApiError(413, "text_too_long", f"{what} has {len(t)} characters; the limit is "
                                                     f"{sc.max_text_chars} (serve.max_text_chars)")
            if not t.strip():
                raise ApiError(422, "empty_text", f"{what} is empty or blank; send text to label")


def _overloaded(state: _State, e: Overloaded) -> ApiError:
    return ApiError(503, "overloaded", f"the server is at capacity ({state.batcher.pending} texts queued); retry "
                                       "after the indicated time", {"Retry-After": retry_after(e.retry_after_s)})


async def _submit(state: _State, m: dict, items: list, key: str | None) -> list[dict]:
    """The items' predictions through the micro-batcher (stored, counted), or 503 overloaded."""
    m["queue"].set(state.batcher.pending + len(items))
    try:
        return await state.batcher.submit(items, {"key": key}, state.settings.serve.request_timeout_s)
    except Overloaded as e:
        raise _overloaded(state, e) from None
    finally:
        m["queue"].set(state.batcher.pending)


def _model_name(state: _State) -> str:
    return state.predictor.info.get("format", "torch") + "-" + state.predictor.info.get("precision", "fp32")


def _predict_routes(app: FastAPI, state: _State, m: dict, task, models: dict) -> None:
    sc = state.settings.serve
    authenticate, require_ready = _guards(state)
    Request_, Response_, Feedback_ = models["request"], models["response"], models["feedback"]

    @app.post("/v1/predict", response_model=Response_, response_model_exclude_unset=True, responses=ERRORS,
              summary="Predict for a batch of inputs")
    async def predict(body: Request_, request: Request):
        key = authenticate(request)
        require_ready()
        items = request_items(body, task)
        _check_items(items, sc, task)
        return {"predictions": await _submit(state, m, items, key), "model": _model_name(state)}

    @app.post("/v1/feedback", response_model=FeedbackResponse, status_code=201, responses=ERRORS,
              summary="Correct a past prediction")
    def feedback(body: Feedback_, request: Request):
        # A plain def: FastAPI runs it on a worker thread, so the store's commit does not block the loop.
        key = authenticate(request)
        require_ready()
        row = state.store.prediction(body.prediction_id)
        if row is None:
            raise ApiError(404, "unknown_prediction", f"no prediction with id {body.prediction_id!r}; send an id that "
                                                      "POST /v1/predict returned")
        try:
            value = task.correction(body.model_dump(exclude={"prediction_id"}), row, state.predictor.labels)
        except ValueError as e:
            code, message = e.args if len(e.args) == 2 else ("invalid_feedback", str(e))
            raise ApiError(422, code, message) from None
        label, other = (value, None) if isinstance(value, str) else (None, value)
        fid = state.store.add_feedback(body.prediction_id, label, other, key)
        m["feedback"].inc()
        return {"status": "stored", "feedback_id": fid, "prediction_id": body.prediction_id}

    @app.get("/v1/model", response_model=ModelInfo, responses=ERRORS, summary="What is served")
    async def model_info(request: Request):
        authenticate(request)
        require_ready()
        p = state.predictor
        return {"task": p.task, "labels": p.labels, "input_fields": list(task.input_fields),
                "generates": "generates" in task.capabilities,
                "format": p.info.get("format", "torch"), "precision": p.info.get("precision", "fp32"),
                "max_texts": sc.max_texts, "max_text_chars": sc.max_text_chars}


def _generate_routes(app: FastAPI, state: _State, m: dict, task, error) -> None:
    """POST /v1/generate for a model whose task generates text; for the others a 404 that says so."""
    sc = state.settings.serve
    authenticate, require_ready = _guards(state)
    if "generates" not in task.capabilities:
        @app.post("/v1/generate", include_in_schema=False)
        async def no_generate():
            raise ApiError(404, "not_found", f"the served {task.name} model does not generate text (POST /v1/generate "
                                             "is for a task with the 'generates' capability); use POST /v1/predict")
        return

    @app.post("/v1/generate", response_model=GenerateResponse, summary="Generate one text's output, streamed on "
              "request", responses={**ERRORS, 200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                                                    "description": "the output; with stream: server-sent events"}})
    async def generate(body: GenerateRequest, request: Request):
        key = authenticate(request)
        require_ready()
        _check_items([body.text], sc, task)
        if body.stream or "text/event-stream" in request.headers.get("accept", ""):
            return _stream(state, m, body.text, key, error)
        return {**(await _submit(state, m, [body.text], key))[0], "model": _model_name(state)}


def _event(data: dict, kind: str | None = None) -> str:
    """One server-sent event: an optional `event:` line, one `data:` line of JSON, a blank line."""
    return (f"event: {kind}\n" if kind else "") + f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _stream(state: _State, m: dict, text: str, key: str | None, error):
    """The streamed answer: the generation runs on the batch worker (between batches, so the model
    never runs twice at once) and pushes its pieces to a streamer that this response reads, one
    `data: {"token"}` event each; then the stored prediction as `data: {"done": true, ...}`, or an
    `event: error` with the usual error body. Refusals (overloaded) come before the stream starts."""
    from ..generate import END, generate_streamed, text_streamer, trimmed

    p, sc = state.predictor, state.settings.serve
    streamer = text_streamer(p.tokenizer, sc.request_timeout_s)

    def job() -> dict:  # on the worker thread
        out = generate_streamed(p, text, streamer)
        return _record(state, m, [text], [{"key": key}], p.readable([text], [out]), p.confidence([out]), None)[0]

    try:
        done = state.batcher.run_alone(job)
    except Overloaded as e:
        raise _overloaded(state, e) from None
    m["queue"].set(state.batcher.pending)
    done.add_done_callback(lambda _: m["queue"].set(state.batcher.pending))

    async def events():
        loop = asyncio.get_running_loop()
        pieces = trimmed(streamer)
        try:
            while (piece := await loop.run_in_executor(None, next, pieces, END)) is not END:
                yield _event({"token": piece})
            yield _event({"done": True, **(await done), "model": _model_name(state)})
        except queue.Empty:
            yield _event(json.loads(error.of(ApiError(504, "timeout", f"no new token in {sc.request_timeout_s:g} s "
                                                      "(serve.request_timeout_s); retry later")).body), "error")
        except Exception as e:  # noqa: BLE001 - mid-stream: an error event, never a trace
            yield _event(json.loads(error.of(e).body), "error")

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _info_routes(app: FastAPI, state: _State, registry) -> None:
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


def load_keys(sc) -> KeyRing:
    """The API keys serve.auth asks for (serve.api_keys_file and REFLECTLM_API_KEYS), or an error that says how."""
    keys = KeyRing(sc.api_keys_file)
    if not len(keys):
        from ...config import ConfigError

        raise ConfigError("serve.auth is on but no API key is configured: set REFLECTLM_API_KEYS=name:key, or "
                          "serve.api_keys_file (`reflectlm keys add NAME --file keys.toml`), or serve.auth = false "
                          "to serve without keys on a trusted machine")
    return keys


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
