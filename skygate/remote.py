"""Submitting files to a running cluster and following them to their verdicts."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas.settings import Settings


def submit_files(settings: Settings, files: list[Path], *, wait: bool, timeout: float):
    """Put each file in the cluster's blob store (``SKYGATE_BLOB_URL``: an S3 bucket, or the
    folder the workers mount), send ``skygate.ingest``; yield records."""
    from pipeline.decode import InvalidImage, sniff_format
    from storage.blobs import blob_store_for
    from workers import app

    blobs = blob_store_for(settings)
    started = time.monotonic()  # --timeout counts from here, to the second
    pending = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield {"path": str(path), "sha256": None, "upload_id": None, "status": "skipped",
                   "is_ai_generated": None, "confidence": None, "methods": {},
                   "error": f"cannot read file: {exc}"}
            continue
        if len(data) > settings.max_upload_bytes:
            yield {"path": str(path), "sha256": None, "upload_id": None, "status": "failed",
                   "is_ai_generated": None, "confidence": None, "methods": {},
                   "error": f"file is {len(data):,} bytes, over the limit of "
                            f"{settings.max_upload_bytes:,}"}
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
            yield {"path": str(path), "sha256": None, "upload_id": None, "status": "failed",
                   "is_ai_generated": None, "confidence": None, "methods": {},
                   "error": f"cannot store in {blobs.describe()}: {exc}"}
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
    # not after the workers' patient retries.
    try:
        app.backend.always_retry = False
    except Exception:  # noqa: BLE001 - no backend configured: answers are never read
        pass
    # Uploads made before this command (less a little clock skew) are "already known".
    wall_started = datetime.now(UTC) - timedelta(seconds=time.monotonic() - started)
    loop = asyncio.new_event_loop()
    try:
        yield from _follow_on(loop, settings, app, sent, wait=wait, deadline=started + timeout,
                              wall_started=wall_started)
    finally:
        loop.close()


def _follow_on(loop, settings, app, sent, *, wait, deadline, wall_started):
    from types import SimpleNamespace

    from skygate.batch import record_for
    from storage import faults
    from storage.db import create_engine
    from workers.recovery import queue_depths

    engine = create_engine(settings.sqlalchemy_url, pool_pre_ping=True)
    storage = SimpleNamespace(engine=engine)
    left = {item.sha256: item for item in sent}
    last_ids: dict[str, int] = {}

    def remaining() -> float:
        return deadline - time.monotonic()

    def call(fn, *args, **kwargs):
        # Each database read retries transient faults, but never past the deadline.
        return loop.run_until_complete(asyncio.wait_for(
            faults.retrying(fn, *args, deadline=loop.time() + max(0.0, remaining()),
                            what="reading upload status", **kwargs),
            timeout=max(0.1, remaining())))

    try:
        while left:
            try:
                rows = call(_rows_by_sha, engine, list(left))
            except Exception:  # noqa: BLE001 - database down past the deadline, or timed out
                rows = {}
                if remaining() <= 0:
                    break
            queue_idle = None
            for sha, item in list(left.items()):
                row = rows.get(sha)
                if row is not None:
                    last_ids[sha] = row["upload_id"]
                if row is None:
                    reason = _ingest_rejection(item)
                    if reason:
                        del left[sha]
                        yield _record(item, None, "failed", reason)
                        continue
                    if remaining() < 1:
                        continue
                    if item.sends == 0:
                        _send_ingest(app, item)  # its first send failed: the broker was down
                    elif time.monotonic() - item.sent_at > RESEND_INGEST_AFTER:
                        if queue_idle is None:
                            depths = queue_depths(app) if remaining() > 8 else None
                            queue_idle = depths is not None and depths.get("ingest", 0) == 0
                        if queue_idle:
                            _send_ingest(app, item)
                    continue
                if wait and row["status"] not in ("done", "failed"):
                    continue
                del left[sha]
                status = _first_status(row, wall_started, _ingest_answer(item))
                try:
                    yield call(record_for, storage, path=str(item.path), sha256=sha,
                               upload_id=row["upload_id"], status=status,
                               error=row["error"])
                except Exception:  # noqa: BLE001 - the row said it: report it without extras
                    yield _record(item, row["upload_id"], "failed" if row["status"] == "failed"
                                  else ("done" if status == "queued" and wait else status),
                                  row["error"])
            if not left or remaining() <= 0:
                break
            time.sleep(max(0.0, min(POLL_INTERVAL, remaining())))
    finally:
        try:
            loop.run_until_complete(asyncio.wait_for(engine.dispose(), timeout=5))
        except Exception:  # noqa: BLE001
            pass
    for sha, item in left.items():
        upload_id = last_ids.get(sha)
        yield _record(item, upload_id, "pending",
                      "still pending at the timeout" + ("" if upload_id else
                                                        " (not ingested yet)"))


def _first_status(row: dict, started: datetime, answer: dict | None) -> str:
    """``duplicate`` when the upload existed before this command, ``queued`` (→ done) if
    this command made it; ``queued`` also for not-yet-done rows without --wait. Ingest's
    own answer says it when it can be read; else the upload's date does."""
    if answer and answer.get("upload_id") == row["upload_id"] and answer.get("status") in (
            "duplicate", "queued"):
        return answer["status"]
    uploaded = row["upload_date"]
    if uploaded is not None and uploaded.tzinfo is None:
        uploaded = uploaded.replace(tzinfo=UTC)
    if uploaded is not None and uploaded < started and row["status"] == "done":
        return "duplicate"
    return "queued"


def _record(item: _Sent, upload_id, status: str, error: str | None) -> dict:
    return {"path": str(item.path), "sha256": item.sha256, "upload_id": upload_id,
            "status": status, "is_ai_generated": None, "confidence": None, "methods": {},
            "error": error}


async def _rows_by_sha(engine, shas: list[str]) -> dict[str, dict]:
    import sqlalchemy as sa

    from storage.models import uploads

    out: dict[str, dict] = {}
    async with engine.connect() as conn:
        for i in range(0, len(shas), 500):
            rows = await conn.execute(
                sa.select(uploads.c.upload_id, uploads.c.sha256, uploads.c.status,
                          uploads.c.error, uploads.c.upload_date)
                .where(uploads.c.sha256.in_(shas[i:i + 500]), uploads.c.user_id.is_(None)))
            for r in rows.mappings():
                out[r["sha256"]] = dict(r)
    return out
