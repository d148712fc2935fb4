"""Logging for every SkyGate process (CLI, API, worker): JSON lines when stderr is not a
terminal (or SKYGATE_LOG_FORMAT=json), text otherwise. Callers never log image bytes,
passwords or keys: only ids, names and reasons.

One JSON schema everywhere: ``time`` (ISO 8601, UTC, milliseconds, ``Z``), ``level``,
``logger``, ``message`` (no ANSI colour codes), ``upload_id``, ``task_id``, ``task_name`` and
``request_id`` on every line (null when not known); an HTTP access line (``skygate.access``)
adds ``method``, ``path``, ``status``, ``latency_ms``, ``client``, ``user_id`` and ``key_id``;
a finished task (``celery.app.trace``) adds ``latency_ms``. The request id an API request was
given travels in each Celery message it causes (header ``request_id``), so the task lines of
an upload sent over HTTP carry the id of that request."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime

from schemas.settings import Settings

# Deferred imports: Celery and the JSON formatter load only in the processes that use them.

_upload_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("upload_id",
                                                                        default=None)
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                         default=None)
# What every JSON line carries, in this order (null when unknown): see _json_formatter.
FIELDS = ("time", "level", "logger", "message", "upload_id", "task_id", "task_name",
          "request_id")
REQUEST_HEADER = "request_id"  # the Celery message header that carries it
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def bind_upload(upload_id: int | None) -> None:
    """Tag the log records of this context (a task, a request) with ``upload_id``."""
    _upload_id.set(upload_id)


def bind_request(request_id: str | None) -> contextvars.Token:
    """Tag the log records (and the Celery messages sent) of this context with a request id."""
    return _request_id.set(request_id)


def unbind_request(token: contextvars.Token) -> None:
    _request_id.reset(token)


def _current_task():
    with contextlib.suppress(Exception):  # logging must never fail
        from celery import current_task

        if current_task and current_task.request.id:
            return current_task
    return None


def current_request_id() -> str | None:
    """The request id of this context: bound here (an API request), or the one the running
    Celery task's message carried."""
    bound = _request_id.get()
    if bound is not None:
        return bound
    task = _current_task()
    return getattr(task.request, REQUEST_HEADER, None) if task is not None else None


class ContextFilter(logging.Filter):
    """Adds upload_id, task_id, task_name and request_id to every record that lacks them,
    and keeps Celery's task lines to their facts (not the task's whole return value)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("celery.") and isinstance(record.args, dict):
            _trace_fields(record)
        if getattr(record, "upload_id", None) is None:
            record.upload_id = _upload_id.get()
        task = _current_task()
        if getattr(record, "task_id", None) is None:
            record.task_id = task.request.id if task is not None else None
        if getattr(record, "task_name", None) is None:
            record.task_name = task.name if task is not None else None
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


def _trace_fields(record: logging.LogRecord) -> None:
    """``Task skygate.detect.prnu[id] succeeded in 0.4s: {…result…}`` → the task's id, name
    and latency as fields, the message without the result (a nested dict of the method's
    evidence, which belongs in the database, not the log line)."""
    data = record.args
    record.task_id = getattr(record, "task_id", None) or data.get("id")
    record.task_name = getattr(record, "task_name", None) or data.get("name")
    if isinstance(data.get("runtime"), int | float):
        record.latency_ms = round(data["runtime"] * 1000, 1)
    if isinstance(record.msg, str) and record.msg.endswith(": %(return_value)s"):
        record.msg = record.msg.removesuffix(": %(return_value)s")
    # Celery also passes the same dict (arguments, return value) as an extra field.
    if isinstance(getattr(record, "data", None), dict):
        del record.data


def _json_formatter():
    from pythonjsonlogger.json import JsonFormatter

    class SkyGateJson(JsonFormatter):
        def formatTime(self, record, datefmt=None):
            when = datetime.fromtimestamp(record.created, UTC)
            return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

        def process_log_record(self, log_record):
            log_record.pop("color_message", None)  # uvicorn's copy of message, with ANSI
            if isinstance(log_record.get("message"), str):
                log_record["message"] = _ANSI.sub("", log_record["message"])
            return log_record

    return SkyGateJson(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(upload_id)s %(task_id)s "
        "%(task_name)s %(request_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})


TEXT_FORMAT = ("%(asctime)s %(levelname)s %(name)s [upload=%(upload_id)s task=%(task_id)s "
               "request=%(request_id)s] %(message)s")


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
    handler.setFormatter(_json_formatter() if use_json(settings, stream)
                         else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or settings.log_level)
    # Python warnings (a library's DeprecationWarning, Celery's "running as root") become log
    # records of `py.warnings`, in the same format, instead of raw lines on stderr.
    logging.captureWarnings(True)
    # Chatty at INFO and not about SkyGate's work.
    for name in ("alembic", "httpx", "pymongo"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _propagate_request_ids()


def _propagate_request_ids() -> None:
    """Every Celery message this process publishes carries the current request id."""
    with contextlib.suppress(ImportError):
        from celery.signals import before_task_publish

        before_task_publish.connect(_add_request_header, weak=False,
                                    dispatch_uid="skygate-request-id")


def _add_request_header(headers=None, **_):
    request_id = current_request_id()
    if headers is not None and request_id and REQUEST_HEADER not in headers:
        headers[REQUEST_HEADER] = request_id


def json_notice(msg: str, f=None) -> None:
    """A notice Celery writes from a signal handler, as a JSON line. No logging call (its
    locks are not safe in a signal handler): one ``os.write``, as Celery's own ``safe_say``."""
    when = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    line = {"time": when, "level": "WARNING", "logger": "celery.apps.worker",
            "message": str(msg).strip()} | dict.fromkeys(FIELDS[4:])
    with contextlib.suppress(OSError, ValueError):
        os.write((f or sys.__stderr__).fileno(), (json.dumps(line) + "\n").encode())
