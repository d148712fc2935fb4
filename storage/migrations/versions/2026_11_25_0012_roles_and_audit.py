"""Roles and the audit trail.

- ``users.role``: admin | operator | member, NOT NULL, default 'member' (every existing user
  keeps today's rights), held to the three by ``ck_users_role``.
- ``audit_log``: one row per critical operation (storage/audit.py). Append-only, enforced by
  the database itself: a trigger refuses UPDATE and DELETE on every row. On PostgreSQL a
  plpgsql function raises (a trigger fires for the superuser the application connects as,
  unlike a REVOKE; also TRUNCATE, per statement); on SQLite (the embedded default runs the
  same migrations) ``BEFORE UPDATE/DELETE … SELECT RAISE(ABORT, …)`` triggers. Dropping the
  table (this downgrade, ``restore --force``) is still possible: the guard is against edits
  of history, not against removing the database.

- ``alembic_version``: an AFTER UPDATE trigger writes a ``config.migrate`` row (from, to,
  the database user as ``db:<user>``) each time a migration moves the schema: migrations are
  what change the detection methods' weights (0008), so those changes are on the trail
  whichever client ran them. Restores insert that row (COPY), which the trigger ignores.

SQLite cannot add a CHECK in place: batch mode copies ``users`` (storage.migrate turns
foreign keys off meanwhile, as for 0010).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Frozen here (storage/models.py has the live copy).
ROLES = ("admin", "operator", "member")
OUTCOMES = ("ok", "denied", "failed")
MESSAGE = "audit_log is append-only"


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("role", sa.String(20), nullable=False,
                                   server_default="member"))
        batch.create_check_constraint("ck_users_role", sa.text(_one_of("role", ROLES)))

    op.create_table(
        "audit_log",
        sa.Column("audit_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("CURRENT_TIMESTAMP")),
        sa.Column("actor", sa.String(150), nullable=False),
        sa.Column("user_id", sa.Integer),
        sa.Column("key_id", sa.Integer),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("target", sa.String(255)),
        sa.Column("source", sa.String(255)),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("detail", sa.JSON().with_variant(JSONB(), "postgresql")),
        sa.CheckConstraint(_one_of("outcome", OUTCOMES), name="ck_audit_log_outcome"),
    )
    op.create_index("ix_audit_log_occurred_at", "audit_log", ["occurred_at"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])

    if _sqlite():
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}: {event} refused'); END")
        op.execute(
            "CREATE TRIGGER alembic_version_audit AFTER UPDATE ON alembic_version BEGIN "
            "INSERT INTO audit_log (occurred_at, actor, action, target, source, outcome, "
            "detail) VALUES (CURRENT_TIMESTAMP, 'db:sqlite', 'config.migrate', "
            "'alembic_version', 'local', 'ok', "
            "json_object('from', OLD.version_num, 'to', NEW.version_num)); END")
        return
    op.execute(f"""
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{MESSAGE}: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$""")
    op.execute("CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
               "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
    op.execute("CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
               "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()")
    op.execute("""
        CREATE FUNCTION audit_schema_migration() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO audit_log (occurred_at, actor, action, target, source, outcome, detail)
            VALUES (now(), 'db:' || current_user, 'config.migrate', 'alembic_version',
                    coalesce(host(inet_client_addr()), 'local'), 'ok',
                    jsonb_build_object('from', OLD.version_num, 'to', NEW.version_num));
            RETURN NEW;
        END
        $$""")
    op.execute("CREATE TRIGGER alembic_version_audit AFTER UPDATE ON alembic_version "
               "FOR EACH ROW EXECUTE FUNCTION audit_schema_migration()")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS alembic_version_audit"
               + ("" if _sqlite() else " ON alembic_version"))
    # DROP TABLE takes its triggers along; no row trigger fires for it.
    op.drop_table("audit_log")
    if not _sqlite():
        op.execute("DROP FUNCTION IF EXISTS audit_schema_migration()")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("ck_users_role", type_="check")
        batch.drop_column("role")
