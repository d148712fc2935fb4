"""Rows for the five detection methods and their ensemble weights.

Weights reflect how far each method's evidence carries on images from unseen sources:
declared provenance (exif) is strong when present; ELA mostly measures the file format
(see the corpus notes), so it votes lightly.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

METHODS = [
    ("exif", "Metadata and provenance: EXIF, XMP DigitalSourceType, generator chunks, C2PA", 1.00),
    ("prnu", "Sensor-noise residual statistics and periodic spectral peaks", 0.60),
    ("ela", "Error level analysis: JPEG re-save difference and block uniformity", 0.25),
    ("texture", "Smoothness and micro-texture statistics (local variance, gradients, LBP)", 0.60),
    ("model", "ONNX classifier on format-neutral forensic features", 0.80),
]


def upgrade() -> None:
    table = sa.table(
        "detection_methods",
        sa.column("method_name", sa.String),
        sa.column("description", sa.Text),
        sa.column("weight", sa.Numeric(3, 2)),
    )
    op.bulk_insert(
        table, [{"method_name": n, "description": d, "weight": w} for n, d, w in METHODS]
    )


def downgrade() -> None:
    names = ", ".join(f"'{n}'" for n, _, _ in METHODS)
    # S608 does not apply: the names are this file's own constants, not input.
    op.execute(f"DELETE FROM detection_methods WHERE method_name IN ({names})")  # noqa: S608
