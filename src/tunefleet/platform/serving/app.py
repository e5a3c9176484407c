"""The HTTP routes: ``/v1/predict``, MLflow-compatible ``/invocations``, health, metrics.

Everything a route refuses is a :class:`Rejection` answered as ``{"error": {"kind", "message",
"field"?}}`` with its status, and counted by kind in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from tunefleet.platform.serving.batching import Answer, MicroBatcher
from tunefleet.platform.serving.limits import BodyLimit, InFlight, Limits, Rejection, check_batch
from tunefleet.platform.serving.metrics import Metrics
from tunefleet.platform.serving.schemas import (
    ModelInfo,
    PredictRequest,
    PredictResponse,
    RequestError,
    Scored,
    invocation_texts,
)
from tunefleet.platform.serving.source import AliasWatcher, LoadedModel, Source, load

log = logging.getLogger(__name__)


@dataclass
class Serving:
    """The app's state: the model answering now (None until the first is loaded and warmed)."""

    source: Source
    limits: Limits
    metrics: Metrics
    reload_every_s: float | None
    on_fatal: Callable[[BaseException], None]
    model: LoadedModel | None = None

    def swap(self, model: LoadedModel) -> None:
        # One assignment on the event loop: a batch already started keeps the model it took.
        self.model = model
        self.metrics.ready.set(1)

    async def load_first(self) -> None:
        try:
            origin = await asyncio.to_thread(self.source.current)
            model = await asyncio.to_thread(load, origin, warm_batch=self.limits.max_batch)
        except Exception as exc:
            self.metrics.loads.labels("failed").inc()
            self.on_fatal(exc)
            return
        self.swap(model)
        self.metrics.loads.labels("ok").inc()
        log.info("serving %s (trial %s) from %s", self.source.spec, origin.trial, origin.checkpoint)


def create_app(serving: Serving) -> Any:
    """The ASGI app: FastAPI behind the body-size guard."""
    metrics, limits = serving.metrics, serving.limits
    batcher = MicroBatcher(
        limits=limits, model=lambda: serving.model, observe_batch=metrics.batch_size.observe
    )
    gate = InFlight(limits.max_concurrency)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        first = asyncio.create_task(serving.load_first())
        tasks = [asyncio.create_task(batcher.run()), first]
        if serving.reload_every_s is not None and serving.source.follows_alias:
            watcher = AliasWatcher(
                serving.source,
                every_s=serving.reload_every_s,
                warm_batch=limits.max_batch,
                serving=lambda: serving.model.origin if serving.model else None,
                swap=serving.swap,
                on_load=lambda outcome: metrics.loads.labels(outcome).inc(),
            )
            tasks.append(asyncio.create_task(watcher.run(after=first)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            batcher.close()

    app = FastAPI(
        title="tunefleet serve",
        summary="A promoted tunefleet model (or a checkpoint folder) over HTTP.",
        lifespan=lifespan,
    )

    async def answer(route: str, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``work`` under the in-flight gate and the timeout; count and time it."""
        started = time.perf_counter()
        status = 200
        try:
            gate.enter()
            metrics.in_flight.inc()
            try:
                if serving.model is None:
                    raise Rejection(
                        503, "not_ready", "the model is still loading; see /health/ready"
                    )
                return await asyncio.wait_for(work(), limits.timeout_s)
            finally:
                gate.leave()
                metrics.in_flight.dec()
        except TimeoutError:
            status = 503
            return _reject(metrics, _timeout(limits))
        except RequestError as exc:
            status = 422
            return _reject(metrics, Rejection(422, "invalid_input", str(exc), field=exc.field))
        except Rejection as exc:
            status = exc.status
            return _reject(metrics, exc)
        except Exception as exc:
            status = 500
            log.exception("a %s request failed", route)
            return _reject(metrics, Rejection(500, "internal", f"{type(exc).__name__}: {exc}"))
        finally:
            metrics.requests.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        summary="Labels and scores, most probable first, of each input text.",
    )
    async def predict(body: PredictRequest) -> Any:
        async def work() -> PredictResponse:
            check_batch(len(body.inputs), limits)
            return _scored(await batcher.submit(body.inputs), body.top_k)

        return await answer("/v1/predict", work)

    @app.post(
        "/invocations",
        summary="MLflow scoring protocol: inputs, instances, dataframe_split or "
        "dataframe_records; answers {'predictions': [{'label', 'probabilities'}]}.",
    )
    async def invocations(request: Request) -> Any:
        async def work() -> dict[str, Any]:
            try:
                body = json.loads(await request.body())
            except ValueError as exc:
                raise RequestError("body", f"is not JSON: {exc}") from None
            texts = invocation_texts(body)
            check_batch(len(texts), limits)
            return _records(await batcher.submit(texts))

        return await answer("/invocations", work)

    @app.get("/health/live", summary="200 while the process serves HTTP.")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/health/ready", summary="200 once a model is loaded and warmed; 503 before.")
    async def ready() -> Any:
        if serving.model is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ready", "model": _info(serving.model).model_dump()}

    @app.get("/metrics", summary="Prometheus text format.")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"][1:]) if errors else "body"
        rejection = Rejection(
            422, "invalid_input", f"{where or 'body'}: {errors[0]['msg']}", field=where or "body"
        )
        metrics.requests.labels(request.url.path, "422").inc()
        return _reject(metrics, rejection)

    def on_body_reject(rejection: Rejection) -> None:
        metrics.errors.labels(rejection.kind).inc()

    return BodyLimit(app, max_bytes=limits.max_body_bytes, on_reject=on_body_reject)


def _timeout(limits: Limits) -> Rejection:
    return Rejection(503, "timeout", f"no answer within --timeout-s {limits.timeout_s:g}")


def _reject(metrics: Metrics, rejection: Rejection) -> JSONResponse:
    metrics.errors.labels(rejection.kind).inc()
    headers = {"Retry-After": "1"} if rejection.status in (429, 503) else None
    return JSONResponse(rejection.body(), status_code=rejection.status, headers=headers)


def _info(model: LoadedModel) -> ModelInfo:
    o = model.origin
    return ModelInfo(name=o.name, version=o.version, alias=o.alias, trial=o.trial)


def _scored(answer: Answer, top_k: int) -> PredictResponse:
    k = min(top_k, len(answer.labels))
    order = (-answer.probabilities).argsort(axis=-1, kind="stable")[:, :k]
    predictions = [
        Scored(
            labels=[answer.labels[i] for i in row_order],
            scores=[float(row[i]) for i in row_order],
        )
        for row, row_order in zip(answer.probabilities, order, strict=True)
    ]
    origin = answer.origin
    return PredictResponse(
        model=ModelInfo(
            name=origin.name, version=origin.version, alias=origin.alias, trial=origin.trial
        ),
        predictions=predictions,
    )


def _records(answer: Answer) -> dict[str, Any]:
    """MLflow's answer for ``CheckpointModel``'s DataFrame: one record per text."""
    names = answer.labels
    return {
        "predictions": [
            {
                "label": names[int(row.argmax())],
                "probabilities": {n: float(p) for n, p in zip(names, row, strict=True)},
            }
            for row in answer.probabilities
        ]
    }
