"""Start the detection of a stored upload, one way for every front door: a Celery message to
``skygate.prepare`` when a broker is configured, else in this process (the embedded default).
"""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor

from schemas.settings import Settings

PREPARE_TASK = "skygate.prepare"


def send_prepare(upload_id: int, *, recovered: bool = False, fail_fast: bool = False,
                 app=None) -> None:
    """Publish ``skygate.prepare`` for one upload (nobody waits on its result).

    ``fail_fast``: give up after two quick publish retries (an HTTP request must not hang on
    a broker that is down); ``app``: the Celery app to publish with (default: the client).
    """
    from service.celery_client import celery_client

    options = {"ignore_result": True}
    if recovered:
        options["kwargs"] = {"recovered": True}
    if fail_fast:
        options["retry_policy"] = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}
    (app or celery_client()).send_task(PREPARE_TASK, args=[upload_id], **options)


def run_here(upload_id: int) -> None:
    """The whole canvas in this process; a crash is recorded on the upload, never raised."""
    from service import detection, runtime

    runtime.run(detection.run_all_or_fail, upload_id)


class Dispatcher:
    """Starts detections for a long-running front door (the HTTP API): Celery when a broker
    is configured, else one in-process thread so requests never wait on detection."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._local = None if settings.broker_url else ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="skygate-embedded")
        # The embedded thread's own event loop and storage, built from these settings on
        # first use (not the environment's: the app may be given other settings).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._storage = None

    @property
    def embedded(self) -> bool:
        return self._local is not None

    async def dispatch(self, upload_id: int) -> None:
        if self._local is None:
            await asyncio.to_thread(send_prepare, upload_id, fail_fast=True)
        else:
            # In this request's context: its log lines carry the request id.
            asyncio.get_running_loop().run_in_executor(
                self._local, contextvars.copy_context().run, self._run_here, upload_id)

    def _run_here(self, upload_id: int) -> None:
        """``run_here`` on this dispatcher's settings, in its one thread."""
        from service import detection
        from storage.context import build_storage

        if self._loop is None:
            self._loop = asyncio.new_event_loop()

            async def build():
                return build_storage(self.settings)

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
