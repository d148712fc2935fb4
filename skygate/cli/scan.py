"""Batch runs: ``scan`` (here, no servers), ``submit`` (to a cluster), ``sample``; their
progress lines, summaries, JSONL/CSV outputs and HTML report."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

import click

from schemas.records import JUDGED_STATUSES, FileRecord
from schemas.settings import Settings
from skygate.cli._common import format_options, note, progress_bar, record_word, say
from skygate.cli.db import ensure_schema

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.

_batch_options = [
    click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
                 help="write one JSON line per file"),
    click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
                 help="write a CSV row per file"),
    click.option("--recursive/--no-recursive", default=True, show_default=True),
    click.option("--include", multiple=True, help="only files matching this glob"),
    click.option("--exclude", multiple=True, help="skip files matching this glob"),
    click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
                 help="write an HTML report, its pictures in F_files/ beside it"),
]


def batch_options(fn):
    for option in reversed(_batch_options):
        fn = option(fn)
    return format_options()(fn)


@click.command(epilog="Exit codes: 0 every file got a verdict; 1 a file failed; 2 a usage "
                      "error; 4 --fail-on matched an image; 130 interrupted.")
@click.argument("paths", nargs=-1, required=True)
@batch_options
@click.option("--workers", type=int, default=None, help="processes (default: all cores)")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="the store's folder: database and pictures (default: SKYGATE_DATA_DIR, "
                   "else ~/.local/share/skygate)")
@click.option("--no-store", is_flag=True,
              help="keep nothing: judge in a temporary store, write only the outputs asked "
                   "for (--out, --csv, --report), then remove the store")
@click.option("--fail-on", type=click.Choice(["ai", "uncertain"]),
              help="exit 4 when any image is judged AI (ai), or AI or uncertain (uncertain)")
def scan(paths, out, csv_path, recursive, include, exclude, fmt, report, workers,
         data_dir, no_store, fail_on):
    """Run the whole pipeline here, with no servers (the embedded default).

    Sidecars (.xmp, .aae, .txt …), camera RAW files and dangling links are skipped with
    their reason; they do not make the run fail."""
    from skygate.batch import Outputs, default_workers, run_embedded, skipped_records

    files = _files_or_exit(paths, recursive, include, exclude)
    judge, skipped = skipped_records(files)
    with store_for_scan(data_dir, no_store=no_store, for_report=bool(report)) as settings:
        if settings.broker_url:
            note("note: SKYGATE_BROKER_URL is set; scan still runs here "
                 "(use `skygate submit` for the cluster)")
        ensure_schema(settings)
        outputs = Outputs(out, csv_path)
        n = max(1, min(workers or default_workers(), len(judge)))
        _run_batch(chain(skipped, run_embedded(judge, workers=n)), len(files), outputs,
                   fmt=fmt)
        if report:
            _write_report(settings, outputs.records, report)
        where = "nothing kept (--no-store)" if no_store else f"store: {settings.data_dir}"
        say(where, err=True)
    sys.exit(_scan_exit_code(outputs.counts, fail_on, expected_skips=len(skipped)))


# Where a --no-store scan must not write: the configured servers and stores.
_STORE_VARIABLES = ("SKYGATE_DATABASE_URL", "SKYGATE_MONGO_URL", "SKYGATE_BLOB_URL",
                    "SKYGATE_BROKER_URL", "SKYGATE_RESULT_BACKEND", "SKYGATE_CACHE_URL")


@contextlib.contextmanager
def store_for_scan(data_dir: Path | None, *, no_store: bool, for_report: bool = False):
    """The settings a scan runs with. ``--data-dir`` names the embedded store's folder;
    ``--no-store`` uses a temporary embedded store (whatever servers are configured) and
    removes it afterwards; ``for_report`` (a scan with --report) draws the voting model's
    map and computes the evidence-only methods in each canvas, as the report shows both.
    Set in the environment, so that worker processes use it too."""
    with (_environment({"SKYGATE_MODEL_HEATMAP": "1", "SKYGATE_EVIDENCE": "eager"}
                       if for_report else {}),
          _store(data_dir, no_store=no_store) as settings):
        yield settings


@contextlib.contextmanager
def _environment(values: dict[str, str | None]):
    """os.environ with ``values`` (None: unset) for the block, then as it was."""
    saved = {k: os.environ.get(k) for k in values}

    def put(pairs):
        for key, value in pairs.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    put(values)
    try:
        yield
    finally:
        put(saved)


@contextlib.contextmanager
def _store(data_dir: Path | None, *, no_store: bool):
    if not no_store:
        if data_dir is not None:
            os.environ["SKYGATE_DATA_DIR"] = str(data_dir.expanduser().absolute())
        yield Settings()
        return
    tmp = tempfile.mkdtemp(prefix="skygate-scan-")
    try:
        with _environment({**dict.fromkeys(_STORE_VARIABLES), "SKYGATE_DATA_DIR": tmp}):
            yield Settings()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@click.command(epilog="Exit codes: 0 every upload done (or sent, without --wait); 1 one "
                      "failed; 2 a usage error; 3 still pending at --timeout; 130 interrupted.")
@click.argument("paths", nargs=-1, required=True)
@batch_options
@click.option("--wait/--no-wait", default=False, help="follow uploads to their verdicts")
@click.option("--timeout", type=float, default=1800.0, show_default=True,
              help="seconds for the whole command; what is not done by then is reported "
                   "as pending (exit 3)")
def submit(paths, out, csv_path, recursive, include, exclude, fmt, report, wait, timeout):
    """Send files to a running cluster (SKYGATE_BROKER_URL); --wait for the verdicts."""
    from skygate.batch import Outputs, skipped_records
    from skygate.remote import submit_files

    settings = Settings()
    if not settings.broker_url:
        raise click.UsageError("SKYGATE_BROKER_URL is not set (use `skygate scan` to run here)")
    files = _files_or_exit(paths, recursive, include, exclude)
    judge, skipped = skipped_records(files)
    outputs = Outputs(out, csv_path)
    if report and not wait:
        raise click.UsageError("--report needs --wait (the report shows verdicts)")
    _run_batch(chain(skipped, submit_files(settings, judge, wait=wait, timeout=timeout)),
               len(files), outputs, fmt=fmt)
    if report:
        _write_report(settings, outputs.records, report)
    say(_submit_summary(outputs.records, wait=wait, not_images=skipped), err=fmt != "table")
    if outputs.counts["failed"] or outputs.counts["skipped"] - len(skipped):
        sys.exit(1)
    sys.exit(3 if outputs.counts["pending"] else 0)


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def sample(folder: Path) -> None:
    """Write a few sample images to FOLDER (made here, nothing downloaded)."""
    from skygate.sample import make_sample

    for path in make_sample(folder):
        click.echo(path)


COMMANDS = [scan, submit, sample]


# --- shared by scan and submit ---------------------------------------------------------------


def _files_or_exit(paths, recursive, include, exclude) -> list[Path]:
    from skygate.batch import walk

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise click.UsageError(f"no such file or folder: {', '.join(missing)}")
    files = walk(list(paths), recursive=recursive, include=include, exclude=exclude)
    if not files:
        raise click.UsageError("no files to scan")
    return files


def _run_batch(records, total: int, outputs, *, fmt: str) -> None:
    """Write each record as it arrives (outputs, a line, a JSON or CSV record on stdout, or the
    progress bar); the summary at the end; on Ctrl-C keep what was done and exit 130."""
    from skygate.cli._common import quiet

    lines = fmt == "table" and not quiet()
    progress = progress_bar(total, sys.stderr.isatty() and lines)
    rows = _csv_rows() if fmt == "csv" else None
    started = time.monotonic()
    interrupted = False
    try:
        for i, record in enumerate(records, 1):
            outputs.add(record)
            line = f"{record_word(record):<22} {record['path']}"
            if record.get("error"):
                line += f"  ({record['error']})"
            if fmt == "json":
                click.echo(json.dumps(record, default=str))
            elif rows is not None:
                rows(record)
            elif not lines:  # --quiet: the outputs (--out, --csv) and the exit code say it
                continue
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
    say(_summary(outputs, time.monotonic() - started), err=fmt != "table")
    if interrupted:
        note(f"interrupted after {len(outputs.records)} of {total} files; run the same "
             "command again to finish the rest", level=logging.WARNING)
        sys.exit(130)


def _csv_rows():
    """``--format csv``: the CSV columns of ``--csv F``, on stdout."""
    from skygate.batch import csv_fields, flatten

    writer = csv.DictWriter(sys.stdout, fieldnames=csv_fields(), extrasaction="ignore")
    writer.writeheader()
    return lambda record: writer.writerow(flatten(record))


def _scan_exit_code(counts: dict, fail_on: str | None, *, expected_skips: int = 0) -> int:
    """1 when a file failed or could not be read (skipped sidecars, RAW files and links,
    ``expected_skips``, are normal in a photo folder); else 4 when --fail-on matched an
    image; else 0."""
    if counts["failed"] or counts["skipped"] - expected_skips:
        return 1
    matched = counts["ai"] + (counts["uncertain"] if fail_on == "uncertain" else 0)
    return 4 if fail_on and matched else 0


def _summary(outputs, elapsed: float) -> str:
    c = outputs.counts
    processed = c["done"] + c["duplicate"]
    return (f"processed {processed} (new {c['done']}, already known {c['duplicate']}): "
            f"AI {c['ai']}, real {c['real']}, uncertain {c['uncertain']}; "
            f"failed {c['failed']}, skipped {c['skipped']}; {elapsed:.1f}s")


def _submit_summary(records: list[FileRecord], *, wait: bool,
                    not_images: list[FileRecord] = ()) -> str:
    """What the database says at the end: done, failed with reasons, still pending with ids;
    the sidecars, RAW files and dangling links skipped (``not_images``) counted apart."""
    expected = {id(r) for r in not_images}
    done = [r for r in records if r["status"] in JUDGED_STATUSES]
    failed = [r for r in records
              if r["status"] in ("failed", "skipped") and id(r) not in expected]
    pending = [r for r in records if r["status"] == "pending"]
    queued = [r for r in records if r["status"] == "queued"]
    lines = [f"summary: done {len(done)}, failed {len(failed)}, still pending {len(pending)}"
             + ("" if wait else f", queued {len(queued)}")
             + (f", skipped {len(expected)} (not images)" if expected else "")]
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


def _write_report(settings: Settings, records: list[FileRecord], path: Path) -> None:
    """The HTML report of a batch (``--report``)."""
    from skygate.report import write_report
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            return await write_report(storage, records, path, settings=settings)

    asyncio.run(go())
    note(f"report: {path} (pictures in {path.stem}_files/)")
