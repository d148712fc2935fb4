"""SQLAlchemy tables: the seed's seven, plus the additions of later migrations.

The migrations in ``storage/migrations/versions`` are the source of truth for the live schema;
these definitions mirror them so queries can be written in SQLAlchemy Core.

The CHECK constraints (migration 0010) keep what the seed design implies even for writes that
go around the application: confidences in 0..1, times, sizes and counts >= 0, statuses from
their sets, emails shaped like emails. The value sets live here, once (:data:`UPLOAD_STATUSES`
and the rest); the migration has its own frozen copy, as migrations do.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()

# JSONB on PostgreSQL as the seed says, JSON text elsewhere (SQLite in the embedded default).
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
NOW = sa.text("CURRENT_TIMESTAMP")
TZ = sa.DateTime(timezone=True)

ACCOUNT_STATUSES = ("active", "suspended")
# 0012: what a user may do (storage/accounts.py, api/auth.py); the first is the most powerful.
ROLES = ("admin", "operator", "member")
AUDIT_OUTCOMES = ("ok", "denied", "failed")
# 'deleting' lives only inside the transaction that deletes the upload (storage/removal.py).
UPLOAD_STATUSES = ("queued", "processing", "done", "failed", "deleting")
# 'processing': migration 0009 copied each upload's status into its new stage column.
UPLOAD_STAGES = ("queued", "preparing", "detecting", "aggregating", "done", "failed",
                 "processing")
DOCUMENT_COLLECTIONS = ("detection_metadata", "system_configuration")
EMAIL_SHAPE = "%_@_%._%"  # something@something.something, as a LIKE pattern


def one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL for "column is one of values" (NULL passes, as in every CHECK)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _check(sqltext: str, name: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(sqltext, name=name)


def _verdict(table: str) -> sa.Boolean:
    """A verdict: true (AI), false (real) or NULL (uncertain). Native on PostgreSQL; on
    SQLite an integer, held to 0/1 by a CHECK."""
    return sa.Boolean(create_constraint=True, name=f"ck_{table}_verdict")


def email_matches(email: str) -> bool:
    """What ``ck_users_email_shape`` accepts, in Python: a@b.c (LIKE '%_@_%._%')."""
    at = email.find("@", 1)
    while at != -1:
        if "." in email[at + 2:-1]:
            return True
        at = email.find("@", at + 1)
    return False

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(50), unique=True, nullable=False),
    sa.Column("email", sa.String(100), unique=True, nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("first_name", sa.String(50)),
    sa.Column("last_name", sa.String(50)),
    sa.Column("created_at", TZ, server_default=NOW),
    sa.Column("updated_at", TZ, server_default=NOW),
    sa.Column("last_login", TZ),
    sa.Column("account_status", sa.String(20), server_default="active"),
    sa.Column("profile_image_url", sa.String(255)),
    # Addition (migration 0012).
    sa.Column("role", sa.String(20), nullable=False, server_default="member"),
    _check(f"email LIKE '{EMAIL_SHAPE}'", "ck_users_email_shape"),
    _check(one_of("account_status", ACCOUNT_STATUSES), "ck_users_account_status"),
    _check(one_of("role", ROLES), "ck_users_role"),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("upload_id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.user_id", ondelete="CASCADE")),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("original_file_name", sa.String(255), nullable=False),
    sa.Column("file_path", sa.String(255), nullable=False),
    sa.Column("file_size", sa.BigInteger, nullable=False),
    sa.Column("file_type", sa.String(50), nullable=False),
    sa.Column("mime_type", sa.String(100), nullable=False),
    sa.Column("upload_date", TZ, server_default=NOW),
    sa.Column("is_processed", sa.Boolean, server_default=sa.false()),
    sa.Column("processing_started_at", TZ),
    sa.Column("processing_completed_at", TZ),
    sa.Column("thumbnail_path", sa.String(255)),
    # Additions (migration 0003).
    sa.Column("sha256", sa.String(64)),
    sa.Column("status", sa.String(20), nullable=False, server_default="queued"),
    sa.Column("error", sa.Text),
    sa.Column("delivery_count", sa.Integer, nullable=False, server_default="0"),
    # 0009: the stage the upload is in (queued | preparing | detecting | aggregating | done |
    # failed), when a worker last touched it, and how often the recovery sweep re-sent it.
    sa.Column("stage", sa.String(20)),
    sa.Column("stage_touched_at", TZ),
    sa.Column("recoveries", sa.Integer, nullable=False, server_default="0"),
    # 0016: the caller's own id for the file (POST /v1/uploads), filterable per user.
    sa.Column("client_reference", sa.String(255)),
    sa.Index("ix_uploads_user_client_reference", "user_id", "client_reference"),
    _check("file_size >= 0", "ck_uploads_file_size"),
    _check(one_of("status", UPLOAD_STATUSES), "ck_uploads_status"),
    _check(one_of("stage", UPLOAD_STAGES), "ck_uploads_stage"),
    _check("delivery_count >= 0", "ck_uploads_delivery_count"),
    _check("recoveries >= 0", "ck_uploads_recoveries"),
)

detection_results = sa.Table(
    "detection_results",
    metadata,
    sa.Column("result_id", sa.Integer, primary_key=True),
    sa.Column("upload_id", sa.Integer, sa.ForeignKey("uploads.upload_id", ondelete="CASCADE")),
    sa.Column("is_ai_generated", _verdict("detection_results")),
    sa.Column("confidence_score", sa.Numeric(5, 4), nullable=False),
    sa.Column("processing_time", sa.Numeric(10, 3), nullable=False),
    sa.Column("detection_date", TZ, server_default=NOW),
    sa.Column("algorithm_version", sa.String(50), nullable=False),
    sa.Column("result_summary", sa.Text),
    sa.Column("metadata_id", sa.String(50)),
    _check("confidence_score BETWEEN 0 AND 1", "ck_detection_results_confidence"),
    _check("processing_time >= 0", "ck_detection_results_processing_time"),
)

detection_methods = sa.Table(
    "detection_methods",
    metadata,
    sa.Column("method_id", sa.Integer, primary_key=True),
    sa.Column("method_name", sa.String(100), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("is_active", sa.Boolean, server_default=sa.true()),
    sa.Column("weight", sa.Numeric(3, 2), server_default="1.00"),
    sa.Column("created_at", TZ, server_default=NOW),
    sa.Column("updated_at", TZ, server_default=NOW),
)

method_results = sa.Table(
    "method_results",
    metadata,
    sa.Column("method_result_id", sa.Integer, primary_key=True),
    sa.Column(
        "result_id", sa.Integer, sa.ForeignKey("detection_results.result_id", ondelete="CASCADE")
    ),
    sa.Column(
        "method_id", sa.Integer, sa.ForeignKey("detection_methods.method_id", ondelete="CASCADE")
    ),
    sa.Column("is_ai_generated", _verdict("method_results")),
    sa.Column("confidence_score", sa.Numeric(5, 4), nullable=False),
    sa.Column("processing_time", sa.Numeric(10, 3), nullable=False),
    sa.Column("result_details", JSONType),
    _check("confidence_score BETWEEN 0 AND 1", "ck_method_results_confidence"),
    _check("processing_time >= 0", "ck_method_results_processing_time"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.user_id", ondelete="CASCADE")),
    sa.Column("api_key", sa.String(100), unique=True, nullable=False),
    sa.Column("key_name", sa.String(100), nullable=False),
    sa.Column("created_at", TZ, server_default=NOW),
    sa.Column("expires_at", TZ),
    sa.Column("last_used_at", TZ),
    sa.Column("is_active", sa.Boolean, server_default=sa.true()),
    sa.Column("request_limit", sa.Integer, server_default="1000"),
    sa.Column("requests_made", sa.Integer, server_default="0"),
    # Addition (migration 0005).
    sa.Column("quota_window_start", TZ),
    _check("request_limit >= 0", "ck_api_keys_request_limit"),
    _check("requests_made >= 0", "ck_api_keys_requests_made"),
)

usage_logs = sa.Table(
    "usage_logs",
    metadata,
    sa.Column("log_id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.user_id", ondelete="SET NULL")),
    sa.Column("api_key_id", sa.Integer, sa.ForeignKey("api_keys.key_id", ondelete="SET NULL")),
    sa.Column("request_type", sa.String(50), nullable=False),
    sa.Column("request_path", sa.String(255), nullable=False),
    sa.Column("request_date", TZ, server_default=NOW),
    sa.Column("response_code", sa.Integer, nullable=False),
    sa.Column("processing_time", sa.Numeric(10, 3), nullable=False),
    sa.Column("ip_address", sa.String(45)),
    sa.Column("user_agent", sa.Text),
    _check("processing_time >= 0", "ck_usage_logs_processing_time"),
    _check("response_code BETWEEN 100 AND 599", "ck_usage_logs_response_code"),
)

# Addition (migration 0004): the document store of the embedded default, one row a document.
embedded_documents = sa.Table(
    "embedded_documents",
    metadata,
    sa.Column("doc_id", sa.String(24), primary_key=True),
    sa.Column("collection", sa.String(64), nullable=False),
    sa.Column("unique_key", sa.String(255), nullable=False),
    sa.Column("body", JSONType, nullable=False),
    _check(one_of("collection", DOCUMENT_COLLECTIONS), "ck_embedded_documents_collection"),
)

# Addition (migration 0006): which uploads use which blob (reference counts).
blob_refs = sa.Table(
    "blob_refs",
    metadata,
    sa.Column("upload_id", sa.Integer, sa.ForeignKey("uploads.upload_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("blob_key", sa.String(255), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("created_at", TZ, server_default=NOW),
)

# Addition (migration 0011): an owner's label for an upload (storage/feedback.py), one row
# per (upload, user); verdict and ai_probability are what the model said at that time.
FEEDBACK_LABELS = ("ai", "real")
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("feedback_id", sa.Integer, primary_key=True),
    sa.Column("upload_id", sa.Integer, sa.ForeignKey("uploads.upload_id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.user_id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("label", sa.String(10), nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("verdict", sa.String(10)),
    sa.Column("ai_probability", sa.Numeric(5, 4)),
    sa.Column("created_at", TZ, nullable=False, server_default=NOW),
    sa.Column("updated_at", TZ, nullable=False, server_default=NOW),
    sa.UniqueConstraint("upload_id", "user_id", name="uq_feedback_upload_user"),
    sa.Index("ix_feedback_user_id", "user_id"),
    sa.Index("ix_feedback_updated_at", "updated_at"),
    _check(one_of("label", FEEDBACK_LABELS), "ck_feedback_label"),
    _check(one_of("verdict", ("ai", "real", "uncertain")), "ck_feedback_verdict_word"),
    _check("ai_probability BETWEEN 0 AND 1", "ck_feedback_ai_probability"),
)

# Addition (migration 0015): a method or aggregate task's deliveries per (upload, stage):
# whether one is running, and how many started and never ended (their worker died).
stage_deliveries = sa.Table(
    "stage_deliveries",
    metadata,
    sa.Column("upload_id", sa.Integer, sa.ForeignKey("uploads.upload_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("stage", sa.String(40), primary_key=True),
    sa.Column("deaths", sa.Integer, nullable=False, server_default="0"),
    sa.Column("running", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("started_at", TZ),
    _check("deaths >= 0", "ck_stage_deliveries_deaths"),
)

# Addition (migration 0007): failed logins per subject ((user, client) or client), in a window.
login_failures = sa.Table(
    "login_failures",
    metadata,
    sa.Column("subject", sa.String(200), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("window_start", TZ, nullable=False),
    # 0015: when the last failure was counted (storage/login_throttle.py's growing delays).
    sa.Column("last_failure_at", TZ),
    _check("failures >= 0", "ck_login_failures_failures"),
)

# Addition (migration 0012): the append-only audit trail (storage/audit.py). No foreign keys:
# a row outlives the user and key it names, and a cascade would have to UPDATE it, which the
# database refuses (a trigger on both PostgreSQL and SQLite).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("audit_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("occurred_at", TZ, nullable=False, server_default=NOW),
    sa.Column("actor", sa.String(150), nullable=False),
    sa.Column("user_id", sa.Integer),
    sa.Column("key_id", sa.Integer),
    sa.Column("action", sa.String(50), nullable=False),
    sa.Column("target", sa.String(255)),
    sa.Column("source", sa.String(255)),
    sa.Column("outcome", sa.String(10), nullable=False),
    sa.Column("detail", JSONType),
    sa.Index("ix_audit_log_occurred_at", "occurred_at"),
    sa.Index("ix_audit_log_action", "action"),
    sa.Index("ix_audit_log_actor", "actor"),
    _check(one_of("outcome", AUDIT_OUTCOMES), "ck_audit_log_outcome"),
)

# Additions (migration 0016): webhooks (storage/webhooks.py) and idempotent submits
# (storage/idempotency.py).
WEBHOOK_EVENT_TYPES = ("upload.done", "upload.failed")
DELIVERY_STATUSES = ("pending", "delivered", "failed")
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("webhook_id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.user_id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("events", JSONType, nullable=False),
    sa.Column("secret", sa.String(100), nullable=False),
    sa.Column("previous_secret", sa.String(100)),
    sa.Column("previous_secret_until", TZ),
    sa.Column("api_base", sa.String(500)),
    sa.Column("description", sa.String(200)),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", TZ, nullable=False, server_default=NOW),
    sa.Index("ix_webhooks_user_id", "user_id"),
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("event_id", sa.String(40), primary_key=True),
    sa.Column("event_type", sa.String(30), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.user_id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("upload_id", sa.Integer, nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=NOW),
    sa.Index("ix_webhook_events_upload_id", "upload_id"),
    sa.Index("ix_webhook_events_created_at", "created_at"),
    _check(one_of("event_type", WEBHOOK_EVENT_TYPES), "ck_webhook_events_type"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("delivery_id", sa.Integer, primary_key=True),
    sa.Column("event_id", sa.String(40),
              sa.ForeignKey("webhook_events.event_id", ondelete="CASCADE"), nullable=False),
    sa.Column("webhook_id", sa.Integer,
              sa.ForeignKey("webhooks.webhook_id", ondelete="CASCADE"), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", TZ),
    sa.Column("lease_until", TZ),
    sa.Column("last_attempt_at", TZ),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_at", TZ),
    sa.Column("created_at", TZ, nullable=False, server_default=NOW),
    sa.UniqueConstraint("event_id", "webhook_id", name="uq_webhook_deliveries_event_hook"),
    sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_webhook", "webhook_id", "delivery_id"),
    _check(one_of("status", DELIVERY_STATUSES), "ck_webhook_deliveries_status"),
    _check("attempts >= 0", "ck_webhook_deliveries_attempts"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.key_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("idempotency_key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("response_body", JSONType),
    sa.Column("created_at", TZ, nullable=False, server_default=NOW),
    sa.Index("ix_idempotency_keys_created_at", "created_at"),
)
