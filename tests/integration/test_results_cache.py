"""The finished-results cache (service/results.py, storage/cache.py) and the connection pools,
on real PostgreSQL + Redis + the Mongo wire server, through the API in-process."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from testkit.images import encode, noisy_photo
from tests.conftest import (
    REDIS_URL,
    ROOT,
    _pg_admin,
    claimed_redis_db,
    free_port,
    run,
    unavailable,
)
from tests.inprocess import api, new_user

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def redis_url():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    with claimed_redis_db() as index:
        yield f"{REDIS_URL}/{index}"


@pytest.fixture(scope="module")
def settings(pg_url, mongo_url, redis_url, tmp_path_factory):
    """A migrated PostgreSQL database and Mongo database of this module, the cache on."""
    from schemas.settings import Settings
    from skygate.cli.db import ensure_schema

    name = pg_url.rsplit("/", 1)[1] + "_rcache"
    run(_pg_admin(f'CREATE DATABASE "{name}"'))
    s = Settings(database_url=pg_url.rsplit("/", 1)[0] + "/" + name,
                 mongo_url=f"{mongo_url}/rcache_{uuid.uuid4().hex[:8]}",
                 cache_url=redis_url, data_dir=tmp_path_factory.mktemp("rcache"))
    ensure_schema(s)
    yield s
    run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def finished_upload(storage, settings, user_id: int) -> int:
    """One upload run through the embedded pipeline to done."""
    from service import detection, ingest

    data = encode(noisy_photo(seed=random.randint(0, 10**6), rows=96, cols=96), fmt="JPEG")
    outcome = await ingest.ingest_bytes(storage, settings, data=data,
                                        original_file_name="p.jpg", user_id=user_id)
    await detection.run_all(storage, settings, outcome.upload_id)
    return outcome.upload_id


def count_result_reads(storage) -> list[str]:
    """Statements that read method_results (only a cache miss does) are appended here."""
    seen: list[str] = []

    @sa.event.listens_for(storage.engine.sync_engine, "before_cursor_execute")
    def _count(_conn, _cursor, statement, *_args):
        if "FROM method_results" in statement:
            seen.append(statement)

    return seen


async def set_summary(storage, upload_id: int, text: str) -> None:
    async with storage.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE detection_results SET result_summary = :t "
                                   "WHERE upload_id = :u"), {"t": text, "u": upload_id})


async def cached_keys(storage, upload_id: int) -> int:
    return await storage.cache._redis.exists(f"skygate:result:{upload_id}")


def test_second_read_is_served_by_the_cache_until_invalidated(settings):
    from storage.cache import forget_result

    async def go():
        async with api(settings) as (client, storage):
            assert storage.cache is not None
            who = await new_user(storage)
            upload_id = await finished_upload(storage, settings, who["user_id"])
            reads = count_result_reads(storage)
            url = f"/v1/uploads/{upload_id}/result"
            first = await client.get(url, headers=who["headers"])
            assert first.status_code == 200, first.text
            assert len(reads) == 1 and await cached_keys(storage, upload_id) == 1
            second = await client.get(url, headers=who["headers"])
            assert second.json() == first.json()
            assert len(reads) == 1, "the second read went to the database"
            # Changed under the cache: the cached body stays until the entry is invalidated.
            await set_summary(storage, upload_id, "changed under the cache")
            stale = await client.get(url, headers=who["headers"])
            assert stale.json()["summary"] == first.json()["summary"]
            await forget_result(storage.cache, upload_id)
            fresh = await client.get(url, headers=who["headers"])
            assert fresh.json()["summary"] == "changed under the cache"
            assert len(reads) == 2
            # The picture URLs are built per request, never cached with a foreign host.
            other_host = await client.get(f"http://elsewhere{url}", headers=who["headers"])
            assert other_host.json()["heatmap_url"].startswith("http://elsewhere/")

    run(go())


def test_a_new_aggregate_invalidates(settings):
    from service import detection
    from storage import repository as repo

    async def go():
        async with api(settings) as (client, storage):
            who = await new_user(storage)
            upload_id = await finished_upload(storage, settings, who["user_id"])
            url = f"/v1/uploads/{upload_id}/result"
            before = (await client.get(url, headers=who["headers"])).json()
            assert await cached_keys(storage, upload_id) == 1
            # A rescore: back to queued, the whole pipeline again, a new aggregate.
            await repo.reset_for_retry(storage.engine, upload_id)
            await detection.run_all(storage, settings, upload_id)
            assert await cached_keys(storage, upload_id) == 0
            after = (await client.get(url, headers=who["headers"])).json()
            assert after["detection_date"] > before["detection_date"]
            assert len(after["metadata"]["history"]) == len(before["metadata"]["history"]) + 1

    run(go())


def test_delete_invalidates(settings):
    async def go():
        async with api(settings) as (client, storage):
            who = await new_user(storage)
            upload_id = await finished_upload(storage, settings, who["user_id"])
            url = f"/v1/uploads/{upload_id}/result"
            assert (await client.get(url, headers=who["headers"])).status_code == 200
            assert await cached_keys(storage, upload_id) == 1
            gone = await client.delete(f"/v1/uploads/{upload_id}", headers=who["headers"])
            assert gone.status_code == 204
            assert await cached_keys(storage, upload_id) == 0
            assert (await client.get(url, headers=who["headers"])).status_code == 404

    run(go())


def test_another_users_upload_is_404_even_when_cached(settings):
    async def go():
        async with api(settings) as (client, storage):
            owner, other = await new_user(storage), await new_user(storage)
            upload_id = await finished_upload(storage, settings, owner["user_id"])
            url = f"/v1/uploads/{upload_id}/result"
            assert (await client.get(url, headers=owner["headers"])).status_code == 200
            assert await cached_keys(storage, upload_id) == 1
            denied = await client.get(url, headers=other["headers"])
            assert (denied.status_code, denied.json()["code"]) == (404, "upload_not_found")

    run(go())


def test_redis_down_still_answers_from_the_database(settings, caplog):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    down = settings.model_copy(update={"cache_url": closed})

    async def go():
        async with api(down) as (client, storage):
            assert storage.cache is not None and storage.cache.url == closed
            storage.cache.retry_after = 0  # try Redis on every request: each one fails
            who = await new_user(storage)
            upload_id = await finished_upload(storage, down, who["user_id"])
            url = f"/v1/uploads/{upload_id}/result"
            answers = [await client.get(url, headers=who["headers"]) for _ in range(3)]
            assert [a.status_code for a in answers] == [200, 200, 200]
            gone = await client.delete(f"/v1/uploads/{upload_id}", headers=who["headers"])
            assert gone.status_code == 204

    with caplog.at_level(logging.WARNING, logger="skygate.cache"):
        run(go())
    warnings = [r for r in caplog.records if r.name == "skygate.cache"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_embedded_default_works_without_redis(tmp_path):
    from schemas.settings import Settings
    from skygate.cli.db import ensure_schema

    embedded = Settings(data_dir=tmp_path)
    assert embedded.result_cache_url is None
    ensure_schema(embedded)

    async def go():
        async with api(embedded) as (client, storage):
            assert storage.cache is None
            who = await new_user(storage)
            upload_id = await finished_upload(storage, embedded, who["user_id"])
            url = f"/v1/uploads/{upload_id}/result"
            first = await client.get(url, headers=who["headers"])
            second = await client.get(url, headers=who["headers"])
            assert first.status_code == second.status_code == 200, first.text
            assert first.json() == second.json()

    run(go())


def test_cache_url_defaults_to_a_redis_result_backend_or_broker():
    from schemas.settings import Settings

    def url(**kw):
        return Settings(**kw).result_cache_url

    assert url() is None
    assert url(broker_url="redis://b:6379/0") == "redis://b:6379/0"
    assert url(broker_url="amqp://r//", result_backend="redis://r:6379/2") == "redis://r:6379/2"
    assert url(broker_url="amqp://r//") is None
    assert url(broker_url="redis://b/0", cache_url="off") is None
    assert url(cache_url="redis://c:6379/5") == "redis://c:6379/5"


def test_pool_settings_reach_the_engine_and_the_mongo_client(settings):
    from service.runtime.health import run_checks
    from storage.context import open_storage

    sized = settings.model_copy(update={
        "db_pool_size": 3, "db_max_overflow": 2, "db_pool_timeout": 7.0,
        "mongo_max_pool_size": 9, "mongo_min_pool_size": 1,
        "mongo_wait_queue_timeout_ms": 1234})

    async def go():
        async with open_storage(sized) as storage:
            pool = storage.engine.sync_engine.pool
            # db_pool_pre_ping: storage.db's ping of an idle connection (not SQLAlchemy's own,
            # which pings every checkout).
            assert (pool.size(), pool._max_overflow, pool._timeout, pool._pre_ping,
                    bool(pool.dispatch.checkout)) == (3, 2, 7.0, False, True)
            opts = storage.documents._client.options.pool_options
            assert (opts.max_pool_size, opts.min_pool_size, opts.wait_queue_timeout) == (
                9, 1, 1.234)
            checks = await run_checks(sized, storage=storage, include_workers=False)
        return {c.name: c for c in checks}

    checks = run(go())
    pools = checks["pools"].detail
    assert checks["pools"].ok
    assert "PostgreSQL size 3 + overflow 2, timeout 7.0 s" in pools
    assert "checked out" in pools and "idle" in pools
    assert "MongoDB max 9, min 1, wait 1234 ms" in pools
    assert "results cache redis://127.0.0.1:6379/" in pools


def test_doctor_prints_the_pools_line(settings):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SKYGATE_")},
           "SKYGATE_DATABASE_URL": settings.database_url, "SKYGATE_MONGO_URL": settings.mongo_url,
           "SKYGATE_DATA_DIR": str(settings.data_dir), "SKYGATE_CACHE_URL": settings.cache_url,
           "SKYGATE_DB_POOL_SIZE": "4", "SKYGATE_MONGO_MAX_POOL_SIZE": "11"}
    out = subprocess.run([sys.executable, "-m", "skygate.cli", "doctor"], env=env, cwd=ROOT,
                         check=False, capture_output=True, text=True, timeout=120)
    line = next((ln for ln in out.stdout.splitlines() if "pools" in ln), "")
    assert "PostgreSQL size 4" in line and "MongoDB max 11" in line, out.stdout + out.stderr
    assert out.returncode == 0, out.stdout + out.stderr


def test_concurrent_readers_and_an_invalidation_leave_no_stale_entry(settings):
    """Readers racing a result change: once it is invalidated, the entry is the new one."""
    from storage.cache import forget_result

    async def go():
        async with api(settings) as (client, storage):
            who = await new_user(storage)
            upload_id = await finished_upload(storage, settings, who["user_id"])
            url = f"/v1/uploads/{upload_id}/result"

            async def read():
                return (await client.get(url, headers=who["headers"])).json()["summary"]

            readers = [asyncio.create_task(read()) for _ in range(20)]
            await set_summary(storage, upload_id, "second")
            await forget_result(storage.cache, upload_id)
            await asyncio.gather(*readers)
            assert await read() == "second"

    run(go())
