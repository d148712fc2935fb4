"""Users and API keys: creation, revocation, and the per-request key check with its quota.

Passwords are hashed with argon2. API keys are random 256-bit secrets, so a plain SHA-256 of
the key is enough to store (nothing to brute-force) and lets a request find its row by an
indexed equality; the stored value is ``<public prefix>:<sha256 hex>`` in ``api_key``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
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
from storage.models import ACCOUNT_STATUSES, api_keys, email_matches, login_failures, users

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


async def create_user(engine: AsyncEngine, *, username: str, email: str,
                      password: str | None) -> int:
    if not email_matches(email):
        raise AccountError("bad_email", f"{email!r} is not an email address (name@host.domain)")
    # Without a password the account can use keys only: store a hash nobody can match.
    secret = password if password else secrets.token_urlsafe(32)
    try:
        async with engine.begin() as conn:
            return (await conn.execute(
                users.insert().values(username=username, email=email,
                                      password_hash=hash_password(secret))
                .returning(users.c.user_id))).scalar_one()
    except IntegrityError:
        raise AccountError("user_exists",
                           f"a user named {username!r} or with email {email!r} exists") from None


async def get_user(engine: AsyncEngine, username: str) -> dict | None:
    if "\x00" in username:
        return None  # no stored name has one, and PostgreSQL refuses it in a query
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(users).where(users.c.username == username))
               ).mappings().first()
    return dict(row) if row else None


async def set_account_status(engine: AsyncEngine, username: str, status: str) -> None:
    if status not in ACCOUNT_STATUSES:
        raise AccountError("bad_status", f"account status must be one of {ACCOUNT_STATUSES}")
    async with engine.begin() as conn:
        done = await conn.execute(users.update().where(users.c.username == username)
                                  .values(account_status=status, updated_at=utcnow()))
    if done.rowcount == 0:
        raise AccountError("no_such_user", f"no user named {username!r}")


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash of a random secret: an unknown user costs the same argon2 verify as a real one,
    so response times do not tell which usernames exist."""
    return hash_password(secrets.token_urlsafe(32))


async def login(engine: AsyncEngine, username: str, password: str) -> dict | None:
    """The active user whose password matches (recording last_login), else None.

    argon2 runs in a worker thread, never on the event loop; an unknown username is verified
    against a dummy hash so it takes as long as a wrong password."""
    user = await get_user(engine, username)
    stored = user["password_hash"] if user is not None else _dummy_hash()
    matches = await asyncio.to_thread(verify_password, stored, password)
    if user is None or not matches:
        return None
    if user["account_status"] != "active":
        return None
    async with engine.begin() as conn:
        await conn.execute(users.update().where(users.c.user_id == user["user_id"])
                           .values(last_login=utcnow()))
    return user


def _upsert(engine: AsyncEngine, table):
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(table)


async def reserve_login_attempt(engine: AsyncEngine, subjects: dict[str, int], *,
                                window_seconds: int) -> int | None:
    """Count one login attempt against each subject (``{"user:alice": 10, "ip:…": 50}``:
    subject → failures allowed per window), atomically, before the password is checked.

    Returns None when the attempt may go on, else the seconds until the fullest subject's
    window ends (for Retry-After). The count and the window start come from the same
    UPDATE … RETURNING, so concurrent attempts never see a window that is not there yet.
    A successful login gives its attempt back (:func:`forgive_login_attempt`).
    """
    now = utcnow()
    cut = now - timedelta(seconds=window_seconds)
    wait = None
    async with engine.begin() as conn:
        for subject, limit in sorted(subjects.items()):
            stmt = _upsert(engine, login_failures).values(subject=subject, failures=1,
                                                          window_start=now)
            expired = login_failures.c.window_start <= cut
            stmt = stmt.on_conflict_do_update(
                index_elements=[login_failures.c.subject],
                set_={"failures": sa.case((expired, 1), else_=login_failures.c.failures + 1),
                      "window_start": sa.case((expired, now),
                                              else_=login_failures.c.window_start)},
            ).returning(login_failures.c.failures, login_failures.c.window_start)
            failures, start = (await conn.execute(stmt)).one()
            if failures > limit:
                left = (aware(start) + timedelta(seconds=window_seconds) - now).total_seconds()
                wait = max(wait or 1, math.ceil(left))
    return wait


async def forgive_login_attempt(engine: AsyncEngine, subjects: list[str]) -> None:
    async with engine.begin() as conn:
        await conn.execute(login_failures.update()
                           .where(login_failures.c.subject.in_(subjects),
                                  login_failures.c.failures > 0)
                           .values(failures=login_failures.c.failures - 1))


async def create_key(engine: AsyncEngine, *, username: str, name: str, limit: int,
                     expires_at: datetime | None) -> tuple[str, int]:
    """Create a key for ``username``; returns (the key, shown once; key_id)."""
    user = await get_user(engine, username)
    if user is None:
        raise AccountError("no_such_user", f"no user named {username!r}")
    key, stored = new_api_key()
    async with engine.begin() as conn:
        key_id = (await conn.execute(
            api_keys.insert().values(user_id=user["user_id"], api_key=stored, key_name=name,
                                     expires_at=expires_at, request_limit=limit,
                                     requests_made=0)
            .returning(api_keys.c.key_id))).scalar_one()
    return key, key_id


async def revoke_key(engine: AsyncEngine, *, key_id: int | None = None,
                     key: str | None = None) -> bool:
    where = (api_keys.c.key_id == key_id) if key_id is not None else (
        api_keys.c.api_key == stored_key(key or ""))
    async with engine.begin() as conn:
        done = await conn.execute(api_keys.update().where(where).values(is_active=False))
    return done.rowcount > 0


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
    retry_after: int | None = None
    remaining: int | None = None
    limit: int | None = None


async def check_key(engine: AsyncEngine, key: str, *, period_seconds: int) -> KeyCheck:
    """Authenticate ``key`` and count this request against its quota, atomically.

    The count is one UPDATE ... WHERE requests_made < request_limit RETURNING: concurrent
    requests serialise on the row, so the limit is never exceeded.
    """
    async with engine.connect() as conn:
        row = (await conn.execute(
            sa.select(api_keys, users.c.account_status)
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
            .returning(api_keys.c.requests_made, api_keys.c.request_limit)
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
                        limit=row["request_limit"], remaining=0, **ids)
    made, limit = counted
    return KeyCheck(None, user_id=row["user_id"], key_id=row["key_id"], limit=limit,
                    remaining=max(0, limit - made))


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
