"""Thin Celery tasks with stable public names. Each: load by id, call a step, hand on ids."""

from __future__ import annotations

import logging

from celery import chord
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_postrun, task_prerun, worker_process_shutdown
from pydantic import ValidationError
from pymongo.errors import AutoReconnect
from sqlalchemy.exc import OperationalError

from schemas.messages import IngestRequest
from schemas.results import METHOD_NAMES
from skygate.logs import bind_upload
from workers import app, runtime, steps

log = logging.getLogger("skygate.tasks")

# Retried with backoff: a database or Mongo connection that drops. Nothing else is retried.
TRANSIENT = (OperationalError, AutoReconnect, ConnectionError)
RELIABLE = dict(acks_late=True, reject_on_worker_lost=True, autoretry_for=TRANSIENT,
                retry_backoff=True, retry_backoff_max=60, max_retries=5)


@worker_process_shutdown.connect
def _close_storage(**_):
    runtime.shutdown()


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
        outcome = runtime.run(steps.ingest_request, request)
    except (FileNotFoundError, KeyError) as exc:
        log.error("ingest source not found: %s", exc)
        return {"status": "rejected", "error": f"source not found: {exc}"}
    bind_upload(outcome.upload_id)
    log.info("ingested %s as upload %s: %s", request.original_file_name, outcome.upload_id,
             outcome.status)
    if outcome.needs_processing:
        # The row is committed (ingest_request returned): only now enqueue.
        prepare.delay(outcome.upload_id)
    return {"upload_id": outcome.upload_id, "sha256": outcome.sha256, "status": outcome.status,
            "error": outcome.error}


@app.task(name="skygate.prepare", **RELIABLE)
def prepare(upload_id: int) -> dict:
    manifest_key, methods = runtime.run(steps.prepare, upload_id)
    if manifest_key is None:
        return {"upload_id": upload_id, "status": "failed"}
    header = [DETECT_TASKS[m].s(upload_id, manifest_key) for m in methods if m in DETECT_TASKS]
    body = aggregate.s(upload_id, manifest_key).on_error(upload_failed.si(upload_id))
    chord(header)(body)
    return {"upload_id": upload_id, "status": "processing", "methods": methods}


def _make_detect_task(method: str):
    def detect(upload_id: int, manifest_key: str) -> dict:
        try:
            result = runtime.run(steps.detect, upload_id, method, manifest_key)
        except SoftTimeLimitExceeded:
            log.error("method %s hit its soft time limit on upload %s", method, upload_id)
            result = steps.error_result(method, TimeoutError(
                f"time limit of {app.conf.task_soft_time_limit}s exceeded"))
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001 - status=error keeps the chord alive
            # steps.detect has logged which method, which file and why.
            result = steps.error_result(method, exc)
        return result.model_dump(mode="json")

    detect.__name__ = f"detect_{method}"
    detect.__qualname__ = detect.__name__
    return app.task(name=f"skygate.detect.{method}", **RELIABLE)(detect)


DETECT_TASKS = {m: _make_detect_task(m) for m in METHOD_NAMES}


@app.task(name="skygate.aggregate", **RELIABLE)
def aggregate(results: list, upload_id: int, manifest_key: str) -> dict:
    try:
        return runtime.run(steps.aggregate, upload_id, manifest_key, results)
    except TRANSIENT:
        raise
    except Exception as exc:
        # Record what failed before the chord's error path runs: it only knows "something".
        log.exception("aggregate failed on upload %s", upload_id)
        runtime.run(_mark_failed, upload_id,
                    f"aggregate failed: {type(exc).__name__}: {exc}"[:2000])
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
    runtime.run(_mark_failed, upload_id, "detection did not complete (a method task was lost)",
                only_unfinished=True)
