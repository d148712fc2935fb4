"""Users and API keys as rows: the queries and transactions of account changes, each writing
its ``audit_log`` row in the same transaction (storage/audit.py), and the per-request key
check with its quota. The rules — argon2 hashing, which change may take the last admin away,
key generation, login throttling, what a refusal audits — are service/accounts.py's; the
front doors call that module for every change and read rows here.

API keys are random 256-bit secrets, so a plain SHA-256 of the key is enough to store
(nothing to brute-force) and lets a request find its row by an indexed equality; the stored
value is ``<public prefix>:<sha256 hex>`` in ``api_key`` (:func:`stored_key`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clock import aware, utcnow
from schemas.text import clean_text
from storage import audit
from storage.audit import Actor
from storage.models import api_keys, usage_logs, users

KEY_PREFIX = "sg_"


class AccountError(ValueError):
    """A bad account operation, with a stable code for the CLI and the API."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def stored_key(key: str) -> str:
    prefix = key[len(KEY_PREFIX):len(KEY_PREFIX) + 8] if key.startswith(KEY_PREFIX) else "?"
    return f"{prefix}:{hashlib.sha256(key.encode()).hexdigest()}"


async def insert_user(engine: AsyncEngine, *, username: str, email: str, role: str,
                      password_hash: str, actor: Actor, has_password: bool) -> int:
    """The new user's id; AccountError ``user_exists`` when the name or email is taken."""
    try:
        async with engine.begin() as conn:
            user_id = (await conn.execute(
                users.insert().values(username=username, email=email, role=role,
                                      password_hash=password_hash)
                .returning(users.c.user_id))).scalar_one()
            await audit.record(conn, actor, "user.create", target=f"user:{username}",
                               detail={"user_id": user_id, "email": email, "role": role,
                                       "password": has_password})
            return user_id
    except IntegrityError:
        raise AccountError("user_exists",
                           f"a user named {username!r} or with email {email!r} exists") from None


async def list_users(engine: AsyncEngine) -> list[dict]:
    query = sa.select(users.c.user_id, users.c.username, users.c.email, users.c.role,
                      users.c.account_status, users.c.created_at, users.c.last_login
                      ).order_by(users.c.user_id)
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings().all()]


async def get_user(engine: AsyncEngine, username: str) -> dict | None:
    if "\x00" in username:
        return None  # no stored name has one, and PostgreSQL refuses it in a query
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(users).where(users.c.username == username))
               ).mappings().first()
    return dict(row) if row else None


async def _locked_user(conn, username: str) -> dict:
    if "\x00" in username:
        row = None
    else:
        row = (await conn.execute(sa.select(users).where(users.c.username == username)
                                  .with_for_update())).mappings().first()
    if row is None:
        raise AccountError("no_such_user", f"no user named {username!r}")
    return dict(row)


def _last_admin(user: dict) -> AccountError:
    return AccountError("last_admin", f"{user['username']} is the last active admin: "
                                      "make another admin first")


async def _lock_admins(conn) -> list[int]:
    """The active admins' ids, their rows locked in id order (PostgreSQL) before any other
    row of the transaction, so concurrent changes queue up instead of deadlocking."""
    return list((await conn.execute(
        sa.select(users.c.user_id).where(users.c.role == "admin",
                                         users.c.account_status == "active")
        .order_by(users.c.user_id).with_for_update())).scalars().all())


def _keep_an_admin(user: dict, admins: list[int]):
    """Refuse to take the last active admin away; returns the guard for the UPDATE.

    Two admins demoting each other at once must not both succeed. PostgreSQL: the admins'
    rows are locked first (:func:`_lock_admins`), so the second transaction waits and then
    sees the first's change. SQLite (whose driver starts the transaction only at the first
    write, so the reads may be stale): the UPDATE itself carries the condition, and one
    UPDATE statement runs alone there."""
    if user["role"] != "admin" or user["account_status"] != "active":
        return sa.true()
    if not set(admins) - {user["user_id"]}:
        raise _last_admin(user)
    others = users.alias("other_admins")
    return sa.or_(users.c.role != "admin", users.c.account_status != "active",
                  sa.exists().where(others.c.role == "admin",
                                    others.c.account_status == "active",
                                    others.c.user_id != user["user_id"]))


async def change_user(engine: AsyncEngine, actor: Actor, action: str, username: str,
                      values: dict, *, keep_an_admin: bool) -> dict:
    """Update the user's ``values`` and audit it as ``action``, in one transaction; the user
    row after. ``keep_an_admin``: the change may take an admin away, so it is refused
    (AccountError ``last_admin``) when it would leave no active admin. AccountError
    ``no_such_user`` for an unknown name."""
    async with engine.begin() as conn:
        admins = await _lock_admins(conn) if keep_an_admin else []
        user = await _locked_user(conn, username)
        guard = _keep_an_admin(user, admins) if keep_an_admin else sa.true()
        done = await conn.execute(users.update()
                                  .where(users.c.user_id == user["user_id"], guard)
                                  .values(**values, updated_at=utcnow()))
        if done.rowcount == 0:
            raise _last_admin(user)
        before = {k: user[k] for k in values}
        await audit.record(conn, actor, action, target=f"user:{username}",
                           detail={"user_id": user["user_id"], "from": before, "to": values})
        return {**user, **values}


async def record_login(engine: AsyncEngine, user: dict, *, source: str | None) -> None:
    """A successful login: ``last_login`` and its audit row, in one transaction."""
    async with engine.begin() as conn:
        await conn.execute(users.update().where(users.c.user_id == user["user_id"])
                           .values(last_login=utcnow()))
        await audit.record(conn, Actor.user(user["username"], user_id=user["user_id"],
                                            source=source), "login",
                           target=f"user:{user['username']}")


async def insert_key(engine: AsyncEngine, *, user: dict, stored: str, name: str, limit: int,
                     expires_at: datetime | None, actor: Actor) -> int:
    """A key row for ``user`` holding ``stored`` (:func:`stored_key`); its key_id."""
    async with engine.begin() as conn:
        key_id = (await conn.execute(
            api_keys.insert().values(user_id=user["user_id"], api_key=stored, key_name=name,
                                     expires_at=expires_at, request_limit=limit,
                                     requests_made=0)
            .returning(api_keys.c.key_id))).scalar_one()
        await audit.record(conn, actor, "key.create", target=f"key:{key_id}",
                           detail={"user": user["username"], "user_id": user["user_id"],
                                   "name": name, "request_limit": limit,
                                   "expires_at": expires_at,
                                   "prefix": f"{KEY_PREFIX}{stored.partition(':')[0]}"})
    return key_id


async def revoke_key(engine: AsyncEngine, *, key_id: int | None = None,
                     key: str | None = None, actor: Actor = audit.SYSTEM) -> bool:
    where = (api_keys.c.key_id == key_id) if key_id is not None else (
        api_keys.c.api_key == stored_key(key or ""))
    async with engine.begin() as conn:
        revoked = (await conn.execute(api_keys.update().where(where).values(is_active=False)
                                      .returning(api_keys.c.key_id))).scalars().all()
        if revoked:
            await audit.record(conn, actor, "key.revoke", target=f"key:{revoked[0]}")
    if not revoked:
        await audit.record_now(engine, actor, "key.revoke",
                               target=f"key:{key_id}" if key_id is not None else "key:?",
                               outcome="failed", detail={"code": "no_such_key"})
    return bool(revoked)


async def list_keys(engine: AsyncEngine, username: str | None = None) -> list[dict]:
    query = (sa.select(api_keys.c.key_id, api_keys.c.key_name, users.c.username,
                       api_keys.c.api_key, api_keys.c.is_active, api_keys.c.expires_at,
                       api_keys.c.last_used_at, api_keys.c.request_limit,
                       api_keys.c.requests_made)
             .join(users, users.c.user_id == api_keys.c.user_id).order_by(api_keys.c.key_id))
    if username:
        query = query.where(users.c.username == username)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    # Only the public prefix leaves the database, never the hash.
    return [{**dict(r), "api_key": f"{KEY_PREFIX}{r['api_key'].split(':')[0]}_…"} for r in rows]


@dataclass
class KeyCheck:
    """The outcome of checking a presented key: ``code`` is None when the request may go on."""

    code: str | None
    message: str = ""
    user_id: int | None = None
    key_id: int | None = None
    username: str | None = None
    role: str | None = None
    retry_after: int | None = None
    remaining: int | None = None
    limit: int | None = None
    reset: int | None = None  # seconds until the quota window ends


async def check_key(engine: AsyncEngine, key: str, *, period_seconds: int) -> KeyCheck:
    """Authenticate ``key`` and count this request against its quota, atomically.

    The count is one UPDATE ... WHERE requests_made < request_limit RETURNING: concurrent
    requests serialise on the row, so the limit is never exceeded.
    """
    async with engine.connect() as conn:
        row = (await conn.execute(
            sa.select(api_keys, users.c.account_status, users.c.username, users.c.role)
            .join(users, users.c.user_id == api_keys.c.user_id)
            .where(api_keys.c.api_key == stored_key(key)))).mappings().first()
    if row is None:
        return KeyCheck("invalid_api_key", "the API key is not recognised")
    ids = {"user_id": row["user_id"], "key_id": row["key_id"]}
    if not row["is_active"]:
        return KeyCheck("api_key_revoked", "the API key has been revoked", **ids)
    now = utcnow()
    expires = aware(row["expires_at"])
    if expires is not None and expires <= now:
        return KeyCheck("api_key_expired", f"the API key expired at {expires.isoformat()}",
                        **ids)
    if row["account_status"] != "active":
        return KeyCheck("account_suspended",
                        f"the account is {row['account_status']}", **ids)
    window_over = sa.or_(api_keys.c.quota_window_start.is_(None),
                         api_keys.c.quota_window_start <= now - timedelta(seconds=period_seconds))
    async with engine.begin() as conn:
        counted = (await conn.execute(
            api_keys.update()
            .where(api_keys.c.key_id == row["key_id"],
                   sa.or_(window_over, api_keys.c.request_limit.is_(None),
                          api_keys.c.requests_made < api_keys.c.request_limit))
            .values(requests_made=sa.case((window_over, 1),
                                          else_=api_keys.c.requests_made + 1),
                    quota_window_start=sa.case((window_over, now),
                                               else_=api_keys.c.quota_window_start),
                    last_used_at=now)
            .returning(api_keys.c.requests_made, api_keys.c.request_limit,
                       api_keys.c.quota_window_start)
        )).first()
    if counted is None:
        # Refused inside a current window: read its start now. The row read above may predate
        # the concurrent request whose UPDATE opened this window.
        async with engine.connect() as conn:
            start = aware((await conn.execute(
                sa.select(api_keys.c.quota_window_start)
                .where(api_keys.c.key_id == row["key_id"]))).scalar())
        reset = start + timedelta(seconds=period_seconds) if start else now
        wait = max(1, int((reset - now).total_seconds()) + 1)
        return KeyCheck("rate_limited",
                        f"request limit of {row['request_limit']} per {period_seconds}s "
                        f"reached; retry after {wait}s", retry_after=wait,
                        limit=row["request_limit"], remaining=0, reset=wait, **ids)
    made, limit, start = counted
    ends = (aware(start) or now) + timedelta(seconds=period_seconds)
    return KeyCheck(None, user_id=row["user_id"], key_id=row["key_id"], limit=limit,
                    remaining=None if limit is None else max(0, limit - made),
                    username=row["username"], role=row["role"],
                    reset=max(0, int((ends - now).total_seconds())))


async def log_usage(engine: AsyncEngine, *, user_id: int | None, api_key_id: int | None,
                    request_type: str, request_path: str, response_code: int,
                    processing_time: float, ip_address: str | None,
                    user_agent: str | None) -> None:
    async with engine.begin() as conn:
        await conn.execute(usage_logs.insert().values(
            user_id=user_id, api_key_id=api_key_id,
            request_type=clean_text(request_type, limit=50),
            request_path=clean_text(request_path, limit=255), response_code=response_code,
            processing_time=Decimal(f"{processing_time:.3f}"),
            ip_address=(ip_address or None) and clean_text(ip_address, limit=45),
            user_agent=clean_text(user_agent, limit=1000) if user_agent else None))
