"""On Redis a worker finishes the canvases in flight before it starts new ones: the tasks that
start a canvas (ingest, prepare) are sent with a lower priority (celeryconfig's task_routes),
and the broker hands a consumer of every queue the method and aggregate tasks first. Checked
against the real Redis with the product's own routing and kombu's consumer."""

from __future__ import annotations

import pytest

from tests.conftest import REDIS_URL, claimed_redis_db

pytestmark = [pytest.mark.integration]

QUEUES = ("ingest", "detect", "model", "aggregate")


def _app(broker: str):
    from celery import Celery

    app = Celery("skygate-test-queue-order")
    app.config_from_object("celeryconfig")
    app.conf.broker_url = broker
    return app


def test_started_canvases_are_served_before_new_ones():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - no server: nothing to check against
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    with claimed_redis_db() as db:
        app = _app(f"{REDIS_URL}/{db}")
        # In the order a busy cluster sees them: new images arrive while older ones are
        # in their methods and aggregate.
        sent = [("skygate.ingest", (), {"blob_key": "a", "original_file_name": "a.jpg"}),
                ("skygate.prepare", (1,), {}),
                ("skygate.detect.prnu", (2, "m2"), {}),
                ("skygate.ingest", (), {"blob_key": "b", "original_file_name": "b.jpg"}),
                ("skygate.detect.model", (2, "m2"), {}),
                ("skygate.aggregate", ([], 3, "m3"), {})]
        try:
            for name, args, kwargs in sent:
                app.send_task(name, args=args, kwargs=kwargs)
            received: list[str] = []
            with app.connection_for_read() as conn:
                queues = [q for q in app.conf.task_queues if q.name in QUEUES]

                def take(body, message):
                    received.append(message.headers["task"])
                    message.ack()

                with conn.Consumer(queues, callbacks=[take], accept=["json"]) as consumer:
                    consumer.qos(prefetch_count=1)
                    while len(received) < len(sent):
                        conn.drain_events(timeout=10)
        finally:
            redis.Redis.from_url(f"{REDIS_URL}/{db}").flushdb()
    # Every task of a started canvas first (their own order is the queues' turn-taking),
    # then what starts new ones, first come first served.
    assert sorted(received[:3]) == ["skygate.aggregate", "skygate.detect.model",
                                    "skygate.detect.prnu"], received
    assert received[3:] == ["skygate.ingest", "skygate.prepare", "skygate.ingest"], received
