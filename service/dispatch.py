"""Start the detection of a stored upload, one way for every front door and the recovery
sweep: :meth:`Dispatcher.start_detection`. A Celery message to ``skygate.prepare`` when a
broker is configured (or an app is given), else the whole canvas in this process.

Each door builds its :class:`Dispatcher` once (how it starts work) and maps the one error,
:class:`QueueUnavailable`, to its answer (the API's 503 ``queue_unavailable``, the CLI's
message, the sweep's "next time"). The upload is then left queued with the reason shown
(``repo.mark_undispatched``): sending the same bytes again, or the recovery sweep once it is
overdue, starts it, and clears the mark (``repo.mark_dispatched``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor

from schemas.settings import Settings
from schemas.text import public_reason
from service.runtime.logs import bind_request, current_request_id, unbind_request
from storage import repository as repo
from storage.context import build_storage

# Deferred imports, each where it is first needed: Celery (only a process that publishes
# loads it) and service.detection (every method's module and model: only a process that
# runs a canvas loads them).

PREPARE_TASK = "skygate.prepare"

log = logging.getLogger("skygate.dispatch")


class QueueUnavailable(Exception):
    """The upload is stored but its ``skygate.prepare`` message could not be published (the
    broker is unreachable); it stays queued, marked with ``reason`` (no server paths)."""

    def __init__(self, upload_id: int, reason: str):
        super().__init__(f"upload {upload_id} could not be queued: {reason}")
        self.upload_id, self.reason = upload_id, reason


def send_prepare(upload_id: int, *, recovered: bool = False, fail_fast: bool = False,
                 app=None) -> None:
    """Publish ``skygate.prepare`` for one upload (nobody waits on its result).

    ``fail_fast``: give up after two quick publish retries (an HTTP request must not hang on
    a broker that is down); ``app``: the Celery app to publish with (default: the client).
    """
    from service.runtime.celery_client import celery_client

    options = {"ignore_result": True}
    if recovered:
        options["kwargs"] = {"recovered": True}
    if fail_fast:
        options["retry_policy"] = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}
    (app or celery_client()).send_task(PREPARE_TASK, args=[upload_id], **options)


class Dispatcher:
    """How one front door starts detections, decided once (build it with a named
    constructor); :meth:`start_detection` is the one way to start one.

    ``celery``: a ``skygate.prepare`` message (with ``app``, default the client);
    ``thread``: in this process on one background thread, so the caller never waits (the
    embedded API); ``inline``: in this process, awaited by the caller (``skygate scan``,
    embedded ``retry``/``rescore``).
    """

    def __init__(self, settings: Settings, mode: str, *, app=None, fail_fast: bool = False):
        if mode not in ("celery", "thread", "inline"):
            raise ValueError(f"unknown dispatch mode {mode!r}")
        self.settings, self.mode, self.app, self.fail_fast = settings, mode, app, fail_fast
        self._local = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skygate-embedded") \
            if mode == "thread" else None
        # The embedded thread's own event loop and storage, built from these settings on
        # first use (not the environment's: the app may be given other settings).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._storage = None

    @classmethod
    def for_server(cls, settings: Settings) -> Dispatcher:
        """The HTTP API: Celery (failing fast: a request must not hang on a broker that is
        down) when a broker is configured, else one background thread."""
        if settings.broker_url:
            return cls(settings, "celery", fail_fast=True)
        return cls(settings, "thread")

    @classmethod
    def for_command(cls, settings: Settings) -> Dispatcher:
        """A one-shot command (``retry``, ``rescore``): Celery when a broker is configured,
        else each run awaited here."""
        return cls(settings, "celery" if settings.broker_url else "inline")

    @classmethod
    def in_process(cls, settings: Settings) -> Dispatcher:
        """Always here, awaited (``skygate scan`` runs here even with a broker configured)."""
        return cls(settings, "inline")

    @classmethod
    def with_app(cls, settings: Settings, app) -> Dispatcher:
        """Celery through ``app`` (a worker's own app, the recovery sweep's)."""
        return cls(settings, "celery", app=app)

    @property
    def embedded(self) -> bool:
        return self.mode != "celery"

    async def start_detection(self, storage, upload_id: int, *, recovered: bool = False,
                              was_undispatched: bool = False) -> None:
        """Start (``inline``: run) the detection of ``upload_id``.

        ``storage``: the caller's (anything with ``engine``; ``inline`` runs on all of it);
        ``recovered``: a re-dispatch by the recovery sweep (it never counts as a delivery);
        ``was_undispatched``: the upload carries a ``mark_undispatched`` mark to clear.
        Raises :class:`QueueUnavailable` after marking the upload when the message cannot
        be published; an inline run records its own failure and never raises.
        """
        if self.mode == "inline":
            from service import detection

            if was_undispatched:
                await repo.mark_dispatched(storage.engine, upload_id)
            await detection.run_all_or_fail(storage, self.settings, upload_id)
            return
        if self.mode == "thread":
            # In this request's context: its log lines carry the request id.
            asyncio.get_running_loop().run_in_executor(
                self._local, contextvars.copy_context().run, self._run_here, upload_id)
        else:
            # The publishing thread has no Celery task of its own: the request id of the
            # task running here (if any) travels in this context instead.
            token = bind_request(current_request_id())
            try:
                await asyncio.to_thread(send_prepare, upload_id, recovered=recovered,
                                        fail_fast=self.fail_fast, app=self.app)
            except Exception as exc:
                reason = public_reason(exc)
                await repo.mark_undispatched(
                    storage.engine, upload_id,
                    f"not queued yet, the queue was unavailable ({reason})")
                log.error("upload %s not enqueued: %s", upload_id, reason,
                          extra={"upload_id": upload_id})
                raise QueueUnavailable(upload_id, reason) from exc
            finally:
                unbind_request(token)
        if was_undispatched:
            await repo.mark_dispatched(storage.engine, upload_id)

    def _run_here(self, upload_id: int) -> None:
        """The whole canvas on this dispatcher's settings, in its one thread; a crash is
        recorded on the upload, never raised."""
        from service import detection

        if self._loop is None:
            self._loop = asyncio.new_event_loop()

            async def build():
                return build_storage(self.settings, one_job_at_a_time=True)  # one canvas at a time

            self._storage = self._loop.run_until_complete(build())
        self._loop.run_until_complete(
            detection.run_all_or_fail(self._storage, self.settings, upload_id))

    def _close_here(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self._storage.close())
            self._loop.close()
            self._loop = None

    def close(self) -> None:
        if self._local is not None:
            self._local.submit(self._close_here)  # after the detections queued before it
            self._local.shutdown(wait=True, cancel_futures=False)
