"""ASGI middleware: a usage_logs row for every request (authenticated or not), a cap on
the size of request bodies that is enforced while they stream in, and the IETF draft's
``RateLimit-*`` headers on every answer to a key with a quota (api/auth.py counts it)."""

from __future__ import annotations

import asyncio
import logging
import time

from api.errors import BodyTimeout, BodyTooLarge
from storage.accounts import log_usage

log = logging.getLogger("skygate.api")


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
                 body_timeout: float = 30.0, min_body_rate: int = 1024):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.trust_forwarded_for = trust_forwarded_for
        self.body_timeout = body_timeout
        self.min_body_rate = min_body_rate

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status = {"code": 500}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        limit = self.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._reject(send, status, limit)
        else:
            received = 0
            body_done = False

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
                return message

            async def recording_send(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    message = {**message, "headers": [*message.get("headers", []),
                                                      *rate_limit_headers(state)]}
                await send(message)

            await self.app(scope, limited_receive, recording_send)
        await self._log(scope, state, headers, status["code"], time.perf_counter() - started)

    @staticmethod
    async def _reject(send, status, limit):
        import json

        body = json.dumps({"code": "request_too_large",
                           "message": f"request body is over the limit of {limit:,} bytes"}
                          ).encode()
        status["code"] = 413
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
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
        except Exception:  # a lost log row must not fail the request
            log.exception("could not write the usage log row for %s", scope["path"])
