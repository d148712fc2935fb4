"""Webhook delivery: one attempt of one delivery (:func:`attempt`), its retry schedule, and
who sends what when.

Events are written with the verdict (storage/webhooks.py). After that transaction commits,
:func:`announce` enqueues a ``skygate.webhook.deliver`` task per new delivery (a cluster);
the recovery sweep of every worker enqueues whatever is due and not held (a lost message, a
killed worker, a retry hours away), and the embedded API runs :class:`EmbeddedPump`, which
delivers in its own event loop (no broker). Delivery is at least once: a receiver dedupes on
``webhook-id``, the event id, which stays the same on every retry and redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from schemas.clock import aware, iso_z, utcnow
from schemas.settings import Settings
from service import webhook_signing, webhook_targets
from storage import idempotency
from storage import webhooks as store

# Deferred imports: certifi and the Celery client load only where webhooks are sent.

log = logging.getLogger("skygate.webhooks")

DELIVER_TASK = "skygate.webhook.deliver"
RESPONSE_BYTES = 4096
"""At most this much of a receiver's answer is read (and kept in the delivery log)."""


@dataclass(frozen=True)
class Outcome:
    status: str                  # delivered | pending | failed | skipped (not ours to send)
    retry_in: float | None = None
    status_code: int | None = None
    error: str | None = None


def retry_delay(attempts: int, *, base: float, cap: float, rng=random) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: base·3^(n-1), at most
    ``cap``, times a jitter in [0.75, 1.25] so that a receiver back from an outage is not hit
    by every delivery at the same second."""
    ceiling = min(cap, base * 3 ** max(0, attempts - 1))
    return ceiling * rng.uniform(0.75, 1.25)


def next_attempt(attempts: int, *, first: datetime, now: datetime, settings: Settings,
                 rng=random) -> datetime | None:
    """When to try again after ``attempts`` failed attempts, or None once the retry window
    (``webhook_retry_window`` after the event) is over; the last try lands on its end."""
    end = first + timedelta(seconds=settings.webhook_retry_window)
    if now >= end:
        return None
    delay = retry_delay(attempts, base=settings.webhook_retry_base,
                        cap=settings.webhook_retry_cap, rng=rng)
    return min(end, now + timedelta(seconds=delay))


def links(upload_id: int, base: str | None) -> dict:
    """The result and status URLs of an upload under the API's base URL."""
    root = (base or "").rstrip("/")
    return {"status_url": f"{root}/v1/uploads/{upload_id}",
            "result_url": f"{root}/v1/uploads/{upload_id}/result"}


def signing_secrets(row: dict, now: datetime) -> list[str]:
    """The current secret, and the previous one while its overlap lasts."""
    out = [row["secret"]]
    until = aware(row.get("previous_secret_until"))
    if row.get("previous_secret") and until is not None and until > now:
        out.append(row["previous_secret"])
    return out


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Certificates checked against the operator's CA file, else the public CAs."""
    if settings.webhook_ca_file:
        return ssl.create_default_context(cafile=str(settings.webhook_ca_file))
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


async def _send(target: webhook_targets.Target, body: bytes, head: dict,
                seconds: float, tls: ssl.SSLContext) -> tuple[int, bytes]:
    """POST to the pinned address; never follows a redirect; reads at most RESPONSE_BYTES.
    TLS checks the certificate against the URL's host name (``sni_hostname``), not the
    address connected to."""
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    limits = httpx.Timeout(seconds, connect=min(seconds, 5.0))
    async with httpx.AsyncClient(timeout=limits, follow_redirects=False, trust_env=False,
                                 verify=tls) as c:
        request = c.build_request("POST", target.pinned_url, content=body,
                                  headers={**head, "host": target.host_header,
                                           "user-agent": "SkyGate-Webhooks/1"},
                                  extensions=extensions)
        response = await c.send(request, stream=True)
        try:
            seen = b""
            async for chunk in response.aiter_raw():
                seen += chunk
                if len(seen) >= RESPONSE_BYTES:
                    break
            return response.status_code, seen[:RESPONSE_BYTES]
        finally:
            await response.aclose()


async def attempt(storage, settings: Settings, delivery_id: int) -> Outcome:
    """Claim one delivery, send it once, record the attempt and when to retry."""
    lease = timedelta(seconds=settings.webhook_timeout + 30)
    row = await store.claim(storage.engine, delivery_id, lease=lease)
    if row is None:
        return Outcome("skipped")
    now = utcnow()
    data = {**row["payload"], **links(row["payload"]["upload_id"],
                                      settings.public_url or row["api_base"])}
    body = webhook_signing.body(row["event_id"], row["event_type"],
                                iso_z(row["event_created_at"]), data)
    head = webhook_signing.headers(signing_secrets(row, now), row["event_id"],
                                   int(time.time()), body)
    code, error, retry = None, None, True
    try:
        if not row["is_active"]:
            raise webhook_targets.UnsafeTarget("the endpoint is disabled")
        target = await asyncio.to_thread(
            webhook_targets.resolve, row["url"], allow_http=settings.webhook_allow_http,
            allow_private=settings.webhook_allow_private)
        code, answer = await asyncio.wait_for(
            _send(target, body, head, settings.webhook_timeout, tls_context(settings)),
            settings.webhook_timeout + 1)
        if not httpx.codes.is_success(code):
            what = ("a redirect (not followed)" if httpx.codes.is_redirect(code)
                    else f"HTTP {code}")
            error = f"{what}: {answer.decode('utf-8', 'replace')[:500]}"
    except webhook_targets.UnsafeTarget as exc:
        error, retry = f"refused: {exc}", False  # the policy will not change on its own
    except (TimeoutError, httpx.TimeoutException):
        error = f"no answer within {settings.webhook_timeout:g}s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    if error is None:
        await store.record_attempt(storage.engine, delivery_id, delivered=True,
                                   status_code=code, error=None, next_attempt_at=None)
        log.info("webhook %s delivered to endpoint %s (HTTP %s)", row["event_id"],
                 row["webhook_id"], code)
        return Outcome("delivered", status_code=code)
    later = (next_attempt(row["attempts"] + 1, first=aware(row["event_created_at"]), now=now,
                          settings=settings) if retry else None)
    status = await store.record_attempt(storage.engine, delivery_id, delivered=False,
                                        status_code=code, error=error, next_attempt_at=later)
    log.warning("webhook %s to endpoint %s failed (attempt %d): %s%s", row["event_id"],
                row["webhook_id"], row["attempts"] + 1, error,
                f"; next at {iso_z(later)}" if later else "; giving up")
    return Outcome(status, retry_in=(later - utcnow()).total_seconds() if later else None,
                   status_code=code, error=error)


async def enqueue(ids: list[int], app=None) -> int:
    """Publish one deliver task per delivery id; returns how many were published."""
    if not ids:
        return 0
    if app is None:
        from service.runtime.celery_client import celery_client

        app = celery_client()
    sent = 0
    for delivery_id in ids:
        await asyncio.to_thread(app.send_task, DELIVER_TASK, args=[delivery_id],
                                ignore_result=True)
        sent += 1
    return sent


async def send_soon(settings: Settings, ids) -> None:
    """Enqueue these deliveries now in a cluster (embedded: EmbeddedPump delivers them);
    never raises: what could not be published is due, and the recovery sweep sends it."""
    if not settings.broker_url:
        return
    try:
        if asyncio.iscoroutine(ids):
            ids = await ids
        await enqueue(list(ids))
    except Exception as exc:  # noqa: BLE001 - the sweep enqueues it later
        log.warning("webhook deliveries not enqueued now (%s: %s); the sweep will",
                    type(exc).__name__, str(exc)[:200])


async def announce(storage, settings: Settings, upload_id: int) -> None:
    """After an upload's verdict or failure committed: its due deliveries, sent now."""
    if settings.broker_url:
        await send_soon(settings, store.due(storage.engine, upload_id=upload_id))


async def enqueue_due(storage, app) -> int:
    """For the recovery sweep: every due delivery nobody holds, enqueued."""
    return await enqueue(await store.due(storage.engine), app)


async def housekeeping(storage, settings: Settings) -> None:
    """Expired idempotency keys and old webhook events go (what the recovery sweep does in a
    cluster; the embedded API has no sweep, so its pump does it)."""
    await idempotency.purge(storage.engine, ttl=timedelta(seconds=settings.idempotency_ttl))
    await store.purge_log(storage.engine,
                          before=utcnow() - timedelta(days=settings.webhook_log_days))


class EmbeddedPump:
    """The embedded API's deliverer: every ``interval`` seconds, attempts the due deliveries
    in this event loop, a few at a time; hourly, :func:`housekeeping`."""

    HOUSEKEEPING_SECONDS = 3600.0

    def __init__(self, storage, settings: Settings, *, interval: float = 1.0,
                 concurrency: int = 4):
        self.storage, self.settings, self.interval = storage, settings, interval
        self._slots = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def once(self) -> None:
        async def one(delivery_id: int):
            async with self._slots:
                await attempt(self.storage, self.settings, delivery_id)

        await asyncio.gather(*(one(i) for i in await store.due(self.storage.engine)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tidied = loop.time()
        while True:
            try:
                await self.once()
                if loop.time() - tidied >= self.HOUSEKEEPING_SECONDS:
                    tidied = loop.time()
                    await housekeeping(self.storage, self.settings)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("webhook pump: %s: %s", type(exc).__name__, str(exc)[:300])
            await asyncio.sleep(self.interval)
