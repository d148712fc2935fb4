"""Fixtures and helpers shared by the integration modules: moto's S3 server and its buckets,
the clients, users and uploads of a cluster's API, and the snapshot of a populated store that
the backup modules compare."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from schemas.settings import Settings
from storage.db import create_engine
from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import cluster_sql, free_port, run, stop, unavailable, wait_for

# --- PostgreSQL ---------------------------------------------------------------------------


def _engine(url):
    return create_engine(url.replace("postgresql://", "postgresql+asyncpg://"))


# --- moto's S3 server --------------------------------------------------------------------


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """``moto_server`` (moto[server]) on a free loopback port, for this test session."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        unavailable("moto_server is not installed (pip install -e '.[test]')")
    port = free_port()
    workdir = tmp_path_factory.mktemp("moto")
    log_path = workdir / "moto.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], cwd=workdir,
                                stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **AWS_ENV})
    url = f"http://127.0.0.1:{port}"

    def up():
        import urllib.request

        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()  # noqa: S310 - loopback http
            return True
        except OSError:
            return False

    try:
        wait_for(up, 30, "moto_server answering", alive=proc, log=log_path)
        yield url
    finally:
        stop(proc)


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"skygate-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1"
                 ).create_bucket(Bucket=name)
    return name


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


@pytest.fixture
def s3_settings(tmp_path, s3_endpoint, aws_env):
    """Settings naming a fresh bucket on moto."""
    return Settings(data_dir=tmp_path, blob_url=f"s3://{make_bucket(s3_endpoint)}/blobs",
                    s3_endpoint_url=s3_endpoint)


# --- a cluster's API: users, keys, clients, uploads -----------------------------------------


def db(stack, fn):
    """Run ``await fn(engine)`` on the stack's database."""
    from storage.db import create_engine

    async def go():
        engine = create_engine(stack["db_url"].replace("postgresql://", "postgresql+asyncpg://"))
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return run(go())


def sql(stack, query, **params):
    return cluster_sql(stack["db_url"], query, **params)


_users = iter(range(1, 10_000))


def new_user(stack, *, limit=1000, expires_at=None, password=None):
    from service import accounts

    n = next(_users)
    name = f"user{n}"

    async def make(engine):
        await accounts.create_user(engine, username=name, email=f"{name}@example.org",
                                   password=password)
        key, key_id = await accounts.create_key(engine, username=name, name="test",
                                                limit=limit, expires_at=expires_at)
        return key, key_id

    key, key_id = db(stack, make)
    return {"name": name, "key": key, "key_id": key_id}


def client(stack, key=None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=stack["base"], headers=headers, timeout=60)


def upload(c: httpx.Client, *files: tuple[str, bytes]):
    return c.post("/v1/uploads", files=[("file", (n, d)) for n, d in files])


def wait_done(c: httpx.Client, upload_id: int, timeout=180) -> dict:
    state = {}

    def done():
        state.update(c.get(f"/v1/uploads/{upload_id}").json())
        return state["status"] in ("done", "failed")

    wait_for(done, timeout, f"upload {upload_id} finished")
    return state


# --- a populated store and its snapshot (the backup modules) --------------------------------

TABLES = ("uploads", "detection_results", "method_results", "blob_refs", "detection_methods",
          "embedded_documents", "alembic_version")


def _images(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "photo.jpg").write_bytes(encode(noisy_photo(seed=11), fmt="JPEG"))
    (folder / "render.png").write_bytes(encode(smooth_scene(seed=12),
                                               text={"parameters": SD_PARAMETERS}))
    (folder / "other.png").write_bytes(encode(noisy_photo(seed=13)))
    return folder


def _read_all(folder: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]


async def _populate(settings: Settings, folder: Path) -> None:
    """The embedded pipeline, in this process, on the storage ``settings`` name; the
    evidence pictures made in the canvas, so the store holds every kind of blob."""
    from service import detection, ingest
    from storage import migrate
    from storage.context import open_storage
    from storage.seed import ensure_default_configuration

    async with open_storage(settings) as storage:
        await migrate.upgrade(storage.engine)
        await storage.documents.ensure_indexes()
        await ensure_default_configuration(storage.documents)
        settings = settings.model_copy(update={"evidence": "eager"})
        for name, data in _read_all(folder):
            outcome = await ingest.ingest_bytes(storage, settings, data=data,
                                                original_file_name=name, user_id=None)
            assert outcome.needs_processing, outcome
            await detection.run_all_or_fail(storage, settings, outcome.upload_id)


def _settings(env_settings: dict) -> Settings:
    return Settings(**{k.removeprefix("SKYGATE_").lower(): v for k, v in env_settings.items()})


async def _state(settings: Settings) -> dict:
    """Everything a restore must bring back: rows, sequences, documents, indexes, blobs."""
    from pymongo import AsyncMongoClient

    from storage.db import create_engine

    state: dict = {"rows": {}}
    engine = create_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            for table in TABLES:
                rows = (await conn.execute(sa.select(sa.text("*")).select_from(
                    sa.table(table)))).all()
                state["rows"][table] = sorted((tuple(r) for r in rows), key=repr)
            state["statuses"] = sorted(
                (await conn.execute(sa.text("SELECT status FROM uploads"))).scalars())
            if conn.dialect.name == "postgresql":
                state["sequences"] = (await conn.execute(sa.text(
                    "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1"))).all()
    finally:
        await engine.dispose()
    if settings.mongo_url:
        client = AsyncMongoClient(settings.mongo_url)
        try:
            db = client[settings.mongo_database]
            for name in ("detection_metadata", "system_configuration"):
                docs = [d async for d in db[name].find({})]
                state[name] = sorted(docs, key=lambda d: str(d["_id"]))
                indexes = [ix async for ix in await db[name].list_indexes()]
                state[f"{name}.indexes"] = sorted(
                    (tuple(ix["key"].items()), bool(ix.get("unique"))) for ix in indexes)
                # Validators and other options, as listCollections reports them (nx-27017
                # reports none; a real MongoDB, SKYGATE_TEST_MONGO_URL, its $jsonSchema).
                infos = [i async for i in await db.list_collections(filter={"name": name})]
                state[f"{name}.options"] = [i.get("options") for i in infos]
        finally:
            await client.close()
    blob_root = settings.blob_dir
    state["blobs"] = {
        p.relative_to(blob_root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in blob_root.rglob("*") if p.is_file() and not p.name.startswith(".")
        and ".staging" not in p.parts}
    return state


def _check_populated(state: dict) -> None:
    assert state["statuses"] == ["done", "done", "done"]
    assert len(state["rows"]["detection_results"]) == 3
    assert len(state["rows"]["method_results"]) == 15
    assert len(state["blobs"]) >= 12
