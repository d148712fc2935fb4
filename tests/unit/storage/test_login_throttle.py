"""Login throttling with growing delays per (user, client) and per client (SQLite)."""

from __future__ import annotations

from datetime import timedelta

from schemas.clock import utcnow
from storage import login_throttle as throttle
from tests.conftest import run


def test_delays_grow_past_the_free_failures_and_other_clients_are_untouched(embedded):
    from storage import migrate
    from storage.db import create_engine

    engine = create_engine(embedded.sqlalchemy_url)
    pair = throttle.subjects_for("alice", "10.0.0.1", per_pair=3, per_client=100)
    other = throttle.subjects_for("alice", "10.0.0.2", per_pair=3, per_client=100)
    t0 = utcnow()

    async def attempt(subjects, seconds):
        return await throttle.reserve(engine, subjects, window_seconds=900, max_delay=60,
                                      now=t0 + timedelta(seconds=seconds))

    async def go():
        await migrate.upgrade(engine)
        try:
            seen = [await attempt(pair, 0) for _ in range(3)]  # the free ones
            seen.append(await attempt(pair, 0.5))  # 1 s after the third: refused, not counted
            seen.append(await attempt(pair, 1.0))  # counted (4th); the next waits 2 s
            seen.append(await attempt(pair, 2.0))
            seen.append(await attempt(other, 2.0))  # the owner from elsewhere: free
            seen.append(await attempt(pair, 3.0))  # 2 s after the 4th: counted; next 4 s
            seen.append(await attempt(pair, 3.5))
            seen.append(await attempt(pair, 3.0 + 900))  # a new window
            return seen
        finally:
            await engine.dispose()

    assert run(go()) == [None, None, None, 1, None, 1, None, None, 4, None]
    assert throttle.delay_after(2, 3, max_delay=60) == 0
    assert [throttle.delay_after(n, 3, max_delay=60) for n in (3, 4, 5, 9, 50)] == [
        1, 2, 4, 60, 60]
