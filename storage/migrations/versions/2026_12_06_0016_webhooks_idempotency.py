"""Webhooks, idempotent submits and client references.

- ``webhooks``: a user's endpoints (URL, the events it wants, its signing secret and, for a
  while after a rotation, the previous one; ``api_base`` is the API's URL when it was
  registered, for the result links of the events).
- ``webhook_events``: one row per event (``upload.done``, ``upload.failed``) with its stable
  id and payload, written in the same transaction as the verdict or the failure it reports.
- ``webhook_deliveries``: the outbox and the delivery log, one row per (event, webhook):
  pending → delivered or failed, attempts, when to try next, the last answer.
- ``idempotency_keys``: the first answer to a POST with an ``Idempotency-Key``, per API key.
- ``uploads.client_reference``: the caller's own id for a file, indexed per user.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
NOW = sa.text("CURRENT_TIMESTAMP")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")
# Frozen here (storage/models.py has the live copy).
EVENT_TYPES = ("upload.done", "upload.failed")
DELIVERY_STATUSES = ("pending", "delivered", "failed")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("client_reference", sa.String(255)))
    op.create_index("ix_uploads_user_client_reference", "uploads",
                    ["user_id", "client_reference"])

    op.create_table(
        "webhooks",
        sa.Column("webhook_id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.user_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("previous_secret", sa.String(100)),
        sa.Column("previous_secret_until", TZ),
        sa.Column("api_base", sa.String(500)),
        sa.Column("description", sa.String(200)),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", TZ, nullable=False, server_default=NOW),
    )
    op.create_index("ix_webhooks_user_id", "webhooks", ["user_id"])

    op.create_table(
        "webhook_events",
        sa.Column("event_id", sa.String(40), primary_key=True),
        sa.Column("event_type", sa.String(30), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.user_id", ondelete="CASCADE"),
                  nullable=False),
        # No foreign key: the event is history and outlives a deleted upload.
        sa.Column("upload_id", sa.Integer, nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=NOW),
        sa.CheckConstraint(_one_of("event_type", EVENT_TYPES), name="ck_webhook_events_type"),
    )
    op.create_index("ix_webhook_events_upload_id", "webhook_events", ["upload_id"])
    op.create_index("ix_webhook_events_created_at", "webhook_events", ["created_at"])

    op.create_table(
        "webhook_deliveries",
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
        sa.CheckConstraint(_one_of("status", DELIVERY_STATUSES),
                           name="ck_webhook_deliveries_status"),
        sa.CheckConstraint("attempts >= 0", name="ck_webhook_deliveries_attempts"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries",
                    ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_webhook", "webhook_deliveries",
                    ["webhook_id", "delivery_id"])

    op.create_table(
        "idempotency_keys",
        sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.key_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response_body", JSON),
        sa.Column("created_at", TZ, nullable=False, server_default=NOW),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_webhook_deliveries_webhook", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_events_created_at", table_name="webhook_events")
    op.drop_index("ix_webhook_events_upload_id", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_index("ix_webhooks_user_id", table_name="webhooks")
    op.drop_table("webhooks")
    op.drop_index("ix_uploads_user_client_reference", table_name="uploads")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("client_reference")
