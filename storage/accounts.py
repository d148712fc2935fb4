"""Users and API keys: creation, roles, revocation, and the per-request key check with its
quota.

Roles (:data:`ROLES`): ``admin`` manages users and keys and may do everything an operator
may; ``operator`` reads every upload and runs retry/rescore/recover; ``member`` (the default)
sees only their own uploads. The last active admin can be neither demoted nor suspended.
Every account change writes its ``audit_log`` row in its own transaction (storage/audit.py).

Over 300 lines on purpose: one job, who may call and with what rights (users, roles, keys,
logins and the per-request key check), sharing :class:`AccountError`'s codes and the audit of
each change; the API, the CLI, scripts and tests all import these names from here.

Passwords are hashed with argon2. API keys are random 256-bit secrets, so a plain SHA-256 of
the key is enough to store (nothing to brute-force) and lets a request find its row by an
indexed equality; the stored value is ``<public prefix>:<sha256 hex>`` in ``api_key``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.clock import aware, utcnow
from schemas.text import clean_text
from storage import audit
from storage.audit import Actor
from storage.models import ACCOUNT_STATUSES, ROLES, api_keys, email_matches, users

KEY_PREFIX = "sg_"
_hasher = PasswordHasher()


class AccountError(ValueError):
    """A bad account operation, with a stable code for the CLI and the API."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        return False


def new_api_key() -> tuple[str, str]:
    """A fresh key and the value stored for it: (``sg_<prefix>_<secret>``, stored)."""
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return key, stored_key(key)


def stored_key(key: str) -> str:
    prefix = key[len(KEY_PREFIX):len(KEY_PREFIX) + 8] if key.startswith(KEY_PREFIX) else "?"
    return f"{prefix}:{hashlib.sha256(key.encode()).hexdigest()}"


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError("bad_role", f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


async def _refused(engine: AsyncEngine, actor: Actor, action: str, target: str,
                   exc: AccountError, detail: dict | None = None) -> AccountError:
    """Audit a refused account change (its own transaction: the change's rolled back)."""
    await audit.record_now(engine, actor, action, target=target,
                           outcome="denied" if exc.code == "last_admin" else "failed",
                           detail={**(detail or {}), "code": exc.code, "error": str(exc)})
    return exc


async def create_user(engine: AsyncEngine, *, username: str, email: str,
                      password: str | None, role: str = "member",
                      actor: Actor = audit.SYSTEM) -> int:
    target = f"user:{username}"
    try:
        check_role(role)
        if not email_matches(email):
            raise AccountError("bad_email",
                               f"{email!r} is not an email address (name@host.domain)")
    except AccountError as exc:
        raise await _refused(engine, actor, "user.create", target, exc, {"role": role}) from None
    # Without a password the account can use keys only: store a hash nobody can match.
    secret = password if password else secrets.token_urlsafe(32)
    try:
        async with engine.begin() as conn:
            user_id = (await conn.execute(
                users.insert().values(username=username, email=email, role=role,
                                      password_hash=hash_password(secret))
                .returning(users.c.user_id))).scalar_one()
            await audit.record(conn, actor, "user.create", target=target,
                               detail={"user_id": user_id, "email": email, "role": role,
                                       "password": bool(password)})
            return user_id
    except IntegrityError:
        exc = AccountError("user_exists",
                           f"a user named {username!r} or with email {email!r} exists")
        raise await _refused(engine, actor, "user.create", target, exc) from None


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


async def _change_user(engine: AsyncEngine, actor: Actor, action: str, username: str,
                       values: dict, *, losing_admin: bool) -> dict:
    target = f"user:{username}"
    try:
        async with engine.begin() as conn:
            admins = await _lock_admins(conn) if losing_admin else []
            user = await _locked_user(conn, username)
            guard = _keep_an_admin(user, admins) if losing_admin else sa.true()
            done = await conn.execute(users.update()
                                      .where(users.c.user_id == user["user_id"], guard)
                                      .values(**values, updated_at=utcnow()))
            if done.rowcount == 0:
                raise _last_admin(user)
            before = {k: user[k] for k in values}
            await audit.record(conn, actor, action, target=target,
                               detail={"user_id": user["user_id"], "from": before,
                                       "to": values})
            return {**user, **values}
    except AccountError as exc:
        raise await _refused(engine, actor, action, target, exc, {"to": values}) from None


async def set_account_status(engine: AsyncEngine, username: str, status: str, *,
                             actor: Actor = audit.SYSTEM) -> dict:
    if status not in ACCOUNT_STATUSES:
        raise AccountError("bad_status", f"account status must be one of {ACCOUNT_STATUSES}")
    action = "user.suspend" if status == "suspended" else "user.activate"
    return await _change_user(engine, actor, action, username, {"account_status": status},
                              losing_admin=status != "active")


async def set_role(engine: AsyncEngine, username: str, role: str, *,
                   actor: Actor = audit.SYSTEM) -> dict:
    try:
        check_role(role)
    except AccountError as exc:
        raise await _refused(engine, actor, "user.role", f"user:{username}", exc,
                             {"to": {"role": role}}) from None
    return await _change_user(engine, actor, "user.role", username, {"role": role},
                              losing_admin=role != "admin")


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash of a random secret: an unknown user costs the same argon2 verify as a real one,
    so response times do not tell which usernames exist."""
    return hash_password(secrets.token_urlsafe(32))


async def login(engine: AsyncEngine, username: str, password: str, *,
                source: str | None = None) -> dict | None:
    """The active user whose password matches (recording last_login), else None.

    argon2 runs in a worker thread, never on the event loop; an unknown username is verified
    against a dummy hash so it takes as long as a wrong password. Success and failure are
    audited (``login``, from ``source``: the client IP), the reason of a failure too."""
    user = await get_user(engine, username)
    stored = user["password_hash"] if user is not None else _dummy_hash()
    matches = await asyncio.to_thread(verify_password, stored, password)
    name = clean_text(username, limit=100)
    reason = ("unknown_user" if user is None else "wrong_password" if not matches
              else None if user["account_status"] == "active" else "account_suspended")
    if reason is not None:
        await audit.record_now(
            engine, Actor(name="anonymous", source=source), "login", target=f"user:{name}",
            outcome="denied", detail={"reason": reason})
        return None
    async with engine.begin() as conn:
        await conn.execute(users.update().where(users.c.user_id == user["user_id"])
                           .values(last_login=utcnow()))
        await audit.record(conn, Actor.user(user["username"], user_id=user["user_id"],
                                            source=source), "login",
                           target=f"user:{user['username']}")
    return user


async def create_key(engine: AsyncEngine, *, username: str, name: str, limit: int,
                     expires_at: datetime | None,
                     actor: Actor = audit.SYSTEM) -> tuple[str, int]:
    """Create a key for ``username``; returns (the key, shown once; key_id)."""
    user = await get_user(engine, username)
    if user is None:
        raise await _refused(engine, actor, "key.create", f"user:{username}",
                             AccountError("no_such_user", f"no user named {username!r}"))
    key, stored = new_api_key()
    async with engine.begin() as conn:
        key_id = (await conn.execute(
            api_keys.insert().values(user_id=user["user_id"], api_key=stored, key_name=name,
                                     expires_at=expires_at, request_limit=limit,
                                     requests_made=0)
            .returning(api_keys.c.key_id))).scalar_one()
        await audit.record(conn, actor, "key.create", target=f"key:{key_id}",
                           detail={"user": username, "user_id": user["user_id"],
                                   "name": name, "request_limit": limit,
                                   "expires_at": expires_at,
                                   "prefix": f"{KEY_PREFIX}{stored.split(':')[0]}"})
    return key, key_id


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
    from decimal import Decimal

    from storage.models import usage_logs

    async with engine.begin() as conn:
        await conn.execute(usage_logs.insert().values(
            user_id=user_id, api_key_id=api_key_id,
            request_type=clean_text(request_type, limit=50),
            request_path=clean_text(request_path, limit=255), response_code=response_code,
            processing_time=Decimal(f"{processing_time:.3f}"),
            ip_address=(ip_address or None) and clean_text(ip_address, limit=45),
            user_agent=clean_text(user_agent, limit=1000) if user_agent else None))
