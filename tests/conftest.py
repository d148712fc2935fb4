"""Shared fixtures: a fresh PostgreSQL database per run, the Mongo wire-protocol server,
document stores of every backend, and image builders."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
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
INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items):
    # The tree says what a test needs: tests/unit/<package>/ is code with no server (pure
    # functions, the embedded SQLite default, subprocesses of the CLI), tests/integration/
    # talks to PostgreSQL, Redis, RabbitMQ, the Mongo wire server, moto or a Celery worker.
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _pillow_pixel_limit():
    """Pillow's pixel limit is process-wide and decoding sets it from the settings in use
    (pipeline.decode.set_pixel_limit): a test's small limit must not refuse a later test's
    images."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = saved


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


async def migrated(storage):
    """``storage`` with the schema at head and the default configuration: a fresh store
    ready for the pipeline (what ``skygate db upgrade`` does, without its audit row)."""
    from storage import migrate, seed

    await migrate.upgrade(storage.engine)
    await seed.ensure_default_configuration(storage.documents)
    return storage


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


def module_settings(request, tmp_path_factory, tag: str, *, mongo: bool):
    """Yield Settings on a migrated database of one test module: the embedded default
    (``request.param == "embedded"``: SQLite, documents in SQL) or a fresh PostgreSQL database,
    with its documents in Mongo (``mongo``) or in SQL; the database is dropped at the end."""
    from schemas.settings import Settings
    from skygate.cli.db import ensure_schema

    data_dir = tmp_path_factory.mktemp(f"{tag}_{request.param}")
    if request.param == "embedded":
        s = Settings(data_dir=data_dir, database_url=None, mongo_url=None, broker_url=None,
                     cache_url=None)
        ensure_schema(s)
        yield s
        return
    pg_url = request.getfixturevalue("pg_url")
    mongo_url = request.getfixturevalue("mongo_url") if mongo else None
    suffix = f"{tag}_{uuid.uuid4().hex[:6]}"
    name = pg_url.rsplit("/", 1)[1] + f"_{suffix}"
    run(_pg_admin(f'CREATE DATABASE "{name}"'))
    s = Settings(database_url=pg_url.rsplit("/", 1)[0] + "/" + name,
                 mongo_url=f"{mongo_url}/{suffix}" if mongo_url else None, broker_url=None,
                 cache_url=None, data_dir=data_dir)
    ensure_schema(s)
    yield s
    run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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


# --- images, Chromium -----------------------------------------------------------------------


def corpus_dir(sub: str = "") -> Path:
    path = CORPUS / sub if sub else CORPUS
    if not path.is_dir():
        pytest.skip(f"corpus not found at {path} (set SKYGATE_CORPUS or put shared/ beside)")
    return path


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        unavailable("chromium is not installed (.ci/run installs Debian's chromium)")
    return exe


# --- a cluster: its own PostgreSQL database, a Redis db index, a real Celery worker ---------


@contextlib.contextmanager
def claimed_redis_db():
    """A Redis database index (1–15) no other test or test session is using: claimed with
    SET NX on a key in it (expiring after 2 h, so a killed session frees it), released on
    exit. Random picks collided when two sessions ran on one machine (one's worker took the
    other's tasks)."""
    import redis

    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    deadline = time.monotonic() + 120
    while True:
        for index in random.sample(range(1, 16), 15):
            client = redis.Redis.from_url(f"{REDIS_URL}/{index}", socket_timeout=3)
            if client.set(_CLAIM_KEY, token, nx=True, ex=7200):
                try:
                    yield index
                finally:
                    if client.get(_CLAIM_KEY) == token.encode():
                        client.delete(_CLAIM_KEY)
                    client.close()
                return
            client.close()
        if time.monotonic() > deadline:
            pytest.fail("no free Redis database (1-15) within 120 s: "
                        f"each holds a {_CLAIM_KEY!r} key of another test session")
        time.sleep(1)


_CLAIM_KEY = "skygate:test:claimed-by"


@contextlib.contextmanager
def start_cluster(pg_url: str, mongo_url: str, tmp_path_factory, tag: str, **extra_env):
    """Migrated database + Mongo database + a ``celery -A workers worker`` subprocess on all
    queues; yields env (the SKYGATE_* settings), data_dir, db_url, mongo_url and the log."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    name = pg_url.rsplit("/", 1)[1] + "_" + tag
    run(_pg_admin(f'CREATE DATABASE "{name}"'))
    with claimed_redis_db() as db_index:
        data_dir = tmp_path_factory.mktemp(f"cluster_{tag}")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")},
            "SKYGATE_DATABASE_URL": pg_url.rsplit("/", 1)[0] + "/" + name,
            "SKYGATE_MONGO_URL": f"{mongo_url}/{tag}_{uuid.uuid4().hex[:8]}",
            "SKYGATE_BROKER_URL": f"{REDIS_URL}/{db_index}",
            "SKYGATE_RESULT_BACKEND": f"{REDIS_URL}/{db_index}",
            "SKYGATE_DATA_DIR": str(data_dir),
            **extra_env,
        }
        up = subprocess.run([sys.executable, "-m", "skygate.cli", "db", "upgrade"], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert up.returncode == 0, up.stderr
        log_path = data_dir / "worker.log"
        log = open(log_path, "w")  # noqa: SIM115 - closed below
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-l", "info", "-c", "2",
             "-Q", "ingest,detect,model,aggregate,webhooks",
             "-n", f"{tag}-{uuid.uuid4().hex[:6]}@%h",
             "--without-gossip", "--without-mingle"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: "ready." in log_path.read_text(), 60, "worker ready",
                     alive=worker, log=log_path)
            yield {"env": env, "data_dir": data_dir, "db_url": env["SKYGATE_DATABASE_URL"],
                   "mongo_url": env["SKYGATE_MONGO_URL"], "log": log_path, "worker": worker}
        finally:
            stop(worker)
            log.close()
            run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it does not exit within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_for(predicate, timeout: float, what: str, *, alive=None, log=None) -> None:
    """Poll ``predicate`` until true; fail with the process log if it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if alive is not None and alive.poll() is not None:
            pytest.fail(f"{what}: process exited\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.3)
    pytest.fail(f"{what}: not within {timeout}s\n{log.read_text()[-3000:] if log else ''}")


@contextlib.contextmanager
def serve(args: list[str], *, env: dict, health_url: str, log_path: Path):
    """Run a server process (``python -m skygate.cli ...``) until ``health_url`` answers 200."""
    import httpx

    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "skygate.cli", *args], env=env,
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

        def up():
            try:
                return httpx.get(health_url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(up, 60, f"{args[0]} answering", alive=proc, log=log_path)
            yield proc
        finally:
            stop(proc)


@contextlib.contextmanager
def api_cluster(pg_url: str, mongo_url: str, tmp_path_factory, tag: str, **extra_env):
    """A cluster (:func:`start_cluster`) with ``skygate api`` served on a free port: the
    cluster's dict plus ``base`` (URL), ``port``, ``api_log`` and ``api`` (the process)."""
    with start_cluster(pg_url, mongo_url, tmp_path_factory, tag, **extra_env) as cluster:
        port = free_port()
        log_path = cluster["data_dir"] / "api.log"
        base = f"http://127.0.0.1:{port}"
        with serve(["api", "--port", str(port)], env=cluster["env"],
                   health_url=f"{base}/healthz", log_path=log_path) as proc:
            yield {**cluster, "base": base, "port": port, "api_log": log_path, "api": proc}


def cluster_sql(db_url: str, query: str, **params):
    """Run one SQL statement on a cluster's PostgreSQL database; rows when it returns any."""
    from testkit import faultrig

    # asyncpg's own connect timeout: a cluster's database is expected to be up.
    return faultrig.sql(db_url, query, connect_timeout=60, **params)


@contextlib.contextmanager
def worker_env(pg_url: str, mongo_url: str, data_dir: Path, tag: str, **extra_env):
    """The SKYGATE_* environment of a cluster on the shared services — its own PostgreSQL
    database and Mongo database, a claimed Redis db index — with small recovery limits, for
    tests that start their own workers (testkit/faultrig.py's Worker); not yet migrated."""
    name = pg_url.rsplit("/", 1)[1] + "_" + tag
    run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        with claimed_redis_db() as db_index:
            yield {
                **{k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")},
                "SKYGATE_DATABASE_URL": pg_url.rsplit("/", 1)[0] + "/" + name,
                "SKYGATE_MONGO_URL": f"{mongo_url}/{tag}_{uuid.uuid4().hex[:8]}",
                "SKYGATE_BROKER_URL": f"{REDIS_URL}/{db_index}",
                "SKYGATE_RESULT_BACKEND": f"{REDIS_URL}/{db_index}",
                "SKYGATE_DATA_DIR": str(data_dir),
                "SKYGATE_METHOD_SOFT_TIME_LIMIT": "20", "SKYGATE_METHOD_TIME_LIMIT": "25",
                "SKYGATE_VISIBILITY_TIMEOUT": "60", "SKYGATE_STUCK_AFTER": "120",
                "SKYGATE_SWEEP_INTERVAL": "2", "SKYGATE_LOG_FORMAT": "text",
                **extra_env,
            }
    finally:
        run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
