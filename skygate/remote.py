"""Submitting files to a running cluster and following them to their verdicts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from pipeline.decode import InvalidImage, sniff_format
from schemas.clock import aware, utcnow
from schemas.records import FileRecord, file_record
from schemas.settings import Settings
from service.ingest import size_refusal
from service.runtime.celery_client import celery_client
from service.runtime.queues import queue_depths
from skygate.batch import record_for
from storage import faults
from storage.blobs import blob_store_for
from storage.db import autocommit, create_engine
from storage.models import uploads

# Everything is imported up front (this module is only the submitter's): following the
# uploads starts while the workers already process them, and half a second of imports then
# would compete with them for the CPU.


def submit_files(settings: Settings, files: list[Path], *, wait: bool, timeout: float):
    """Put each file in the cluster's blob store (``SKYGATE_BLOB_URL``: an S3 bucket, or the
    folder the workers mount), send ``skygate.ingest``; yield records. Ingest validates
    (size, format) and records a refused file as a failed upload."""
    app = celery_client()
    blobs = blob_store_for(settings)
    started = time.monotonic()  # --timeout counts from here, to the second
    pending = []
    for path in files:
        try:
            # Refused before it is read or uploaded: the worker would only refuse it after
            # reading it whole (the same rule as ingest's).
            too_large = size_refusal(path.stat().st_size, settings)
            if too_large is not None:
                yield file_record(path=str(path), status="failed", error=too_large)
                continue
            data = path.read_bytes()
        except OSError as exc:
            yield file_record(path=str(path), status="skipped", error=f"cannot read file: {exc}")
            continue
        try:
            # The suffix ingest will give the original (by content), so it finds the object
            # already in place instead of storing a second copy under another name.
            suffix = "." + sniff_format(data[:4096])[0]
        except InvalidImage:
            suffix = ""
        try:
            key = blobs.put(data, suffix=suffix)
        except Exception as exc:  # noqa: BLE001 - the store is down or refuses: say which
            yield file_record(path=str(path), status="failed",
                              error=f"cannot store in {blobs.describe()}: {exc}")
            continue
        pending.append(_Sent(path, key, hashlib.sha256(data).hexdigest()))
        _send_ingest(app, pending[-1])
    yield from _follow(settings, app, pending, wait=wait, started=started, timeout=timeout)


# --- following uploads to their verdicts: the database is the truth --------------------------

# A file whose upload row has not appeared this long after its ingest was sent, while the
# ingest queue is empty, lost its message (a broker restart): ingest is sent again
# (idempotent: the same content finds the same upload).
RESEND_INGEST_AFTER = 20.0
POLL_INTERVAL = 1.0
# With few files left one poll is a small query: ask 4× as often, so a run's end is seen
# within a quarter second instead of up to a second (a second was 5–10 % of a 16-image run).
FAST_POLL_INTERVAL, FAST_POLL_BELOW = 0.25, 100
# Asking the broker for its queue depths can take seconds: not when fewer are left.
ASK_QUEUES_WITH_SECONDS_LEFT = 8.0


@dataclass
class _Sent:
    path: Path
    key: str
    sha256: str
    sent_at: float | None = None
    result: object = None
    sends: int = 0


# After a broker or result-backend failure, further calls fail fast for this long: a batch
# of 200 files never spends 200 connection timeouts (--timeout is kept to the second).
_DOWN_FOR = 3.0
_down_until = {"broker": 0.0, "backend": 0.0}


def _send_ingest(app, item: _Sent) -> bool:
    """Send (or re-send) the file's ingest; False when the broker is down (tried again later)."""
    if time.monotonic() < _down_until["broker"]:
        return False
    try:
        item.result = app.send_task(
            "skygate.ingest", kwargs={"blob_key": item.key, "original_file_name": item.path.name},
            retry=True, retry_policy={"max_retries": 1, "interval_start": 0.2,
                                      "interval_step": 0.5, "interval_max": 0.5})
        item.sent_at = time.monotonic()
        item.sends += 1
        return True
    except Exception:  # noqa: BLE001 - the broker is down: the follow loop re-sends
        _down_until["broker"] = time.monotonic() + _DOWN_FOR
        return False


def _ingest_answer(item: _Sent) -> dict | None:
    """Ingest's answer if it has one (never blocks; None while the backend is down)."""
    if item.result is None or time.monotonic() < _down_until["backend"]:
        return None
    try:
        if item.result.ready():
            answer = item.result.get(timeout=1, propagate=False, disable_sync_subtasks=False)
            return answer if isinstance(answer, dict) else None
    except Exception:  # noqa: BLE001 - the result backend is down: ask again later
        _down_until["backend"] = time.monotonic() + _DOWN_FOR
    return None


def _ingest_rejection(item: _Sent) -> str | None:
    """The reason ingest gave for dropping the message (no upload row will ever exist)."""
    answer = _ingest_answer(item)
    if answer and answer.get("status") == "rejected":
        return answer.get("error") or "ingest rejected the message"
    return None


def _follow(settings: Settings, app, sent: list[_Sent], *, wait: bool, started: float,
            timeout: float):
    """Yield one record per file, as its upload is done or failed (``wait``) or merely exists
    (no ``wait``), reading the database and retrying its reads across restarts; at
    ``deadline`` the rest are yielded as ``pending`` with their upload ids."""
    if not sent:
        return
    # This process only reads results: a backend that is down must answer "no" at once,
    # not after the workers' patient retries. (No backend configured: answers are never read.)
    with contextlib.suppress(Exception):
        app.backend.always_retry = False
    # Uploads made before this command (less a little clock skew) are "already known".
    wall_started = utcnow() - timedelta(seconds=time.monotonic() - started)
    loop = asyncio.new_event_loop()
    try:
        yield from _Follower(loop, settings, app, sent, wait=wait, deadline=started + timeout,
                             wall_started=wall_started).run()
    finally:
        loop.close()


class _Follower:
    """One ``_follow``: polls the upload rows of the files still left until the deadline."""

    def __init__(self, loop, settings: Settings, app, sent: list[_Sent], *, wait: bool,
                 deadline: float, wall_started: datetime):
        self.loop, self.app, self.wait = loop, app, wait
        self.deadline, self.wall_started = deadline, wall_started
        # No ping before each poll (a round trip every quarter second): a connection that a
        # database restart broke fails its read, which ``call`` retries like any transient
        # fault, on a fresh connection (SQLAlchemy drops the pool's stale ones at once).
        self.engine = create_engine(settings.sqlalchemy_url, pool_pre_ping=False)
        self.left = {item.sha256: item for item in sent}
        self.last_ids: dict[str, int] = {}
        self.queue_idle: bool | None = None  # asked at most once per poll

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def call(self, fn, *args, **kwargs):
        # Each database read retries transient faults, but never past the deadline.
        loop = self.loop
        return loop.run_until_complete(asyncio.wait_for(
            faults.retrying(fn, *args, deadline=loop.time() + max(0.0, self.remaining()),
                            what="reading upload status", **kwargs),
            timeout=max(0.1, self.remaining())))

    def run(self):
        try:
            while self.left:
                try:
                    rows = self.call(_rows_by_sha, self.engine, list(self.left))
                except Exception:  # noqa: BLE001 - database down past the deadline, or timed out
                    rows = {}
                    if self.remaining() <= 0:
                        break
                self.queue_idle = None
                for sha, item in list(self.left.items()):
                    row = rows.get(sha)
                    record = self._unseen(item) if row is None else self._seen(item, row)
                    if record is not None:
                        del self.left[sha]
                        yield record
                if not self.left or self.remaining() <= 0:
                    break
                interval = FAST_POLL_INTERVAL if len(self.left) < FAST_POLL_BELOW else POLL_INTERVAL
                time.sleep(max(0.0, min(interval, self.remaining())))
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.wait_for(self.engine.dispose(), timeout=5))
        for sha, item in self.left.items():
            upload_id = self.last_ids.get(sha)
            yield _record(item, upload_id, "pending",
                          "still pending at the timeout" + ("" if upload_id else
                                                            " (not ingested yet)"))

    def _unseen(self, item: _Sent) -> FileRecord | None:
        """No upload row yet: failed if ingest rejected the message; else its ingest is sent
        again when the first send failed, or when it looks lost (old, and the queue idle)."""
        reason = _ingest_rejection(item)
        if reason:
            return _record(item, None, "failed", reason)
        if self.remaining() < 1:
            return None
        if item.sends == 0:
            _send_ingest(self.app, item)  # its first send failed: the broker was down
        elif time.monotonic() - item.sent_at > RESEND_INGEST_AFTER:
            if self.queue_idle is None:
                depths = (queue_depths(self.app) if self.remaining() > ASK_QUEUES_WITH_SECONDS_LEFT
                          else None)
                self.queue_idle = depths is not None and depths.get("ingest", 0) == 0
            if self.queue_idle:
                _send_ingest(self.app, item)
        return None

    def _seen(self, item: _Sent, row: dict) -> FileRecord | None:
        """The file's record once its upload is finished (``wait``) or exists (no ``wait``)."""
        self.last_ids[item.sha256] = row["upload_id"]
        if self.wait and row["status"] not in ("done", "failed"):
            return None
        status = _first_status(row, self.wall_started, _ingest_answer(item))
        try:
            return self.call(record_for, self.engine, None, path=str(item.path), sha256=item.sha256,
                             upload_id=row["upload_id"], status=status, error=row["error"])
        except Exception:  # noqa: BLE001 - the row said it: report it without extras
            return _record(item, row["upload_id"], "failed" if row["status"] == "failed"
                           else ("done" if status == "queued" and self.wait else status),
                           row["error"])


def _first_status(row: dict, started: datetime, answer: dict | None) -> str:
    """``duplicate`` when the upload existed before this command, ``queued`` (→ done) if
    this command made it; ``queued`` also for not-yet-done rows without --wait. Ingest's
    own answer says it when it can be read; else the upload's date does."""
    if answer and answer.get("upload_id") == row["upload_id"] and answer.get("status") in (
            "duplicate", "queued"):
        return answer["status"]
    uploaded = row["upload_date"]
    uploaded = aware(uploaded)
    if uploaded is not None and uploaded < started and row["status"] == "done":
        return "duplicate"
    return "queued"


def _record(item: _Sent, upload_id, status: str, error: str | None) -> FileRecord:
    return file_record(path=str(item.path), sha256=item.sha256, upload_id=upload_id,
                       status=status, error=error)


async def _rows_by_sha(engine, shas: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    async with autocommit(engine) as conn:
        for i in range(0, len(shas), 500):
            rows = await conn.execute(
                sa.select(uploads.c.upload_id, uploads.c.sha256, uploads.c.status,
                          uploads.c.error, uploads.c.upload_date)
                .where(uploads.c.sha256.in_(shas[i:i + 500]), uploads.c.user_id.is_(None)))
            for r in rows.mappings():
                out[r["sha256"]] = dict(r)
    return out
