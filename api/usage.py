"""ASGI middleware: a usage_logs row and a JSON access line for every request
(authenticated or not), each request's id (``X-Request-ID``: the client's when it is a sane
token, else a new one; echoed in the response and carried into the logs and the Celery
messages the request causes), the IETF draft's ``RateLimit-*`` headers on every answer to a
key with a quota (api/auth.py counts it), and a cap on the size of request bodies that is
enforced while they stream in."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid

from api.errors import BodyTimeout, BodyTooLarge
from service.runtime.logs import bind_request, unbind_request
from storage import faults
from storage.accounts import log_usage

log = logging.getLogger("skygate.api")
access = logging.getLogger("skygate.access")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id_of(headers: dict) -> str:
    """The client's ``X-Request-ID`` when it is a short plain token, else a new id."""
    given = headers.get("x-request-id", "")
    return given if _SANE_ID.match(given) else uuid.uuid4().hex


def client_ip(scope, trust_forwarded_for: bool) -> str | None:
    """The client's IP: the socket peer, or the first X-Forwarded-For hop when trusted."""
    if trust_forwarded_for:
        for name, value in scope.get("headers", []):
            if name.lower() == b"x-forwarded-for":
                first = value.decode("latin-1").split(",")[0].strip()
                if first:
                    return first[:45]
    return scope["client"][0] if scope.get("client") else None


def rate_limit_headers(state: dict) -> list[tuple[bytes, bytes]]:
    """``RateLimit-Limit``, ``-Remaining``, ``-Reset`` (seconds) and ``-Policy``
    (draft-ietf-httpapi-ratelimit-headers) for a request whose key was counted."""
    found = state.get("rate_limit")
    if not found:
        return []
    limit, remaining, reset, window = found
    values = {"ratelimit-limit": limit, "ratelimit-remaining": remaining,
              "ratelimit-reset": reset, "ratelimit-policy": f"{limit};w={window}"}
    return [(k.encode(), str(v).encode()) for k, v in values.items() if v is not None]


class UsageAndLimits:
    def __init__(self, app, *, max_body_bytes: int, trust_forwarded_for: bool,
                 body_timeout: float = 30.0, min_body_rate: int = 1024,
                 body_deadline: float = 600.0):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.trust_forwarded_for = trust_forwarded_for
        self.body_timeout = body_timeout
        self.min_body_rate = min_body_rate
        self.body_deadline = body_deadline

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status = {"code": 500}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        request_id = request_id_of(headers)
        token = bind_request(request_id)
        try:
            await self._handle(scope, receive, send, state, status, headers, request_id,
                               started)
        finally:
            elapsed = time.perf_counter() - started
            self._access_line(scope, state, status["code"], elapsed)
            unbind_request(token)
        await self._log(scope, state, headers, status["code"], elapsed)

    async def _handle(self, scope, receive, send, state, status, headers, request_id,
                      started):
        limit = self.max_body_bytes
        declared = headers.get("content-length", "")
        echo = (b"x-request-id", request_id.encode())
        if declared.isdigit() and int(declared) > limit:
            await self._reject(send, status, limit, echo)
        else:
            received = 0
            body_done = False
            has_body = "transfer-encoding" in headers

            async def limited_receive():
                nonlocal received, body_done
                if body_done:
                    return await receive()  # waiting for a disconnect: no deadline
                try:
                    # A body that stalls longer than this between two chunks is abandoned.
                    message = await asyncio.wait_for(receive(), self.body_timeout)
                except TimeoutError:
                    raise BodyTimeout(f"the request body stalled for more than "
                                      f"{self.body_timeout:g}s") from None
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    body_done = not message.get("more_body", False)
                    if received > limit:
                        raise BodyTooLarge(f"request body is over the limit of {limit:,} bytes")
                    # A drip of a few bytes a second never stalls: past the timeout, the body
                    # must also have averaged the minimum rate.
                    elapsed = time.perf_counter() - started
                    if (not body_done and elapsed > self.body_timeout
                            and received < self.min_body_rate * elapsed):
                        raise BodyTimeout(f"the request body arrives slower than "
                                          f"{self.min_body_rate:,} bytes/s")
                    # And however fast it once was, a body ends within the deadline: no
                    # client holds a connection slot for hours.
                    if not body_done and elapsed > self.body_deadline:
                        raise BodyTimeout(f"the request body took longer than "
                                          f"{self.body_deadline:g}s")
                return message

            async def recording_send(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    headers = [*message.get("headers", []), echo, *rate_limit_headers(state)]
                    if not body_done and (declared not in ("", "0") or has_body):
                        # Answered before the body was read (a refusal): close afterwards,
                        # instead of the server draining what is left of it with no limit.
                        headers = [*[(k, v) for k, v in headers if k.lower() != b"connection"],
                                   (b"connection", b"close")]
                    message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, limited_receive, recording_send)

    def _access_line(self, scope, state, code, elapsed) -> None:
        access.info("%s %s %s", scope["method"], scope["path"], code, extra={
            "method": scope["method"], "path": scope["path"], "status": code,
            "latency_ms": round(elapsed * 1000, 1),
            "client": client_ip(scope, self.trust_forwarded_for),
            "user_id": state.get("user_id"), "key_id": state.get("key_id")})

    @staticmethod
    async def _reject(send, status, limit, echo):
        body = json.dumps({"code": "request_too_large",
                           "message": f"request body is over the limit of {limit:,} bytes"}
                          ).encode()
        status["code"] = 413
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"), echo]})
        await send({"type": "http.response.body", "body": body})

    async def _log(self, scope, state, headers, code, elapsed):
        storage = scope["app"].state.storage if "app" in scope else None
        if storage is None:
            return
        ip = client_ip(scope, self.trust_forwarded_for)
        try:
            await log_usage(storage.engine, user_id=state.get("user_id"),
                            api_key_id=state.get("key_id"), request_type=scope["method"],
                            request_path=scope["path"], response_code=code,
                            processing_time=elapsed, ip_address=ip,
                            user_agent=headers.get("user-agent"))
        except Exception as exc:  # a lost log row must not fail the request
            if faults.is_transient(exc):  # the database is away: the answer said so
                log.warning("usage log row for %s not written: %s: %s", scope["path"],
                            type(exc).__name__, str(exc)[:200])
            else:
                log.exception("could not write the usage log row for %s", scope["path"])
