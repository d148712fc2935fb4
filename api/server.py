"""How ``skygate api`` runs uvicorn, with guards against slow clients.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) and open connections
(``limit_concurrency``, 503 beyond), but has no timeout for a request's headers: a client
that sends one header byte every few seconds holds a connection forever. ``GuardedH11``
closes a connection whose request headers are not complete within
``SKYGATE_API_HEADER_TIMEOUT`` seconds of the connection (or of the previous response) with a
408. The body's timeout (a stall longer than ``SKYGATE_API_BODY_TIMEOUT`` between two chunks)
is enforced in the ASGI middleware (api/usage.py), where the request is known.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from schemas.settings import Settings

_TIMEOUT_BODY = b'{"code":"request_timeout","message":"the request headers took too long"}'
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                     b"connection: close\r\ncontent-length: " + str(len(_TIMEOUT_BODY)).encode()
                     + b"\r\n\r\n" + _TIMEOUT_BODY)


class GuardedH11(H11Protocol):
    header_timeout: float | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if GuardedH11.header_timeout is None:
            GuardedH11.header_timeout = Settings().api_header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

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
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the request line and headers are in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
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
