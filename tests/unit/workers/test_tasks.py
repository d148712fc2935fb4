"""Task bodies called directly (the first tier): failures become status=error results."""

from __future__ import annotations

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from workers import tasks


@pytest.mark.parametrize(("exc", "text"), [
    (SoftTimeLimitExceeded(), "time limit"),
    (RuntimeError("kaboom"), "RuntimeError: kaboom"),
])
def test_detect_task_turns_failures_into_error_results(monkeypatch, exc, text):
    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(tasks.process_loop, "run", boom)
    out = tasks.DETECT_TASKS["prnu"].run(1, "manifest-key")
    assert out["status"] == "error" and text in out["error"] and out["method"] == "prnu"


def test_malformed_ingest_message_is_rejected_not_raised():
    out = tasks.ingest.run(original_file_name="x.jpg")  # neither blob_key nor path
    assert out["status"] == "rejected" and "blob_key or path" in out["error"]
    out = tasks.ingest.run(blob_key="k", original_file_name="x", image_bytes="AAAA")
    assert out["status"] == "rejected"


def test_every_task_has_its_stable_name_and_route():
    from workers import app

    names = {n for n in app.tasks if n.startswith("skygate.")}
    assert {"skygate.ingest", "skygate.prepare", "skygate.aggregate",
            *(f"skygate.detect.{m}" for m in ("exif", "prnu", "ela", "texture", "model"))} <= names
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.task_time_limit < app.conf.broker_transport_options["visibility_timeout"]
    route = app.amqp.router.route({}, "skygate.detect.model")
    assert route["queue"].name == "model"
    assert app.amqp.router.route({}, "skygate.detect.prnu")["queue"].name == "detect"


def test_a_method_task_asks_for_the_heartbeat(monkeypatch):
    """The heartbeat the recovery sweep reads is detection.detect(heartbeat=True): a method
    task without it would let the sweep re-send live uploads."""
    from schemas.results import MethodResult

    calls = []

    def run(fn, *args, **kwargs):
        calls.append((fn.__name__, args, kwargs))
        return MethodResult(method="exif", details={})

    monkeypatch.setattr(tasks.process_loop, "run", run)
    out = tasks.DETECT_TASKS["exif"].run(7, "manifest-key")
    assert out["status"] == "ok"
    assert calls == [("detect", (7, "exif", "manifest-key"),
                      {"heartbeat": True, "may_count": True})]


def test_a_canvas_keeps_no_task_results_and_ingest_keeps_its_answer():
    # The chord carries the methods' answers to aggregate (its own list in the backend);
    # `skygate submit` reads ingest's (skygate.remote).
    from workers import tasks

    assert all(task.ignore_result for task in tasks.DETECT_TASKS.values())
    assert tasks.aggregate.ignore_result
    assert not tasks.ingest.ignore_result
