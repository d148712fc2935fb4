"""How ``skygate api`` runs uvicorn, with guards against slow clients.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) and open connections
(``limit_concurrency``, 503 beyond), but has no timeout for a request's headers and no limit
per client. ``GuardedH11`` adds both:

- a connection whose request headers are not complete within ``SKYGATE_API_HEADER_TIMEOUT``
  seconds of the connection (or of the previous response) is answered 408 and closed;
- one client (socket peer address) holds at most ``SKYGATE_API_MAX_CONNECTIONS_PER_CLIENT``
  open connections; another is answered 503 with ``Retry-After`` and closed at once, so
  slow clients from one address cannot take every slot of ``limit_concurrency``.

The body's limits (a stall longer than ``SKYGATE_API_BODY_TIMEOUT`` between two chunks, an
average under ``SKYGATE_API_MIN_BODY_RATE``, a body longer than ``SKYGATE_API_BODY_DEADLINE``)
are enforced in the ASGI middleware (api/usage.py), where the request is known. Every answer
the server writes itself (400, 408, 503) carries the app's security headers.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import ClassVar

import h11
from uvicorn.protocols.http import h11_impl
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.docs import security_headers
from api.errors import RETRY_AFTER_SECONDS
from schemas.settings import Settings

# Deferred imports: uvicorn loads only when the server runs (`skygate api`).


def _raw_response(status: int, reason: str, code: str, message: str,
                  extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A complete HTTP/1.1 answer (JSON body, security headers, connection: close)."""
    body = json.dumps({"code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
               (b"content-length", str(len(body)).encode()), *extra, *security_headers()]
    head = f"HTTP/1.1 {status} {reason}\r\n".encode() + b"".join(
        name + b": " + value + b"\r\n" for name, value in headers)
    return head + b"\r\n" + body


_TIMEOUT_RESPONSE = _raw_response(408, "Request Timeout", "request_timeout",
                                  "the request headers took too long")
_RETRY = ((b"retry-after", str(RETRY_AFTER_SECONDS).encode()),)
_BUSY_CLIENT_RESPONSE = _raw_response(
    503, "Service Unavailable", "too_many_connections",
    "too many open connections from your address; close some and try again", _RETRY)
_BUSY_BODY = json.dumps({"code": "server_busy",
                         "message": "the server is at its connection limit; try again "
                                    "shortly"}).encode()


async def _service_unavailable(scope, receive, send) -> None:
    """uvicorn's answer past ``limit_concurrency``, as JSON with the security headers."""
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(_BUSY_BODY)).encode()),
        (b"connection", b"close"), *_RETRY, *security_headers()]})
    await send({"type": "http.response.body", "body": _BUSY_BODY, "more_body": False})


# uvicorn's H11Protocol answers past limit_concurrency with this module-level ASGI app.
h11_impl.service_unavailable = _service_unavailable


class GuardedH11(H11Protocol):
    header_timeout: float | None = None
    per_client: int | None = None
    # Open connections per peer address, in this process (each uvicorn worker its own).
    _open: ClassVar[Counter] = Counter()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if GuardedH11.header_timeout is None:
            settings = Settings()
            GuardedH11.header_timeout = settings.api_header_timeout
            # Behind a trusted proxy every connection comes from the proxy: limit there.
            GuardedH11.per_client = (0 if settings.trust_forwarded_for
                                     else settings.api_max_connections_per_client)
        self._header_timer: asyncio.TimerHandle | None = None
        self._peer: str | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state in (h11.IDLE,) and not self.transport.is_closing():
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        if self.per_client and address is not None:
            if self._open[address] >= self.per_client:
                transport.write(_BUSY_CLIENT_RESPONSE)
                transport.close()
                return
            self._open[address] += 1
            self._peer = address
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the request line and headers are in

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own (a malformed request) is text without the security headers.
        self.transport.write(_raw_response(400, "Bad Request", "bad_request", msg))
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self._peer is not None:
            self._open[self._peer] -= 1
            if self._open[self._peer] <= 0:
                del self._open[self._peer]
            self._peer = None
        super().connection_lost(exc)


def run(host: str, port: int, workers: int) -> None:
    import uvicorn

    settings = Settings()
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers,
                proxy_headers=settings.trust_forwarded_for, log_config=None,
                # The access line is SkyGate's own (api/usage.py): JSON fields, request id.
                access_log=False,
                http=GuardedH11, server_header=False,
                limit_concurrency=settings.api_limit_concurrency, timeout_keep_alive=5,
                h11_max_incomplete_event_size=16 * 1024)
