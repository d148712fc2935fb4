"""API keys: the start of the current quota window.

The seed's request_limit/requests_made say how many requests a key may make but not over
what period. quota_window_start makes it a rolling window (SKYGATE_QUOTA_PERIOD_SECONDS):
once the period has passed, the next request starts a new window with requests_made = 1.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("quota_window_start", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("quota_window_start")
