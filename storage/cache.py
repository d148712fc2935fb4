"""A small Redis cache (``redis.asyncio``) that never fails its caller.

Every operation answers "nothing" when Redis is unreachable or slow (timeouts of a fraction
of a second): the caller goes to the database instead. The first failure is logged once as a
warning; for ``retry_after`` seconds after a failure the cache is not even tried (a blackholed
host costs no request a timeout), and the first success after an outage is logged too.
What is cached is service/results.py's business (the scheme is told there); the keys of an
upload's entry and :func:`forget_result` live here, so that deleting an upload
(storage/removal.py) forgets its entry too.
"""

from __future__ import annotations

import contextlib
import logging
import time

# Deferred imports: redis.asyncio loads only where a results cache is configured.

log = logging.getLogger("skygate.cache")


class Cache:
    """Create it inside the event loop that will use it; connects on first use."""

    def __init__(self, url: str, *, ttl: int, timeout: float = 0.5, retry_after: float = 5.0):
        import redis.asyncio as aioredis

        self.url = url
        self.ttl = ttl
        self.retry_after = retry_after
        self._redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout,
            health_check_interval=30)
        self._down_until = 0.0
        self._down = False

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_after
        if not self._down:
            self._down = True
            log.warning("cache %s failed, reading from the database until Redis answers "
                        "again: %s: %s", what, type(exc).__name__, exc)

    def _ok(self) -> None:
        if self._down:
            self._down = False
            log.info("cache answers again")

    async def get(self, key: str, guard: str) -> tuple[bytes | None, int | None]:
        """``key``'s value and the counter ``guard`` (0 when absent), in one round trip;
        ``(None, None)`` when Redis cannot answer."""
        if not self._usable():
            return None, None
        try:
            value, counter = await self._redis.mget(key, guard)
        except Exception as exc:  # noqa: BLE001 - any cache failure means "not cached"
            self._failed("read", exc)
            return None, None
        self._ok()
        return value, int(counter or 0)

    async def set_if(self, key: str, value: bytes, *, guard: str, expected: int) -> bool:
        """Store ``value`` unless the counter ``guard`` moved from ``expected`` meanwhile
        (checked after the write, which is undone then: an invalidation that ran between
        the caller's database read and this write always wins)."""
        if not self._usable():
            return False
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(key, value, ex=self.ttl)
                pipe.get(guard)
                _, now = await pipe.execute()
            if int(now or 0) != expected:
                await self._redis.delete(key)
                return False
        except Exception as exc:  # noqa: BLE001
            self._failed("write", exc)
            return False
        self._ok()
        return True

    async def bump_and_delete(self, guard: str, *keys: str) -> bool:
        """Advance the counter ``guard`` (the entry's generation), then delete ``keys``."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(guard)
                pipe.expire(guard, max(self.ttl * 2, 86_400))
                pipe.delete(*keys)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed("invalidation", exc)
            return False
        self._ok()
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection: nothing to do
            await self._redis.aclose()


def result_key(upload_id: int) -> str:
    """The upload's cached result: its body and fingerprint."""
    return f"skygate:result:{upload_id}"


def result_generation_key(upload_id: int) -> str:
    """How many times the upload's entry was invalidated (the readers' guard)."""
    return f"skygate:result-gen:{upload_id}"


async def forget_result(cache: Cache | None, upload_id: int) -> None:
    """Forget ``upload_id``'s cached result (no-op without a cache; never raises): the
    aggregate after a new result, ``removal.delete_upload`` after a deletion."""
    if cache is not None:
        await cache.bump_and_delete(result_generation_key(upload_id), result_key(upload_id))


def cache_for(settings) -> Cache | None:
    """The results cache the settings name (``Settings.result_cache_url``), or None."""
    url = settings.result_cache_url
    return Cache(url, ttl=settings.cache_ttl) if url else None
