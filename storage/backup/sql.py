"""The SQL database in a backup: ``pg_dump`` custom format for PostgreSQL, SQLite's online
backup API for the embedded default.

PostgreSQL: the row counts and the schema revision are read in one REPEATABLE READ
transaction whose snapshot ``pg_dump --snapshot`` shares, so the manifest describes exactly the
dump. The embedded document store's rows (``embedded_documents``) travel with the database.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from storage.backup.manifest import BackupError
from storage.db import create_engine
from storage.models import embedded_documents

PG_DUMP = "postgres.dump"
SQLITE_COPY = "skygate.db"
_DOCS = embedded_documents.name


def backend(settings) -> str:
    """``postgresql`` or ``sqlite``."""
    name = make_url(settings.sqlalchemy_url).get_backend_name()
    if name not in ("postgresql", "sqlite"):
        raise BackupError(f"backups support PostgreSQL and SQLite, not {name}")
    return name


# --- PostgreSQL -----------------------------------------------------------------------------


def _pg_env(settings) -> tuple[dict, str]:
    """libpq environment for pg_dump/pg_restore (the password never on a command line)."""
    url = make_url(settings.sqlalchemy_url)
    env = dict(os.environ)
    for var, value in (("PGHOST", url.host), ("PGPORT", url.port), ("PGUSER", url.username),
                       ("PGPASSWORD", url.password), ("PGSSLMODE", url.query.get("sslmode"))):
        if value:
            env[var] = str(value)
    return env, url.database


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise BackupError(f"{name} not found on PATH (install the PostgreSQL client tools)")
    return path


def _major(version: str) -> int:
    match = re.search(r"(\d+)(?:\.\d+)?", version)
    if not match:
        raise BackupError(f"cannot read a version from {version!r}")
    return int(match.group(1))


def _run(args: list[str], env: dict) -> str:
    # The program comes from shutil.which, the arguments from our own settings; no shell.
    done = subprocess.run(  # noqa: S603 - a fixed program, no shell, our own arguments
        args, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise BackupError(f"{Path(args[0]).name} failed ({done.returncode}): "
                          f"{done.stderr.strip()[-2000:]}")
    return done.stdout


async def _check_tool_version(conn, tool: str) -> dict:
    server = (await conn.execute(sa.text("SHOW server_version"))).scalar_one()
    client = (await asyncio.to_thread(_run, [_tool(tool), "--version"], dict(os.environ))).strip()
    if _major(client) < _major(server):
        raise BackupError(f"{client} is older than the server ({server}): install the "
                          f"client tools of PostgreSQL {_major(server)} or newer")
    return {"server_version": server, "tool_version": client}


def _table_counts(sync_conn) -> dict[str, int]:
    counts = {}
    for table in sorted(sa.inspect(sync_conn).get_table_names()):
        # Table names come from the database's own catalogue, quoted by the dialect.
        query = sa.select(sa.func.count()).select_from(sa.table(table))
        counts[table] = sync_conn.execute(query).scalar_one()
    return counts


def _describe(sync_conn) -> dict:
    counts = _table_counts(sync_conn)
    revision = None
    if "alembic_version" in counts:
        revision = sync_conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    documents = {}
    if _DOCS in counts:
        docs = embedded_documents.c
        rows = sync_conn.execute(
            sa.select(docs.collection, sa.func.count()).group_by(docs.collection))
        documents = {row[0]: row[1] for row in rows}
    return {"tables": counts, "revision": revision, "embedded_documents": documents}


async def _pg_dump(settings, out: Path) -> dict:
    env, database = _pg_env(settings)
    engine = create_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as plain:
            conn = await plain.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                versions = await _check_tool_version(conn, "pg_dump")
                snapshot = (await conn.execute(sa.text("SELECT pg_export_snapshot()"))).scalar()
                described = await conn.run_sync(_describe)
                await asyncio.to_thread(_run, [
                    _tool("pg_dump"), "--format=custom", f"--snapshot={snapshot}",
                    f"--file={out}", f"--dbname={database}"], env)
    finally:
        await engine.dispose()
    return {**described, **versions}


async def _pg_clear_statements(conn) -> list[str]:
    """--force: the statements that drop every table, view, sequence and own function of the
    target's schema (run by psql in the restore's one transaction, not here)."""
    def names(sync_conn):
        inspector = sa.inspect(sync_conn)
        return inspector.get_view_names(), inspector.get_table_names(), \
            inspector.get_sequence_names()

    views, tables, sequences = await conn.run_sync(names)
    quote = conn.dialect.identifier_preparer.quote
    statements = [f"DROP {kind} IF EXISTS {quote(item)} CASCADE;"
                  for kind, items in (("VIEW", views), ("TABLE", tables), ("SEQUENCE", sequences))
                  for item in items]
    # The schema's own functions (e.g. the audit log's append-only trigger function) come
    # back with the dump; extension functions stay.
    functions = (await conn.execute(sa.text(
        "SELECT p.oid::regprocedure::text FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = current_schema() AND NOT EXISTS ("
        " SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"))).scalars()
    statements += [f"DROP FUNCTION IF EXISTS {signature} CASCADE;" for signature in functions]
    return statements


async def _pg_restore(settings, dump: Path, force: bool) -> None:
    """The dump as SQL (pg_restore -f), run by psql in ONE transaction together with the
    --force drops: a restore that fails leaves the target exactly as it was."""
    env, database = _pg_env(settings)
    engine = create_engine(settings.sqlalchemy_url)
    try:
        async with engine.begin() as conn:
            await _check_tool_version(conn, "pg_restore")
            drops = await _pg_clear_statements(conn) if force else []
    finally:
        await engine.dispose()
    with tempfile.TemporaryDirectory(prefix="skygate-restore-") as tmp:
        clear, script = Path(tmp) / "clear.sql", Path(tmp) / "restore.sql"
        clear.write_text("\n".join(drops) + "\n", encoding="utf-8")
        await asyncio.to_thread(_run, [
            _tool("pg_restore"), "--no-owner", "--no-privileges", f"--file={script}",
            str(dump)], env)
        await asyncio.to_thread(_run, [
            _tool("psql"), "--no-psqlrc", "--quiet", "--single-transaction",
            "--set=ON_ERROR_STOP=1", f"--dbname={database}", f"--file={clear}",
            f"--file={script}"], env)


# --- SQLite ---------------------------------------------------------------------------------


def _sqlite_path(settings) -> Path:
    database = make_url(settings.sqlalchemy_url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(database)


def _sqlite_describe(path: Path) -> dict:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return _describe(conn)
    finally:
        engine.dispose()


def _sqlite_backup(source: Path, out: Path) -> dict:
    if not source.is_file():
        raise BackupError(f"SQLite database {source} does not exist")
    src = sqlite3.connect(source, timeout=60)
    dst = sqlite3.connect(out)
    try:
        src.backup(dst)  # online: one consistent copy while writers go on
        dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        if (check := dst.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
            raise BackupError(f"the SQLite copy failed its integrity check: {check}")
    finally:
        dst.close()
        src.close()
    return {**_sqlite_describe(out), "sqlite_version": sqlite3.sqlite_version}


def _sqlite_restore(copy: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    dst = sqlite3.connect(target, timeout=60)
    try:
        src.backup(dst)  # replaces the target's whole content
        dst.execute("PRAGMA journal_mode=WAL")
    finally:
        dst.close()
        src.close()


# --- the interface used by storage.backup ---------------------------------------------------


async def dump(settings, folder: Path) -> dict:
    """Write the database into ``folder`` (which exists); returns its description."""
    kind = backend(settings)
    if kind == "postgresql":
        return {"backend": kind, "file": PG_DUMP, **await _pg_dump(settings, folder / PG_DUMP)}
    copy = folder / SQLITE_COPY
    described = await asyncio.to_thread(_sqlite_backup, _sqlite_path(settings), copy)
    return {"backend": kind, "file": SQLITE_COPY, **described}


async def describe(settings) -> dict:
    """The target's tables, row counts, revision and embedded document counts."""
    if backend(settings) == "sqlite" and not _sqlite_path(settings).exists():
        return {"tables": {}, "revision": None, "embedded_documents": {}}
    engine = create_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_describe)
    finally:
        await engine.dispose()


async def restore(settings, folder: Path, manifest: dict, *, force: bool) -> None:
    if manifest["backend"] == "postgresql":
        await _pg_restore(settings, folder / manifest["file"], force)
    else:
        await asyncio.to_thread(_sqlite_restore, folder / manifest["file"],
                                _sqlite_path(settings))
