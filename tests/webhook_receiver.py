"""A real HTTP receiver on loopback for webhook tests: records every request (path, headers,
body) and answers by path: ``/ok`` 204; ``/flaky`` 500 on the first two attempts of each
event id, then 204; ``/silent`` never answers (holds the request until the server stops);
``/redirect`` 307 to another host."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self):
        self.requests: list[dict] = []
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def on(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]


@contextlib.contextmanager
def receiver(tls: ssl.SSLContext | None = None):
    """The receiver on 127.0.0.1; ``tls``: a server context, to listen with https."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_POST(self):
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            event_id = self.headers.get("webhook-id")
            with state.lock:
                state.attempts[(self.path, event_id)] += 1
                n = state.attempts[(self.path, event_id)]
                state.requests.append({"path": self.path, "headers": dict(self.headers),
                                       "body": body, "attempt": n})
            if self.path == "/silent":
                state.release.wait(120)
                return
            if self.path == "/flaky" and n <= 2:
                self._answer(500, b"try later")
            elif self.path == "/redirect":
                self.send_response(307)
                self.send_header("location", "https://elsewhere.example.org/")
                self.send_header("content-length", "0")
                self.end_headers()
            else:
                self._answer(204, b"")

        def _answer(self, code: int, body: bytes):
            self.send_response(code)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
