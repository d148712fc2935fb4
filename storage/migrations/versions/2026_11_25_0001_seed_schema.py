"""The seed's seven tables and fifteen indexes, exactly as the design document gives them.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NOW = sa.text("CURRENT_TIMESTAMP")
TZ = sa.DateTime(timezone=True)

SEED_INDEXES = [
    ("idx_users_email", "users", "email"),
    ("idx_users_username", "users", "username"),
    ("idx_uploads_user_id", "uploads", "user_id"),
    ("idx_uploads_upload_date", "uploads", "upload_date"),
    ("idx_uploads_is_processed", "uploads", "is_processed"),
    ("idx_detection_results_upload_id", "detection_results", "upload_id"),
    ("idx_detection_results_is_ai_generated", "detection_results", "is_ai_generated"),
    ("idx_detection_results_confidence_score", "detection_results", "confidence_score"),
    ("idx_method_results_result_id", "method_results", "result_id"),
    ("idx_method_results_method_id", "method_results", "method_id"),
    ("idx_api_keys_user_id", "api_keys", "user_id"),
    ("idx_api_keys_api_key", "api_keys", "api_key"),
    ("idx_usage_logs_user_id", "usage_logs", "user_id"),
    ("idx_usage_logs_request_date", "usage_logs", "request_date"),
    ("idx_usage_logs_api_key_id", "usage_logs", "api_key_id"),
]


def upgrade() -> None:
    op.create_table(
        "users",
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
    )
    op.create_table(
        "uploads",
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
    )
    op.create_table(
        "detection_results",
        sa.Column("result_id", sa.Integer, primary_key=True),
        sa.Column(
            "upload_id", sa.Integer, sa.ForeignKey("uploads.upload_id", ondelete="CASCADE")
        ),
        sa.Column("is_ai_generated", sa.Boolean),
        sa.Column("confidence_score", sa.Numeric(5, 4), nullable=False),
        sa.Column("processing_time", sa.Numeric(10, 3), nullable=False),
        sa.Column("detection_date", TZ, server_default=NOW),
        sa.Column("algorithm_version", sa.String(50), nullable=False),
        sa.Column("result_summary", sa.Text),
        sa.Column("metadata_id", sa.String(50)),
    )
    op.create_table(
        "detection_methods",
        sa.Column("method_id", sa.Integer, primary_key=True),
        sa.Column("method_name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("is_active", sa.Boolean, server_default=sa.true()),
        sa.Column("weight", sa.Numeric(3, 2), server_default="1.00"),
        sa.Column("created_at", TZ, server_default=NOW),
        sa.Column("updated_at", TZ, server_default=NOW),
    )
    op.create_table(
        "method_results",
        sa.Column("method_result_id", sa.Integer, primary_key=True),
        sa.Column(
            "result_id",
            sa.Integer,
            sa.ForeignKey("detection_results.result_id", ondelete="CASCADE"),
        ),
        sa.Column(
            "method_id",
            sa.Integer,
            sa.ForeignKey("detection_methods.method_id", ondelete="CASCADE"),
        ),
        sa.Column("is_ai_generated", sa.Boolean),
        sa.Column("confidence_score", sa.Numeric(5, 4), nullable=False),
        sa.Column("processing_time", sa.Numeric(10, 3), nullable=False),
        sa.Column("result_details", sa.JSON().with_variant(JSONB(), "postgresql")),
    )
    op.create_table(
        "api_keys",
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
    )
    op.create_table(
        "usage_logs",
        sa.Column("log_id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.user_id", ondelete="SET NULL")),
        sa.Column(
            "api_key_id", sa.Integer, sa.ForeignKey("api_keys.key_id", ondelete="SET NULL")
        ),
        sa.Column("request_type", sa.String(50), nullable=False),
        sa.Column("request_path", sa.String(255), nullable=False),
        sa.Column("request_date", TZ, server_default=NOW),
        sa.Column("response_code", sa.Integer, nullable=False),
        sa.Column("processing_time", sa.Numeric(10, 3), nullable=False),
        sa.Column("ip_address", sa.String(45)),
        sa.Column("user_agent", sa.Text),
    )
    for name, table, column in SEED_INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _ in reversed(SEED_INDEXES):
        op.drop_index(name, table_name=table)
    for table in (
        "usage_logs",
        "api_keys",
        "method_results",
        "detection_methods",
        "detection_results",
        "uploads",
        "users",
    ):
        op.drop_table(table)
