"""Webhooks through a real cluster: ``skygate api`` on PostgreSQL + Mongo, a Celery worker on
Redis delivering from its ``webhooks`` queue, and a loopback receiver that fails the first
two attempts of every event. 50 uploads, the worker SIGKILLed mid-batch and replaced: each
upload's ``upload.done`` arrives correctly signed, with one stable event id per upload (so
exactly once after the receiver dedupes), and the delivery log says delivered for all."""

from __future__ import annotations

import json
import os
import time
import uuid

import httpx
import pytest

from testkit import faultrig as rig
from testkit.images import encode, noisy_photo, smooth_scene
from tests.conftest import _pg_admin, claimed_redis_db, free_port, run, serve, unavailable
from tests.webhook_receiver import receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]
standardwebhooks = pytest.importorskip("standardwebhooks")

UPLOADS = 50


@pytest.fixture
def cluster_env(pg_url, mongo_url, tmp_path):
    import redis

    from tests.conftest import REDIS_URL

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    name = pg_url.rsplit("/", 1)[1] + "_hooks"
    run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        with claimed_redis_db() as index:
            yield {
                **{k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")},
                "SKYGATE_DATABASE_URL": pg_url.rsplit("/", 1)[0] + "/" + name,
                "SKYGATE_MONGO_URL": f"{mongo_url}/hooks_{uuid.uuid4().hex[:8]}",
                "SKYGATE_BROKER_URL": f"{REDIS_URL}/{index}",
                "SKYGATE_RESULT_BACKEND": f"{REDIS_URL}/{index}",
                "SKYGATE_DATA_DIR": str(tmp_path),
                # Recovery observable in a test (as tests/integration/test_fault_recovery.py).
                "SKYGATE_METHOD_SOFT_TIME_LIMIT": "20", "SKYGATE_METHOD_TIME_LIMIT": "25",
                "SKYGATE_VISIBILITY_TIMEOUT": "60", "SKYGATE_STUCK_AFTER": "30",
                "SKYGATE_SWEEP_INTERVAL": "2", "SKYGATE_LOG_FORMAT": "text",
                # The receiver is plain http on loopback: the operator allows both here.
                "SKYGATE_WEBHOOK_ALLOW_HTTP": "true", "SKYGATE_WEBHOOK_ALLOW_PRIVATE": "true",
                "SKYGATE_WEBHOOK_RETRY_BASE": "0.5", "SKYGATE_WEBHOOK_RETRY_CAP": "2",
                "SKYGATE_WEBHOOK_TIMEOUT": "3",
            }
    finally:
        run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def images() -> list[tuple[str, bytes]]:
    out = []
    for i in range(UPLOADS):
        make = noisy_photo if i % 2 else smooth_scene
        out.append((f"img_{i:03d}.png", encode(make(rows=96, cols=128, seed=7000 + i))))
    return out


def new_key(env) -> str:
    from service import accounts
    from storage.db import create_engine

    async def make():
        engine = create_engine(env["SKYGATE_DATABASE_URL"].replace(
            "postgresql://", "postgresql+asyncpg://"))
        try:
            await accounts.create_user(engine, username="hooks", email="hooks@example.org",
                                       password=None)
            key, _ = await accounts.create_key(engine, username="hooks", name="t",
                                               limit=100_000, expires_at=None)
            return key
        finally:
            await engine.dispose()

    return run(make())


def done_count(env) -> int:
    return rig.sql(env["SKYGATE_DATABASE_URL"],
                   "SELECT count(*) FROM uploads WHERE status = 'done'")[0][0]


def test_50_uploads_each_told_once_through_failures_and_a_killed_worker(cluster_env, tmp_path):
    env = cluster_env
    rig.migrate(env)
    key = new_key(env)
    workers = [rig.Worker(env, tmp_path / "worker.log")]
    workers[0].start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        with receiver() as rx, serve(["api", "--port", str(port)], env=env,
                                     health_url=f"{base}/healthz",
                                     log_path=tmp_path / "api.log"), \
                httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as c:
            hook = c.post("/v1/webhooks", json={"url": f"{rx.base}/flaky",
                                                "events": ["upload.done"]})
            assert hook.status_code == 201, hook.text
            hook = hook.json()
            upload_ids = []
            files = images()
            for start in range(0, UPLOADS, 10):
                r = c.post("/v1/uploads", files=[("file", f) for f in files[start:start + 10]])
                assert r.status_code == 202, r.text
                upload_ids += [u["upload_id"] for u in r.json()["uploads"]]
            assert len(set(upload_ids)) == UPLOADS

            rig.wait_until(lambda: done_count(env) >= 8, 180, "first uploads done")
            workers[0].kill9()  # mid-batch: unacked messages stay in Redis
            replacement = rig.Worker(env, tmp_path / "worker.log")
            replacement.start()
            workers.append(replacement)

            def delivered_events() -> dict[str, dict]:
                ok = {}
                for req in rx.on("/flaky"):
                    if req["attempt"] >= 3:  # the receiver's first two answers are 500
                        ok[req["headers"]["webhook-id"]] = req
                return ok

            rig.wait_until(lambda: len(delivered_events()) >= UPLOADS, 300,
                           "every upload.done delivered", interval=1)
            time.sleep(3)  # a duplicate in flight would arrive now
            requests = rx.on("/flaky")
            verifier = standardwebhooks.Webhook(hook["secret"])
            by_event: dict[str, set[int]] = {}
            for req in requests:
                event = verifier.verify(req["body"], req["headers"])  # every attempt signed
                assert event["type"] == "upload.done" and event["data"]["status"] == "done"
                assert event["id"] == req["headers"]["webhook-id"]
                by_event.setdefault(event["id"], set()).add(event["data"]["upload_id"])
            # One stable event id per upload: deduplicated, each upload told exactly once.
            assert len(by_event) == UPLOADS, json.dumps({k: sorted(v)
                                                         for k, v in by_event.items()})
            assert all(len(ids) == 1 for ids in by_event.values())
            assert sorted(i for ids in by_event.values() for i in ids) == sorted(upload_ids)
            assert set(delivered_events()) == set(by_event)

            log = c.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries",
                        params={"limit": 200}).json()
            assert log["total"] == UPLOADS
            assert {e["status"] for e in log["items"]} == {"delivered"}
            # The DB counts recorded attempts: one cut short by the kill may be missing.
            assert all(e["attempts"] >= 2 for e in log["items"])
    finally:
        for w in workers:
            w.stop()
