"""Stage timestamps for self-healing: "stuck" becomes a fact the recovery sweep can read.

- uploads.stage: queued | preparing | detecting | aggregating | done | failed.
- uploads.stage_touched_at: when a worker last touched the upload's current stage (set on
  insert, at each stage change and when each method task finishes).
- uploads.recoveries: how often the recovery sweep re-sent the upload.
- idx_uploads_status_touched: the sweep's query (unfinished uploads by age).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("uploads", sa.Column("stage", sa.String(20)))
    # No server default: SQLite cannot add a column with a non-constant one; the code sets it.
    op.add_column("uploads", sa.Column("stage_touched_at", sa.DateTime(timezone=True)))
    op.add_column("uploads", sa.Column("recoveries", sa.Integer, nullable=False,
                                       server_default="0"))
    op.execute("UPDATE uploads SET stage = status, stage_touched_at = "
               "COALESCE(processing_completed_at, processing_started_at, upload_date)")
    op.create_index("idx_uploads_status_touched", "uploads", ["status", "stage_touched_at"])


def downgrade() -> None:
    op.drop_index("idx_uploads_status_touched", table_name="uploads")
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35 too): a batch table copy on SQLite would
    # lose the expression index uq_uploads_owner_sha256 that 0003's downgrade drops.
    with op.batch_alter_table("uploads", recreate="never") as batch:
        batch.drop_column("recoveries")
        batch.drop_column("stage_touched_at")
        batch.drop_column("stage")
