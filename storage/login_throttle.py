"""Failed logins, throttled with growing delays per (user, client) and per client — never a
lock of the user alone (OWASP's authentication guidance: anyone could lock anyone out).

Each subject (``pair:alice|203.0.113.9``, ``ip:203.0.113.9``) has some failures free in a
window; past them, each further attempt must wait twice as long after the previous failure
as the one before (1 s, 2 s, 4 s … up to ``max_delay``). An attempt that comes too early is
refused (429, Retry-After) without being counted. The owner of an account, from a client of
their own, is never slowed down by what others send from theirs. The counts live in the
database, so every API process sees the same."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clock import aware, utcnow
from storage.db import dialect_insert
from storage.models import login_failures as table

FIRST_DELAY = 1.0  # seconds after the first failure past the free ones


def delay_after(failures: int, free: int, *, max_delay: float) -> float:
    """Seconds an attempt must wait after the last failure, with ``failures`` counted."""
    if failures < free:
        return 0.0
    return min(max_delay, FIRST_DELAY * 2.0 ** min(failures - free, 40))


def subjects_for(username: str, client: str, *, per_pair: int, per_client: int
                 ) -> dict[str, int]:
    """The subjects one attempt counts against, each with its free failures."""
    return {f"pair:{username[:140]}|{client[:45]}": per_pair, f"ip:{client[:45]}": per_client}


async def reserve(engine: AsyncEngine, subjects: dict[str, int], *, window_seconds: int,
                  max_delay: float, now: datetime | None = None) -> int | None:
    """Count one login attempt against every subject, before the password is checked; or,
    when a subject's delay has not passed, count nothing and return the seconds to wait
    (for Retry-After). A successful login gives its attempt back (:func:`forgive`)."""
    now = now or utcnow()
    cut = now - timedelta(seconds=window_seconds)
    async with engine.begin() as conn:
        rows = {}
        for subject in sorted(subjects):  # one order: two attempts never deadlock
            await conn.execute(dialect_insert(engine, table).values(
                subject=subject, failures=0, window_start=now).on_conflict_do_nothing())
            query = sa.select(table.c.failures, table.c.window_start, table.c.last_failure_at
                              ).where(table.c.subject == subject)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            rows[subject] = (await conn.execute(query)).one()
        wait = 0.0
        for subject, free in subjects.items():
            failures, start, last = rows[subject]
            if aware(start) <= cut:
                continue  # the window is over: it starts again below
            delay = delay_after(failures, free, max_delay=max_delay)
            if delay and last is not None:
                wait = max(wait, (aware(last) + timedelta(seconds=delay) - now).total_seconds())
        if wait > 0:
            return max(1, math.ceil(wait))
        for subject in subjects:
            expired = table.c.window_start <= cut
            await conn.execute(table.update().where(table.c.subject == subject).values(
                failures=sa.case((expired, 1), else_=table.c.failures + 1),
                window_start=sa.case((expired, now), else_=table.c.window_start),
                last_failure_at=now))
    return None


async def forgive(engine: AsyncEngine, subjects: list[str]) -> None:
    """The password was right: the attempt :func:`reserve` counted is given back."""
    async with engine.begin() as conn:
        await conn.execute(table.update()
                           .where(table.c.subject.in_(subjects), table.c.failures > 0)
                           .values(failures=table.c.failures - 1))
