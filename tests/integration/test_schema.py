"""The live PostgreSQL schema after ``upgrade``: every seed column, index and foreign key;
upgrade twice, downgrade, and the same migrations on SQLite. (The live constraints' behaviour:
test_schema_constraints.)"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from storage import migrate
from storage.db import create_engine
from tests.conftest import run
from tests.integration.conftest import _engine

pytestmark = pytest.mark.integration


SEED_COLUMNS = {
    "users": [
        ("user_id", "INTEGER", None, False, "nextval"),
        ("username", "VARCHAR", 50, False, None),
        ("email", "VARCHAR", 100, False, None),
        ("password_hash", "VARCHAR", 255, False, None),
        ("first_name", "VARCHAR", 50, True, None),
        ("last_name", "VARCHAR", 50, True, None),
        ("created_at", "TIMESTAMP", None, True, "CURRENT_TIMESTAMP"),
        ("updated_at", "TIMESTAMP", None, True, "CURRENT_TIMESTAMP"),
        ("last_login", "TIMESTAMP", None, True, None),
        ("account_status", "VARCHAR", 20, True, "'active'"),
        ("profile_image_url", "VARCHAR", 255, True, None),
    ],
    "uploads": [
        ("upload_id", "INTEGER", None, False, "nextval"),
        ("user_id", "INTEGER", None, True, None),
        ("file_name", "VARCHAR", 255, False, None),
        ("original_file_name", "VARCHAR", 255, False, None),
        ("file_path", "VARCHAR", 255, False, None),
        ("file_size", "BIGINT", None, False, None),
        ("file_type", "VARCHAR", 50, False, None),
        ("mime_type", "VARCHAR", 100, False, None),
        ("upload_date", "TIMESTAMP", None, True, "CURRENT_TIMESTAMP"),
        ("is_processed", "BOOLEAN", None, True, "false"),
        ("processing_started_at", "TIMESTAMP", None, True, None),
        ("processing_completed_at", "TIMESTAMP", None, True, None),
        ("thumbnail_path", "VARCHAR", 255, True, None),
    ],
    "detection_results": [
        ("result_id", "INTEGER", None, False, "nextval"),
        ("upload_id", "INTEGER", None, True, None),
        ("is_ai_generated", "BOOLEAN", None, True, None),
        ("confidence_score", "NUMERIC", (5, 4), False, None),
        ("processing_time", "NUMERIC", (10, 3), False, None),
        ("detection_date", "TIMESTAMP", None, True, "CURRENT_TIMESTAMP"),
        ("algorithm_version", "VARCHAR", 50, False, None),
        ("result_summary", "TEXT", None, True, None),
        ("metadata_id", "VARCHAR", 50, True, None),
    ],
    "detection_methods": [
        ("method_id", "INTEGER", None, False, "nextval"),
        ("method_name", "VARCHAR", 100, False, None),
        ("description", "TEXT", None, True, None),
        ("is_active", "BOOLEAN", None, True, "true"),
        ("weight", "NUMERIC", (3, 2), True, "1.00"),
        ("created_at", "TIMESTAMP", None, True, "CURRENT_TIMESTAMP"),
        ("updated_at", "TIMESTAMP", None, True, "CURRENT_TIMESTAMP"),
    ],
    "method_results": [
        ("method_result_id", "INTEGER", None, False, "nextval"),
        ("result_id", "INTEGER", None, True, None),
        ("method_id", "INTEGER", None, True, None),
        ("is_ai_generated", "BOOLEAN", None, True, None),
        ("confidence_score", "NUMERIC", (5, 4), False, None),
        ("processing_time", "NUMERIC", (10, 3), False, None),
        ("result_details", "JSONB", None, True, None),
    ],
    "api_keys": [
        ("key_id", "INTEGER", None, False, "nextval"),
        ("user_id", "INTEGER", None, True, None),
        ("api_key", "VARCHAR", 100, False, None),
        ("key_name", "VARCHAR", 100, False, None),
        ("created_at", "TIMESTAMP", None, True, "CURRENT_TIMESTAMP"),
        ("expires_at", "TIMESTAMP", None, True, None),
        ("last_used_at", "TIMESTAMP", None, True, None),
        ("is_active", "BOOLEAN", None, True, "true"),
        ("request_limit", "INTEGER", None, True, "1000"),
        ("requests_made", "INTEGER", None, True, "0"),
    ],
    "usage_logs": [
        ("log_id", "INTEGER", None, False, "nextval"),
        ("user_id", "INTEGER", None, True, None),
        ("api_key_id", "INTEGER", None, True, None),
        ("request_type", "VARCHAR", 50, False, None),
        ("request_path", "VARCHAR", 255, False, None),
        ("request_date", "TIMESTAMP", None, True, "CURRENT_TIMESTAMP"),
        ("response_code", "INTEGER", None, False, None),
        ("processing_time", "NUMERIC", (10, 3), False, None),
        ("ip_address", "VARCHAR", 45, True, None),
        ("user_agent", "TEXT", None, True, None),
    ],
}

SEED_INDEXES = {
    "idx_users_email": ("users", ["email"]),
    "idx_users_username": ("users", ["username"]),
    "idx_uploads_user_id": ("uploads", ["user_id"]),
    "idx_uploads_upload_date": ("uploads", ["upload_date"]),
    "idx_uploads_is_processed": ("uploads", ["is_processed"]),
    "idx_detection_results_upload_id": ("detection_results", ["upload_id"]),
    "idx_detection_results_is_ai_generated": ("detection_results", ["is_ai_generated"]),
    "idx_detection_results_confidence_score": ("detection_results", ["confidence_score"]),
    "idx_method_results_result_id": ("method_results", ["result_id"]),
    "idx_method_results_method_id": ("method_results", ["method_id"]),
    "idx_api_keys_user_id": ("api_keys", ["user_id"]),
    "idx_api_keys_api_key": ("api_keys", ["api_key"]),
    "idx_usage_logs_user_id": ("usage_logs", ["user_id"]),
    "idx_usage_logs_request_date": ("usage_logs", ["request_date"]),
    "idx_usage_logs_api_key_id": ("usage_logs", ["api_key_id"]),
}

SEED_FOREIGN_KEYS = {
    ("uploads", "user_id"): ("users", "user_id", "CASCADE"),
    ("detection_results", "upload_id"): ("uploads", "upload_id", "CASCADE"),
    ("method_results", "result_id"): ("detection_results", "result_id", "CASCADE"),
    ("method_results", "method_id"): ("detection_methods", "method_id", "CASCADE"),
    ("api_keys", "user_id"): ("users", "user_id", "CASCADE"),
    ("usage_logs", "user_id"): ("users", "user_id", "SET NULL"),
    ("usage_logs", "api_key_id"): ("api_keys", "key_id", "SET NULL"),
}


def _reflect(url):
    async def go():
        engine = _engine(url)
        try:
            async with engine.connect() as conn:
                def inspect(sync_conn):
                    insp = sa.inspect(sync_conn)
                    return {
                        t: {
                            "columns": insp.get_columns(t),
                            "indexes": insp.get_indexes(t),
                            "fks": insp.get_foreign_keys(t),
                            "uniques": insp.get_unique_constraints(t),
                        }
                        for t in insp.get_table_names()
                    }
                return await conn.run_sync(inspect)
        finally:
            await engine.dispose()

    return run(go())


@pytest.fixture(scope="module")
def reflected(migrated_pg_url):
    return _reflect(migrated_pg_url)


def test_every_seed_column_has_its_type_nullability_and_default(reflected):
    checked = 0
    for table, columns in SEED_COLUMNS.items():
        live = {c["name"]: c for c in reflected[table]["columns"]}
        for name, type_name, size, nullable, default in columns:
            col = live[name]
            t = col["type"]
            assert type(t).__name__.upper().startswith(type_name), (table, name, t)
            if type_name == "VARCHAR":
                assert t.length == size, (table, name)
            if type_name == "NUMERIC":
                assert (t.precision, t.scale) == size, (table, name)
            if type_name == "TIMESTAMP":
                assert t.timezone is True, (table, name)
            assert col["nullable"] is nullable, (table, name)
            if default is None:
                assert col["default"] is None, (table, name, col["default"])
            else:
                assert default.lower() in str(col["default"]).lower(), (table, name)
            checked += 1
    assert checked == 67


def test_every_seed_index_exists_on_its_column(reflected):
    live = {
        ix["name"]: (table, ix["column_names"])
        for table, info in reflected.items()
        for ix in info["indexes"]
    }
    for name, spec in SEED_INDEXES.items():
        assert live.get(name) == spec, name
    assert len(SEED_INDEXES) == 15


def test_seed_unique_constraints(reflected):
    def uniques(table):
        return {tuple(u["column_names"]) for u in reflected[table]["uniques"]}

    assert {("username",), ("email",)} <= uniques("users")
    assert ("api_key",) in uniques("api_keys")


def test_every_seed_foreign_key_with_its_on_delete_rule(reflected):
    live = {}
    for table, info in reflected.items():
        for fk in info["fks"]:
            (col,) = fk["constrained_columns"]
            (ref_col,) = fk["referred_columns"]
            live[(table, col)] = (fk["referred_table"], ref_col, fk["options"].get("ondelete"))
    assert {k: live[k] for k in SEED_FOREIGN_KEYS} == SEED_FOREIGN_KEYS
    assert len(SEED_FOREIGN_KEYS) == 7


def test_detection_methods_seeded_with_weights(migrated_pg_url):
    async def go():
        engine = _engine(migrated_pg_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    sa.text("SELECT method_name, weight, is_active FROM detection_methods")
                )
                return {r.method_name: (float(r.weight), r.is_active) for r in rows}
        finally:
            await engine.dispose()

    methods = run(go())
    assert set(methods) == {"exif", "prnu", "ela", "texture", "model"}
    # Fitted weights (migration 0008): ≥ 0, within NUMERIC(3,2); the model carries the vote.
    assert all(0 <= w <= 9.99 and active for w, active in methods.values())
    assert methods["model"][0] > 0


def test_upgrade_twice_changes_nothing_and_downgrade_goes_back(pg_url):
    # A database of its own so the other tests' schema stays put.
    import asyncpg  # noqa: F401 - the driver must be importable

    async def go():
        from tests.conftest import _pg_admin

        name = pg_url.rsplit("/", 1)[1] + "_updown"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        url = pg_url.rsplit("/", 1)[0] + "/" + name
        engine = _engine(url)
        try:
            await migrate.upgrade(engine)
            first = await migrate.current_revision(engine)
            await migrate.upgrade(engine)
            second = await migrate.current_revision(engine)
            async with engine.connect() as conn:
                methods = (
                    await conn.execute(sa.text("SELECT count(*) FROM detection_methods"))
                ).scalar_one()
            await migrate.downgrade(engine, "base")
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            return first, second, methods, tables
        finally:
            await engine.dispose()
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    first, second, methods, tables = run(go())
    assert first == second == migrate.head_revision()
    assert methods == 5
    assert set(tables) <= {"alembic_version"}


def test_same_migrations_run_on_sqlite(tmp_path):
    async def go():
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
        try:
            await migrate.upgrade(engine)
            async with engine.connect() as conn:
                names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
                indexes = await conn.run_sync(
                    lambda c: {ix["name"] for t in SEED_COLUMNS
                               for ix in sa.inspect(c).get_indexes(t)}
                )
            await migrate.downgrade(engine, "base")
            return set(names), indexes
        finally:
            await engine.dispose()

    names, indexes = run(go())
    assert set(SEED_COLUMNS) <= names
    assert set(SEED_INDEXES) <= indexes
