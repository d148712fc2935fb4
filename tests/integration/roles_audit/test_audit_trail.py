"""Issue 15, item 2: the append-only audit trail on real PostgreSQL and on SQLite: the
database refuses to change it; the CLI's role changes, retries, rescores, recoveries and
migrations are in it; two admins demoting each other at once leave one."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from storage import accounts as account_rows
from storage.migrate import head_revision
from tests.integration.roles_audit.conftest import audit_rows, cli, db, new_user

HEAD = head_revision()

pytestmark = pytest.mark.integration


# --- the audit trail itself --------------------------------------------------------------------


def test_the_database_refuses_to_change_the_trail(backend):
    from storage import audit

    db(backend, lambda e: audit.record_now(e, audit.SYSTEM, "test.append", detail={"n": 1}))
    before = len(audit_rows(backend))
    statements = ["UPDATE audit_log SET outcome = 'ok', actor = 'someone else'",
                  "DELETE FROM audit_log"]
    if backend["kind"] == "postgresql":
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        async def attempt(engine, statement=statement):
            async with engine.begin() as conn:
                await conn.execute(sa.text(statement))

        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            db(backend, attempt)
    assert len(audit_rows(backend)) == before
    assert audit_rows(backend, action="test.append")[0]["actor"] == "system"


def test_cli_roles_and_audit_json_filters(backend):
    import json

    name = f"clinew_{uuid.uuid4().hex[:6]}"
    made = cli(backend, "users", "create", name, "--email", f"{name}@example.org",
               "--role", "operator")
    assert made.exit_code == 0, made.output
    assert "role operator" in made.output
    unknown = cli(backend, "users", "create", "x" + name, "--email", "y@example.org",
                  "--role", "root")
    assert unknown.exit_code == 2 and "'root' is not one of" in unknown.output
    assert cli(backend, "users", "role", name, "wizard").exit_code == 2
    changed = cli(backend, "users", "role", name, "member")
    assert changed.exit_code == 0 and "operator -> member" in changed.output
    assert cli(backend, "users", "role", "nobody-" + name, "member").exit_code == 1

    out = cli(backend, "audit", "--format", "json", "--action", "user")
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    ours = [r for r in rows if r["target"] == f"user:{name}"]
    assert [(r["action"], r["outcome"]) for r in ours] == [("user.role", "ok"),
                                                           ("user.create", "ok")]
    assert ours[0]["detail"]["from"] == {"role": "operator"}
    assert all(r["actor"].startswith("cli:") for r in ours)
    assert all(r["action"].startswith("user.") for r in rows)

    os_user = ours[0]["actor"].split(":", 1)[1]
    by_user = cli(backend, "audit", "--format", "json", "--user", os_user,
                  "--action", "user.role")
    assert {json.loads(x)["action"] for x in by_user.output.splitlines()} == {"user.role"}
    later = cli(backend, "audit", "--format", "json", "--since", "2999-01-01")
    assert later.exit_code == 0 and later.output == ""
    table = cli(backend, "audit", "--action", "user.role")
    assert table.exit_code == 0 and name in table.output


def test_retry_and_rescore_runs_are_audited(backend):
    for args in (["retry", "--failed"], ["rescore", "--algorithm-version", "nope-0"]):
        result = cli(backend, *args)
        assert result.exit_code == 0, result.output
        [row] = audit_rows(backend, action=f"uploads.{args[0]}")[:1]
        assert row["outcome"] == "ok" and row["detail"]["count"] == 0
        assert row["actor"].startswith("cli:")
    assert audit_rows(backend, action="uploads.rescore")[0]["detail"]["algorithm_version"] == \
        "nope-0"


def test_migration_0012_goes_down_and_up(backend):
    from storage import migrate

    async def cycle(engine):
        await migrate.downgrade(engine, "0011")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            columns = await conn.run_sync(
                lambda c: [col["name"] for col in sa.inspect(c).get_columns("users")])
        await migrate.upgrade(engine)
        return tables, columns

    if backend["kind"] == "postgresql":
        pytest.skip("down/up runs on SQLite here; PostgreSQL's is test_cli_db's round trip")
    tables, columns = db(backend, cycle)
    assert "audit_log" not in tables and "role" not in columns
    # The trail starts again with the migration that made it (then each later one).
    moved = audit_rows(backend, action="config")
    assert {r["action"] for r in moved} == {"config.migrate"}
    assert [r["detail"] for r in moved][::-1][:3] == [{"from": "0011", "to": "0012"},
                                                     {"from": "0012", "to": "0013"},
                                                     {"from": "0013", "to": "0014"}]


def test_schema_migrations_are_audited_by_the_database(backend):
    """Migrations change the methods' weights (0008): the database writes a config.migrate
    row whenever alembic_version moves, whichever client moved it."""
    async def touch(engine):
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = version_num"))

    db(backend, touch)
    row = audit_rows(backend, action="config.migrate")[0]
    assert row["detail"] == {"from": HEAD, "to": HEAD} and row["outcome"] == "ok"
    assert row["actor"].startswith("db:") and row["target"] == "alembic_version"


def test_two_admins_demoting_each_other_at_once_leave_one(backend):
    """The active admins' rows are locked while one is taken away: of two concurrent
    demotions of the last two admins, exactly one succeeds."""
    import asyncio

    from service import accounts

    a, b = new_user(backend, "admin"), new_user(backend, "admin")
    others = [u["username"] for u in db(backend, account_rows.list_users)
              if u["role"] == "admin" and u["account_status"] == "active"
              and u["username"] not in (a["name"], b["name"])]
    for name in others:
        db(backend, lambda e, n=name: accounts.set_account_status(e, n, "suspended"))

    async def both(engine):
        return await asyncio.gather(accounts.set_role(engine, a["name"], "member"),
                                    accounts.set_role(engine, b["name"], "member"),
                                    return_exceptions=True)

    outcomes = db(backend, both)
    refused = [o for o in outcomes if isinstance(o, accounts.AccountError)]
    assert len(refused) == 1 and refused[0].code == "last_admin", outcomes
    admins = [u for u in db(backend, account_rows.list_users)
              if u["role"] == "admin" and u["account_status"] == "active"]
    assert len(admins) == 1


def test_recover_runs_are_audited(backend):
    import redis

    from tests.conftest import REDIS_URL

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no Redis here
        pytest.skip(f"Redis not reachable: {exc}")
    from skygate.cli import main

    env = {**backend["env"], "SKYGATE_BROKER_URL": f"{REDIS_URL}/14"}
    result = CliRunner().invoke(main, ["recover", "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    [row] = audit_rows(backend, action="uploads.recover")[:1]
    assert row["outcome"] == "ok" and row["detail"]["dry_run"] is True
    assert row["detail"]["count"] == 0 and row["actor"].startswith("cli:")
