"""Account rules, over the rows of storage/accounts.py: who may have an account and with
which role, how passwords are hashed (argon2) and checked, the last active admin, API key
generation, login throttling, and what a refused change audits. The API and the CLI call
these for every account change that has a rule and for logins; they read rows (``get_user``,
``list_users``, ``list_keys``, ``check_key``) and revoke keys in storage/accounts.py.

Roles (:data:`ROLES`): ``admin`` manages users and keys and may do everything an operator
may; ``operator`` reads every upload and runs retry/rescore/recover; ``member`` (the default)
sees only their own uploads. The last active admin can be neither demoted nor suspended.
Every change writes its ``audit_log`` row in its own transaction, a refusal one of its own.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.settings import Settings
from schemas.text import clean_text
from storage import accounts as rows
from storage import audit, login_throttle
from storage.accounts import KEY_PREFIX, AccountError, stored_key
from storage.audit import Actor
from storage.models import ACCOUNT_STATUSES, ROLES, email_matches

_hasher = PasswordHasher()


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
        return await rows.insert_user(engine, username=username, email=email, role=role,
                                      password_hash=hash_password(secret), actor=actor,
                                      has_password=bool(password))
    except AccountError as exc:
        raise await _refused(engine, actor, "user.create", target, exc) from None


async def _change_user(engine: AsyncEngine, actor: Actor, action: str, username: str,
                       values: dict, *, losing_admin: bool) -> dict:
    try:
        return await rows.change_user(engine, actor, action, username, values,
                                      keep_an_admin=losing_admin)
    except AccountError as exc:
        raise await _refused(engine, actor, action, f"user:{username}", exc,
                             {"to": values}) from None


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
    user = await rows.get_user(engine, username)
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
    await rows.record_login(engine, user, source=source)
    return user


class LoginThrottled(Exception):
    """Too many failed logins from this client: try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed logins; retry after {retry_after}s")
        self.retry_after = retry_after


async def throttled_login(engine: AsyncEngine, settings: Settings, username: str,
                          password: str, *, client: str, source: str | None = None
                          ) -> dict | None:
    """:func:`login`, its attempt counted first per (username, client) and per client, with
    growing delays past the free failures (storage/login_throttle.py keeps the counts in the
    database, so every API process sees them). Never per username alone: nobody can lock
    anyone out. Raises LoginThrottled (audited) when the client must wait; a successful
    login gives its attempt back."""
    subjects = login_throttle.subjects_for(
        clean_text(username, limit=150).lower(), client,
        per_pair=settings.login_max_failures, per_client=settings.login_max_failures_per_ip)
    wait = await login_throttle.reserve(engine, subjects,
                                        window_seconds=settings.login_window_seconds,
                                        max_delay=settings.login_max_delay)
    if wait is not None:
        await audit.record_now(engine, Actor("anonymous", source=source), "login",
                               target=f"user:{clean_text(username)[:100]}",
                               outcome="denied", detail={"reason": "too_many_failed_logins"})
        raise LoginThrottled(wait)
    user = await login(engine, username, password, source=source)
    if user is not None:
        await login_throttle.forgive(engine, list(subjects))
    return user


async def create_key(engine: AsyncEngine, *, username: str, name: str, limit: int,
                     expires_at: datetime | None,
                     actor: Actor = audit.SYSTEM) -> tuple[str, int]:
    """Create a key for ``username``; returns (the key, shown once; key_id)."""
    user = await rows.get_user(engine, username)
    if user is None:
        raise await _refused(engine, actor, "key.create", f"user:{username}",
                             AccountError("no_such_user", f"no user named {username!r}"))
    key, stored = new_api_key()
    key_id = await rows.insert_key(engine, user=user, stored=stored, name=name, limit=limit,
                                   expires_at=expires_at, actor=actor)
    return key, key_id
