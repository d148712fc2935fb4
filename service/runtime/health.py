"""Dependency checks, each with a fix hint: ``skygate doctor`` prints them, ``/readyz``
answers with them.

A check runs only when what it needs passed (``NEEDS``): with the database down, the embedded
document store, the pools and the model are "skipped: database unreachable" instead of failing
with hints about things that are not the cause."""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from urllib.parse import urlsplit

from schemas.settings import Settings

# Deferred imports: each check imports its client (kombu, redis, the model) only when it runs.

QUEUES = ("ingest", "detect", "model", "aggregate", "webhooks")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    reachable: bool = True  # False when the failure is that the service did not answer
    cause: str = ""  # set when skipped: the failed check this one could not run without

    @property
    def skipped(self) -> bool:
        return bool(self.cause)

    @property
    def status(self) -> str:
        return "ok" if self.ok else "skipped" if self.skipped else "fail"

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "hint": self.hint if not self.ok else "", "cause": self.cause or None}


_SHORT_LIMIT = 240  # characters of an error shown in a health check's detail


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) < _SHORT_LIMIT else text[:_SHORT_LIMIT - 3] + "..."


def _where(url: str) -> str:
    """A URL without its credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def check_database(settings: Settings, storage) -> Check:
    import sqlalchemy as sa

    from storage import migrate

    url = settings.database_url
    if not url:
        where, fix = f"embedded SQLite in {settings.data_dir}", "make SKYGATE_DATA_DIR writable"
    else:
        kind = "PostgreSQL" if url.startswith("postgres") else "the database"
        where, fix = f"{kind} {_where(url)}", f"start {kind} or fix SKYGATE_DATABASE_URL"

    async def ping():
        async with storage.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    try:
        await asyncio.wait_for(ping(), 10)
    except Exception as exc:  # noqa: BLE001
        return Check("database", False, f"{where}: unreachable: {_short(exc)}", fix,
                     reachable=False)
    try:
        current = await asyncio.wait_for(migrate.current_revision(storage.engine), 10)
    except Exception as exc:  # noqa: BLE001
        return Check("database", False, f"{where}: {_short(exc)}", fix)
    head = migrate.head_revision()
    if current != head:
        return Check("database", False, f"{where}: at revision {current or 'none'}, "
                     f"code expects {head}", "run `skygate db upgrade`")
    return Check("database", True, f"{where}: reachable, migrated to {head}")


async def check_documents(settings: Settings, storage) -> Check:
    where = (f"MongoDB {_where(settings.mongo_url)}" if settings.mongo_url
             else "embedded (SQL table)")
    try:
        missing = await asyncio.wait_for(storage.documents.missing_indexes(), 10)
    except Exception as exc:  # noqa: BLE001
        if not settings.mongo_url:
            return Check("documents", False, f"{where}: {_short(exc)}", "run `skygate db upgrade`")
        return Check("documents", False, f"{where}: unreachable: {_short(exc)}",
                     "start MongoDB or fix SKYGATE_MONGO_URL", reachable=False)
    if missing:
        return Check("documents", False, f"{where}: missing indexes {', '.join(missing)}",
                     "run `skygate db upgrade`")
    return Check("documents", True, f"{where}: reachable, indexes present")


def check_pools(settings: Settings, storage) -> Check:
    """The connection pools as configured (``db_pool_*``, ``mongo_*_pool_*``), PostgreSQL's
    connections now, and the results cache. Informational: never fails."""
    from storage.db import pool_status

    sql = pool_status(storage.engine)
    if settings.database_url and "size" in sql:
        parts = [f"PostgreSQL size {sql['size']} + overflow {sql.get('max_overflow', '?')}, "
                 f"timeout {sql.get('timeout', '?')} s, pre-ping "
                 f"{'on' if settings.db_pool_pre_ping else 'off'}: "
                 f"{sql.get('checked_out', '?')} checked out, {sql.get('idle', '?')} idle"]
    else:
        parts = ["embedded SQLite (SQLAlchemy's default pool)"]
    if settings.mongo_url and hasattr(storage.documents, "pool_status"):
        mongo = storage.documents.pool_status()
        wait = mongo["wait_queue_timeout_ms"]
        parts.append(f"MongoDB max {mongo['max']}, min {mongo['min']}, wait "
                     f"{'unlimited' if wait is None else f'{wait} ms'}")
    cache = getattr(storage, "cache", None)
    parts.append(f"results cache {_where(cache.url)} (ttl {cache.ttl} s)" if cache is not None
                 else "results cache off")
    return Check("pools", True, "; ".join(parts))


def _check_broker(settings: Settings) -> Check:
    if not settings.broker_url:
        return Check("broker", True, "not configured: embedded mode, work runs in-process")
    from kombu import Connection

    where = _where(settings.broker_url)
    try:
        with Connection(settings.broker_url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # noqa: BLE001
        return Check("broker", False, f"{where}: unreachable: {_short(exc)}",
                     "start Redis/RabbitMQ or fix SKYGATE_BROKER_URL", reachable=False)
    return Check("broker", True, f"{where}: reachable")


def _check_result_backend(settings: Settings) -> Check:
    url = settings.result_backend
    if not url:
        return Check("result backend", True, "not configured (results are read from SQL)")
    where = _where(url)
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
        else:
            from service.runtime.celery_client import celery_client

            celery_client().backend.client  # noqa: B018 - touching it connects
    except Exception as exc:  # noqa: BLE001
        return Check("result backend", False, f"{where}: unreachable: {_short(exc)}",
                     "start Redis or fix SKYGATE_RESULT_BACKEND", reachable=False)
    return Check("result backend", True, f"{where}: reachable")


def _check_workers(settings: Settings) -> Check:
    if not settings.broker_url:
        return Check("workers", True, "embedded mode: `skygate scan` runs the pipeline itself")
    from service.runtime.celery_client import celery_client

    try:
        replies = celery_client().control.inspect(timeout=2.0).active_queues() or {}
    except Exception as exc:  # noqa: BLE001
        return Check("workers", False, _short(exc), "check the broker first")
    served = {q["name"] for queues in replies.values() for q in queues}
    if not replies:
        return Check("workers", False, "no worker answered within 2 s",
                     f"start workers: `celery -A workers worker -Q {','.join(QUEUES)}`")
    names = ", ".join(f"{w} [{','.join(sorted(q['name'] for q in qs))}]"
                      for w, qs in sorted(replies.items()))
    missing = [q for q in QUEUES if q not in served]
    if missing:
        return Check("workers", False, f"{names}; no worker consumes {', '.join(missing)}",
                     f"start a worker with -Q {','.join(missing)}")
    return Check("workers", True, names)


def _check_blobs(settings: Settings) -> Check:
    if settings.blob_url and not settings.blob_url.startswith(("file:", "/", ".")):
        return _check_object_store(settings)
    root = settings.blob_dir
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".doctor-")
        os.write(fd, b"ok")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return Check("blob store", False, f"{root}: {_short(exc)}",
                     "make SKYGATE_DATA_DIR writable (the shared volume in a cluster)")
    return Check("blob store", True, f"{root}: writable")


def _check_object_store(settings: Settings) -> Check:
    from storage.blobs import blob_store_for

    where = settings.blob_url
    try:
        store = blob_store_for(settings)
        where = store.describe()
        store.probe()
    except Exception as exc:  # noqa: BLE001
        return Check("blob store", False, f"{where}: {_short(exc)}",
                     "check SKYGATE_BLOB_URL, SKYGATE_S3_ENDPOINT_URL, the bucket and the "
                     "AWS_* credentials")
    return Check("blob store", True, f"{where}: writable")


_NO_MODEL = ("no active model configuration",
             "run `skygate db upgrade` (it installs the default model)")


async def _active_model(storage):
    """The active model configuration, or None."""
    configs = await asyncio.wait_for(storage.documents.active_configurations("model"), 10)
    return configs[0] if configs else None


async def check_model(storage) -> Check:
    from pipeline.methods.model import load_model

    try:
        config = await _active_model(storage)
        if config is None:
            return Check("model", False, *_NO_MODEL)
        files = await asyncio.to_thread(load_model, config.parameters.model_dump())
    except Exception as exc:  # noqa: BLE001
        return Check("model", False, _short(exc),
                     "fix model_path/encoder_path in the active system_configuration, or "
                     "rebuild the shipped files (pipeline/assets/MODEL_CARD.md)")
    names = ", ".join(p.name for p in files.values())
    return Check("model", True, f"{config.config_name}: {names} load")


async def check_known_answers(storage) -> Check:
    """Does this CPU compute the active model's answers? (pipeline/known_answer.py)"""
    from pipeline.methods.model import known_answers

    name = "model known-answer check"
    try:
        config = await _active_model(storage)
        if config is None:
            return Check(name, False, *_NO_MODEL)
        results = await asyncio.to_thread(known_answers, config.parameters.model_dump())
    except Exception as exc:  # noqa: BLE001
        return Check(name, False, _short(exc),
                     "use a model whose integer weights cannot saturate on this CPU "
                     "(pipeline/assets/MODEL_CARD.md, Numerics), or rebuild the shipped files")
    if not results:
        return Check(name, True, "not run: the active model ships no reference (<file>.kat.npz)")
    detail = "; ".join(
        f"{role} {r.reference.name.removesuffix('.kat.npz')}: " + (
            f"features min cosine {r.min_cosine:.4f}, max |Δ| {r.max_abs:.4f} of their range"
            if role == "encoder" else f"output max |Δ| {r.max_abs:.4f}")
        + f" over {r.samples} reference inputs" for role, r in results.items())
    return Check(name, True, f"ok ({detail})")


def needs(settings: Settings) -> dict[str, tuple[str, ...]]:
    """What each check needs to have passed before it can say anything true."""
    return {
        "database": (),
        # The embedded document store is a table of the SQL database.
        "documents": () if settings.mongo_url else ("database",),
        "pools": ("database",),
        "broker": (),
        "result backend": (),
        "workers": ("broker",),
        "blob store": (),
        # The active model configuration is a document.
        "model": ("documents",),
        "model known-answer check": ("model",),
    }


def _skipped(name: str, blocker: Check, done: dict[str, Check]) -> Check:
    """A check not run because ``blocker`` did not pass, named by the root cause."""
    root = done[blocker.cause] if blocker.skipped else blocker
    state = "unreachable" if not root.reachable else "failing"
    return Check(name, False, f"skipped: {root.name} {state}", f"fix {root.name} first",
                 cause=root.name)


async def run_checks(settings: Settings, *, storage=None, include_workers: bool = True
                     ) -> list[Check]:
    """Every check, in dependency order; a check whose needs did not pass is skipped."""
    from storage.context import open_storage

    if storage is None:
        async with open_storage(settings) as own:
            return await run_checks(settings, storage=own, include_workers=include_workers)
    steps = {
        "database": lambda: check_database(settings, storage),
        "documents": lambda: check_documents(settings, storage),
        "pools": lambda: _now(check_pools, settings, storage),
        "broker": lambda: asyncio.to_thread(_check_broker, settings),
        "result backend": lambda: asyncio.to_thread(_check_result_backend, settings),
        "workers": lambda: asyncio.to_thread(_check_workers, settings),
        "blob store": lambda: asyncio.to_thread(_check_blobs, settings),
        "model": lambda: check_model(storage),
        "model known-answer check": lambda: check_known_answers(storage),
    }
    if not include_workers:
        del steps["workers"]
    graph = needs(settings)
    done: dict[str, Check] = {}
    for name, step in steps.items():
        blocker = next((done[n] for n in graph[name] if not done[n].ok), None)
        done[name] = _skipped(name, blocker, done) if blocker else await step()
    return list(done.values())


async def _now(fn, *args):
    return fn(*args)


def causes(checks: list[Check]) -> list[Check]:
    """The checks that failed by themselves (the skipped ones only follow from these)."""
    return [c for c in checks if not c.ok and not c.skipped]
