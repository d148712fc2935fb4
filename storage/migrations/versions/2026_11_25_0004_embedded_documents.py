"""The document store of the embedded default: one row per document, keyed like Mongo's.

Used when no SKYGATE_MONGO_URL is set, so detection_metadata and system_configuration
documents live in the same database file. (collection, unique_key) mirrors the unique
indexes of the seed's collections (result_id, config_name).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "embedded_documents",
        sa.Column("doc_id", sa.String(24), primary_key=True),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("unique_key", sa.String(255), nullable=False),
        sa.Column("body", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )
    op.create_index(
        "uq_embedded_documents_collection_key",
        "embedded_documents",
        ["collection", "unique_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_embedded_documents_collection_key", table_name="embedded_documents")
    op.drop_table("embedded_documents")
