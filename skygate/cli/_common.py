"""Helpers shared by several command modules."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import datetime

import click

from schemas.records import FileRecord, verdict_word
from schemas.settings import Settings

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.

UNJUDGED_STATUSES = ("failed", "skipped", "pending")


def fail(message: str) -> None:
    """Print ``error: message`` on stderr and exit 1."""
    note(f"error: {message}", level=logging.ERROR)
    sys.exit(1)


class CommandFailed(click.ClickException):
    """A command's failure (exit 1), raised where the caller must see the exception (an
    audited run records it); shown as ``error: …`` through :func:`note`."""

    def show(self, file=None) -> None:
        note(f"error: {self.format_message()}", level=logging.ERROR)


def note(message: str, *, level: int = logging.INFO) -> None:
    """A line for a person on stderr (a note, a summary, a cause, an error). stderr also takes
    the log records: where those are JSON lines (stderr not a terminal, or
    SKYGATE_LOG_FORMAT=json) the line is one too, a record of ``skygate.cli`` at ``level``,
    so a program reading stderr parses every line; on a terminal it is the plain text."""
    from service.runtime.logs import use_json

    # The records reach this stderr only through the handler `skygate` configured on it.
    logged_here = any(getattr(h, "stream", None) is sys.stderr
                      for h in logging.getLogger().handlers)
    if logged_here and use_json(Settings(), sys.stderr):
        logging.getLogger("skygate.cli").log(level, message)
    else:
        click.echo(message, err=True)


def engine_call(fn):
    """Run ``await fn(engine)`` against the configured database."""
    from storage.db import create_engine

    async def go():
        engine = create_engine(Settings().sqlalchemy_url)
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def parse_since(value: str | None):
    """``--since``: a date or an ISO 8601 time (UTC when it names no zone)."""
    from schemas.clock import aware

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (use YYYY-MM-DD or ISO 8601)",
                                 param_hint="--since") from None
    return aware(when)


def progress_bar(total: int, enabled: bool):
    """A rich progress bar (count, rate, ETA) on a terminal; nothing otherwise."""
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("[bold]scanning"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                        TimeRemainingColumn())
    progress.start()
    progress.add_task("scan", total=total, rate="")
    return progress


def record_word(record: FileRecord) -> str:
    """A record's word in the batch lines: ``AI 0.97``, ``REAL``, ``FAILED``, ``PENDING``…"""
    status = record["status"]
    if status in UNJUDGED_STATUSES:
        return status.upper()
    word = verdict_word(record["is_ai_generated"]).upper()
    if record.get("ai_probability") is not None:
        return f"{word} P(AI) {record['ai_probability']:.2f}"
    if record["confidence"] is not None:
        return f"{word} confidence {record['confidence']:.2f}"
    return word


# --- conventions every command follows ------------------------------------------------------

FORMATS = ("table", "json", "csv")


def format_options(choices=FORMATS, *, default="table"):
    """``--format`` for a command that prints records, and ``--json`` as its alias
    (``--format json``); both fill the ``fmt`` parameter."""
    def decorate(fn):
        fn = click.option("--json", "fmt", flag_value="json",
                          help="the same as --format json")(fn)
        return click.option("--format", "fmt", type=click.Choice(list(choices)),
                            default=default, show_default=True,
                            help="json: one object per line; csv: a header and a row each"
                            if "csv" in choices else "json: one object per line")(fn)
    return decorate


def quiet() -> bool:
    """``skygate --quiet``: only errors and the records asked for (--format json|csv)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("quiet"))


def say(message: str, *, err: bool = False) -> None:
    """A line for a person (a summary, a note): left out under --quiet."""
    if quiet():
        return
    if err:
        note(message)
    else:
        click.echo(message)
