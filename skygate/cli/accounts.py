"""``skygate users`` and ``skygate keys``: the HTTP API's accounts, their roles and API keys.

Every change is audited as ``cli:<os user>`` from this host (storage/audit.py)."""

from __future__ import annotations

import sys

import click

from skygate.cli._common import engine_call, fail, note

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.

ROLES = ("admin", "operator", "member")  # storage.models.ROLES, without importing storage


def _cli_actor():
    from storage.audit import Actor

    return Actor.cli()


@click.group()
def users() -> None:
    """Accounts of the HTTP API."""


@users.command("create")
@click.argument("username")
@click.option("--email", required=True)
@click.option("--password-stdin", is_flag=True,
              help="read a password from stdin (for POST /v1/keys); keys-only without it")
@click.option("--role", type=click.Choice(ROLES), default="member", show_default=True,
              help="admin: users, keys, everything; operator: reads all, retry/rescore/"
                   "recover; member: own uploads only")
def users_create(username, email, password_stdin, role):
    """Create a user (passwords are stored as argon2 hashes)."""
    from service import accounts

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    if password_stdin and len(password) < 8:  # noqa: PLR2004 - the documented minimum
        raise click.UsageError("the password must have at least 8 characters")
    try:
        user_id = engine_call(lambda e: accounts.create_user(
            e, username=username, email=email, password=password, role=role,
            actor=_cli_actor()))
    except accounts.AccountError as exc:
        fail(str(exc))
    click.echo(f"user {username} created (id {user_id}, role {role})")


@users.command("role")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
def users_role(username, role):
    """Give a user another role (the last active admin keeps theirs)."""
    from service import accounts
    from storage.accounts import get_user

    try:
        before = engine_call(lambda e: get_user(e, username))
        engine_call(lambda e: accounts.set_role(e, username, role, actor=_cli_actor()))
    except accounts.AccountError as exc:
        fail(str(exc))
    click.echo(f"user {username}: role {before['role'] if before else '?'} -> {role}")


@users.command("list")
def users_list():
    """Accounts with their role and status."""
    from storage import accounts

    for u in engine_call(accounts.list_users):
        click.echo(f"{u['user_id']:>5}  {u['username']:<20} {u['role']:<9} "
                   f"{u['account_status']:<10} {u['email']}  last login {u['last_login'] or '-'}")


@users.command("suspend")
@click.argument("username")
def users_suspend(username):
    """Suspend an account: its keys get 401 until it is activated again."""
    _set_status(username, "suspended")


@users.command("activate")
@click.argument("username")
def users_activate(username):
    """Re-activate a suspended account."""
    _set_status(username, "active")


def _set_status(username: str, status: str) -> None:
    from service import accounts

    try:
        engine_call(lambda e: accounts.set_account_status(e, username, status,
                                                          actor=_cli_actor()))
    except accounts.AccountError as exc:
        fail(str(exc))
    click.echo(f"user {username}: {status}")


@click.group()
def keys() -> None:
    """API keys (sent in the X-API-Key header)."""


@keys.command("create")
@click.option("--user", "username", required=True)
@click.option("--name", default="default", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True,
              help="requests per quota window (SKYGATE_QUOTA_PERIOD_SECONDS)")
@click.option("--expires", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="expiry date (UTC)")
def keys_create(username, name, limit, expires):
    """Create a key; it is printed once (only its hash is stored)."""
    from schemas.clock import aware
    from service import accounts

    when = aware(expires)
    try:
        key, key_id = engine_call(lambda e: accounts.create_key(
            e, username=username, name=name, limit=limit, expires_at=when,
            actor=_cli_actor()))
    except accounts.AccountError as exc:
        fail(str(exc))
    note(f"key {key_id} for {username} (shown once, keep it):")
    click.echo(key)


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id):
    """Revoke a key by its id (see `skygate keys list`)."""
    from storage import accounts

    if not engine_call(lambda e: accounts.revoke_key(e, key_id=key_id, actor=_cli_actor())):
        fail(f"no key with id {key_id}")
    click.echo(f"key {key_id} revoked")


@keys.command("list")
@click.option("--user", "username")
def keys_list(username):
    """Keys with their public prefix, state and usage (never the key itself)."""
    from schemas.clock import aware, utcnow
    from storage import accounts

    now = utcnow()
    for k in engine_call(lambda e: accounts.list_keys(e, username)):
        expires = k["expires_at"]
        expires = aware(expires)
        state = ("revoked" if not k["is_active"] else
                 "expired" if expires is not None and expires <= now else "active")
        click.echo(f"{k['key_id']:>5}  {k['username']:<20} {k['key_name']:<16} "
                   f"{k['api_key']:<16} {state:<8} {k['requests_made']}/{k['request_limit']} "
                   f"expires {k['expires_at'] or 'never'}  last used {k['last_used_at'] or '-'}")


COMMANDS = [users, keys]
