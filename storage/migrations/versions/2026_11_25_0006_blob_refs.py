"""Reference counts of blobs: one row per (upload, blob key) the upload uses.

Blobs are content-addressed, so two uploads can share one: the same original, or different
originals with the same decoded pixels (the pixel caches, the thumbnail, the ELA image and the
heatmap are keyed by their own bytes). A blob is deleted only when no row references it.
Rows go with their upload (ON DELETE CASCADE); a writer inserts its row before it writes the
blob, so a concurrent delete either sees the row or makes the write fail on the foreign key.

Existing uploads get rows for their original and thumbnail here; the keys their documents
name are still honoured by `skygate blobs gc`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_refs",
        sa.Column("upload_id", sa.Integer,
                  sa.ForeignKey("uploads.upload_id", ondelete="CASCADE"), nullable=False),
        sa.Column("blob_key", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True),
                  server_default=sa.text("CURRENT_TIMESTAMP")),
        sa.PrimaryKeyConstraint("upload_id", "blob_key"),
    )
    op.create_index("idx_blob_refs_blob_key", "blob_refs", ["blob_key"])
    op.execute("INSERT INTO blob_refs (upload_id, blob_key, kind) "
               "SELECT upload_id, file_path, 'original' FROM uploads")
    op.execute("INSERT INTO blob_refs (upload_id, blob_key, kind) "
               "SELECT upload_id, thumbnail_path, 'thumbnail' FROM uploads "
               "WHERE thumbnail_path IS NOT NULL AND thumbnail_path <> file_path")


def downgrade() -> None:
    op.drop_index("idx_blob_refs_blob_key", table_name="blob_refs")
    op.drop_table("blob_refs")
