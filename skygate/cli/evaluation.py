"""``skygate eval``: the detector judged on labelled images (metrics, groups, plot)."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import click

from schemas.records import JUDGED_STATUSES
from schemas.settings import Settings
from skygate.cli._common import UNJUDGED_STATUSES, format_options, note, progress_bar, record_word
from skygate.cli.db import ensure_schema

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.


@click.command("eval")
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
@format_options(("table", "json"))
def eval_(paths, labels_csv, stored, out, plot, workers, fmt):
    """Judge the detector on labelled images: PATH/real/… and PATH/ai/…, or --labels F.csv.

    Runs them like `scan` (on the configured database: a re-run reads the stored verdicts
    back), or with --stored only reads back verdicts stored earlier. Exit 0 when it ran.
    """
    as_json = fmt == "json"
    if plot and importlib.util.find_spec("matplotlib") is None:
        raise click.UsageError("--plot needs matplotlib: pip install 'skygate[plot]'")
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
            note("note: SKYGATE_BROKER_URL is set; eval still runs here")
        ensure_schema(settings)
    progress = progress_bar(len(files), sys.stderr.isatty() and not as_json)
    done = []

    def on_record(record):
        done.append(record)
        if progress is not None:
            progress.update(progress.task_ids[0], advance=1)
        else:
            word = (record_word(record)
                    if record["status"] in (*JUDGED_STATUSES, *UNJUDGED_STATUSES)
                    else record["status"].upper())
            note(f"[{len(done)}/{len(files)}] {word:<16} {record['path']}")

    try:
        rows = evaluate.run(files, stored=stored, on_record=on_record,
                            workers=min(workers or default_workers(), len(files)))
    except KeyboardInterrupt:
        note(f"interrupted after {len(done)} of {len(files)} files; run the same "
             "command again to finish the rest", level=logging.WARNING)
        sys.exit(130)
    finally:
        if progress is not None:
            progress.stop()
    _print_report(rows, out=out, plot=plot, as_json=as_json)


def _print_report(rows, *, out: Path | None, plot: Path | None, as_json: bool) -> None:
    from skygate import eval_report

    report = eval_report.build_report(rows)
    if out:
        out.write_text(eval_report.to_json(report) + "\n")
    if plot:
        eval_report.write_plot(report, plot)
    click.echo(eval_report.to_json(report) if as_json else eval_report.format_report(report))
    if out:
        note(f"report: {out}")
    if plot:
        note(f"plot: {plot}")


COMMANDS = [eval_]
