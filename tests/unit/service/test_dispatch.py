"""service.dispatch: the one way to start a detection. A broker that does not take the
message leaves the upload queued with the reason (re-sendable), and raises QueueUnavailable
for the door to answer with; the next successful start clears the mark."""

from __future__ import annotations

import pytest
from kombu.exceptions import OperationalError

from schemas.settings import Settings
from service.dispatch import Dispatcher, QueueUnavailable
from storage import faults
from tests.conftest import run


class Broker:
    """What a Celery app's send_task sees: up, or refusing (the broker is down)."""

    def __init__(self):
        self.up, self.sent = True, []

    def send_task(self, name, args=(), kwargs=None, **options):
        if not self.up:
            raise OperationalError("[Errno 111] Connection refused to /var/run/broker.sock")
        self.sent.append((name, list(args), kwargs, options.get("ignore_result")))


def test_a_refused_publish_marks_the_upload_and_the_next_start_clears_it(tmp_path):
    from storage import migrate
    from storage import repository as repo
    from storage.db import create_engine

    settings = Settings(data_dir=tmp_path)
    broker = Broker()
    dispatcher = Dispatcher.with_app(settings, broker)

    class Handle:  # what start_detection reads of a Storage in celery mode
        engine = None

    async def go():
        engine = Handle.engine = create_engine(settings.sqlalchemy_url)
        try:
            await migrate.upgrade(engine)
            uid, _ = await repo.create_upload(
                engine, user_id=None, file_name="a.png", original_file_name="a.png",
                file_path="k", file_size=1, file_type="png", mime_type="image/png",
                sha256="0" * 64)
            broker.up = False
            with pytest.raises(QueueUnavailable) as refused:
                await dispatcher.start_detection(Handle, uid)
            marked = await repo.get_upload(engine, uid)
            broker.up = True
            await dispatcher.start_detection(Handle, uid, recovered=True,
                                             was_undispatched=True)
            cleared = await repo.get_upload(engine, uid)
            return uid, refused.value, marked, cleared
        finally:
            await engine.dispose()

    uid, refused, marked, cleared = run(go())
    assert refused.upload_id == uid and "refused" in refused.reason.lower()
    assert faults.is_transient(refused)  # a worker's ingest retries it
    assert marked["status"] == "queued" and "queue was unavailable" in marked["error"]
    assert "/var/run" not in marked["error"]  # shown to API users: no server paths
    assert cleared["status"] == "queued" and cleared["error"] is None
    assert broker.sent == [("skygate.prepare", [uid], {"recovered": True}, True)]


def test_each_door_gets_its_mode():
    embedded = Settings(broker_url=None)
    cluster = Settings(broker_url="redis://127.0.0.1:1/0")
    assert Dispatcher.for_server(cluster).mode == "celery"
    assert Dispatcher.for_server(cluster).fail_fast
    server = Dispatcher.for_server(embedded)
    try:
        assert server.mode == "thread" and server.embedded
    finally:
        server.close()
    assert Dispatcher.for_command(embedded).mode == "inline"
    assert Dispatcher.for_command(cluster).mode == "celery"
    assert Dispatcher.in_process(cluster).mode == "inline"  # scan runs here regardless
    with pytest.raises(ValueError, match="unknown dispatch mode"):
        Dispatcher(embedded, "carrier-pigeon")
