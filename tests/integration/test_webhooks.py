"""Webhooks end to end in one process (the API's embedded deliverer, EmbeddedPump) against
a real HTTP receiver on loopback, on the embedded default (SQLite) and on PostgreSQL with
Mongo documents: registration and the outbound policy, signed ``upload.done`` and
``upload.failed`` events, retries, a receiver that never answers, redirects, the delivery
log, redelivery and secret rotation. The cluster (Celery worker) path:
test_webhooks_cluster.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from testkit.images import SD_PARAMETERS, encode, smooth_scene
from tests.conftest import module_settings, run
from tests.inprocess import api, new_user
from tests.webhook_receiver import receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]
standardwebhooks = pytest.importorskip("standardwebhooks")


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def base_settings(request, tmp_path_factory):
    yield from module_settings(request, tmp_path_factory, "webhooks", mongo=True)


@pytest.fixture
def settings(base_settings):
    # A loopback receiver over http: both need the operator's permission.
    return base_settings.model_copy(update={
        "webhook_allow_http": True, "webhook_allow_private": True, "webhook_timeout": 1.0,
        "webhook_retry_base": 0.2, "webhook_retry_cap": 1.0, "webhook_retry_window": 3600})


def render(seed: int) -> bytes:
    return encode(smooth_scene(seed=seed, rows=96, cols=96), text={"parameters": SD_PARAMETERS})


async def judged(storage, settings, user_id: int, data: bytes) -> int:
    from service import detection, ingest

    outcome = await ingest.ingest_bytes(storage, settings, data=data, original_file_name="r.png",
                                        user_id=user_id)
    await detection.run_all(storage, settings, outcome.upload_id)
    return outcome.upload_id


async def until(predicate, within: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {within}s")


async def register(client, user, url, **extra):
    r = await client.post("/v1/webhooks", headers=user["headers"], json={"url": url, **extra})
    assert r.status_code == 201, r.text
    return r.json()


async def log_of(client, user, hook) -> list[dict]:
    r = await client.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries", headers=user["headers"])
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_signed_upload_done_reaches_the_receiver_once(settings):
    async def go():
        with receiver() as rx:
            async with api(settings) as (client, storage):
                alice = await new_user(storage)
                hook = await register(client, alice, f"{rx.base}/ok",
                                      description="my service")
                assert hook["secret"].startswith("whsec_")
                listed = (await client.get("/v1/webhooks", headers=alice["headers"])).json()
                assert [h["webhook_id"] for h in listed] == [hook["webhook_id"]]
                assert "secret" not in listed[0]
                assert listed[0]["created_at"].endswith("Z")

                upload_id = await judged(storage, settings, alice["user_id"], render(1))
                (req,) = await until(lambda: rx.on("/ok"), what="upload.done delivered")
                event = standardwebhooks.Webhook(hook["secret"]).verify(req["body"],
                                                                       req["headers"])
                assert event["type"] == "upload.done" and event["id"] == \
                    req["headers"]["webhook-id"]
                data = event["data"]
                assert data["upload_id"] == upload_id and data["status"] == "done"
                assert data["verdict"] == "ai" and 0.5 < data["ai_probability"] <= 1
                assert data["confidence"] > 0.5 and data["algorithm_version"]
                assert data["result_url"].endswith(f"/v1/uploads/{upload_id}/result")
                assert event["timestamp"].endswith("Z")
                result = await client.get(f"/v1/uploads/{upload_id}/result",
                                          headers=alice["headers"])
                assert result.json()["verdict"] == data["verdict"]

                (entry,) = await until(lambda: log_of(client, alice, hook))
                assert entry["status"] == "delivered" and entry["attempts"] == 1
                assert entry["event_id"] == event["id"] and entry["last_status_code"] == 204
                # Redelivery: the same event id again, on request.
                r = await client.post(f"/v1/webhooks/{hook['webhook_id']}/deliveries/"
                                      f"{entry['delivery_id']}/redeliver",
                                      headers=alice["headers"])
                assert r.status_code == 202, r.text
                again = await until(lambda: len(rx.on("/ok")) == 2 and rx.on("/ok"))
                assert again[1]["headers"]["webhook-id"] == event["id"]
                assert again[1]["body"] == req["body"]

    run(go())


def test_a_failing_receiver_is_retried_and_a_silent_one_times_out(settings):
    async def go():
        with receiver() as rx:
            async with api(settings) as (client, storage):
                bob = await new_user(storage)
                flaky = await register(client, bob, f"{rx.base}/flaky")
                silent = await register(client, bob, f"{rx.base}/silent",
                                        events=["upload.done"])
                redirect = await register(client, bob, f"{rx.base}/redirect")
                upload_id = await judged(storage, settings, bob["user_id"], render(2))

                attempts = await until(lambda: len(rx.on("/flaky")) >= 3 and rx.on("/flaky"),
                                       what="third attempt")
                assert len({a["headers"]["webhook-id"] for a in attempts}) == 1
                for a in attempts:  # every attempt is signed afresh
                    standardwebhooks.Webhook(flaky["secret"]).verify(a["body"], a["headers"])
                async def delivered(hook):
                    return [e for e in await log_of(client, bob, hook)
                            if e["status"] == "delivered"]

                (entry,) = await until(lambda: delivered(flaky), what="flaky delivered")
                assert entry["attempts"] == 3 and entry["upload_id"] == upload_id

                async def tried(hook, n):
                    items = await log_of(client, bob, hook)
                    return items if items and items[0]["attempts"] >= n else None

                (quiet,) = await until(lambda: tried(silent, 1), what="silent timed out")
                assert quiet["status"] == "pending" and "no answer within 1s" in \
                    quiet["last_error"]
                assert quiet["last_status_code"] is None and quiet["next_attempt_at"]
                (moved,) = await until(lambda: tried(redirect, 1), what="redirect tried")
                assert moved["last_status_code"] == 307 and "not followed" in \
                    moved["last_error"]

    run(go())


def test_a_failure_is_an_event_and_rotation_signs_with_both_secrets(settings):
    from storage import repository as repo

    async def go():
        with receiver() as rx:
            async with api(settings) as (client, storage):
                carol = await new_user(storage)
                hook = await register(client, carol, f"{rx.base}/ok",
                                      events=["upload.failed"])
                rotated = await client.post(
                    f"/v1/webhooks/{hook['webhook_id']}/rotate-secret",
                    headers=carol["headers"], params={"overlap_seconds": 600})
                assert rotated.status_code == 200, rotated.text
                new_secret = rotated.json()["secret"]
                assert new_secret != hook["secret"]
                assert rotated.json()["previous_secret_until"].endswith("Z")

                # A done upload is not an event this endpoint wants; a failure is, once.
                await judged(storage, settings, carol["user_id"], render(3))
                from service import ingest

                failing = (await ingest.ingest_bytes(
                    storage, settings, data=render(4), original_file_name="f.png",
                    user_id=carol["user_id"])).upload_id
                assert await repo.mark_failed(storage.engine, failing, "broken on purpose")
                assert not await repo.mark_failed(storage.engine, failing, "again",
                                                  only_unfinished=True)
                (req,) = await until(lambda: rx.on("/ok"), what="upload.failed delivered")
                assert len(req["headers"]["webhook-signature"].split()) == 2
                for secret in (hook["secret"], new_secret):
                    event = standardwebhooks.Webhook(secret).verify(req["body"],
                                                                   req["headers"])
                assert event["type"] == "upload.failed"
                assert event["data"]["upload_id"] == failing
                assert event["data"]["error"] == "broken on purpose"
                await asyncio.sleep(1.5)  # two pump rounds: nothing more arrives
                assert len(rx.on("/ok")) == 1

                # Deleting the endpoint removes it and its log.
                r = await client.delete(f"/v1/webhooks/{hook['webhook_id']}",
                                        headers=carol["headers"])
                assert r.status_code == 204
                r = await client.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries",
                                     headers=carol["headers"])
                assert r.status_code == 404 and r.json()["code"] == "webhook_not_found"

    run(go())


def test_the_outbound_policy_refuses_private_and_plain_http_destinations(base_settings):
    strict = base_settings.model_copy(update={"webhook_allow_http": True})

    async def go():
        async with api(strict) as (client, storage):
            dave = await new_user(storage)
            for url, why in (("http://127.0.0.1:9/hook", "loopback"),
                             ("http://10.0.0.8/hook", "private"),
                             ("http://169.254.169.254/latest/meta-data", "link-local"),
                             ("http://[::1]:8080/", "loopback")):
                r = await client.post("/v1/webhooks", headers=dave["headers"], json={"url": url})
                assert r.status_code == 422, r.text
                assert r.json()["code"] == "webhook_url_refused" and why in r.json()["message"]
        async with api(base_settings) as (client, storage):
            erin = await new_user(storage)
            r = await client.post("/v1/webhooks", headers=erin["headers"],
                                  json={"url": "http://hooks.example.org/x"})
            assert r.status_code == 422 and "https" in r.json()["message"]
            r = await client.post("/v1/webhooks", headers=erin["headers"],
                                  json={"url": "https://127.0.0.1/x", "events": ["upload.nope"]})
            assert r.status_code == 422
            assert (await client.get("/v1/webhooks", headers=erin["headers"])).json() == []

    run(go())


def test_an_endpoint_that_became_private_is_refused_at_delivery(settings):
    """Registered while allowed, then the operator turns private destinations off: the
    attempt is refused before any request and not retried."""
    async def go():
        with receiver() as rx:
            async with api(settings) as (client, storage):
                frank = await new_user(storage)
                hook = await register(client, frank, f"{rx.base}/ok")
            strict = settings.model_copy(update={"webhook_allow_private": False})
            async with api(strict) as (client, storage):
                await judged(storage, strict, frank["user_id"], render(5))

                async def failed():
                    items = await log_of(client, frank, hook)
                    return items if items and items[0]["status"] == "failed" else None

                (entry,) = await until(failed, what="refused delivery")
                assert "loopback" in entry["last_error"] and entry["attempts"] == 1
                assert rx.on("/ok") == []

    run(go())


def test_old_events_leave_the_log_unless_a_delivery_is_pending(settings):
    from datetime import timedelta

    from schemas.clock import utcnow
    from storage import repository as repo
    from storage import webhooks as store

    async def go():
        with receiver() as rx:
            async with api(settings) as (client, storage):
                gus = await new_user(storage)
                ok = await register(client, gus, f"{rx.base}/ok")
                await judged(storage, settings, gus["user_id"], render(6))
                await until(lambda: rx.on("/ok"), what="delivered")
                await until(lambda: log_of(client, gus, ok))
                hook = await register(client, gus, f"{rx.base}/silent")  # stays pending
                from service import ingest

                failing = (await ingest.ingest_bytes(
                    storage, settings, data=render(7), original_file_name="x.png",
                    user_id=gus["user_id"])).upload_id
                await repo.mark_failed(storage.engine, failing, "on purpose")
                await until(lambda: log_of(client, gus, hook), what="pending delivery")
                later = utcnow() + timedelta(seconds=5)
                assert await store.purge_log(storage.engine, before=later) >= 1  # + earlier tests
                # The done event (delivered) went; the failed one waits for /silent.
                assert [e["event_type"] for e in await log_of(client, gus, ok)] == [
                    "upload.failed"]
                assert len(await log_of(client, gus, hook)) == 1
                assert await store.purge_log(storage.engine, before=utcnow()
                                             - timedelta(days=1)) == 0

    run(go())


def test_https_goes_to_the_checked_address_and_verifies_the_host_name(settings, monkeypatch,
                                                                      tmp_path):
    """A receiver with a certificate for hooks.skygate.test (a private CA the operator
    configures): the request goes to the address that was checked, TLS verifies the
    certificate against the URL's host name, and a URL whose name the certificate does not
    carry gets no request."""
    import socket
    import ssl

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.skygate.test").configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    real = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):  # both names are this machine
        if host in ("hooks.skygate.test", "other.skygate.test"):
            host = "127.0.0.1"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    tls_settings = settings.model_copy(update={"webhook_allow_http": False,
                                               "webhook_ca_file": ca_file})

    async def go():
        with receiver(tls=server_tls) as rx:
            async with api(tls_settings) as (client, storage):
                hal = await new_user(storage)
                good = await register(client, hal, f"https://hooks.skygate.test:{rx.port}/ok")
                wrong = await register(client, hal,
                                       f"https://other.skygate.test:{rx.port}/ok")
                upload_id = await judged(storage, tls_settings, hal["user_id"], render(8))
                (req,) = await until(lambda: rx.on("/ok"), what="https delivery")
                head = {k.lower(): v for k, v in req["headers"].items()}
                assert head["host"] == f"hooks.skygate.test:{rx.port}"
                event = standardwebhooks.Webhook(good["secret"]).verify(req["body"],
                                                                       req["headers"])
                assert event["data"]["upload_id"] == upload_id

                async def refused():
                    items = await log_of(client, hal, wrong)
                    return items if items and items[0]["attempts"] >= 1 else None

                (entry,) = await until(refused, what="wrong host name tried")
                assert entry["status"] == "pending" and entry["last_status_code"] is None
                assert "CERTIFICATE_VERIFY_FAILED" in entry["last_error"] or \
                    "hostname" in entry["last_error"].lower()
                assert len(rx.on("/ok")) == 1  # nothing reached the receiver for it

    run(go())
