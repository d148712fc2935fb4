"""Deliveries counted per (upload, stage): a method or aggregate task whose worker died on it.

prepare counts its deliveries in ``uploads.delivery_count`` (0003); a method task that kills its
worker (a segfaulting native decoder, the OOM killer) was redelivered for ever. Each method
task and aggregate now records that it started (``running``) and that it ended; a delivery
that finds the previous one still running counts a death, and past SKYGATE_MAX_DELIVERIES
the stage gives up (service/deliveries.py).

And ``login_failures.last_failure_at``: failed logins are throttled with growing delays after
the last failure, per (user, client) and per client, instead of a lock of the user
(storage/login_throttle.py); the old per-user subjects are dropped.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stage_deliveries",
        sa.Column("upload_id", sa.Integer,
                  sa.ForeignKey("uploads.upload_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("stage", sa.String(40), primary_key=True),
        sa.Column("deaths", sa.Integer, nullable=False, server_default="0"),
        sa.Column("running", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("deaths >= 0", name="ck_stage_deliveries_deaths"),
    )
    op.add_column("login_failures", sa.Column("last_failure_at", sa.DateTime(timezone=True)))
    op.execute("DELETE FROM login_failures WHERE subject LIKE 'user:%'")


def downgrade() -> None:
    with op.batch_alter_table("login_failures") as batch:
        batch.drop_column("last_failure_at")
    op.drop_table("stage_deliveries")
