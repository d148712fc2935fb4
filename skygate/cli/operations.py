"""Operators' commands: ``doctor``, ``retry``, ``rescore``, ``recover``, ``blobs gc``."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import click

from schemas.settings import Settings
from skygate.cli._common import CommandFailed, engine_call, format_options, note, parse_since

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.


@click.command(epilog="Exit codes: 0 every check passed; 1 a check failed (the checks that "
                      "needed it are skipped and name it); 2 a usage error.")
@format_options(("table", "json"))
def doctor(fmt):
    """Check every configured dependency, in the order they depend on each other.

    A check whose dependency failed is skipped ("skipped: database unreachable"), so the
    failure named is the cause.
    """
    from service.runtime.health import causes, run_checks

    checks = asyncio.run(run_checks(Settings()))
    failed = causes(checks)
    if fmt == "json":
        click.echo(json.dumps({"ok": not failed, "causes": [c.name for c in failed],
                               "checks": [c.as_dict() for c in checks]}))
    else:
        _print_checks(checks)
    if failed:
        note(f"failed: {', '.join(c.name for c in failed)}", level=logging.ERROR)
        for c in failed:
            note(f"cause: {c.name}: {c.detail} ({c.hint})", level=logging.ERROR)
        sys.exit(1)


def _print_checks(checks) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("check", "ok", "detail", "fix")
    words = {"ok": "ok", "fail": "FAIL", "skipped": "SKIP"}
    for c in checks:
        # Details hold brackets (a worker's [queues]) that are text, not markup.
        table.add_row(c.name, words[c.status], escape(c.detail),
                      escape(c.hint) if not c.ok else "")
    Console(width=None if sys.stdout.isatty() else 200).print(table)


# --- detection again: retry, rescore, recover -----------------------------------------------


@click.command()
@click.option("--failed", "only_failed", is_flag=True, required=True,
              help="re-enqueue failed uploads (required: say what to retry)")
@click.option("--since", help="only uploads on or after this date")
def retry(only_failed, since):
    """Re-enqueue failed uploads (after fixing what made them fail)."""
    from storage import repository as repo

    when = parse_since(since)
    settings = Settings()

    async def pick(engine):
        ids = await repo.failed_upload_ids(engine, since=when)
        for upload_id in ids:
            await repo.reset_for_retry(engine, upload_id)
        return ids

    _requeue(settings, engine_call(pick), what="retry", detail={"since": since})


@click.command()
@click.option("--algorithm-version", "version",
              help="re-run the uploads whose stored verdict was made by this version")
@click.option("--all", "everything", is_flag=True, help="re-run every judged upload")
def rescore(version, everything):
    """Re-run detection for stored uploads (methods or weights changed). The earlier verdict
    is kept in the document's ``history``."""
    from storage import repository as repo

    if not version and not everything:
        raise click.UsageError("give --algorithm-version V or --all")
    settings = Settings()

    async def pick(engine):
        ids = await repo.judged_upload_ids(engine, algorithm_version=None if everything
                                           else version)
        for upload_id in ids:
            await repo.reset_for_retry(engine, upload_id)
        return ids

    _requeue(settings, engine_call(pick), what="rescore",
             detail={"algorithm_version": None if everything else version, "all": everything})


def _audit(action: str, *, outcome: str = "ok", detail: dict | None = None) -> None:
    """One audit_log row for this run, as ``cli:<os user>`` from this host (best effort)."""
    from storage import audit

    engine_call(lambda e: audit.record_now(e, audit.Actor.cli(), action, outcome=outcome,
                                           target="uploads", detail=detail))


def _requeue(settings: Settings, upload_ids: list[int], *, what: str,
             detail: dict | None = None) -> None:
    """Start each upload's detection again (``service.dispatch``): a ``skygate.prepare``
    message to the cluster, or the whole run here (embedded). The run is audited."""
    detail = {**(detail or {}), "count": len(upload_ids), "upload_ids": upload_ids,
              "where": "cluster" if settings.broker_url else "here"}
    try:
        failed = _start_again(settings, upload_ids, what=what)
    except BaseException as exc:  # Ctrl-C too: the uploads were reset, the run is recorded
        _audit(f"uploads.{what}", outcome="failed",
               detail={**detail, "error": f"{type(exc).__name__}: {exc}"})
        raise
    _audit(f"uploads.{what}", outcome="failed" if failed else "ok",
           detail={**detail, "failed": failed})
    if failed:
        sys.exit(1)


def _start_again(settings: Settings, upload_ids: list[int], *, what: str) -> int:
    """Start each upload's detection (``Dispatcher.start_detection``); returns how many
    failed (embedded runs only). A broker that does not take a message stops the run with
    its reason: that upload and the rest stay queued for the recovery sweep."""
    from service.dispatch import Dispatcher, QueueUnavailable
    from service.runtime import process_loop
    from storage import repository as repo

    if not upload_ids:
        click.echo(f"nothing to {what}")
        return 0
    dispatcher = Dispatcher.for_command(settings)

    async def start(storage, _settings, upload_id):
        await dispatcher.start_detection(storage, upload_id)
        return None if dispatcher.mode == "celery" else await repo.get_upload(storage.engine,
                                                                               upload_id)

    failed = 0
    try:
        for upload_id in upload_ids:
            upload = process_loop.run(start, upload_id)
            if upload is None:
                continue
            failed += upload["status"] == "failed"
            click.echo(f"{what}: upload {upload_id} ({upload['original_file_name']}): "
                       f"{upload['status']}{' - ' + upload['error'] if upload['error'] else ''}")
    except QueueUnavailable as exc:
        raise CommandFailed(f"{what}: {exc}; it and the uploads after it stay queued "
                            "(the recovery sweep re-sends them)") from None
    finally:
        process_loop.shutdown()
    if dispatcher.mode == "celery":
        click.echo(f"{what}: sent {len(upload_ids)} upload(s) to the cluster: "
                   f"{', '.join(map(str, upload_ids))}")
    return failed


@click.command()
@click.option("--dry-run", is_flag=True, help="list the stuck uploads; re-send nothing")
@click.option("--stuck-after", type=click.IntRange(min=0), default=None,
              help="seconds without progress (default SKYGATE_STUCK_AFTER: 2 x the hard time "
                   "limit + 60)")
@format_options(("table", "json"))
def recover(dry_run, stuck_after, fmt):
    """Re-send uploads stuck queued or processing (the sweep every worker runs, by hand)."""
    as_json = fmt == "json"
    from service.runtime.celery_client import celery_client

    settings = Settings()
    if not settings.broker_url:
        raise click.UsageError("SKYGATE_BROKER_URL is not set: the embedded default has no "
                               "queue to lose work in (re-run `skygate scan` to finish a batch)")
    if stuck_after is not None:
        settings = settings.model_copy(update={"stuck_after": stuck_after or 1})
    app = celery_client()
    run = {"dry_run": dry_run, "stuck_after": settings.stuck_after_seconds}
    try:
        resent = asyncio.run(_sweep_once(settings, app, dry_run=dry_run))
    except Exception as exc:
        _audit("uploads.recover", outcome="failed",
               detail={**run, "error": f"{type(exc).__name__}: {exc}"})
        raise
    _audit("uploads.recover", detail={**run, "count": len(resent),
                                      "upload_ids": [i["upload_id"] for i in resent]})
    verb = "would re-send" if dry_run else "re-sent"
    for item in resent:
        if as_json:
            click.echo(json.dumps(item))
        else:
            click.echo(f"{verb} upload {item['upload_id']} ({item['status']}, stage "
                       f"{item['stage']}, idle {item['idle_seconds']:.0f}s)")
    (note if as_json else click.echo)(f"{verb} {len(resent)} stuck upload(s)")


async def _sweep_once(settings: Settings, app, *, dry_run: bool) -> list[dict]:
    from service.recovery import sweep  # the workers' own sweep, run once from here
    from storage.context import open_storage

    async with open_storage(settings) as storage:
        return await sweep(storage, settings, app, dry_run=dry_run)


# --- the blob store ---------------------------------------------------------------------------


@click.group()
def blobs() -> None:
    """The content-addressed blob store (SKYGATE_DATA_DIR/blobs)."""


@blobs.command("gc")
@click.option("--dry-run", is_flag=True, help="list what would go; remove nothing")
@click.option("--grace", "grace_seconds", type=click.FloatRange(min=0), default=3600.0,
              show_default=True,
              help="seconds: younger files are never touched (work in flight)")
@format_options(("table", "json"))
def blobs_gc(dry_run, grace_seconds, fmt):
    """Remove blobs that no row and no document references, older than the grace period,
    and report the bytes freed."""
    as_json = fmt == "json"
    from storage.context import open_storage
    from storage.gc import collect

    async def go():
        settings = Settings()
        async with open_storage(settings) as storage:
            return await collect(storage, grace_seconds=grace_seconds, dry_run=dry_run,
                                 intermediate_ttl=settings.intermediate_ttl)

    report = asyncio.run(go())
    listed = report.candidates if dry_run else report.removed
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "scanned": report.scanned,
                               "unreferenced": len(report.candidates),
                               "removed": len(report.removed), "bytes": report.bytes,
                               "keys": [k for k, _ in listed]}))
        return
    for key, size in listed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {key} ({size:,} bytes)")
    verb = "would free" if dry_run else "freed"
    click.echo(f"{report.scanned} blobs scanned, {len(report.candidates)} unreferenced; "
               f"{verb} {report.bytes:,} bytes")


COMMANDS = [doctor, retry, rescore, recover, blobs]
