"""Issue 15, item 1: roles (admin, operator, member) enforced by the API, on real PostgreSQL
and on SQLite; what each role may read and change, and the audit rows its requests leave."""

from __future__ import annotations

import uuid

import pytest

from storage import accounts as account_rows
from tests.integration.roles_audit.conftest import add_upload, audit_rows, cli, db, new_user

pytestmark = pytest.mark.integration


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
