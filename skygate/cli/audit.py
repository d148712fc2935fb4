"""``skygate audit``: read the audit trail (who did what to what, when, from where)."""

from __future__ import annotations

import json
import sys

import click

from skygate.cli._common import engine_call, format_options, parse_since, say

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.


@click.command()
@click.option("--since", help="on or after this date or ISO 8601 time (UTC by default)")
@click.option("--user", help="a user name (their API calls), or an actor such as cli:root")
@click.option("--action", help="exact (user.create) or a family (user: every user.*)")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@format_options(("table", "json"))
def audit(since, user, action, limit, fmt):
    """The audit trail, newest first. Rows are append-only: the database refuses to change
    or delete them."""
    from storage import audit as trail

    when = parse_since(since)
    rows, total = engine_call(lambda e: trail.query(e, since=when, user=user, action=action,
                                                     limit=limit))
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps({**row, "occurred_at": row["occurred_at"].isoformat()},
                                  default=str))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("when (UTC)", "actor", "key", "action", "target", "from", "outcome",
                  "detail")
    for r in rows:
        table.add_row(r["occurred_at"].strftime("%Y-%m-%d %H:%M:%S"), escape(r["actor"]),
                      str(r["key_id"] or ""), r["action"], escape(r["target"] or ""),
                      escape(r["source"] or ""), r["outcome"],
                      escape(json.dumps(r["detail"], default=str) if r["detail"] else ""))
    Console(width=None if sys.stdout.isatty() else 220).print(table)
    say(f"{len(rows)} of {total} row(s)", err=True)


COMMANDS = [audit]
