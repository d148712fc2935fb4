"""What the pipeline needs beyond the seed; no seed column is changed.

- uploads.sha256: content hash, for de-duplication and the content-addressed blob store.
- uploads.status / uploads.error: queued | processing | done | failed, and why it failed
  (the seed's is_processed cannot tell "failed" from "not yet").
- uploads.delivery_count: how often prepare ran for the upload, to stop a poison image that
  kills its worker from being redelivered forever (task_reject_on_worker_lost).
- uq_uploads_owner_sha256: one upload per (user, content); NULL users share owner 0.
- uq_detection_results_upload_id: the seed's one-to-one upload -> result, so a redelivered
  aggregate cannot write a second result.
- uq_method_results_result_method: one row per (result, method), for the same reason.
- uq_detection_methods_method_name: methods are looked up by name.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("uploads", sa.Column("sha256", sa.String(64)))
    op.add_column(
        "uploads", sa.Column("status", sa.String(20), nullable=False, server_default="queued")
    )
    op.add_column("uploads", sa.Column("error", sa.Text))
    op.add_column(
        "uploads", sa.Column("delivery_count", sa.Integer, nullable=False, server_default="0")
    )
    op.create_index(
        "uq_uploads_owner_sha256",
        "uploads",
        [sa.text("COALESCE(user_id, 0)"), "sha256"],
        unique=True,
    )
    op.create_index("idx_uploads_status", "uploads", ["status"])
    op.create_index(
        "uq_detection_results_upload_id", "detection_results", ["upload_id"], unique=True
    )
    op.create_index(
        "uq_method_results_result_method",
        "method_results",
        ["result_id", "method_id"],
        unique=True,
    )
    op.create_index(
        "uq_detection_methods_method_name", "detection_methods", ["method_name"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_detection_methods_method_name", table_name="detection_methods")
    op.drop_index("uq_method_results_result_method", table_name="method_results")
    op.drop_index("uq_detection_results_upload_id", table_name="detection_results")
    op.drop_index("idx_uploads_status", table_name="uploads")
    op.drop_index("uq_uploads_owner_sha256", table_name="uploads")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("delivery_count")
        batch.drop_column("error")
        batch.drop_column("status")
        batch.drop_column("sha256")
