"""Every error the API returns is JSON ``{"code": ..., "message": ...}`` with a stable code.

A transient fault (storage.faults: the database, Mongo, the cache or the queue unreachable,
the blob folder full for a moment) is ``503 service_unavailable`` with ``Retry-After``, not
a 500: the caller's request was fine and will work again shortly."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.docs import security_headers
from storage import faults

# Deferred imports: each client library's error types are imported only where it is installed.

log = logging.getLogger("skygate.api")

RETRY_AFTER_SECONDS = 10


ErrorCode = Literal[
    # requests and their bodies
    "bad_request", "invalid_request", "malformed_multipart", "no_file", "too_many_files",
    "unsupported_media_type", "request_too_large", "request_timeout", "not_found",
    "method_not_allowed", "http_error", "internal_error", "service_unavailable",
    "too_many_connections",
    # keys, accounts, roles
    "missing_api_key", "invalid_api_key", "api_key_revoked", "api_key_expired",
    "account_suspended", "unauthorized", "rate_limited", "invalid_credentials",
    "too_many_failed_logins", "forbidden", "no_such_user", "user_exists", "last_admin",
    "bad_email", "bad_role", "bad_status", "user_not_found",
    # uploads and their results
    "file_too_large", "unsupported_image_type", "invalid_image", "queue_unavailable",
    "upload_not_found", "not_ready", "upload_failed", "ela_not_available",
    "heatmap_not_available", "feedback_not_found", "invalid_client_reference",
    "idempotency_key_in_use", "idempotency_key_reused",
    # webhooks
    "webhook_not_found", "webhook_url_refused", "too_many_webhooks", "delivery_not_found",
]
"""Every ``code`` the API answers with (tests/unit/api keeps this list complete)."""


class ErrorBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"code": "not_ready", "message": "upload 42 is processing; poll its status_url"}]})

    code: ErrorCode
    message: str
    details: list | dict | None = None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, headers: dict | None = None,
                 details: list | dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers, self.details = headers or {}, details


class BodyTooLarge(Exception):
    """Raised from the request stream once the body passes the configured limit."""


class BodyTimeout(Exception):
    """Raised from the request stream when the client stops sending its body."""


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
               405: "method_not_allowed", 413: "request_too_large",
               415: "unsupported_media_type", 422: "invalid_request", 429: "rate_limited"}


def _json(status: int, code: str, message: str, headers=None, details=None) -> JSONResponse:
    body = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return _json(exc.status, exc.code, exc.message, exc.headers, exc.details)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge):
        return _json(413, "request_too_large", str(exc))

    @app.exception_handler(BodyTimeout)
    async def _body_timeout(_: Request, exc: BodyTimeout):
        return _json(408, "request_timeout", str(exc), headers={"Connection": "close"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return _json(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                  for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return _json(422, "invalid_request", f"{where}: {first['msg']}", details=errors)

    async def _fault(request: Request, exc: Exception):
        if not faults.is_transient(exc):
            return await _unexpected(request, exc)
        log.warning("%s %s: a dependency is unreachable (%s: %s): 503", request.method,
                    request.url.path, type(exc).__name__, str(exc)[:200])
        return _json(503, "service_unavailable",
                     "a service the API needs (database, documents, cache, queue or blob "
                     "store) is unreachable right now; try again shortly",
                     headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    # Handled here (inside the middleware: no traceback re-raised to the server's log), not
    # by the catch-all below.
    for family in _fault_families():
        app.add_exception_handler(family, _fault)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # Sent by Starlette's outermost middleware, past SecurityHeaders: its headers here.
        return _json(500, "internal_error", "internal server error; the log has the details",
                     headers={k.decode(): v.decode() for k, v in security_headers()})


def _fault_families() -> list[type[BaseException]]:
    """The exception families a transient fault comes in (each checked by is_transient)."""
    import asyncpg
    import kombu.exceptions
    import pymongo.errors
    import redis.exceptions
    import sqlalchemy.exc

    return [OSError, sqlalchemy.exc.SQLAlchemyError, asyncpg.PostgresError,
            asyncpg.InterfaceError, pymongo.errors.PyMongoError, redis.exceptions.RedisError,
            kombu.exceptions.KombuError]
