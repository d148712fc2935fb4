"""Feedback: an upload's owner says whether the picture really is AI-generated or real.

One row per (upload, user): a second feedback from the same user on the same upload replaces
the first (storage/feedback.py upserts). The row goes with its upload and with its user
(ON DELETE CASCADE). ``label`` is 'ai' or 'real' (a CHECK, on PostgreSQL and SQLite alike);
``note`` is free text, bounded by the API. ``verdict`` and ``ai_probability`` freeze what
the model said when the feedback was given (NULL when it had said nothing yet), so an export
can count disagreements even after a rescore.

A new table needs no batch mode on SQLite: CREATE TABLE carries its constraints.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
NOW = sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("feedback_id", sa.Integer, primary_key=True),
        sa.Column("upload_id", sa.Integer,
                  sa.ForeignKey("uploads.upload_id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer,
                  sa.ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(10), nullable=False),
        sa.Column("note", sa.Text),
        # What the model said when the feedback was given: 'ai' | 'real' | 'uncertain'.
        sa.Column("verdict", sa.String(10)),
        sa.Column("ai_probability", sa.Numeric(5, 4)),
        sa.Column("created_at", TZ, nullable=False, server_default=NOW),
        sa.Column("updated_at", TZ, nullable=False, server_default=NOW),
        sa.UniqueConstraint("upload_id", "user_id", name="uq_feedback_upload_user"),
        sa.CheckConstraint("label IN ('ai', 'real')", name="ck_feedback_label"),
        sa.CheckConstraint("verdict IN ('ai', 'real', 'uncertain')",
                           name="ck_feedback_verdict_word"),
        sa.CheckConstraint("ai_probability BETWEEN 0 AND 1", name="ck_feedback_ai_probability"),
    )
    op.create_index("ix_feedback_user_id", "feedback", ["user_id"])
    op.create_index("ix_feedback_updated_at", "feedback", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_updated_at", table_name="feedback")
    op.drop_index("ix_feedback_user_id", table_name="feedback")
    op.drop_table("feedback")
