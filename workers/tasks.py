"""Thin Celery tasks with stable public names. Each: load by id, call a step, hand on ids."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Task, chord
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from pydantic import ValidationError

from pipeline.methods.registry import REGISTRY
from schemas.messages import IngestRequest
from schemas.settings import Settings
from schemas.text import public_reason
from service import detection, recovery, webhooks
from service import ingest as ingest_step
from service.dispatch import Dispatcher
from service.runtime import process_loop
from service.runtime.logs import bind_upload
from storage import faults
from workers import app

# Deferred imports: logging's set-up and the repository load in the signal handlers that use
# them.

log = logging.getLogger("skygate.tasks")


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings()


class Reliable(Task):
    """Transient faults (storage.faults.is_transient: a database, Mongo or broker that is
    down, starting up, failing over, timing out) are retried with exponential backoff and
    jitter; permanent ones fail at once with their reason. When the fault outlasts every
    retry, or the retry cannot even be published (the broker is down too), the message is
    dropped *without* failing the upload: it stays queued/processing, untouched, and the
    recovery sweep re-sends it once its stage is overdue."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except (Retry, Ignore, Reject, SoftTimeLimitExceeded, TimeLimitExceeded):
            raise
        except Exception as exc:
            if not faults.is_transient(exc):
                raise
            retries = self.request.retries or 0
            limit = _settings().transient_retries
            reason = f"{type(exc).__name__}: {str(exc)[:300]}"
            if retries >= limit:
                log.error("%s: transient fault after %d retries, left to the recovery sweep: %s",
                          self.name, retries, reason)
                raise Ignore() from exc
            delay = faults.backoff(retries, base=1.0, cap=30.0)
            log.warning("%s: transient fault, retry %d/%d in %.1fs: %s", self.name,
                        retries + 1, limit, delay, reason)
            try:
                raise self.retry(exc=exc, countdown=delay, max_retries=limit)
            except Retry:
                raise
            except Exception as publish:  # noqa: BLE001 - the broker is down as well
                log.error("%s: cannot publish the retry (%s: %s); left to the recovery sweep",
                          self.name, type(publish).__name__, str(publish)[:200])
                raise Ignore() from exc


RELIABLE = {"base": Reliable, "acks_late": True, "reject_on_worker_lost": True}
# A canvas's tasks keep no result of their own in the backend: a method's answer reaches
# aggregate through the chord (the Redis backend collects each in the chord's own list) and
# nobody reads aggregate's. Stored, each would cost its task a read and a write to Redis and
# prepare a subscription per method; a failure is still stored, and the chord's error path
# still runs.
CANVAS = {**RELIABLE, "ignore_result": True}


@worker_init.connect
def _wait_for_services(**_):
    # A worker that starts while its database or Mongo is down waits for them (retrying with
    # backoff, up to SKYGATE_STARTUP_WAIT) instead of crashing; the broker is Celery's own
    # broker_connection_retry_on_startup. (Celery sets up logging after this signal.)
    from service.runtime.logs import configure

    configure(_settings())
    recovery.wait_for_services(_settings())


@worker_ready.connect
def _start_sweeper(sender=None, **_):
    recovery.start_sweeper(app, _settings())


@worker_shutdown.connect
def _stop_sweeper(**_):
    recovery.stop_sweeper()


@worker_process_init.connect
def _warm_up(**_):
    # A pool process loads what its methods load on their first image (the model) before it
    # takes a task: detection.warm_up waits at most WARM_UP_LOOKUP_SECONDS for the database,
    # well inside celeryconfig's worker_proc_alive_timeout, and never raises.
    consumed = set(app.amqp.queues.consume_from or app.amqp.queues)
    methods = [name for name, task in DETECT_TASKS.items()
               if app.amqp.router.route({}, task.name)["queue"].name in consumed]
    if not methods:
        return  # an ingest/aggregate-only worker loads no model
    try:
        process_loop.run(detection.warm_up, methods)
    except Exception as exc:  # noqa: BLE001 - storage could not even be built: first use loads
        detection.startup_log.warning("methods not loaded ahead (%s: %s): the first image "
                                      "loads them", type(exc).__name__, exc)


@worker_process_shutdown.connect
def _close_storage(**_):
    process_loop.shutdown()


# Where each task takes its upload id: so every log line of a task names its upload.
_UPLOAD_ARG = {"skygate.aggregate": 1}


@task_prerun.connect
def _bind_upload(task=None, args=(), kwargs=None, **_):
    upload_id = (kwargs or {}).get("upload_id")
    if upload_id is None and task is not None and task.name != "skygate.ingest":
        position = _UPLOAD_ARG.get(task.name, 0)
        upload_id = args[position] if len(args) > position else None
    bind_upload(upload_id if isinstance(upload_id, int) else None)


@task_postrun.connect
def _unbind_upload(**_):
    bind_upload(None)


@app.task(name="skygate.ingest", **RELIABLE)
def ingest(**kwargs) -> dict:
    try:
        request = IngestRequest.model_validate(kwargs)
    except ValidationError as exc:
        # A malformed message is logged and dropped, never retried and never fatal.
        log.error("rejected ingest message: %s", exc.errors(include_url=False))
        return {"status": "rejected", "error": str(exc)}
    try:
        outcome = process_loop.run(ingest_step.ingest_request, request)
    except (FileNotFoundError, KeyError) as exc:
        log.error("ingest source not found: %s", exc)
        return {"status": "rejected", "error": f"source not found: {exc}"}
    bind_upload(outcome.upload_id)
    log.info("ingested %s as upload %s: %s", request.original_file_name, outcome.upload_id,
             outcome.status)
    if outcome.needs_processing:
        # The row is committed (ingest_request returned): only now enqueue. A broker that
        # does not take it (QueueUnavailable, transient) retries this ingest: the same upload.
        process_loop.run(_start_detection, outcome.upload_id, outcome.redispatch)
    return {"upload_id": outcome.upload_id, "sha256": outcome.sha256, "status": outcome.status,
            "error": outcome.error}


async def _start_detection(storage, settings, upload_id: int, was_undispatched: bool) -> None:
    await Dispatcher.with_app(settings, app).start_detection(
        storage, upload_id, was_undispatched=was_undispatched)


@app.task(name="skygate.prepare", bind=True, **RELIABLE)
def prepare(self, upload_id: int, recovered: bool = False) -> dict:
    # A delivery counts toward SKYGATE_MAX_DELIVERIES only if a worker died on the previous
    # one: never for a retry after a transient fault or a re-dispatch by the recovery sweep.
    may_count = not recovered and not (self.request.retries or 0)
    manifest_key, methods = process_loop.run(detection.prepare, upload_id, may_count=may_count,
                                        recovered=recovered)
    if manifest_key is None:
        process_loop.run(webhooks.announce, upload_id)  # a failure committed: tell its owner
        return {"upload_id": upload_id, "status": "skipped" if recovered else "failed"}
    header = [DETECT_TASKS[m].s(upload_id, manifest_key) for m in methods if m in DETECT_TASKS]
    body = aggregate.s(upload_id, manifest_key).on_error(upload_failed.si(upload_id))
    chord(header)(body)
    return {"upload_id": upload_id, "status": "processing", "methods": methods}


def _first_attempt(task: Task) -> bool:
    """Not a retry after a transient fault: a delivery that may count a dead worker."""
    return not (task.request.retries or 0)


def _make_detect_task(method: str):
    def detect(self, upload_id: int, manifest_key: str) -> dict:
        try:
            # Counts the delivery (a poison image's method gives up past the cap) and, unless
            # a worker died on the previous one, touches the upload (the heartbeat).
            result = process_loop.run(detection.detect, upload_id, method, manifest_key,
                                 heartbeat=True, may_count=_first_attempt(self))
        except SoftTimeLimitExceeded:
            log.error("method %s hit its soft time limit on upload %s", method, upload_id)
            result = detection.error_result(method, TimeoutError(
                f"time limit of {app.conf.task_soft_time_limit}s exceeded"))
        except Exception as exc:  # status=error keeps the chord alive
            if faults.is_transient(exc):
                raise  # Reliable retries it
            # detection.detect has logged which method, which file and why.
            result = detection.error_result(method, exc)
        return result.model_dump(mode="json")

    detect.__name__ = f"detect_{method}"
    detect.__qualname__ = detect.__name__
    return app.task(name=f"skygate.detect.{method}", bind=True, **CANVAS)(detect)


DETECT_TASKS = {m: _make_detect_task(m) for m in REGISTRY}


@app.task(name="skygate.aggregate", bind=True, **CANVAS)
def aggregate(self, results: list, upload_id: int, manifest_key: str) -> dict:
    try:
        return process_loop.run(detection.aggregate_counted, upload_id, manifest_key, results,
                           may_count=_first_attempt(self))
    except Exception as exc:
        if faults.is_transient(exc):
            raise  # Reliable retries it
        # Record what failed before the chord's error path runs: it only knows "something".
        log.exception("aggregate failed on upload %s", upload_id)
        process_loop.run(_mark_failed, upload_id, f"aggregate failed: {public_reason(exc)}"[:2000])
        process_loop.run(webhooks.announce, upload_id)
        raise


async def _mark_failed(storage, settings, upload_id: int, reason: str, *,
                       only_unfinished: bool = False) -> None:
    from storage import repository

    await repository.mark_failed(storage.engine, upload_id, reason,
                                 only_unfinished=only_unfinished)


@app.task(name="skygate.upload_failed", **RELIABLE)
def upload_failed(upload_id: int) -> None:
    # The chord failed (a header task died past its hard limit, or aggregate raised): never
    # leave it "processing", and never replace a reason aggregate recorded itself.
    process_loop.run(_mark_failed, upload_id, "detection did not complete (a method task was lost)",
                only_unfinished=True)
    process_loop.run(webhooks.announce, upload_id)


# A retry due sooner than this is a countdown message; later ones are sent by the recovery
# sweep when they are due (Redis re-delivers a message held past its visibility timeout).
SHORT_RETRY_SECONDS = 300.0


@app.task(name="skygate.webhook.deliver", **RELIABLE)
def deliver_webhook(delivery_id: int) -> dict:
    outcome = process_loop.run(webhooks.attempt, delivery_id)
    if outcome.retry_in is not None and outcome.retry_in <= SHORT_RETRY_SECONDS:
        deliver_webhook.apply_async(args=[delivery_id], countdown=max(0.0, outcome.retry_in))
    return {"delivery_id": delivery_id, "status": outcome.status,
            "status_code": outcome.status_code, "retry_in": outcome.retry_in}
