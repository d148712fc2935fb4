"""``skygate feedback export``: owners' feedback (``POST /v1/uploads/{id}/feedback``) as a
labelled set for ``skygate eval --labels`` and ``scripts/train_model.py --labels``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from schemas.settings import Settings
from skygate.cli._common import parse_since

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.


@click.group("feedback")
def feedback_group() -> None:
    """Feedback that owners gave on their uploads (ai or real)."""


@feedback_group.command("export")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the labels file; the images go to images/ beside it "
                   "[default: feedback/feedback.csv or .jsonl]")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="csv (what eval --labels reads) or jsonl [default: from --out, else csv]")
@click.option("--since", help="only feedback given or changed on or after this date "
                              "(YYYY-MM-DD or ISO 8601)")
@click.option("--user", "username", help="only this user's feedback")
def export(out: Path | None, fmt: str | None, since: str | None, username: str | None):
    """Write the labelled set: one row per image (path,label,… with the model's verdict and
    P(AI) when it was labelled) and the images copied from the blob store."""
    from skygate import feedback_export
    from storage.context import open_storage

    when = parse_since(since)
    if fmt is None:
        fmt = "jsonl" if out is not None and out.suffix.lower() == ".jsonl" else "csv"
    out = out or Path("feedback") / f"feedback.{fmt}"
    out.parent.mkdir(parents=True, exist_ok=True)

    async def go():
        async with open_storage(Settings()) as storage:
            return await feedback_export.collect(storage, out, since=when, username=username)

    summary = asyncio.run(go())
    feedback_export.write(summary.rows, out, fmt)
    click.echo(summary.text(out))


COMMANDS = [feedback_group]
