"""Nothing stuck, nothing lost: a batch survives a worker SIGKILL, a Redis restart, a
PostgreSQL restart, and on RabbitMQ a worker SIGKILL and a broker restart — each fault
mid-batch, on private services (testkit/faultrig.py), with no manual command afterwards.

Each test: 40 images through ``skygate submit --wait``; the fault while the batch runs; then
every upload done within a bounded time (the worker's recovery sweep re-sends what was lost),
0 duplicate result rows / method rows / documents, and --wait exits 0 with a true summary.
The 200-image version with timings is scripts/bench_faults.py.
"""

from __future__ import annotations

import time
import uuid

import pytest

from testkit import faultrig as rig
from tests.conftest import unavailable

pytestmark = pytest.mark.slow

IMAGES = 40
SUBMIT_TIMEOUT = 170  # seconds: --wait must finish well inside it


def _fault_env(tmp_path, *, broker: str, backend: str, db_url: str, mongo_url: str) -> dict:
    import os

    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")},
        "SKYGATE_DATABASE_URL": db_url,
        "SKYGATE_MONGO_URL": f"{mongo_url}/fault_{uuid.uuid4().hex[:8]}",
        "SKYGATE_BROKER_URL": broker,
        "SKYGATE_RESULT_BACKEND": backend,
        "SKYGATE_DATA_DIR": str(tmp_path),
        # Small limits so recovery is observable in a test: stuck after 30 s without
        # progress, a sweep every 2 s, Redis visibility 60 s (> 2 x the 25 s hard limit).
        "SKYGATE_METHOD_SOFT_TIME_LIMIT": "20", "SKYGATE_METHOD_TIME_LIMIT": "25",
        "SKYGATE_VISIBILITY_TIMEOUT": "60", "SKYGATE_STUCK_AFTER": "30",
        "SKYGATE_SWEEP_INTERVAL": "2", "SKYGATE_LOG_FORMAT": "text",
    }


def _private(server, start, what: str):
    """Yield ``server`` once ``start()`` worked (skip when it cannot), destroy it afterwards."""
    try:
        start()
    except Exception as exc:  # noqa: BLE001 - any failure means this machine cannot run it
        server.destroy()
        unavailable(f"cannot start a private {what}: {exc}")
    yield server
    server.destroy()


@pytest.fixture
def pg():
    import shutil

    if not shutil.which("runuser") or not rig.glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        unavailable("initdb/pg_ctl or runuser not available")
    server = rig.Postgres()
    yield from _private(server, server.init, "PostgreSQL")


@pytest.fixture
def redis_server(tmp_path):
    import shutil

    if not shutil.which("redis-server"):
        unavailable("redis-server not installed")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = rig.Redis(folder)
    server.start()
    yield server
    server.kill()


def _run_batch(tmp_path, env, *, fault, after_done: int = 8, seed: int = 1,
               workers: list | None = None, before_worker=None):
    """Start a worker and a 40-image submit --wait; call ``fault()`` once ``after_done``
    uploads are done; return (submit result, records, audit, seconds)."""
    rig.migrate(env)
    if before_worker is not None:
        before_worker()
    worker = rig.Worker(env, tmp_path / "worker.log")
    worker.start()
    workers = workers if workers is not None else []
    workers.append(worker)
    images = rig.make_images(tmp_path / "images", IMAGES, seed)
    out = tmp_path / "records.jsonl"
    started = time.monotonic()
    submit = rig.start_submit(env, tmp_path / "images", out, SUBMIT_TIMEOUT)
    try:
        rig.wait_until(lambda: rig.done_count(env["SKYGATE_DATABASE_URL"]) >= after_done, 120,
                       "first uploads done")
        fault()
        stdout, stderr = submit.communicate(timeout=SUBMIT_TIMEOUT + 30)
    finally:
        if submit.poll() is None:
            submit.kill()
    elapsed = time.monotonic() - started
    records = rig.read_records(out)
    audit = rig.audit(env["SKYGATE_DATABASE_URL"], env["SKYGATE_MONGO_URL"])
    for w in workers:
        w.stop()
    assert len(images) == IMAGES
    return submit.returncode, stdout, stderr, records, audit, elapsed


def _assert_healed(code, stdout, stderr, records, audit, elapsed, log_path):
    context = f"\nstdout:{stdout[-2000:]}\nstderr:{stderr[-3000:]}\naudit:{audit}\n" \
              f"worker log:\n{log_path.read_text()[-4000:] if log_path.exists() else ''}"
    assert code == 0, context
    assert len(records) == IMAGES, context
    assert {r["status"] for r in records} <= {"done", "duplicate"}, context
    assert all(r["upload_id"] for r in records)
    assert f"summary: done {IMAGES}, failed 0, still pending 0" in stdout, context
    assert audit["status"] == {"done": IMAGES}, context
    assert audit["results"] == IMAGES and audit["documents"] == IMAGES, context
    assert audit["dup_results"] == audit["dup_method_rows"] == audit["dup_documents"] == 0
    assert audit["results_without_5_methods"] == 0, context
    assert elapsed < SUBMIT_TIMEOUT, context


def test_worker_sigkill_mid_batch_heals(tmp_path, pg, redis_server, mongo_url):
    env = _fault_env(tmp_path, broker=f"{redis_server.url}/0", backend=f"{redis_server.url}/1",
                     db_url=pg.url, mongo_url=mongo_url)
    workers: list = []

    def fault():
        workers[0].kill9()  # main process and its pool: unacked messages stay in Redis
        time.sleep(3)
        replacement = rig.Worker(env, tmp_path / "worker.log")
        replacement.start()  # what compose's restart: unless-stopped does
        workers.append(replacement)

    result = _run_batch(tmp_path, env, fault=fault, workers=workers)
    _assert_healed(*result, tmp_path / "worker.log")
    # No worker died on a prepare twice: nothing near the poison cap.
    assert result[4]["max_delivery_count"] <= 2


def test_redis_restart_mid_batch_heals(tmp_path, pg, redis_server, mongo_url):
    env = _fault_env(tmp_path, broker=f"{redis_server.url}/0", backend=f"{redis_server.url}/1",
                     db_url=pg.url, mongo_url=mongo_url)

    def fault():
        redis_server.kill()  # queues, unacked messages and chord counters die with it
        time.sleep(11)
        redis_server.start()

    result = _run_batch(tmp_path, env, fault=fault, seed=2)
    _assert_healed(*result, tmp_path / "worker.log")
    assert result[4]["max_delivery_count"] == 1  # nobody died: nothing counted as poison


def test_postgres_restart_mid_batch_heals(tmp_path, pg, redis_server, mongo_url):
    env = _fault_env(tmp_path, broker=f"{redis_server.url}/0", backend=f"{redis_server.url}/1",
                     db_url=pg.url, mongo_url=mongo_url)

    import threading

    def fault():
        pg.stop("fast")
        time.sleep(12)
        pg.start()

    def database_down_at_worker_start():
        # The worker starts while PostgreSQL is down: it must wait for it, not crash.
        pg.stop("fast")
        threading.Timer(5, pg.start).start()

    result = _run_batch(tmp_path, env, fault=fault, seed=3,
                        before_worker=database_down_at_worker_start)
    _assert_healed(*result, tmp_path / "worker.log")
    assert result[4]["max_delivery_count"] == 1
    log = (tmp_path / "worker.log").read_text()
    assert "waiting for the database: transient fault" in log


@pytest.fixture
def rabbit(tmp_path):
    import shutil

    if not shutil.which("rabbitmq-server"):
        unavailable("rabbitmq-server not installed")
    server = rig.Rabbit()
    yield from _private(server, server.start, "RabbitMQ node")


@pytest.mark.parametrize("fault_kind", ["worker_sigkill", "broker_restart"])
def test_rabbitmq_faults_mid_batch_heal(tmp_path, pg, redis_server, rabbit, mongo_url,
                                        fault_kind):
    """RabbitMQ: durable queues, persistent messages, publisher confirms. A dead worker's
    unacked messages are requeued at once; a broker killed and restarted keeps its queues
    (what was unacked is delivered again; chord counters live in the Redis backend)."""
    env = _fault_env(tmp_path, broker=rabbit.url, backend=f"{redis_server.url}/1",
                     db_url=pg.url, mongo_url=mongo_url)
    workers: list = []

    def fault():
        if fault_kind == "worker_sigkill":
            workers[0].kill9()
            time.sleep(3)
            replacement = rig.Worker(env, tmp_path / "worker.log")
            replacement.start()
            workers.append(replacement)
        else:
            rabbit.kill()
            time.sleep(5)
            rabbit.start()

    result = _run_batch(tmp_path, env, fault=fault, workers=workers, seed=4)
    _assert_healed(*result, tmp_path / "worker.log")
