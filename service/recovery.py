"""Self-healing: the recovery sweep and the start-up wait.

Every upload records its stage and when a worker last touched it (``stage_touched_at``: set
on insert, when prepare starts and ends, when each method task starts (its check that the
upload is still its own), when aggregate starts). An upload still ``queued`` or
``processing`` whose stage nobody touched for ``SKYGATE_STUCK_AFTER`` seconds (default 2 x
the hard time limit + 60 s: a live upload is touched at least once per hard time limit plus
the wait for the task before it) has lost its messages — a worker died, the broker restarted
without them, a fault outlasted every retry. The sweep re-sends ``skygate.prepare`` for it;
every write downstream is idempotent, so a message that was not lost after all only repeats
work, never a row or a document.

While the broker's queues still hold work, an old ``stage_touched_at`` may only mean a
backlog: then the sweep waits until the queues are idle, or until the upload is 6 x overdue.

Who sweeps: every worker, in a thread of its main process, every ``SKYGATE_SWEEP_INTERVAL``
seconds (with jitter). No extra service to deploy or to lose; with many workers each stuck
upload is still re-sent once, because the claim is one conditional UPDATE (``stage_touched_at``
unchanged since it was read). ``skygate recover`` runs the same sweep by hand.

The sweep also releases the intermediates (the shared crop, the manifest) of abandoned
canvases: uploads failed or done whose aggregate never released them, and unfinished ones
nobody touched for ``SKYGATE_INTERMEDIATE_TTL`` (a day) (a re-sent prepare makes
them again).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from schemas.settings import Settings
from service import webhooks
from service.dispatch import Dispatcher, QueueUnavailable
from service.runtime.queues import queue_depths
from storage import blobrefs, faults
from storage import repository as repo
from storage.context import Storage, build_storage
from storage.db import create_engine

log = logging.getLogger("skygate.recovery")

BUSY_FACTOR = 6
_sweeper: dict = {}


async def sweep(storage: Storage, settings: Settings, app, *, dry_run: bool = False,
                now: datetime | None = None) -> list[dict]:
    """Find stuck uploads and re-send them; returns what was (or, dry, would be) re-sent.
    Also releases the intermediates of abandoned canvases (:func:`release_abandoned`)."""
    now = now or datetime.now(UTC)
    engine = storage.engine
    if not dry_run:
        await release_abandoned(storage, settings, now=now)
        await _enqueue_webhooks(storage, app)
        await _purge_idempotency_keys(storage, settings)
    stuck_after = settings.stuck_after_seconds
    candidates = await repo.unfinished_untouched(
        engine, before=now - timedelta(seconds=stuck_after))
    if not candidates:
        return []
    depths = await asyncio.to_thread(queue_depths, app)
    busy = depths is None or sum(depths.values()) > 0
    dispatcher = Dispatcher.with_app(settings, app)
    resent = []
    for row in candidates:
        touched = row["touched"]
        if touched is not None and touched.tzinfo is None:
            touched = touched.replace(tzinfo=UTC)
        age = (now - touched).total_seconds() if touched else float("inf")
        if busy and age < BUSY_FACTOR * stuck_after:
            continue  # the queues still hold work: it may be waiting its turn
        item = {"upload_id": row["upload_id"], "status": row["status"], "stage": row["stage"],
                "idle_seconds": round(age, 1), "recoveries": row["recoveries"]}
        if dry_run:
            resent.append(item)
            continue
        if not await repo.claim_recovery(engine, row["upload_id"], row["stage_touched_at"],
                                        at=now):
            continue  # touched meanwhile, or another sweeper claimed it
        try:
            await dispatcher.start_detection(storage, row["upload_id"], recovered=True)
        except QueueUnavailable as exc:  # the broker is down: the next sweep retries
            log.warning("recovery could not re-send upload %s: %s", row["upload_id"],
                        exc.reason)
            continue
        log.warning("recovered stuck upload %s (%s/%s, idle %.0fs)", row["upload_id"],
                    row["status"], row["stage"], age, extra={"upload_id": row["upload_id"]})
        resent.append(item)
    return resent


async def _enqueue_webhooks(storage: Storage, app) -> None:
    """Webhook deliveries that are due and held by nobody: a message lost with a killed
    worker or a broker outage, or a retry hours away (service/webhooks.py)."""
    try:
        sent = await webhooks.enqueue_due(storage, app)
    except Exception as exc:  # noqa: BLE001 - the next sweep tries again
        log.warning("could not enqueue due webhook deliveries: %s: %s",
                    type(exc).__name__, str(exc)[:300])
        return
    if sent:
        log.info("enqueued %d due webhook deliveries", sent)


HOUSEKEEPING_SECONDS = 600.0
_tidied = {"at": float("-inf")}


async def _purge_idempotency_keys(storage: Storage, settings: Settings) -> None:
    """Idempotency keys past their time to live, and webhook events (with their delivery
    log) past SKYGATE_WEBHOOK_LOG_DAYS: at most every HOUSEKEEPING_SECONDS per worker."""
    now = time.monotonic()
    if now - _tidied["at"] < HOUSEKEEPING_SECONDS:
        return
    _tidied["at"] = now
    try:
        await webhooks.housekeeping(storage, settings)
    except Exception as exc:  # noqa: BLE001 - the next sweep tries again
        log.warning("could not purge expired idempotency keys or webhook events: %s: %s",
                    type(exc).__name__, str(exc)[:300])


async def release_abandoned(storage: Storage, settings: Settings, *, now: datetime
                            ) -> list[str]:
    """Release the intermediates of abandoned canvases; a failure is logged, never raised
    (the next sweep tries again)."""
    before = now - timedelta(seconds=settings.intermediate_ttl)
    try:
        return await blobrefs.release_stale_intermediates(storage, touched_before=before)
    except Exception as exc:  # noqa: BLE001 - cleanup never stops the re-sends
        log.warning("could not release abandoned intermediates: %s: %s",
                    type(exc).__name__, str(exc)[:300])
        return []


# --- the sweeper thread of a worker's main process -------------------------------------------


def start_sweeper(app, settings: Settings) -> None:
    if settings.sweep_interval <= 0 or _sweeper.get("thread"):
        return
    stop = threading.Event()
    thread = threading.Thread(target=_sweep_forever, args=(app, settings, stop),
                              name="skygate-recovery", daemon=True)
    _sweeper.update(thread=thread, stop=stop)
    thread.start()
    log.info("recovery sweep every %.0fs (stuck after %ds)", settings.sweep_interval,
             settings.stuck_after_seconds)


def stop_sweeper() -> None:
    stop = _sweeper.pop("stop", None)
    thread = _sweeper.pop("thread", None)
    if stop is not None:
        stop.set()
    if thread is not None:
        thread.join(timeout=10)


def _sweep_forever(app, settings: Settings, stop: threading.Event) -> None:
    loop = asyncio.new_event_loop()

    async def build():  # storage is bound to the loop that builds it
        return build_storage(settings)

    storage = loop.run_until_complete(build())
    try:
        while not stop.wait(settings.sweep_interval * random.uniform(0.8, 1.2)):  # noqa: S311 - jitter
            try:
                loop.run_until_complete(sweep(storage, settings, app))
            except Exception as exc:  # noqa: BLE001 - a sweep never kills the worker
                log.warning("recovery sweep failed (%s): %s: %s",
                            "transient" if faults.is_transient(exc) else "error",
                            type(exc).__name__, str(exc)[:300])
    finally:
        try:
            loop.run_until_complete(storage.close())
        finally:
            loop.close()


# --- start-up ---------------------------------------------------------------------------------


def wait_for_services(settings: Settings) -> None:
    """Block until the database (and Mongo, if configured) answer, retrying transient faults
    with backoff for up to ``settings.startup_wait`` seconds; then raise the last error."""

    async def check():
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.startup_wait
        engine = create_engine(settings.sqlalchemy_url)

        async def ping_sql():
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))

        try:
            await faults.retrying(ping_sql, deadline=deadline, what="waiting for the database")
        finally:
            await engine.dispose()
        if settings.mongo_url:
            from pymongo import AsyncMongoClient  # only where Mongo is configured

            client = AsyncMongoClient(settings.mongo_url, serverSelectionTimeoutMS=3000)
            try:
                await faults.retrying(client.admin.command, "ping", deadline=deadline,
                                      what="waiting for MongoDB")
            finally:
                await client.close()

    asyncio.run(check())
    log.info("database%s reachable", " and MongoDB" if settings.mongo_url else "")
