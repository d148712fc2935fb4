"""The ``skygate`` command: one click group, one module per group of commands.

=================  ===============================================================
module             commands
=================  ===============================================================
``scan``           ``scan``, ``submit``, ``sample`` (batch runs, their outputs)
``results``        ``results`` (stored verdicts read back)
``evaluation``     ``eval`` (the detector judged on labelled images)
``db``             ``db upgrade``, ``db downgrade``
``accounts``       ``users …``, ``keys …``
``serve``          ``api``, ``flower``
``operations``     ``doctor``, ``retry``, ``rescore``, ``recover``, ``blobs gc``
``backup``         ``backup``, ``restore``
``feedback``       ``feedback export`` (owners' labels as a labelled set)
``audit``          ``audit`` (the audit trail)
``_common``        helpers shared by several of them
=================  ===============================================================

Deferred imports: command modules import at their top only click, the settings and the
standard library; everything heavy (storage, the pipeline, the service layer, rich, the API
server) is imported inside the function that needs it, so ``skygate --help`` and a command's
usage errors answer at once and no command pays for another's dependencies. That is why
ruff's PLC0415 (import outside the top level) is ignored in pyproject.toml.
"""

from __future__ import annotations

import click

from skygate.cli import (
    accounts,
    audit,
    backup,
    db,
    evaluation,
    feedback,
    operations,
    results,
    scan,
    serve,
)

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Exit codes: 0 success; 1 a failure (a file, a check, an upload); 2 a "
                    "usage error; 3 `submit --wait` ran out of time; 4 `scan --fail-on` "
                    "matched; 130 interrupted. Docs: docs/commands.md.")
@click.version_option(package_name="skygate", prog_name="skygate")
@click.option("-q", "--quiet", is_flag=True,
              help="only errors and the records asked for (no progress, summaries or notes)")
def main(quiet: bool) -> None:
    """SkyGate: tell AI-generated images from real photographs."""
    from service.runtime.logs import configure

    configure(level="WARNING" if quiet else None)


for _module in (db, scan, evaluation, results, accounts, serve, operations, backup, audit,
                feedback):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main"]
