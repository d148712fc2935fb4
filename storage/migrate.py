"""Apply or roll back the Alembic migrations on an async engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option(
        "file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s"
    )
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )


async def _run(engine: AsyncEngine, action, target: str) -> None:
    cfg = alembic_config()

    def run_sync(sync_conn):
        cfg.attributes["connection"] = sync_conn
        action(cfg, target)
        if sync_conn.dialect.name == "sqlite":
            _check_foreign_keys(sync_conn)

    async with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Batch mode copies a table and drops the old one; with foreign keys on, that
            # DROP would first delete the rows and cascade to their children. The PRAGMA is
            # ignored inside a transaction, so it goes before one (SQLite's own procedure).
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await conn.commit()
        try:
            async with conn.begin():
                await conn.run_sync(run_sync)
        finally:
            if sqlite:
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()


def _check_foreign_keys(sync_conn) -> None:
    """Refuse to commit a migration that left a row pointing at nothing (SQLite)."""
    broken = sync_conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration left dangling foreign keys: {broken[:5]}")


async def upgrade(engine: AsyncEngine, target: str = "head") -> None:
    await _run(engine, command.upgrade, target)


async def downgrade(engine: AsyncEngine, target: str = "base") -> None:
    await _run(engine, command.downgrade, target)
