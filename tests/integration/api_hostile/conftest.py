"""Issue 12: hostile clients and careless deletes, against a real ``skygate api`` process on
PostgreSQL, Redis, the Mongo wire server and a real Celery worker — one stack for the whole
package (its start costs a database, a worker and an API process), and what its tests read
back from it: unreferenced blobs, blob files, documents."""

from __future__ import annotations

import pytest

from tests.conftest import api_cluster, run

MAX_UPLOAD = 8_000_000
MAX_FILES = 6


# Package scope: the stack's start (a database, a Celery worker, an API process) is paid once
# for the three modules, as when they were one.
@pytest.fixture(scope="package")
def stack(pg_url, mongo_url, tmp_path_factory):
    with api_cluster(pg_url, mongo_url, tmp_path_factory, "hostile",
                     SKYGATE_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
                     SKYGATE_API_MAX_FILES=str(MAX_FILES),
                     SKYGATE_API_HEADER_TIMEOUT="2",
                     SKYGATE_API_BODY_TIMEOUT="2",
                     SKYGATE_LOGIN_MAX_FAILURES="5",
                     SKYGATE_LOGIN_MAX_FAILURES_PER_IP="40",
                     SKYGATE_LOGIN_WINDOW_SECONDS="600") as cluster:
        yield cluster


# --- helpers -------------------------------------------------------------------------------


def _storage_call(stack, fn):
    """Run ``await fn(storage)`` on the stack's own database, documents and blob store."""
    from schemas.settings import Settings
    from storage.context import open_storage

    settings = Settings(database_url=stack["db_url"], mongo_url=stack["mongo_url"],
                        data_dir=stack["data_dir"])

    async def go():
        async with open_storage(settings) as storage:
            return await fn(storage)

    return run(go())


def orphans(stack) -> list[str]:
    """Blob files that no row and no document references (what gc would remove now)."""
    from storage.gc import collect

    report = _storage_call(stack, lambda s: collect(s, grace_seconds=0, dry_run=True))
    return [k for k, _ in report.candidates]


def blob_path(stack, key: str):
    return stack["data_dir"] / "blobs" / key


def doc_for(stack, upload_id: int) -> dict | None:
    from pymongo import MongoClient

    mongo = MongoClient(stack["mongo_url"])
    try:
        return mongo.get_default_database()["detection_metadata"].find_one(
            {"upload_id": upload_id})
    finally:
        mongo.close()
