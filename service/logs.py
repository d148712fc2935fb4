"""Logging for every SkyGate process: JSON lines when stderr is not a terminal (or
SKYGATE_LOG_FORMAT=json), text otherwise; every record carries the upload and Celery task it
belongs to. Callers never log image bytes, passwords or keys: only ids, names and reasons."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys

from schemas.settings import Settings

_upload_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("upload_id",
                                                                        default=None)


def bind_upload(upload_id: int | None) -> None:
    """Tag the log records of this context (a task, a request) with ``upload_id``."""
    _upload_id.set(upload_id)


class ContextFilter(logging.Filter):
    """Adds upload_id, task_id and task_name to every record that does not carry them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "upload_id", None) is None:
            record.upload_id = _upload_id.get()
        task_id = task_name = None
        with contextlib.suppress(Exception):  # logging must never fail
            from celery import current_task

            if current_task and current_task.request.id:
                task_id, task_name = current_task.request.id, current_task.name
        if getattr(record, "task_id", None) is None:
            record.task_id = task_id
        if getattr(record, "task_name", None) is None:
            record.task_name = task_name
        return True


TEXT_FORMAT = ("%(asctime)s %(levelname)s %(name)s [upload=%(upload_id)s task=%(task_id)s] "
               "%(message)s")


def use_json(settings: Settings, stream) -> bool:
    if settings.log_format == "json":
        return True
    if settings.log_format == "text":
        return False
    return not (hasattr(stream, "isatty") and stream.isatty())


def configure(settings: Settings | None = None, *, level: str | int | None = None,
              stream=None) -> None:
    settings = settings or Settings()
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    if use_json(settings, stream):
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(upload_id)s %(task_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or settings.log_level)
    # Chatty at INFO and not about SkyGate's work.
    for name in ("alembic", "httpx", "pymongo"):
        logging.getLogger(name).setLevel(logging.WARNING)
