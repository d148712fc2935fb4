"""The FastAPI application: ``create_app(settings)``; run with ``skygate api``."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api import docs, errors, metrics
from api.metrics import ApiMetrics, RequestMetrics
from api.routes import admin, feedback, keys, pictures, results, uploads, webhooks
from api.usage import UsageAndLimits
from api.waiting import WaitGate
from schemas.settings import Settings
from service.dispatch import Dispatcher
from service.webhooks import EmbeddedPump
from storage.context import build_storage

# Deferred imports: logging's set-up and the health checks load in the lifespan and route that
# use them.

DESCRIPTION = """
Send images; get the verdicts by webhook (`/v1/webhooks`, signed like Standard Webhooks),
in the answer (`?wait=N`), or by polling. Every call under `/v1` needs an API key in the
`X-API-Key` header (`skygate keys create --user NAME`). Errors are JSON:
`{"code": ..., "message": ...}` with a stable `code` (an enum). A key's `request_limit` counts
requests per quota window; past it the answer is 429 with `Retry-After`. Timestamps are
ISO 8601 in UTC with `Z`.
"""


# Stable operation ids (what a generated client names its functions), by route name; a route
# without one fails at start-up, so a new route cannot slip in with FastAPI's default.
OPERATION_IDS = {
    "create_key": "keys_create", "list_uploads": "uploads_list", "get_upload": "uploads_get",
    "delete_upload": "uploads_delete", "get_ela": "pictures_ela_get",
    "get_heatmap": "pictures_heatmap_get", "get_forensic_heatmap": "pictures_forensic_heatmap_get",
    "give_feedback": "feedback_give",
    "read_feedback": "feedback_get", "list_users": "users_list", "create_user": "users_create",
    "suspend_user": "users_suspend", "read_audit": "audit_list", "healthz": "health_live",
    "readyz": "health_ready",
}


def operation_id(route) -> str:
    if not route.include_in_schema:
        return route.name
    return OPERATION_IDS[route.name]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not logging.getLogger().handlers:  # a uvicorn worker process starts unconfigured
            from service.runtime.logs import configure

            configure(settings)
        app.state.storage = build_storage(settings)
        app.state.dispatcher = Dispatcher.for_server(settings)
        # Embedded (no broker): the verdicts are made in this process, and so are the
        # webhook calls; a cluster's workers make both.
        pump = None
        if app.state.dispatcher.embedded:
            pump = EmbeddedPump(app.state.storage, settings)
            pump.start()
        try:
            yield
        finally:
            if pump is not None:
                await pump.stop()
            app.state.dispatcher.close()
            await app.state.storage.close()

    app = FastAPI(title="SkyGate API", version="1.0", description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None,
                  generate_unique_id_function=operation_id,
                  responses={422: {"model": errors.ErrorBody, "description": "invalid request"}})
    app.state.settings = settings
    app.state.storage = None
    app.state.waiters = WaitGate(settings.api_max_waiters)
    app.state.metrics = ApiMetrics()
    errors.install(app)
    # Enough for api_max_files files at the size limit plus the multipart framing.
    max_body = settings.max_upload_bytes * settings.api_max_files + 1024 * 1024
    app.add_middleware(UsageAndLimits, max_body_bytes=max_body,
                       trust_forwarded_for=settings.trust_forwarded_for,
                       body_timeout=settings.api_body_timeout,
                       min_body_rate=settings.api_min_body_rate,
                       body_deadline=settings.api_body_deadline)
    app.add_middleware(docs.SecurityHeaders)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    # /v1: a caller only ever sees their own uploads (api/routes/common.py).
    for routes in (keys, uploads, results, pictures, feedback, admin, webhooks):
        app.include_router(routes.router, prefix="/v1")
    app.include_router(metrics.router)
    docs.install(app)

    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Every dependency answers",
             responses={503: {"description": "a dependency is down"}})
    async def readyz(request: Request):
        from service.runtime.health import run_checks

        checks = await run_checks(settings, storage=request.app.state.storage,
                                  include_workers=False)
        ok = all(c.ok for c in checks)
        # Only which checks pass: hosts, URLs and folders are for `skygate doctor`.
        body = {"status": "ready" if ok else "not ready",
                "checks": {c.name: {"ok": c.ok} for c in checks}}
        return JSONResponse(body, status_code=200 if ok else 503)

    return app
