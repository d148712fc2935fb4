"""Issue 15, items 1 and 2: roles (admin, operator, member) enforced by the API, and the
append-only audit trail, on real PostgreSQL and on SQLite (the embedded default).

The API runs in process (Starlette's TestClient, lifespan included) on a freshly migrated
database of each kind; the CLI runs through click's runner with SKYGATE_* variables.
"""

from __future__ import annotations

import itertools
import uuid

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from storage import accounts as account_rows
from storage.migrate import head_revision
from tests.conftest import _pg_admin, free_port, run, wait_for

HEAD = head_revision()

pytestmark = pytest.mark.integration

_n = itertools.count(1)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def backend(request, tmp_path_factory):
    """A migrated database of each kind: {"kind", "url" (for SKYGATE_DATABASE_URL or None),
    "env" (the CLI's SKYGATE_* variables), "settings"}."""
    from schemas.settings import Settings
    from storage import migrate
    from storage.db import create_engine

    data_dir = tmp_path_factory.mktemp(f"roles_{request.param}")
    if request.param == "postgresql":
        pg_url = request.getfixturevalue("pg_url")
        name = pg_url.rsplit("/", 1)[1] + "_roles"
        run(_pg_admin(f'CREATE DATABASE "{name}"'))
        url = pg_url.rsplit("/", 1)[0] + "/" + name
        env = {"SKYGATE_DATABASE_URL": url, "SKYGATE_DATA_DIR": str(data_dir)}
    else:
        name, url = None, None
        env = {"SKYGATE_DATABASE_URL": "", "SKYGATE_DATA_DIR": str(data_dir)}
    env.update({"SKYGATE_MONGO_URL": None, "SKYGATE_BROKER_URL": None,
                "SKYGATE_RESULT_BACKEND": None, "SKYGATE_CACHE_URL": "off"})
    settings = Settings(database_url=url, data_dir=data_dir, mongo_url=None, broker_url=None,
                        result_backend=None, cache_url="off")

    async def up():
        engine = create_engine(settings.sqlalchemy_url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    run(up())
    yield {"kind": request.param, "url": url, "env": env, "settings": settings}
    if name:
        run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def db(backend, fn):
    """``await fn(engine)`` on the backend's database."""
    from storage.db import create_engine

    async def go():
        engine = create_engine(backend["settings"].sqlalchemy_url)
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return run(go())


@pytest.fixture(scope="module")
def api(backend):
    """The app served by uvicorn in a thread of this process; an httpx client on it."""
    import threading

    import httpx
    import uvicorn

    from api.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(backend["settings"]), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn started")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def new_user(backend, role="member", *, password=None):
    """A user with that role and a key: {"name", "key", "key_id", "user_id"}."""
    from service import accounts

    name = f"{role}{next(_n)}_{uuid.uuid4().hex[:4]}"

    async def make(engine):
        user_id = await accounts.create_user(engine, username=name, email=f"{name}@example.org",
                                             password=password, role=role)
        key, key_id = await accounts.create_key(engine, username=name, name="t", limit=1000,
                                                expires_at=None)
        return user_id, key, key_id

    user_id, key, key_id = db(backend, make)
    return {"name": name, "key": key, "key_id": key_id, "user_id": user_id,
            "h": {"X-API-Key": key}}


def add_upload(backend, user_id: int) -> int:
    """An uploads row (no blobs: enough for reading and deleting it)."""
    from storage.models import uploads

    async def insert(engine):
        async with engine.begin() as conn:
            return (await conn.execute(uploads.insert().values(
                user_id=user_id, file_name="x.png", original_file_name="x.png",
                file_path="-", file_size=10, file_type="png", mime_type="image/png",
                sha256=uuid.uuid4().hex, status="queued").returning(uploads.c.upload_id))
            ).scalar_one()

    return db(backend, insert)


def audit_rows(backend, **filters) -> list[dict]:
    from storage import audit

    return db(backend, lambda e: audit.query(e, limit=500, **filters))[0]


def cli(backend, *args, input=None):
    from skygate.cli import main

    return CliRunner().invoke(main, list(args), env=backend["env"], input=input)


# --- roles through the API --------------------------------------------------------------------


def test_member_sees_and_deletes_only_their_own(backend, api):
    alice, bob = new_user(backend), new_user(backend)
    theirs, mine = add_upload(backend, bob["user_id"]), add_upload(backend, alice["user_id"])

    assert api.get(f"/v1/uploads/{theirs}", headers=alice["h"]).status_code == 404
    assert api.get(f"/v1/uploads/{theirs}/result", headers=alice["h"]).status_code == 404
    assert api.delete(f"/v1/uploads/{theirs}", headers=alice["h"]).status_code == 404
    own = api.get("/v1/uploads", headers=alice["h"]).json()
    assert [u["upload_id"] for u in own["items"]] == [mine]

    for method, path in [("GET", "/v1/uploads?owner=*"),
                         ("GET", f"/v1/uploads?owner={bob['name']}"),
                         ("GET", "/v1/users"), ("GET", "/v1/audit"),
                         ("POST", "/v1/users/x/suspend")]:
        r = api.request(method, path, headers=alice["h"])
        assert r.status_code == 403, (path, r.text)
        assert r.json()["code"] == "forbidden"
        needed = "operator" if "owner" in path else "admin"
        assert f"needs the {needed} role" in r.json()["message"]
    denied = audit_rows(backend, user=alice["name"], action="access")
    assert len(denied) == 5 and {d["outcome"] for d in denied} == {"denied"}
    assert denied[0]["key_id"] == alice["key_id"] and denied[0]["source"] == "127.0.0.1"

    assert api.delete(f"/v1/uploads/{mine}", headers=alice["h"]).status_code == 204
    [row] = audit_rows(backend, user=alice["name"], action="upload.delete")
    assert row["target"] == f"upload:{mine}" and row["outcome"] == "ok"
    assert row["detail"]["owner_user_id"] == alice["user_id"]


def test_operator_reads_everything_changes_nothing(backend, api):
    op, bob = new_user(backend, "operator"), new_user(backend)
    theirs = add_upload(backend, bob["user_id"])

    assert api.get(f"/v1/uploads/{theirs}", headers=op["h"]).status_code == 200
    assert api.get(f"/v1/uploads/{theirs}/result", headers=op["h"]).json()["code"] == "not_ready"
    listing = api.get("/v1/uploads", params={"owner": bob["name"]}, headers=op["h"]).json()
    assert [u["upload_id"] for u in listing["items"]] == [theirs]
    everyone = api.get("/v1/uploads", params={"owner": "*"}, headers=op["h"]).json()
    assert theirs in [u["upload_id"] for u in everyone["items"]]
    assert api.get("/v1/uploads", params={"owner": "nobody-here"},
                   headers=op["h"]).json()["code"] == "user_not_found"
    # Their own listing is unchanged: only their uploads.
    assert api.get("/v1/uploads", headers=op["h"]).json()["total"] == 0

    r = api.delete(f"/v1/uploads/{theirs}", headers=op["h"])
    assert r.status_code == 403 and "needs the admin role" in r.json()["message"]
    for method, path, body in [("GET", "/v1/users", None), ("GET", "/v1/audit", None),
                               ("POST", "/v1/users", {"username": "z", "email": "z@x.org"}),
                               ("POST", f"/v1/users/{bob['name']}/suspend", None)]:
        r = api.request(method, path, headers=op["h"], json=body)
        assert (r.status_code, r.json()["code"]) == (403, "forbidden"), path
    assert api.get(f"/v1/uploads/{theirs}", headers=bob["h"]).status_code == 200


def test_admin_manages_users_and_deletes_any_upload(backend, api):
    admin, bob = new_user(backend, "admin"), new_user(backend)
    users = api.get("/v1/users", headers=admin["h"]).json()["items"]
    assert {u["username"]: u["role"] for u in users}[admin["name"]] == "admin"

    name = f"newop_{uuid.uuid4().hex[:6]}"
    r = api.post("/v1/users", headers=admin["h"],
                 json={"username": name, "email": f"{name}@example.org", "role": "operator",
                       "password": "correct horse"})
    assert r.status_code == 201, r.text
    assert (r.json()["role"], r.json()["account_status"]) == ("operator", "active")
    [made] = audit_rows(backend, action="user.create", user=admin["name"])
    assert (made["target"], made["key_id"], made["source"]) == (
        f"user:{name}", admin["key_id"], "127.0.0.1")
    assert made["detail"]["role"] == "operator" and "correct horse" not in str(made)

    bad = api.post("/v1/users", headers=admin["h"],
                   json={"username": "x", "email": "x@example.org", "role": "root"})
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_request")
    for body in ({"username": "a\x00b", "email": "a@example.org"},
                 {"username": "ab", "email": "a\x00@example.org"}):
        assert api.post("/v1/users", headers=admin["h"], json=body).status_code == 422
    assert api.post("/v1/users/a%00b/suspend",
                    headers=admin["h"]).json()["code"] == "no_such_user"
    again = api.post("/v1/users", headers=admin["h"],
                     json={"username": name, "email": "other@example.org"})
    assert (again.status_code, again.json()["code"]) == (409, "user_exists")

    suspended = api.post(f"/v1/users/{bob['name']}/suspend", headers=admin["h"])
    assert suspended.status_code == 200 and suspended.json()["account_status"] == "suspended"
    assert api.get("/v1/uploads", headers=bob["h"]).json()["code"] == "account_suspended"
    [row] = [r for r in audit_rows(backend, action="user.suspend", user=admin["name"])
             if r["outcome"] == "ok"]
    assert row["target"] == f"user:{bob['name']}" and row["outcome"] == "ok"
    assert api.post("/v1/users/nobody-at-all/suspend",
                    headers=admin["h"]).json()["code"] == "no_such_user"

    upload_id = add_upload(backend, bob["user_id"])
    assert api.delete(f"/v1/uploads/{upload_id}", headers=admin["h"]).status_code == 204
    [gone] = audit_rows(backend, action="upload.delete", user=admin["name"])
    assert gone["detail"]["owner_user_id"] == bob["user_id"]


def test_the_last_active_admin_stays(backend, api):
    from service import accounts

    first = new_user(backend, "admin")
    # Several admins may exist from other tests: leave only `first` active.
    others = [u["username"] for u in api.get("/v1/users", headers=first["h"]).json()["items"]
              if u["role"] == "admin" and u["username"] != first["name"]
              and u["account_status"] == "active"]
    for name in others:
        db(backend, lambda e, n=name: accounts.set_account_status(e, n, "suspended"))

    r = api.post(f"/v1/users/{first['name']}/suspend", headers=first["h"])
    assert (r.status_code, r.json()["code"]) == (409, "last_admin")
    with pytest.raises(accounts.AccountError) as demote:
        db(backend, lambda e: accounts.set_role(e, first["name"], "operator"))
    assert demote.value.code == "last_admin"
    refused = audit_rows(backend, action="user")
    assert {(r["action"], r["outcome"]) for r in refused
            if r["target"] == f"user:{first['name']}"} >= {("user.suspend", "denied"),
                                                           ("user.role", "denied")}

    second = new_user(backend, "admin")
    db(backend, lambda e: accounts.set_role(e, first["name"], "member"))
    assert db(backend, lambda e: account_rows.get_user(e, first["name"]))["role"] == "member"
    with pytest.raises(accounts.AccountError):
        db(backend, lambda e: accounts.set_role(e, second["name"], "member"))
    with pytest.raises(accounts.AccountError) as unknown:
        db(backend, lambda e: accounts.set_role(e, second["name"], "superuser"))
    assert unknown.value.code == "bad_role"
    db(backend, lambda e: accounts.set_role(e, first["name"], "admin"))  # back for the others


def test_login_and_keys_are_audited(backend, api):
    carol = new_user(backend, password="s3cret-pass")
    wrong = api.post("/v1/keys", auth=(carol["name"], "nope-nope"), json={})
    assert wrong.status_code == 401
    ghost = api.post("/v1/keys", auth=("no-such-person", "whatever1"), json={})
    assert ghost.status_code == 401
    ok = api.post("/v1/keys", auth=(carol["name"], "s3cret-pass"), json={"name": "laptop"})
    assert ok.status_code == 201, ok.text

    logins = audit_rows(backend, action="login")
    mine = [r for r in logins if r["target"] == f"user:{carol['name']}"]
    assert [(r["outcome"], (r["detail"] or {}).get("reason")) for r in mine] == [
        ("ok", None), ("denied", "wrong_password")]
    assert mine[0]["actor"] == f"user:{carol['name']}" and mine[0]["source"] == "127.0.0.1"
    assert any(r["target"] == "user:no-such-person" and r["detail"]["reason"] == "unknown_user"
               for r in logins)
    [key] = audit_rows(backend, action="key.create", user=carol["name"])
    assert key["target"] == f"key:{ok.json()['key_id']}" and key["detail"]["name"] == "laptop"
    assert ok.json()["api_key"] not in str(key)

    revoked = cli(backend, "keys", "revoke", str(ok.json()["key_id"]))
    assert revoked.exit_code == 0, revoked.output
    [row] = audit_rows(backend, action="key.revoke")[:1]
    assert row["target"] == f"key:{ok.json()['key_id']}" and row["actor"].startswith("cli:")
    assert row["source"]  # the host


def test_openapi_names_the_role_of_every_route(api):
    spec = api.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        if not path.startswith("/v1") or "feedback" in path:
            continue
        for method, op in item.items():
            assert op.get("x-required-role") in ("member", "operator", "admin"), (method, path)
            assert "**Role:**" in op["description"]
    for path in ("/v1/users", "/v1/audit"):
        assert spec["paths"][path]["get"]["x-required-role"] == "admin"
        assert "403" in spec["paths"][path]["get"]["responses"]
    assert "403" in spec["paths"]["/v1/uploads/{upload_id}"]["delete"]["responses"]


def test_admin_reads_the_audit_trail_with_filters_and_pages(backend, api):
    admin = new_user(backend, "admin")
    for _ in range(3):
        api.get("/v1/users", headers=new_user(backend)["h"])  # 3 denied accesses
    page = api.get("/v1/audit", params={"action": "access", "limit": 2},
                   headers=admin["h"]).json()
    assert len(page["items"]) == 2 and page["total"] >= 3 and page["next"]
    rest = api.get(page["next"], headers=admin["h"]).json()
    assert rest["offset"] == 2 and rest["items"]
    assert {i["action"] for i in page["items"] + rest["items"]} == {"access"}
    ours = api.get("/v1/audit", params={"user": admin["name"]}, headers=admin["h"]).json()
    assert ours["total"] == 0  # reading the trail is not itself an operation that changes
    future = api.get("/v1/audit", params={"since": "2999-01-01"}, headers=admin["h"]).json()
    assert future["total"] == 0
    assert api.get("/v1/audit", params={"since": "yesterday"},
                   headers=admin["h"]).status_code == 422


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
