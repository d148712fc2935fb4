"""CHECK constraints: the database itself keeps what the seed design implies.

- confidences (detection_results, method_results) in 0..1; processing times (those two and
  usage_logs) >= 0; uploads.file_size, delivery_count, recoveries >= 0; api_keys
  request_limit and requests_made >= 0 (NULL limit: unlimited); login_failures.failures >= 0.
- statuses from their sets: users.account_status, uploads.status, uploads.stage,
  embedded_documents.collection; usage_logs.response_code an HTTP status (100..599).
- users.email shaped like an email: LIKE '%_@_%._%' (the same on PostgreSQL and SQLite).
- the verdicts (is_ai_generated of detection_results and method_results): a native boolean
  on PostgreSQL; on SQLite an integer, so there a CHECK holds it to 0/1.

Existing rows must satisfy them (the upgrade fails otherwise, naming the constraint).
SQLite cannot add a CHECK in place: batch mode copies each table. storage.migrate turns
foreign keys off for that (DROP TABLE of a parent would otherwise cascade to its children)
and checks them before committing; the copy of ``uploads`` loses the expression index
uq_uploads_owner_sha256 (SQLAlchemy cannot reflect it), so it is made again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

import warnings

import sqlalchemy as sa
from alembic import op
from sqlalchemy.exc import SAWarning

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# Frozen here (storage/models.py has the live copy): a migration never changes afterwards.
CHECKS: dict[str, list[tuple[str, str]]] = {
    "users": [
        ("ck_users_email_shape", "email LIKE '%_@_%._%'"),
        ("ck_users_account_status", _one_of("account_status", ("active", "suspended"))),
    ],
    "uploads": [
        ("ck_uploads_file_size", "file_size >= 0"),
        ("ck_uploads_status", _one_of(
            "status", ("queued", "processing", "done", "failed", "deleting"))),
        ("ck_uploads_stage", _one_of(
            "stage", ("queued", "preparing", "detecting", "aggregating", "done", "failed",
                      "processing"))),
        ("ck_uploads_delivery_count", "delivery_count >= 0"),
        ("ck_uploads_recoveries", "recoveries >= 0"),
    ],
    "detection_results": [
        ("ck_detection_results_confidence", "confidence_score BETWEEN 0 AND 1"),
        ("ck_detection_results_processing_time", "processing_time >= 0"),
    ],
    "method_results": [
        ("ck_method_results_confidence", "confidence_score BETWEEN 0 AND 1"),
        ("ck_method_results_processing_time", "processing_time >= 0"),
    ],
    "api_keys": [
        ("ck_api_keys_request_limit", "request_limit >= 0"),
        ("ck_api_keys_requests_made", "requests_made >= 0"),
    ],
    "usage_logs": [
        ("ck_usage_logs_processing_time", "processing_time >= 0"),
        ("ck_usage_logs_response_code", "response_code BETWEEN 100 AND 599"),
    ],
    "embedded_documents": [
        ("ck_embedded_documents_collection", _one_of(
            "collection", ("detection_metadata", "system_configuration"))),
    ],
    "login_failures": [
        ("ck_login_failures_failures", "failures >= 0"),
    ],
}
# Only where booleans are integers (SQLite); PostgreSQL's boolean type is the check there.
SQLITE_ONLY: dict[str, list[tuple[str, str]]] = {
    "detection_results": [("ck_detection_results_verdict", "is_ai_generated IN (0, 1)")],
    "method_results": [("ck_method_results_verdict", "is_ai_generated IN (0, 1)")],
}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _checks() -> dict[str, list[tuple[str, str]]]:
    if not _sqlite():
        return CHECKS
    return {t: CHECKS[t] + SQLITE_ONLY.get(t, []) for t in CHECKS}


def _require_foreign_keys_off() -> None:
    if _sqlite() and op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "migration 0010 copies tables on SQLite: run it through storage.migrate (which "
            "turns foreign keys off meanwhile), or DROP TABLE would cascade to child rows")


def _owner_sha256_index() -> None:
    if _sqlite():
        op.execute("CREATE UNIQUE INDEX IF NOT EXISTS uq_uploads_owner_sha256 "
                   "ON uploads (COALESCE(user_id, 0), sha256)")


def upgrade() -> None:
    _require_foreign_keys_off()
    with warnings.catch_warnings():
        # "Skipped unsupported reflection of expression-based index": made again below.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
        for table, checks in _checks().items():
            with op.batch_alter_table(table) as batch:
                for name, sqltext in checks:
                    batch.create_check_constraint(name, sa.text(sqltext))
    _owner_sha256_index()


def downgrade() -> None:
    _require_foreign_keys_off()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
        for table, checks in reversed(_checks().items()):
            with op.batch_alter_table(table) as batch:
                for name, _ in reversed(checks):
                    batch.drop_constraint(name, type_="check")
    _owner_sha256_index()
