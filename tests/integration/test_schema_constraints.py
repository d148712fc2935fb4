"""The live PostgreSQL constraints at work, each test in a rolled-back transaction: cascades,
SET NULL, unique names, one result per upload, one upload per content and owner."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from tests.conftest import run
from tests.integration.conftest import _engine

pytestmark = pytest.mark.integration


# --- behaviour of the live constraints, each test in a rolled-back transaction -------------


def _in_rollback(url, body):
    async def go():
        engine = _engine(url)
        try:
            async with engine.connect() as conn:
                trans = await conn.begin()
                try:
                    return await body(conn)
                finally:
                    await trans.rollback()
        finally:
            await engine.dispose()

    return run(go())


async def _user(conn, name="alice"):
    return (
        await conn.execute(
            sa.text(
                "INSERT INTO users (username, email, password_hash) "
                "VALUES (:u, :e, 'x') RETURNING user_id"
            ),
            {"u": name, "e": f"{name}@example.org"},
        )
    ).scalar_one()


async def _upload(conn, user_id, sha="a" * 64):
    return (
        await conn.execute(
            sa.text(
                "INSERT INTO uploads (user_id, file_name, original_file_name, file_path, "
                "file_size, file_type, mime_type, sha256) "
                "VALUES (:u, 'f.jpg', 'f.jpg', 'ab/cd/f', 10, 'jpeg', 'image/jpeg', :s) "
                "RETURNING upload_id"
            ),
            {"u": user_id, "s": sha},
        )
    ).scalar_one()


def test_deleting_a_user_cascades_to_uploads_results_and_method_results(migrated_pg_url):
    async def body(conn):
        uid = await _user(conn)
        upload = await _upload(conn, uid)
        result = (
            await conn.execute(
                sa.text(
                    "INSERT INTO detection_results (upload_id, confidence_score, "
                    "processing_time, algorithm_version) VALUES (:u, 0.9, 1.5, 'v') "
                    "RETURNING result_id"
                ),
                {"u": upload},
            )
        ).scalar_one()
        await conn.execute(
            sa.text(
                "INSERT INTO method_results (result_id, method_id, confidence_score, "
                "processing_time, result_details) SELECT :r, method_id, 0.5, 0.1, "
                "'{\"a\": {\"b\": 1}}' FROM detection_methods WHERE method_name = 'ela'"
            ),
            {"r": result},
        )
        await conn.execute(sa.text("DELETE FROM users WHERE user_id = :u"), {"u": uid})
        counts = {}
        for table in ("uploads", "detection_results", "method_results"):
            counts[table] = (
                await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))  # noqa: S608
            ).scalar_one()
        return counts

    assert _in_rollback(migrated_pg_url, body) == {
        "uploads": 0, "detection_results": 0, "method_results": 0,
    }


def test_deleting_a_user_or_key_sets_usage_logs_null(migrated_pg_url):
    async def body(conn):
        uid = await _user(conn)
        key = (
            await conn.execute(
                sa.text(
                    "INSERT INTO api_keys (user_id, api_key, key_name) "
                    "VALUES (:u, 'k1', 'ci') RETURNING key_id"
                ),
                {"u": uid},
            )
        ).scalar_one()
        log = (
            await conn.execute(
                sa.text(
                    "INSERT INTO usage_logs (user_id, api_key_id, request_type, request_path, "
                    "response_code, processing_time) VALUES (:u, :k, 'GET', '/v1', 200, 0.01) "
                    "RETURNING log_id"
                ),
                {"u": uid, "k": key},
            )
        ).scalar_one()
        await conn.execute(sa.text("DELETE FROM api_keys WHERE key_id = :k"), {"k": key})
        after_key = (
            await conn.execute(
                sa.text("SELECT user_id, api_key_id FROM usage_logs WHERE log_id = :l"),
                {"l": log},
            )
        ).one()
        await conn.execute(sa.text("DELETE FROM users WHERE user_id = :u"), {"u": uid})
        after_user = (
            await conn.execute(
                sa.text("SELECT user_id, api_key_id FROM usage_logs WHERE log_id = :l"),
                {"l": log},
            )
        ).one()
        return tuple(after_key), tuple(after_user)

    (key_gone, user_gone) = _in_rollback(migrated_pg_url, body)
    assert key_gone[1] is None and key_gone[0] is not None
    assert user_gone == (None, None)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO users (username, email, password_hash) VALUES ('alice', 'other@x', 'x')",
        "INSERT INTO users (username, email, password_hash) "
        "VALUES ('bob', 'alice@example.org', 'x')",
    ],
)
def test_unique_username_and_email(migrated_pg_url, statement):
    async def body(conn):
        await _user(conn)
        with pytest.raises(IntegrityError):
            await conn.execute(sa.text(statement))
        return True

    assert _in_rollback(migrated_pg_url, body)


def test_one_result_per_upload_and_one_row_per_method(migrated_pg_url):
    async def body(conn):
        upload = await _upload(conn, await _user(conn))
        insert_result = sa.text(
            "INSERT INTO detection_results (upload_id, confidence_score, processing_time, "
            "algorithm_version) VALUES (:u, 0.5, 1, 'v') RETURNING result_id"
        )
        result = (await conn.execute(insert_result, {"u": upload})).scalar_one()
        nested = await conn.begin_nested()
        with pytest.raises(IntegrityError):
            await conn.execute(insert_result, {"u": upload})
        await nested.rollback()
        insert_method = sa.text(
            "INSERT INTO method_results (result_id, method_id, confidence_score, "
            "processing_time) SELECT :r, method_id, 0.5, 0.1 FROM detection_methods "
            "WHERE method_name = 'prnu'"
        )
        await conn.execute(insert_method, {"r": result})
        with pytest.raises(IntegrityError):
            await conn.execute(insert_method, {"r": result})
        return True

    assert _in_rollback(migrated_pg_url, body)


def test_same_content_for_same_owner_is_rejected(migrated_pg_url):
    async def body(conn):
        uid = await _user(conn)
        await _upload(conn, uid, sha="b" * 64)
        await _upload(conn, None, sha="b" * 64)  # another owner: allowed
        with pytest.raises(IntegrityError):
            await _upload(conn, uid, sha="b" * 64)
        return True

    assert _in_rollback(migrated_pg_url, body)
