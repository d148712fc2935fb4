"""Prometheus metrics of the API at ``GET /metrics`` (operator role, the API's auth rules:
``X-API-Key``, or ``Authorization: Bearer <key>`` as Prometheus' scrape config sends it).

Counted by this process as requests go by: requests by route template, method and status,
their latency, and the parts of uploads by outcome. Read from the shared stores at each
scrape, so every API process reports the same cluster-wide figures: verdicts by word (all
stored results), webhook deliveries by status, and the broker's queue depths.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from api.auth import caller, forbid
from storage import repository as repo
from storage import webhooks as webhook_store

# Deferred imports: the Celery client loads only when /metrics asks the broker for queue depths.

router = APIRouter()


class ApiMetrics:
    """One registry per app (tests build several apps in one process)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("skygate_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("skygate_http_request_duration_seconds",
                                 "time to answer a request", ["route", "method"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                          5, 10, 30))
        self.uploads = Counter("skygate_uploads_accepted", "parts of POST /v1/uploads by "
                               "outcome (queued, duplicate, done, failed, refused)",
                               ["status"], registry=self.registry)
        self.verdicts = Gauge("skygate_verdicts", "stored verdicts by word", ["verdict"],
                              registry=self.registry)
        self.deliveries = Gauge("skygate_webhook_deliveries", "webhook deliveries by status "
                                "(pending, delivered, failed)", ["status"],
                                registry=self.registry)
        self.queue_depth = Gauge("skygate_queue_depth", "messages waiting in each queue",
                                 ["queue"], registry=self.registry)


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request by its route template (bounded
    labels: an unmatched path is ``unmatched``)."""

    def __init__(self, app, metrics: ApiMetrics):
        self.app, self.metrics = app, metrics

    @staticmethod
    def _template(scope) -> str:
        """The matched route's full path template (``/v1/uploads/{upload_id}``). The route
        in the scope is its router's, without the router's prefix: the prefix is what of the
        request path comes before the part the route matched."""
        route = scope.get("route")
        template = getattr(route, "path", None)
        if not template:
            return "unmatched"
        path = scope.get("path", "")
        regex = getattr(route, "path_regex", None)
        for start in range(len(path)):
            if path[start] == "/" and regex is not None and regex.fullmatch(path[start:]):
                return path[:start] + template
        return template

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = self._template(scope)
            self.metrics.requests.labels(route, scope["method"], str(status["code"])).inc()
            self.metrics.latency.labels(route, scope["method"]).observe(
                time.perf_counter() - started)


async def _snapshot(request: Request, metrics: ApiMetrics) -> None:
    """The cluster-wide figures, read now."""
    engine = request.app.state.storage.engine
    for word, count in (await repo.verdict_counts(engine)).items():
        metrics.verdicts.labels(word).set(count)
    for status, count in (await webhook_store.status_counts(engine)).items():
        metrics.deliveries.labels(status).set(count)
    if request.app.state.settings.broker_url:
        from service.runtime.celery_client import celery_client
        from service.runtime.queues import queue_depths

        depths = await asyncio.to_thread(queue_depths, celery_client())
        for queue, depth in (depths or {}).items():
            metrics.queue_depth.labels(queue).set(depth)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request):
    key = request.headers.get("x-api-key")
    bearer = request.headers.get("authorization", "")
    if not key and bearer.lower().startswith("bearer "):
        key = bearer[7:].strip()
    who = await caller(request, key)
    if not who.at_least("operator"):
        raise await forbid(request, who, "operator", "reading the metrics")
    state: ApiMetrics = request.app.state.metrics
    await _snapshot(request, state)
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)
