"""Shared fixtures: a fresh PostgreSQL database per run, the Mongo wire-protocol server,
document stores of every backend, and image builders."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("SKYGATE_CORPUS", ROOT.parent / "shared" / "corpus"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get(
    "SKYGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("SKYGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def unavailable(reason: str):
    """Skip on a developer's machine without the service; in CI a missing service fails."""
    if IN_CI:
        pytest.fail(f"{reason} (CI must have it)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coro):
    return asyncio.run(coro)


# --- PostgreSQL ---------------------------------------------------------------------------


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url():
    """A fresh, empty PostgreSQL database for this test run, dropped at the end."""
    name = f"skygate_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def migrated_pg_url(pg_url):
    from storage import migrate
    from storage.db import create_engine

    async def up():
        engine = create_engine(pg_url.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    run(up())
    return pg_url


# --- MongoDB (nx-27017 wire-protocol server, or a real one) --------------------------------


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory):
    """``SKYGATE_TEST_MONGO_URL`` if set (a real MongoDB), else nx-27017 on a free port."""
    real = os.environ.get("SKYGATE_TEST_MONGO_URL")
    if real:
        yield real.rstrip("/")
        return
    exe = shutil.which("nx-27017") or str(Path(sys.executable).parent / "nx-27017")
    if not Path(exe).exists():
        unavailable("nx-27017 is not installed (pip install -e '.[test]')")
    port = free_port()
    workdir = tmp_path_factory.mktemp("nx27017")
    proc = subprocess.Popen(
        [exe, "--host", "127.0.0.1", "-p", str(port), "--db", "memory",
         "--log-file", str(workdir / "nx.log"), "--pid-file", str(workdir / "nx.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=workdir,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"nx-27017 exited: {(workdir / 'nx.log').read_text()[-2000:]}")
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("nx-27017 did not start listening in 30 s")
    yield f"mongodb://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


# --- images -------------------------------------------------------------------------------


def corpus_dir(sub: str = "") -> Path:
    path = CORPUS / sub if sub else CORPUS
    if not path.is_dir():
        pytest.skip(f"corpus not found at {path} (set SKYGATE_CORPUS or put shared/ beside)")
    return path
