"""One JSON log schema for every process: ISO 8601 UTC times, the context fields on every
line, no ANSI colour, Celery's task lines without their return values, and the API's access
line with its request id (echoed to the client and put on the Celery messages it causes)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

import pytest

from api.usage import UsageAndLimits
from schemas.settings import Settings
from service.runtime.logs import (
    FIELDS,
    _add_request_header,
    bind_request,
    bind_upload,
    configure,
    unbind_request,
)

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def json_lines():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    # An in-process uvicorn of an earlier test configures its loggers (uvicorn's default
    # log_config: its own handler, no propagation, a level): the line under test is uvicorn's
    # own INFO line as `skygate api` leaves it, reaching the root handler.
    uvicorn_loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error")]
    saved_uvicorn = [(lg.level, lg.disabled, lg.propagate, lg.handlers[:])
                     for lg in uvicorn_loggers]
    for lg in uvicorn_loggers:
        lg.setLevel(logging.NOTSET)
        lg.disabled, lg.propagate, lg.handlers[:] = False, True, []
    stream = io.StringIO()
    configure(Settings(log_format="json"), stream=stream, level="INFO")
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for lg, (level, disabled, propagate, handlers) in zip(uvicorn_loggers, saved_uvicorn,
                                                              strict=True):
            lg.setLevel(level)
            lg.disabled, lg.propagate, lg.handlers[:] = disabled, propagate, handlers


def test_every_line_has_the_schema_an_iso_utc_time_and_no_ansi(json_lines):
    bind_upload(42)
    try:
        logging.getLogger("uvicorn.error").info(
            "\x1b[32mStarted\x1b[0m server", extra={"color_message": "\x1b[32mStarted\x1b[0m"})
    finally:
        bind_upload(None)
    logging.getLogger("skygate.x").warning("plain")
    first, second = json_lines()
    for entry in (first, second):
        assert list(entry)[:len(FIELDS)] == list(FIELDS)
        assert ISO_UTC.match(entry["time"]), entry["time"]
        assert "\x1b" not in json.dumps(entry) and "color_message" not in entry
    assert first["message"] == "Started server" and first["upload_id"] == 42
    assert second["upload_id"] is None and second["level"] == "WARNING"


def test_celery_task_lines_keep_facts_not_the_return_value(json_lines):
    context = {"name": "skygate.detect.prnu", "id": "abc-1", "runtime": 0.4321,
               "return_value": {"method": "prnu", "details": {"noise": [1, 2, 3]}}}
    # As celery.app.trace logs it: the dict as the arguments and again as an extra field.
    logging.getLogger("celery.app.trace").info(
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s", context,
        extra={"data": context})
    (entry,) = json_lines()
    assert "data" not in entry and "noise" not in json.dumps(entry)
    assert entry["message"] == "Task skygate.detect.prnu[abc-1] succeeded in 0.4321s"
    assert entry["task_id"] == "abc-1" and entry["task_name"] == "skygate.detect.prnu"
    assert entry["latency_ms"] == 432.1


def _app_logging_a_line(status=201):
    async def app(scope, receive, send):
        logging.getLogger("skygate.api").info("handled")
        headers = {}
        _add_request_header(headers=headers)  # what a Celery publish here would carry
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(headers).encode()})
    return app


def _call(middleware, headers):
    scope = {"type": "http", "method": "POST", "path": "/v1/uploads", "headers": headers,
             "client": ("127.0.0.1", 5000)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


def test_the_access_line_has_request_fields_and_the_request_id_everywhere(json_lines):
    middleware = UsageAndLimits(_app_logging_a_line(), max_body_bytes=1000,
                                trust_forwarded_for=False)
    sent = _call(middleware, [(b"x-request-id", b"client-id-1")])
    start, body = sent
    assert (b"x-request-id", b"client-id-1") in start["headers"]
    assert json.loads(body["body"]) == {"request_id": "client-id-1"}  # the Celery header
    handled, access = json_lines()
    assert handled["request_id"] == "client-id-1" and handled["message"] == "handled"
    assert access["logger"] == "skygate.access" and access["request_id"] == "client-id-1"
    assert (access["method"], access["path"], access["status"]) == ("POST", "/v1/uploads", 201)
    assert isinstance(access["latency_ms"], float) and access["latency_ms"] >= 0
    assert access["client"] == "127.0.0.1"


def test_an_unsafe_client_request_id_is_replaced_by_a_new_one(json_lines):
    middleware = UsageAndLimits(_app_logging_a_line(), max_body_bytes=1000,
                                trust_forwarded_for=False)
    start, _ = _call(middleware, [(b"x-request-id", b"bad id\x1b[31m" + b"x" * 80)])
    (echoed,) = [v for k, v in start["headers"] if k == b"x-request-id"]
    assert re.fullmatch(rb"[0-9a-f]{32}", echoed)
    assert all(e["request_id"] == echoed.decode() for e in json_lines())


def test_outside_a_request_no_header_is_added():
    headers = {}
    _add_request_header(headers=headers)
    assert headers == {}
    token = bind_request("r-1")
    try:
        _add_request_header(headers=headers)
    finally:
        unbind_request(token)
    assert headers == {"request_id": "r-1"}
