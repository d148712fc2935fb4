"""``skygate db``: the SQL migrations and the document store's collections and indexes."""

from __future__ import annotations

import asyncio

import click

from schemas.settings import Settings

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.


@click.group()
def db() -> None:
    """Database schema: migrations for SQL, collections and indexes for MongoDB."""


async def _db_upgrade(settings: Settings, target: str) -> dict:
    from storage import migrate
    from storage.context import open_storage
    from storage.seed import ensure_default_configuration

    async with open_storage(settings) as storage:
        before = await migrate.current_revision(storage.engine)
        await migrate.upgrade(storage.engine, target)
        after = await migrate.current_revision(storage.engine)
        indexes = await storage.documents.ensure_indexes()
        if await ensure_default_configuration(storage.documents):
            from storage import audit

            await audit.record_now(storage.engine, audit.Actor.cli(), "config.change",
                                   target="system_configuration",
                                   detail={"what": "default model configuration installed "
                                                   "or upgraded", "revision": after})
    return {"before": before, "after": after, "indexes": indexes}


def ensure_schema(settings: Settings) -> None:
    """Bring the configured database up to date (what ``scan`` and ``eval`` do first)."""
    asyncio.run(_db_upgrade(settings, "head"))


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations; create the Mongo collections and the seed's indexes. Idempotent."""
    settings = Settings()
    out = asyncio.run(_db_upgrade(settings, revision))
    where = settings.sqlalchemy_url.split("@")[-1]
    click.echo(f"database {where}: revision {out['before'] or 'none'} -> {out['after']}")
    backend = (
        f"mongodb database {settings.mongo_database}" if settings.mongo_url else "embedded SQL"
    )
    click.echo(f"documents ({backend}): indexes {', '.join(out['indexes'])}")


@db.command("downgrade")
@click.option("--revision", default="base", show_default=True)
def db_downgrade(revision: str) -> None:
    """Roll migrations back (to the empty database by default)."""
    from storage import migrate
    from storage.db import create_engine

    async def run():
        engine = create_engine(Settings().sqlalchemy_url)
        try:
            await migrate.downgrade(engine, revision)
            return await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    click.echo(f"database now at revision {asyncio.run(run()) or 'none'}")


COMMANDS = [db]
