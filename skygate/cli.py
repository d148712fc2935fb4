"""The ``skygate`` command."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from schemas.settings import Settings


@click.group()
def main() -> None:
    """SkyGate: tell AI-generated images from real photographs."""
    from service.logs import configure

    configure()


@main.group()
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
        await ensure_default_configuration(storage.documents)
    return {"before": before, "after": after, "indexes": indexes}


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


def _ensure_schema(settings: Settings) -> None:
    asyncio.run(_db_upgrade(settings, "head"))


def _progress(total: int, enabled: bool):
    """A rich progress bar (count, rate, ETA) on a terminal; nothing otherwise."""
    if not enabled:
        return None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    progress = Progress(TextColumn("[bold]scanning"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                        TimeRemainingColumn())
    progress.start()
    progress.add_task("scan", total=total, rate="")
    return progress


def _verdict_word(record: dict) -> str:
    if record["status"] in ("failed", "skipped", "pending"):
        return record["status"].upper()
    v = record["is_ai_generated"]
    word = {True: "AI", False: "REAL", None: "UNCERTAIN"}[v]
    return f"{word} {record['confidence']:.2f}" if record["confidence"] is not None else word


def _summary(outputs, elapsed: float) -> str:
    c = outputs.counts
    processed = c["done"] + c["duplicate"]
    return (f"processed {processed} (new {c['done']}, already known {c['duplicate']}): "
            f"AI {c['ai']}, real {c['real']}, uncertain {c['uncertain']}; "
            f"failed {c['failed']}, skipped {c['skipped']}; {elapsed:.1f}s")


def _run_batch(records, total: int, outputs, *, as_json: bool) -> None:
    import sys
    import time

    tty = sys.stderr.isatty() and not as_json
    progress = _progress(total, tty)
    started = time.monotonic()
    interrupted = False
    try:
        for i, record in enumerate(records, 1):
            outputs.add(record)
            line = f"{_verdict_word(record):<16} {record['path']}"
            if record.get("error"):
                line += f"  ({record['error']})"
            if as_json:
                click.echo(json.dumps(record, default=str))
            elif progress is not None:
                rate = i / max(time.monotonic() - started, 1e-6)
                progress.update(progress.task_ids[0], advance=1, rate=f"{rate:.2f} img/s")
                progress.console.print(line, highlight=False, markup=False)
            else:
                click.echo(line)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if hasattr(records, "close"):
            records.close()
        if progress is not None:
            progress.stop()
        outputs.close()
    summary = _summary(outputs, time.monotonic() - started)
    click.echo(summary, err=as_json)
    if interrupted:
        click.echo(f"interrupted after {len(outputs.records)} of {total} files; run the same "
                   "command again to finish the rest", err=True)
        sys.exit(130)


def _files_or_exit(paths, recursive, include, exclude):
    from skygate.batch import walk

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise click.UsageError(f"no such file or folder: {', '.join(missing)}")
    files = walk(list(paths), recursive=recursive, include=include, exclude=exclude)
    if not files:
        raise click.UsageError("no files to scan")
    return files


_batch_options = [
    click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
                 help="write one JSON line per file"),
    click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
                 help="write a CSV row per file"),
    click.option("--recursive/--no-recursive", default=True, show_default=True),
    click.option("--include", multiple=True, help="only files matching this glob"),
    click.option("--exclude", multiple=True, help="skip files matching this glob"),
    click.option("--json", "as_json", is_flag=True, help="machine-readable lines on stdout"),
    click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
                 help="write a self-contained HTML report"),
]


def batch_options(fn):
    for option in reversed(_batch_options):
        fn = option(fn)
    return fn


@main.command()
@click.argument("paths", nargs=-1, required=True)
@batch_options
@click.option("--workers", type=int, default=None, help="processes (default: all cores)")
def scan(paths, out, csv_path, recursive, include, exclude, as_json, report, workers):
    """Run the whole pipeline here, with no servers (the embedded default)."""
    from skygate.batch import Outputs, default_workers, run_embedded

    settings = Settings()
    if settings.broker_url:
        click.echo("note: SKYGATE_BROKER_URL is set; scan still runs here "
                   "(use `skygate submit` for the cluster)", err=True)
    files = _files_or_exit(paths, recursive, include, exclude)
    _ensure_schema(settings)
    outputs = Outputs(out, csv_path)
    n = min(workers or default_workers(), len(files))
    _run_batch(run_embedded(files, workers=n), len(files), outputs, as_json=as_json)
    if report:
        _write_report(settings, outputs.records, report)
    sys.exit(1 if outputs.counts["failed"] or outputs.counts["skipped"] else 0)


@main.command("eval")
@click.argument("paths", nargs=-1)
@click.option("--labels", "labels_csv", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV with columns path,label (ai|real); paths relative to the CSV")
@click.option("--stored", is_flag=True,
              help="read the verdicts stored for the same SHA-256 instead of running")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="write the whole report (with per-file rows) as JSON")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="write the ROC curve and the reliability diagram as a PNG")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="processes (default: all cores)")
@click.option("--json", "as_json", is_flag=True, help="print the JSON report, not the table")
def eval_(paths, labels_csv, stored, out, plot, workers, as_json):
    """Judge the detector on labelled images: PATH/real/… and PATH/ai/…, or --labels F.csv.

    Runs them like `scan` (on the configured database: a re-run reads the stored verdicts
    back), or with --stored only reads back verdicts stored earlier. Exit 0 when it ran.
    """
    from skygate import evaluate
    from skygate.batch import default_workers

    if not paths and labels_csv is None:
        raise click.UsageError("give labelled folders (PATH/real, PATH/ai) or --labels F.csv")
    try:
        files = evaluate.collect(paths, labels_csv)
    except evaluate.EvalError as exc:
        raise click.UsageError(str(exc)) from None
    settings = Settings()
    if stored:
        try:
            evaluate.check_stored(settings)
        except evaluate.EvalError as exc:
            raise click.UsageError(str(exc)) from None
    else:
        if settings.broker_url:
            click.echo("note: SKYGATE_BROKER_URL is set; eval still runs here", err=True)
        _ensure_schema(settings)
    progress = _progress(len(files), sys.stderr.isatty() and not as_json)
    done = []

    def on_record(record):
        done.append(record)
        if progress is not None:
            progress.update(progress.task_ids[0], advance=1)
        else:
            word = (_verdict_word(record) if record["status"] in ("done", "duplicate", "failed",
                                                                  "skipped")
                    else record["status"].upper())
            click.echo(f"[{len(done)}/{len(files)}] {word:<16} {record['path']}", err=True)

    try:
        rows = evaluate.run(files, stored=stored, on_record=on_record,
                            workers=min(workers or default_workers(), len(files)))
    except KeyboardInterrupt:
        click.echo(f"interrupted after {len(done)} of {len(files)} files; run the same "
                   "command again to finish the rest", err=True)
        sys.exit(130)
    finally:
        if progress is not None:
            progress.stop()
    report = evaluate.build_report(rows)
    if out:
        out.write_text(evaluate.to_json(report) + "\n")
    if plot:
        evaluate.write_plot(report, plot)
    click.echo(evaluate.to_json(report) if as_json else evaluate.format_report(report))
    if out:
        click.echo(f"report: {out}", err=True)
    if plot:
        click.echo(f"plot: {plot}", err=True)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@batch_options
@click.option("--wait/--no-wait", default=False, help="follow uploads to their verdicts")
@click.option("--timeout", type=float, default=1800.0, show_default=True,
              help="seconds for the whole command; what is not done by then is reported "
                   "as pending (exit 3)")
def submit(paths, out, csv_path, recursive, include, exclude, as_json, report, wait, timeout):
    """Send files to a running cluster (SKYGATE_BROKER_URL); --wait for the verdicts."""
    from skygate.batch import Outputs
    from skygate.remote import submit_files

    settings = Settings()
    if not settings.broker_url:
        raise click.UsageError("SKYGATE_BROKER_URL is not set (use `skygate scan` to run here)")
    files = _files_or_exit(paths, recursive, include, exclude)
    outputs = Outputs(out, csv_path)
    if report and not wait:
        raise click.UsageError("--report needs --wait (the report shows verdicts)")
    _run_batch(submit_files(settings, files, wait=wait, timeout=timeout), len(files), outputs,
               as_json=as_json)
    if report:
        _write_report(settings, outputs.records, report)
    click.echo(_submit_summary(outputs.records, wait=wait), err=as_json)
    if outputs.counts["failed"] or outputs.counts["skipped"]:
        sys.exit(1)
    sys.exit(3 if outputs.counts["pending"] else 0)


def _submit_summary(records: list[dict], *, wait: bool) -> str:
    """What the database says at the end: done, failed with reasons, still pending with ids."""
    done = [r for r in records if r["status"] in ("done", "duplicate")]
    failed = [r for r in records if r["status"] in ("failed", "skipped")]
    pending = [r for r in records if r["status"] == "pending"]
    queued = [r for r in records if r["status"] == "queued"]
    lines = [f"summary: done {len(done)}, failed {len(failed)}, still pending {len(pending)}"
             + ("" if wait else f", queued {len(queued)}")]
    for r in failed:
        lines.append(f"  failed {r['upload_id'] if r['upload_id'] is not None else '-'} "
                     f"{r['path']}: {r['error']}")
    if pending:
        ids = [str(r["upload_id"]) for r in pending if r["upload_id"] is not None]
        lines.append(f"  pending upload ids: {', '.join(ids) or '-'}"
                     + (f" (+{len(pending) - len(ids)} not ingested yet)"
                        if len(pending) > len(ids) else "")
                     + "; run the same command again to finish them")
    return "\n".join(lines)


def _parse_since(value: str | None):
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (use YYYY-MM-DD or ISO 8601)",
                                 param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@main.command()
@click.argument("upload_id", type=int, required=False)
@click.option("--since", help="only uploads on or after this date (YYYY-MM-DD or ISO 8601)")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
def results(upload_id, since, fmt, limit):
    """Read stored verdicts back (newest first), from the configured database."""
    import csv

    from skygate.batch import CSV_FIELDS, flatten, stored_records
    from storage.context import open_storage

    when = _parse_since(since)
    settings = Settings()

    async def go():
        async with open_storage(settings) as storage:
            return await stored_records(storage, upload_id=upload_id, since=when, limit=limit)

    records = asyncio.run(go())
    if upload_id is not None and not records:
        click.echo(f"error: no upload with id {upload_id}", err=True)
        sys.exit(1)
    if fmt == "json":
        for record in records:
            click.echo(json.dumps(record, default=str))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS + ["upload_date"],
                                extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({**flatten(record), "upload_date": record["upload_date"]})
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table("id", "file", "status", "verdict", "confidence", "date", "error")
        for r in records:
            verdict = ({True: "AI", False: "real", None: "uncertain"}[r["is_ai_generated"]]
                       if r["status"] in ("done", "duplicate") else "")
            conf = f"{r['confidence']:.2f}" if r["confidence"] is not None else ""
            date = r["upload_date"].strftime("%Y-%m-%d %H:%M") if r["upload_date"] else ""
            table.add_row(str(r["upload_id"]), escape(r["path"]), r["status"], verdict, conf,
                          date, escape(r["error"] or ""))
        Console(width=None if sys.stdout.isatty() else 160).print(table)
        click.echo(f"{len(records)} upload(s)")


def _write_report(settings: Settings, records: list[dict], path: Path) -> None:
    from skygate.report import build_report
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            return await build_report(storage, records)

    path.write_text(asyncio.run(go()))
    click.echo(f"report: {path}", err=True)


# --- accounts and the HTTP API ------------------------------------------------------------


def _engine_call(fn):
    """Run ``await fn(engine)`` against the configured database (schema brought up first)."""
    from storage.db import create_engine

    async def go():
        engine = create_engine(Settings().sqlalchemy_url)
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


@main.group()
def users() -> None:
    """Accounts of the HTTP API."""


@users.command("create")
@click.argument("username")
@click.option("--email", required=True)
@click.option("--password-stdin", is_flag=True,
              help="read a password from stdin (for POST /v1/keys); keys-only without it")
def users_create(username, email, password_stdin):
    """Create a user (passwords are stored as argon2 hashes)."""
    from storage import accounts

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    if password_stdin and len(password) < 8:
        raise click.UsageError("the password must have at least 8 characters")
    try:
        user_id = _engine_call(lambda e: accounts.create_user(
            e, username=username, email=email, password=password))
    except accounts.AccountError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"user {username} created (id {user_id})")


@users.command("suspend")
@click.argument("username")
def users_suspend(username):
    """Suspend an account: its keys get 401 until it is activated again."""
    _set_status(username, "suspended")


@users.command("activate")
@click.argument("username")
def users_activate(username):
    """Re-activate a suspended account."""
    _set_status(username, "active")


def _set_status(username: str, status: str) -> None:
    from storage import accounts

    try:
        _engine_call(lambda e: accounts.set_account_status(e, username, status))
    except accounts.AccountError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"user {username}: {status}")


@main.group()
def keys() -> None:
    """API keys (sent in the X-API-Key header)."""


@keys.command("create")
@click.option("--user", "username", required=True)
@click.option("--name", default="default", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True,
              help="requests per quota window (SKYGATE_QUOTA_PERIOD_SECONDS)")
@click.option("--expires", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="expiry date (UTC)")
def keys_create(username, name, limit, expires):
    """Create a key; it is printed once (only its hash is stored)."""
    from datetime import UTC

    from storage import accounts

    when = expires.replace(tzinfo=UTC) if expires else None
    try:
        key, key_id = _engine_call(lambda e: accounts.create_key(
            e, username=username, name=name, limit=limit, expires_at=when))
    except accounts.AccountError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"key {key_id} for {username} (shown once, keep it):", err=True)
    click.echo(key)


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id):
    """Revoke a key by its id (see `skygate keys list`)."""
    from storage import accounts

    if not _engine_call(lambda e: accounts.revoke_key(e, key_id=key_id)):
        click.echo(f"error: no key with id {key_id}", err=True)
        sys.exit(1)
    click.echo(f"key {key_id} revoked")


@keys.command("list")
@click.option("--user", "username")
def keys_list(username):
    """Keys with their public prefix, state and usage (never the key itself)."""
    from storage import accounts

    from datetime import UTC, datetime

    now = datetime.now(UTC)
    for k in _engine_call(lambda e: accounts.list_keys(e, username)):
        expires = k["expires_at"]
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        state = ("revoked" if not k["is_active"] else
                 "expired" if expires is not None and expires <= now else "active")
        click.echo(f"{k['key_id']:>5}  {k['username']:<20} {k['key_name']:<16} {k['api_key']:<16} "
                   f"{state:<8} {k['requests_made']}/{k['request_limit']} "
                   f"expires {k['expires_at'] or 'never'}  last used {k['last_used_at'] or '-'}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
def api(host, port, workers):
    """Serve the HTTP API (uvicorn, with header/body timeouts and a concurrency limit:
    SKYGATE_API_HEADER_TIMEOUT, SKYGATE_API_BODY_TIMEOUT, SKYGATE_API_LIMIT_CONCURRENCY).
    OpenAPI at /docs and /openapi.json."""
    from api.server import run

    run(host, port, workers)


# --- operators ----------------------------------------------------------------------------


@main.command()
def doctor():
    """Check every configured dependency; exit 1 if any check fails."""
    from rich.console import Console
    from rich.table import Table

    from service.health import run_checks

    checks = asyncio.run(run_checks(Settings()))
    from rich.markup import escape

    table = Table("check", "ok", "detail", "fix")
    for c in checks:
        # Details hold brackets (a worker's [queues]) that are text, not markup.
        table.add_row(c.name, "ok" if c.ok else "FAIL", escape(c.detail),
                      escape(c.hint) if not c.ok else "")
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    failed = [c.name for c in checks if not c.ok]
    if failed:
        click.echo(f"failed: {', '.join(failed)}", err=True)
        sys.exit(1)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=None, help="default SKYGATE_FLOWER_PORT (5555)")
@click.option("--address", default="127.0.0.1", show_default=True)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port, address, flower_args):
    """Flower on the configured broker: workers, queues, tasks; Prometheus at /metrics.

    Basic auth from SKYGATE_FLOWER_BASIC_AUTH (user:password). Extra arguments go to Flower.
    """
    import os

    settings = Settings()
    if not settings.broker_url:
        raise click.UsageError("SKYGATE_BROKER_URL is not set: Flower watches a cluster")
    args = [sys.executable, "-m", "celery", "-A", "workers", "flower",
            f"--port={port or settings.flower_port}", f"--address={address}",
            "--conf=" + str(Path(__file__).with_name("flowerconfig.py"))]
    if settings.flower_basic_auth:
        args.append(f"--basic-auth={settings.flower_basic_auth}")
    os.execv(sys.executable, args + list(flower_args))


def _requeue(settings: Settings, upload_ids: list[int], *, what: str) -> None:
    """Send each upload back through prepare (cluster) or run it here (embedded)."""
    if not upload_ids:
        click.echo(f"nothing to {what}")
        return
    if settings.broker_url:
        from service.dispatch import send_prepare

        for upload_id in upload_ids:
            send_prepare(upload_id)
        click.echo(f"{what}: sent {len(upload_ids)} upload(s) to the cluster: "
                   f"{', '.join(map(str, upload_ids))}")
        return
    from service import detection, runtime

    async def one(storage, settings, upload_id):
        from storage import repository as repo

        await detection.run_all_or_fail(storage, settings, upload_id)
        return await repo.get_upload(storage.engine, upload_id)

    failed = 0
    for upload_id in upload_ids:
        upload = runtime.run(one, upload_id)
        failed += upload["status"] == "failed"
        click.echo(f"{what}: upload {upload_id} ({upload['original_file_name']}): "
                   f"{upload['status']}{' - ' + upload['error'] if upload['error'] else ''}")
    runtime.shutdown()
    if failed:
        sys.exit(1)


@main.command()
@click.option("--failed", "only_failed", is_flag=True, required=True,
              help="re-enqueue failed uploads (required: say what to retry)")
@click.option("--since", help="only uploads on or after this date")
def retry(only_failed, since):
    """Re-enqueue failed uploads (after fixing what made them fail)."""
    from storage import repository as repo

    when = _parse_since(since)
    settings = Settings()

    async def pick(engine):
        ids = await repo.failed_upload_ids(engine, since=when)
        for upload_id in ids:
            await repo.reset_for_retry(engine, upload_id)
        return ids

    _requeue(settings, _engine_call(pick), what="retry")


@main.command()
@click.option("--dry-run", is_flag=True, help="list the stuck uploads; re-send nothing")
@click.option("--stuck-after", type=click.IntRange(min=0), default=None,
              help="seconds without progress (default SKYGATE_STUCK_AFTER: 2 x the hard time "
                   "limit + 60)")
@click.option("--json", "as_json", is_flag=True, help="one JSON line per upload")
def recover(dry_run, stuck_after, as_json):
    """Re-send uploads stuck queued or processing (the sweep every worker runs, by hand)."""
    from workers.recovery import sweep

    settings = Settings()
    if not settings.broker_url:
        raise click.UsageError("SKYGATE_BROKER_URL is not set: the embedded default has no "
                               "queue to lose work in (re-run `skygate scan` to finish a batch)")
    if stuck_after is not None:
        settings = settings.model_copy(update={"stuck_after": stuck_after or 1})
    from workers import app

    resent = _engine_call(lambda engine: sweep(engine, settings, app, dry_run=dry_run))
    verb = "would re-send" if dry_run else "re-sent"
    for item in resent:
        if as_json:
            click.echo(json.dumps(item))
        else:
            click.echo(f"{verb} upload {item['upload_id']} ({item['status']}, stage "
                       f"{item['stage']}, idle {item['idle_seconds']:.0f}s)")
    click.echo(f"{verb} {len(resent)} stuck upload(s)", err=as_json)


@main.command()
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

    _requeue(settings, _engine_call(pick), what="rescore")


@main.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def sample(folder: Path) -> None:
    """Write a few sample images to FOLDER (made here, nothing downloaded)."""
    from skygate.sample import make_sample

    for path in make_sample(folder):
        click.echo(path)



# --- the blob store -------------------------------------------------------------------------


@main.group()
def blobs() -> None:
    """The content-addressed blob store (SKYGATE_DATA_DIR/blobs)."""


@blobs.command("gc")
@click.option("--dry-run", is_flag=True, help="list what would go; remove nothing")
@click.option("--grace", "grace_seconds", type=click.FloatRange(min=0), default=3600.0,
              show_default=True,
              help="seconds: younger files are never touched (work in flight)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary")
def blobs_gc(dry_run, grace_seconds, as_json):
    """Remove blobs that no row and no document references, older than the grace period,
    and report the bytes freed."""
    import json

    from storage.context import open_storage
    from storage.gc import collect

    async def go():
        async with open_storage(Settings()) as storage:
            return await collect(storage, grace_seconds=grace_seconds, dry_run=dry_run)

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


if __name__ == "__main__":
    main()
