"""An API that degrades politely, on its own PostgreSQL cluster (testkit/faultrig.py): slow
uploaders from one address hold at most SKYGATE_API_MAX_CONNECTIONS_PER_CLIENT connections
and no body outlives SKYGATE_API_BODY_DEADLINE, so a legitimate client still gets 200;
uvicorn's own answers (400, 503) carry the security headers; with PostgreSQL stopped an
authenticated call answers 503 service_unavailable with Retry-After, and 200 once it is back.

The legitimate client connects from another loopback address (127.0.0.2): a client of its
own, as on a network."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from testkit import faultrig as rig
from tests.conftest import free_port, run, serve, unavailable

pytestmark = pytest.mark.slow

DRIPPERS = 200
PER_CLIENT = 32
DEADLINE = 4
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    import shutil

    if not shutil.which("runuser") or not rig.glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        unavailable("initdb/pg_ctl or runuser not available")
    pg = rig.Postgres()
    try:
        pg.init()
    except Exception as exc:  # noqa: BLE001 - this machine cannot run a private cluster
        pg.destroy()
        unavailable(f"cannot start a private PostgreSQL: {exc}")
    tmp = tmp_path_factory.mktemp("degrades")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SKYGATE_")}
    env.update(SKYGATE_DATABASE_URL=pg.url, SKYGATE_DATA_DIR=str(tmp),
               SKYGATE_LOG_FORMAT="text", SKYGATE_API_HEADER_TIMEOUT="3",
               SKYGATE_API_BODY_TIMEOUT="2", SKYGATE_API_BODY_DEADLINE=str(DEADLINE),
               SKYGATE_API_MAX_CONNECTIONS_PER_CLIENT=str(PER_CLIENT),
               SKYGATE_API_LIMIT_CONCURRENCY="60")
    rig.migrate(env)
    key = _new_key(pg.url)
    port = free_port()
    try:
        with serve(["api", "--port", str(port)], env=env, log_path=tmp / "api.log",
                   health_url=f"http://127.0.0.1:{port}/healthz"):
            yield {"port": port, "key": key, "pg": pg, "log": tmp / "api.log"}
    finally:
        pg.destroy()


def _new_key(db_url: str) -> str:
    from service import accounts
    from storage.db import create_engine

    async def make():
        engine = create_engine(db_url.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            await accounts.create_user(engine, username="owner", email="owner@example.org",
                                       password=PASSWORD)
            key, _ = await accounts.create_key(engine, username="owner", name="t", limit=10**6,
                                              expires_at=None)
            return key
        finally:
            await engine.dispose()

    return run(make())


def _client(api, source: str = "127.0.0.2") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=f"http://127.0.0.1:{api['port']}", transport=transport,
                        headers={"X-API-Key": api["key"]}, timeout=30)


def _assert_security_headers(headers) -> None:
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "server" not in headers


def _drip(port: int, key: str, results: list, index: int) -> None:
    """A POST of a 50 MB file at 1.1 KB/s; records (seconds until closed, the answer)."""
    started = time.monotonic()
    answer = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"POST /v1/uploads HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode()
                         + b"\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         b"Content-Length: 50000000\r\n\r\n--b\r\nContent-Disposition: "
                         b'form-data; name="file"; filename="a.jpg"\r\n'
                         b"Content-Type: image/jpeg\r\n\r\n")
            while time.monotonic() - started < 15:
                try:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
                except TimeoutError:
                    pass
                try:
                    sock.sendall(b"x" * 220)  # 5 x 220 bytes a second: 1.1 KB/s
                except OSError:
                    break
    except OSError:
        pass
    results[index] = (time.monotonic() - started, answer)


def test_two_hundred_slow_uploaders_do_not_stop_a_legitimate_client(api):
    results: list = [None] * DRIPPERS
    threads = [threading.Thread(target=_drip, args=(api["port"], api["key"], results, i))
               for i in range(DRIPPERS)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)  # every dripper connected, the first PER_CLIENT dripping
        with _client(api) as c:
            answered = c.get("/v1/uploads")
        assert answered.status_code == 200, answered.text
    finally:
        for t in threads:
            t.join(30)
    refused = [r for r in results if r and r[1].startswith(b"HTTP/1.1 503")]
    cut = [r for r in results if r and r[1].startswith(b"HTTP/1.1 408")]
    # One address holds at most PER_CLIENT slots; the others are refused at once...
    assert len(refused) >= DRIPPERS - PER_CLIENT, [r[1][:60] for r in results if r][:5]
    # (answered before any body deadline could have ended them: not held, not drained)
    assert all(b"too_many_connections" in r[1] and b"nosniff" in r[1] for r in refused)
    assert max(r[0] for r in refused) < DEADLINE, sorted(r[0] for r in refused)[-5:]
    # ... and those it holds end at the body deadline, however steadily they drip.
    other = [(round(r[0], 1), r[1][:300]) for r in results
             if r and not r[1].startswith((b"HTTP/1.1 503", b"HTTP/1.1 408"))]
    assert len(cut) == DRIPPERS - len(refused), other[:5]
    assert all(b"took longer than" in r[1] and r[0] < DEADLINE + 4 for r in cut), cut[:2]


def test_uvicorns_own_answers_carry_the_security_headers(api):
    # A malformed request: uvicorn's 400.
    sock = socket.create_connection(("127.0.0.1", api["port"]), timeout=5)
    sock.sendall(b"NOT A REQUEST\r\n\r\n")
    answer = sock.recv(4096)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400") and b"x-content-type-options: nosniff" in answer
    # Past limit_concurrency (60 here): uvicorn's 503, from addresses under the per-client cap.
    idle = [socket.create_connection(("127.0.0.1", api["port"]), timeout=5,
                                     source_address=(f"127.0.1.{i % 10 + 1}", 0))
            for i in range(60)]
    try:
        time.sleep(0.3)
        with _client(api, "127.0.0.9") as c:
            busy = c.get("/healthz")
    finally:
        for s in idle:
            s.close()
    assert busy.status_code == 503 and busy.headers["retry-after"], busy.text
    assert busy.json()["code"] == "server_busy"
    _assert_security_headers(busy.headers)


def test_database_down_gives_503_with_retry_after_then_200(api):
    with _client(api) as c:
        assert c.get("/v1/uploads").status_code == 200
        api["pg"].stop("immediate")
        try:
            started = time.monotonic()
            down = c.get("/v1/uploads")
            took = time.monotonic() - started
        finally:
            api["pg"].start()
        assert down.status_code == 503, down.text
        assert down.json()["code"] == "service_unavailable"
        assert int(down.headers["retry-after"]) > 0
        _assert_security_headers(down.headers)
        assert took < 10
        rig.wait_until(lambda: c.get("/v1/uploads").status_code == 200, 30, "200 again")
    assert "Traceback" not in api["log"].read_text()
