"""Issue 15, items 1 and 2: roles (admin, operator, member) enforced by the API, and the
append-only audit trail, on real PostgreSQL and on SQLite (the embedded default).

The API runs in process (Starlette's TestClient, lifespan included) on a freshly migrated
database of each kind; the CLI runs through click's runner with SKYGATE_* variables.
This conftest holds the databases, the API and the helpers both modules use.
"""

from __future__ import annotations

import itertools
import uuid

import pytest
from click.testing import CliRunner

from tests.conftest import _pg_admin, free_port, run, wait_for

_n = itertools.count(1)


# --- fixtures --------------------------------------------------------------------------------


# Package scope: one migrated database of each kind for both modules, as when they were one.
@pytest.fixture(scope="package", params=["postgresql", "sqlite"])
def backend(request, tmp_path_factory):
    """A migrated database of each kind: {"kind", "url" (for SKYGATE_DATABASE_URL or None),
    "env" (the CLI's SKYGATE_* variables), "settings"}."""
    from schemas.settings import Settings
    from storage import migrate
    from storage.db import create_engine

    data_dir = tmp_path_factory.mktemp(f"roles_{request.param}")
    if request.param == "postgresql":
        pg_url = request.getfixturevalue("pg_url")
        name = pg_url.rsplit("/", 1)[1] + "_roles"
        run(_pg_admin(f'CREATE DATABASE "{name}"'))
        url = pg_url.rsplit("/", 1)[0] + "/" + name
        env = {"SKYGATE_DATABASE_URL": url, "SKYGATE_DATA_DIR": str(data_dir)}
    else:
        name, url = None, None
        env = {"SKYGATE_DATABASE_URL": "", "SKYGATE_DATA_DIR": str(data_dir)}
    env.update({"SKYGATE_MONGO_URL": None, "SKYGATE_BROKER_URL": None,
                "SKYGATE_RESULT_BACKEND": None, "SKYGATE_CACHE_URL": "off"})
    settings = Settings(database_url=url, data_dir=data_dir, mongo_url=None, broker_url=None,
                        result_backend=None, cache_url="off")

    async def up():
        engine = create_engine(settings.sqlalchemy_url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    run(up())
    yield {"kind": request.param, "url": url, "env": env, "settings": settings}
    if name:
        run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def db(backend, fn):
    """``await fn(engine)`` on the backend's database."""
    from storage.db import create_engine

    async def go():
        engine = create_engine(backend["settings"].sqlalchemy_url)
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return run(go())


@pytest.fixture(scope="module")
def api(backend):
    """The app served by uvicorn in a thread of this process; an httpx client on it."""
    import threading

    import httpx
    import uvicorn

    from api.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(backend["settings"]), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn started")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def new_user(backend, role="member", *, password=None):
    """A user with that role and a key: {"name", "key", "key_id", "user_id"}."""
    from service import accounts

    name = f"{role}{next(_n)}_{uuid.uuid4().hex[:4]}"

    async def make(engine):
        user_id = await accounts.create_user(engine, username=name, email=f"{name}@example.org",
                                             password=password, role=role)
        key, key_id = await accounts.create_key(engine, username=name, name="t", limit=1000,
                                                expires_at=None)
        return user_id, key, key_id

    user_id, key, key_id = db(backend, make)
    return {"name": name, "key": key, "key_id": key_id, "user_id": user_id,
            "h": {"X-API-Key": key}}


def add_upload(backend, user_id: int) -> int:
    """An uploads row (no blobs: enough for reading and deleting it)."""
    from storage.models import uploads

    async def insert(engine):
        async with engine.begin() as conn:
            return (await conn.execute(uploads.insert().values(
                user_id=user_id, file_name="x.png", original_file_name="x.png",
                file_path="-", file_size=10, file_type="png", mime_type="image/png",
                sha256=uuid.uuid4().hex, status="queued").returning(uploads.c.upload_id))
            ).scalar_one()

    return db(backend, insert)


def audit_rows(backend, **filters) -> list[dict]:
    from storage import audit

    return db(backend, lambda e: audit.query(e, limit=500, **filters))[0]


def cli(backend, *args, input=None):
    from skygate.cli import main

    return CliRunner().invoke(main, list(args), env=backend["env"], input=input)
