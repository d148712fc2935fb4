"""``skygate backup`` and ``skygate restore``: the whole store (SQL database, documents, blobs)
to one checksummed folder and back (``storage.backup``)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import click

from schemas.settings import Settings
from skygate.cli._common import fail, format_options, note

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.


def _counts(manifest: dict) -> str:
    tables = manifest["database"]["tables"]
    docs = manifest["documents"]["counts"]
    blob = manifest["blobs"]
    return (f"{tables.get('uploads', 0)} uploads, {tables.get('detection_results', 0)} results, "
            f"{sum(tables.values())} rows in {len(tables)} tables; "
            f"{sum(docs.values())} documents ({manifest['documents']['backend']}); "
            f"{blob['count']} blobs ({blob['bytes']} bytes, "
            f"{'copied' if blob['kind'] == 'copy' else 'listed'})")


@click.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@format_options(("table", "json"))
def backup(dest: Path, fmt: str) -> None:
    """Write one consistent, timestamped backup folder under DEST: the SQL database
    (pg_dump custom format, or SQLite's online backup), the MongoDB collections with their
    options and indexes, the blobs (copied; an S3 store is listed with SHA-256s), a manifest
    and SHA256SUMS. Exit 0 when written, 1 if anything failed (no folder is left behind)."""
    from storage.backup import BackupError, create_backup

    try:
        folder = asyncio.run(create_backup(Settings(), dest))
    except (BackupError, OSError) as exc:
        fail(str(exc))
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    if fmt == "json":
        click.echo(json.dumps({"path": str(folder), **manifest}, indent=2))
        return
    click.echo(f"backup written: {folder}")
    click.echo(f"  schema revision {manifest['schema_revision']}; {_counts(manifest)}")


@click.command("restore")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="replace what the target holds (its tables, collections; blobs are added)")
@click.option("--check", "check_only", is_flag=True,
              help="only verify the backup's checksums; touch nothing")
def restore(src: Path, force: bool, check_only: bool) -> None:
    """Restore a backup folder SRC into the configured (empty) database, document store and
    blob store. Every checksum is verified before anything is touched; a target that holds
    data is refused unless --force. Exit 0 when restored and the counts match, 1 otherwise."""
    from storage.backup import BackupError, restore_backup, verify_backup
    from storage.migrate import head_revision

    try:
        if check_only:
            manifest = verify_backup(src)
            click.echo(f"backup OK: every checksum matches ({manifest['created_at']}; "
                       f"{_counts(manifest)})")
            return
        result = asyncio.run(restore_backup(Settings(), src, force=force))
    except (BackupError, OSError) as exc:
        fail(str(exc))
    manifest = result["manifest"]
    if result["replaced"]:
        click.echo("replaced: " + "; ".join(result["replaced"]))
    click.echo(f"restored {src} ({manifest['created_at']}): {_counts(manifest)}")
    missing = result["blobs"]["missing"]
    if result["revision"] != head_revision():
        note(f"note: the backup is at schema revision {result['revision']}, this code at "
             f"{head_revision()}: run `skygate db upgrade`", level=logging.WARNING)
    if missing:
        fail(f"{len(missing)} blobs the backup lists are not in the bucket (restore them "
             f"from the bucket's versions): {', '.join(missing[:5])}")


COMMANDS = [backup, restore]
