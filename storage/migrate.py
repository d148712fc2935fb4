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

    async with engine.begin() as conn:
        await conn.run_sync(run_sync)


async def upgrade(engine: AsyncEngine, target: str = "head") -> None:
    await _run(engine, command.upgrade, target)


async def downgrade(engine: AsyncEngine, target: str = "base") -> None:
    await _run(engine, command.downgrade, target)
