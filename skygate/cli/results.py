"""``skygate results``: stored verdicts read back, as a table, JSON lines or CSV."""

from __future__ import annotations

import asyncio
import csv
import json
import sys

import click

from schemas.records import JUDGED_STATUSES, verdict_word
from schemas.settings import Settings
from skygate.cli._common import fail, format_options, parse_since, say

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.


@click.command(epilog="Exit codes: 0 records printed (or none stored); 1 no upload with "
                      "that id; 2 a usage error.")
@click.argument("upload_id", type=int, required=False)
@click.option("--since", help="only uploads on or after this date (YYYY-MM-DD or ISO 8601)")
@format_options()
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
def results(upload_id, since, fmt, limit):
    """Read stored verdicts back (newest first), from the configured database."""
    from skygate.batch import stored_records
    from storage.context import open_storage

    when = parse_since(since)
    settings = Settings()

    async def go():
        async with open_storage(settings) as storage:
            return await stored_records(storage, upload_id=upload_id, since=when, limit=limit)

    records = asyncio.run(go())
    if upload_id is not None and not records:
        fail(f"no upload with id {upload_id}")
    if fmt == "json":
        for record in records:
            click.echo(json.dumps(record, default=str))
    elif fmt == "csv":
        _print_csv(records)
    else:
        _print_table(records)
        if upload_id is not None and records[0].get("explanation"):
            from pipeline.explanation import explanation_lines

            click.echo("\n".join(explanation_lines(records[0]["explanation"])))


def _print_csv(records) -> None:
    from skygate.batch import csv_fields, flatten

    writer = csv.DictWriter(sys.stdout, fieldnames=[*csv_fields(), "upload_date"],
                            extrasaction="ignore")
    writer.writeheader()
    for record in records:
        writer.writerow({**flatten(record), "upload_date": record["upload_date"]})


def _print_table(records) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("id", "file", "status", "verdict", "P(AI)", "confidence", "date", "error")
    for r in records:
        verdict = (verdict_word(r["is_ai_generated"]).text if r["status"] in JUDGED_STATUSES
                   else "")
        conf = f"{r['confidence']:.2f}" if r["confidence"] is not None else ""
        p_ai = f"{r['ai_probability']:.2f}" if r.get("ai_probability") is not None else ""
        date = r["upload_date"].strftime("%Y-%m-%d %H:%M") if r["upload_date"] else ""
        table.add_row(str(r["upload_id"]), escape(r["path"]), r["status"], verdict, p_ai, conf,
                      date, escape(r["error"] or ""))
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    say(f"{len(records)} upload(s)")


COMMANDS = [results]
