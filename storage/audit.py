"""The audit trail: who did what to what, when, from where, and how it ended.

One ``audit_log`` row per critical operation (the README's "Roles and audit trail" lists
them). Rows are only ever inserted: the database refuses UPDATE and DELETE on the table
(migration 0012's triggers), so nothing here can edit history, and neither can anyone else
short of dropping the table.

Two ways to write:

- :func:`record` inside the caller's transaction, for account changes: the change and its
  row commit or roll back together.
- :func:`record_now` in a transaction of its own, best effort: for reads, logins and runs
  whose outcome is already decided. A failure is logged and swallowed, so auditing never
  breaks the operation it records.
"""

from __future__ import annotations

import getpass
import json
import logging
import socket
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.clock import aware, utcnow
from schemas.text import clean_json, clean_text
from storage.models import AUDIT_OUTCOMES, audit_log, users

log = logging.getLogger("skygate.audit")

DETAIL_LIMIT = 2000  # characters of JSON; a bigger detail is cut down to a summary
LIST_LIMIT = 50  # items of a list kept in a detail (upload ids…)


@dataclass(frozen=True)
class Actor:
    """Who acts: ``user:<name>`` (with the API key used), ``cli:<os user>``, ``anonymous``…,
    and from where (the client IP for the API, the host name for the CLI)."""

    name: str
    user_id: int | None = None
    key_id: int | None = None
    source: str | None = None

    @classmethod
    def cli(cls) -> Actor:
        try:
            who = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry for the uid (containers)
            who = "unknown"
        return cls(name=f"cli:{who}", source=socket.gethostname())

    @classmethod
    def user(cls, username: str, *, user_id: int | None = None, key_id: int | None = None,
             source: str | None = None) -> Actor:
        return cls(name=f"user:{username}", user_id=user_id, key_id=key_id, source=source)


SYSTEM = Actor(name="system")
"""The actor of library calls that name none (tests, scripts)."""


def _small(detail: dict | None) -> dict | None:
    if detail is None:
        return None
    small = {k: ([*v[:LIST_LIMIT], "…"] if isinstance(v, list) and len(v) > LIST_LIMIT else v)
             for k, v in detail.items()}
    text = json.dumps(small, default=str)
    if len(text) > DETAIL_LIMIT:
        return {"truncated": True, "keys": sorted(small)[:20], "chars": len(text)}
    return clean_json(json.loads(text))  # plain JSON types only (datetimes as text)


def _values(actor: Actor, action: str, target: str | None, outcome: str,
            detail: dict | None) -> dict:
    if outcome not in AUDIT_OUTCOMES:
        raise ValueError(f"outcome must be one of {AUDIT_OUTCOMES}")
    return {"actor": clean_text(actor.name, limit=150), "user_id": actor.user_id,
            "key_id": actor.key_id, "action": action,
            "target": clean_text(target, limit=255) if target else None,
            "source": clean_text(actor.source, limit=255) if actor.source else None,
            "outcome": outcome, "detail": _small(detail)}


async def record(conn: AsyncConnection, actor: Actor, action: str, *,
                 target: str | None = None, outcome: str = "ok",
                 detail: dict | None = None) -> None:
    """Insert one row in the caller's transaction (it commits with the change it records)."""
    await conn.execute(audit_log.insert().values(
        occurred_at=utcnow(), **_values(actor, action, target, outcome, detail)))


async def record_now(engine: AsyncEngine, actor: Actor, action: str, *,
                     target: str | None = None, outcome: str = "ok",
                     detail: dict | None = None) -> bool:
    """Insert one row in a transaction of its own; never raises (False when it failed)."""
    try:
        async with engine.begin() as conn:
            await record(conn, actor, action, target=target, outcome=outcome, detail=detail)
    except Exception:  # the audited operation goes on; the log says why
        log.exception("audit row not written: %s %s %s", actor.name, action, target)
        return False
    return True


async def query(engine: AsyncEngine, *, since: datetime | None = None,
                user: str | None = None, action: str | None = None,
                limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
    """Rows newest first and the number matching.

    ``user``: a user name (``alice``: their API calls, ``user:alice``) or an actor as stored
    (``cli:root``). ``action``: exact (``user.create``) or a family (``user``: every
    ``user.*``)."""
    conditions = []
    if since is not None:
        conditions.append(audit_log.c.occurred_at >= since)
    if user:
        user = clean_text(user, limit=150)
        names = {user, f"user:{user}", f"cli:{user}"}
        found = sa.select(users.c.user_id).where(users.c.username == user).scalar_subquery()
        conditions.append(sa.or_(audit_log.c.actor.in_(sorted(names)),
                                 audit_log.c.user_id == found))
    if action:
        conditions.append(sa.or_(audit_log.c.action == action,
                                 audit_log.c.action.startswith(f"{action}.", autoescape=True)))
    where = sa.and_(sa.true(), *conditions)
    async with engine.connect() as conn:
        total = (await conn.execute(sa.select(sa.func.count()).select_from(audit_log)
                                    .where(where))).scalar_one()
        rows = (await conn.execute(
            sa.select(audit_log).where(where)
            .order_by(audit_log.c.occurred_at.desc(), audit_log.c.audit_id.desc())
            .limit(limit).offset(offset))).mappings().all()
    return [{**r, "occurred_at": aware(r["occurred_at"])} for r in rows], total
