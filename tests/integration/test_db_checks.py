"""Validation at the database too: rows written AROUND the application (raw SQL through the
engine) meet the CHECK constraints of migration 0010 on PostgreSQL and on SQLite; good rows at
every edge still pass. (The documents' validators: test_document_checks.)"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from service import accounts
from storage import migrate
from storage.db import create_engine
from tests.conftest import _pg_admin, run

pytestmark = pytest.mark.integration


# The rows every case starts from; each gets id 1 (fresh SQLite file, or PostgreSQL tables
# truncated with their sequences restarted).
BASE = [
    "INSERT INTO users (username, email, password_hash) "
    "VALUES ('alice', 'alice@example.org', 'h')",
    "INSERT INTO uploads (user_id, file_name, original_file_name, file_path, "
    "file_size, file_type, mime_type, status, stage) "
    "VALUES (1, 'a.jpg', 'a.jpg', 'k/a', 10, 'jpg', 'image/jpeg', 'done', 'done')",
    "INSERT INTO detection_results (upload_id, is_ai_generated, confidence_score, "
    "processing_time, algorithm_version) VALUES (1, true, 0.9, 1.5, 'v1')",
    "INSERT INTO api_keys (user_id, api_key, key_name, request_limit, requests_made) "
    "VALUES (1, 'p:h', 'k', 10, 0)",
]

# (constraint that must refuse it, raw SQL that goes around the application)
BAD = [
    ("ck_users_email_shape", "INSERT INTO users (username, email, password_hash) "
                             "VALUES ('bob', 'not-an-email', 'h')"),
    ("ck_users_email_shape", "UPDATE users SET email = 'alice@localhost' WHERE user_id = 1"),
    ("ck_users_email_shape", "UPDATE users SET email = '@example.org' WHERE user_id = 1"),
    ("ck_users_account_status", "UPDATE users SET account_status = 'banned' WHERE user_id = 1"),
    ("ck_uploads_file_size", "UPDATE uploads SET file_size = -1 WHERE upload_id = 1"),
    ("ck_uploads_status", "UPDATE uploads SET status = 'finished' WHERE upload_id = 1"),
    ("ck_uploads_stage", "UPDATE uploads SET stage = 'thinking' WHERE upload_id = 1"),
    ("ck_uploads_delivery_count", "UPDATE uploads SET delivery_count = -1 WHERE upload_id = 1"),
    ("ck_uploads_recoveries", "UPDATE uploads SET recoveries = -2 WHERE upload_id = 1"),
    ("ck_detection_results_confidence",
     "UPDATE detection_results SET confidence_score = 1.5 WHERE result_id = 1"),
    ("ck_detection_results_confidence",
     "UPDATE detection_results SET confidence_score = -0.0001 WHERE result_id = 1"),
    ("ck_detection_results_processing_time",
     "UPDATE detection_results SET processing_time = -0.001 WHERE result_id = 1"),
    ("ck_method_results_confidence",
     "INSERT INTO method_results (result_id, method_id, confidence_score, processing_time) "
     "VALUES (1, 1, 2, 0.1)"),
    ("ck_method_results_processing_time",
     "INSERT INTO method_results (result_id, method_id, confidence_score, processing_time) "
     "VALUES (1, 1, 0.5, -1)"),
    ("ck_api_keys_request_limit", "UPDATE api_keys SET request_limit = -1 WHERE key_id = 1"),
    ("ck_api_keys_requests_made", "UPDATE api_keys SET requests_made = -1 WHERE key_id = 1"),
    ("ck_usage_logs_processing_time",
     "INSERT INTO usage_logs (request_type, request_path, response_code, processing_time) "
     "VALUES ('GET', '/', 200, -0.5)"),
    ("ck_usage_logs_response_code",
     "INSERT INTO usage_logs (request_type, request_path, response_code, processing_time) "
     "VALUES ('GET', '/', 42, 0.5)"),
    ("ck_embedded_documents_collection",
     "INSERT INTO embedded_documents (doc_id, collection, unique_key, body) "
     "VALUES ('d1', 'bogus', '1', '{}')"),
    ("ck_login_failures_failures",
     "INSERT INTO login_failures (subject, failures, window_start) "
     "VALUES ('x', -1, CURRENT_TIMESTAMP)"),
]

# The edges of every range, and every value of every set the code writes: accepted.
GOOD = [
    "INSERT INTO users (username, email, password_hash) VALUES ('bob', 'b@x.io', 'h')",
    "UPDATE users SET account_status = 'suspended' WHERE user_id = 1",
    "UPDATE users SET account_status = 'active' WHERE user_id = 1",
    "UPDATE uploads SET file_size = 0, delivery_count = 0, recoveries = 0 WHERE upload_id = 1",
    "UPDATE uploads SET status = 'queued', stage = 'queued' WHERE upload_id = 1",
    "UPDATE uploads SET status = 'processing', stage = 'preparing' WHERE upload_id = 1",
    "UPDATE uploads SET stage = 'detecting' WHERE upload_id = 1",
    "UPDATE uploads SET stage = 'aggregating' WHERE upload_id = 1",
    "UPDATE uploads SET stage = 'processing' WHERE upload_id = 1",  # 0009's copy of status
    "UPDATE uploads SET status = 'failed', stage = 'failed' WHERE upload_id = 1",
    "UPDATE uploads SET status = 'deleting' WHERE upload_id = 1",
    "UPDATE uploads SET status = 'done', stage = 'done' WHERE upload_id = 1",
    "UPDATE uploads SET stage = NULL WHERE upload_id = 1",
    "UPDATE detection_results SET confidence_score = 0, processing_time = 0 WHERE result_id = 1",
    "UPDATE detection_results SET confidence_score = 1, is_ai_generated = NULL "
    "WHERE result_id = 1",
    "INSERT INTO method_results (result_id, method_id, is_ai_generated, confidence_score, "
    "processing_time) VALUES (1, 1, false, 0.5, 0.1)",
    "UPDATE api_keys SET request_limit = NULL, requests_made = 0 WHERE key_id = 1",
    "INSERT INTO usage_logs (request_type, request_path, response_code, processing_time) "
    "VALUES ('GET', '/', 599, 0)",
    "INSERT INTO embedded_documents (doc_id, collection, unique_key, body) "
    "VALUES ('d2', 'system_configuration', 'c', '{}')",
    "INSERT INTO login_failures (subject, failures, window_start) "
    "VALUES ('y', 0, CURRENT_TIMESTAMP)",
]


@pytest.fixture(scope="module")
def checks_pg_url(pg_url):
    """A database of its own (the session's is shared with other test files)."""
    name = pg_url.rsplit("/", 1)[1] + "_checks"
    run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    yield url.replace("postgresql://", "postgresql+asyncpg://")
    run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    """``go(body)``: runs ``await body(engine)`` on a database migrated to head holding BASE;
    SQLite fresh per test, PostgreSQL emptied and refilled."""
    if request.param == "sqlite":
        url, fresh = f"sqlite+aiosqlite:///{tmp_path / 'checks.db'}", True
    else:
        url, fresh = request.getfixturevalue("checks_pg_url"), False

    def go(body):
        async def wrapped():
            engine = create_engine(url)
            try:
                await migrate.upgrade(engine)
                async with engine.begin() as conn:
                    if not fresh:
                        await conn.execute(sa.text(
                            "TRUNCATE users, uploads, detection_results, method_results, "
                            "api_keys, usage_logs, embedded_documents, login_failures "
                            "RESTART IDENTITY CASCADE"))
                    for sql in BASE:
                        await conn.execute(sa.text(sql))
                return await body(engine)
            finally:
                await engine.dispose()

        return run(wrapped())

    go.kind = request.param
    return go


async def _refused(engine, sql: str) -> str:
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(sql))
    except IntegrityError as exc:
        return str(exc.orig)
    return ""


@pytest.mark.parametrize(("constraint", "sql"), BAD, ids=[f"{c}-{i}" for i, (c, _) in
                                                             enumerate(BAD)])
def test_database_refuses_rows_that_break_a_check(db, constraint, sql):
    message = db(lambda engine: _refused(engine, sql))
    assert message, f"{db.kind} accepted: {sql}"
    assert constraint in message


def test_good_rows_at_every_edge_are_accepted(db):
    async def body(engine):
        for sql in GOOD:
            async with engine.begin() as conn:
                await conn.execute(sa.text(sql))

    db(body)


def test_a_verdict_is_true_false_or_null(db):
    """PostgreSQL's boolean type refuses anything else; SQLite stores integers, and the CHECK
    ck_detection_results_verdict holds them to 0/1."""
    async def refused(engine, sql):
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text(sql))
        except DBAPIError as exc:  # IntegrityError on SQLite, a type error on PostgreSQL
            return str(exc.orig)
        return ""

    async def body(engine):
        return (await refused(engine, "UPDATE detection_results SET is_ai_generated = 2"),
                await refused(engine, "INSERT INTO method_results (result_id, method_id, "
                                      "is_ai_generated, confidence_score, processing_time) "
                                      "VALUES (1, 1, 7, 0.5, 0.1)"))

    results, methods = db(body)
    assert results and methods
    if db.kind == "sqlite":
        assert "ck_detection_results_verdict" in results
        assert "ck_method_results_verdict" in methods


def test_accounts_say_why_before_the_database_does(db):
    """The application checks the same shapes first, so a user sees a reason, not an
    IntegrityError (and not the "user exists" an IntegrityError used to mean)."""
    async def body(engine):
        with pytest.raises(accounts.AccountError) as bad_email:
            await accounts.create_user(engine, username="carol", email="carol@home",
                                       password=None)
        with pytest.raises(accounts.AccountError) as bad_status:
            await accounts.set_account_status(engine, "alice", "banned")
        await accounts.create_user(engine, username="carol", email="carol@home.net",
                                   password=None)
        return bad_email.value.code, bad_status.value.code

    assert db(body) == ("bad_email", "bad_status")


def test_sqlite_migration_keeps_child_rows_of_copied_tables(tmp_path):
    """0010 copies parent tables on SQLite; with foreign keys on, dropping the old copy would
    cascade to children. storage.migrate turns them off for the migration."""
    async def body():
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'keep.db'}")
        counts = {}
        try:
            await migrate.upgrade(engine, "0009")
            async with engine.begin() as conn:
                for sql in BASE:
                    await conn.execute(sa.text(sql))
                await conn.execute(sa.text(
                    "INSERT INTO method_results (result_id, method_id, confidence_score, "
                    "processing_time) VALUES (1, 1, 0.5, 0.1)"))
                await conn.execute(sa.text(
                    "INSERT INTO blob_refs (upload_id, blob_key, kind) VALUES (1, 'k/a', 'x')"))
            tables = ("users", "uploads", "detection_results", "method_results", "api_keys",
                      "blob_refs")
            for step in ("up", "down", "up"):
                await (migrate.upgrade(engine) if step == "up"
                       else migrate.downgrade(engine, "0009"))
                async with engine.connect() as conn:
                    counts[step] = [(await conn.execute(
                        sa.select(sa.func.count()).select_from(sa.table(t)))).scalar()
                        for t in tables]
                    index = (await conn.execute(sa.text(
                        "SELECT count(*) FROM sqlite_master "
                        "WHERE name = 'uq_uploads_owner_sha256'"))).scalar()
                    fks = (await conn.execute(sa.text("PRAGMA foreign_keys"))).scalar()
                    assert (index, fks) == (1, 1), step
            return counts
        finally:
            await engine.dispose()

    counts = run(body())
    assert counts == {"up": [1] * 6, "down": [1] * 6}


def test_models_declare_the_checks_the_migration_made(db):
    """storage/models.py mirrors migration 0010: the same CHECK names on every table (the
    verdict checks only where booleans are integers)."""
    from storage.models import metadata

    declared = {(t.name, c.name) for t in metadata.tables.values() for c in t.constraints
                if isinstance(c, sa.CheckConstraint)}

    async def body(engine):
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync: {
                (t, c["name"]) for t in sa.inspect(sync).get_table_names()
                for c in sa.inspect(sync).get_check_constraints(t)})

    found = db(body)
    if db.kind == "postgres":
        declared = {(t, n) for t, n in declared if not n.endswith("_verdict")}
    assert found == declared
    made_by_0010 = {name for name, _ in BAD}  # all 17, each refused above
    if db.kind == "sqlite":
        made_by_0010 |= {"ck_detection_results_verdict", "ck_method_results_verdict"}
    assert len({name for name, _ in BAD}) == 17
    assert made_by_0010 <= {name for _, name in found}  # later migrations may add more
