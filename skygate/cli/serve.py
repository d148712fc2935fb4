"""Long-running servers: ``skygate api`` (the HTTP API) and ``skygate flower``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from schemas.settings import Settings
from skygate.cli._common import fail

# Deferred imports: each command imports what it runs, so `skygate --help` and the light commands
# start without loading SQLAlchemy, Celery, numpy or the models.


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
def api(host, port, workers):
    """Serve the HTTP API (uvicorn, with header/body timeouts and a concurrency limit:
    SKYGATE_API_HEADER_TIMEOUT, SKYGATE_API_BODY_TIMEOUT, SKYGATE_API_LIMIT_CONCURRENCY).
    OpenAPI at /docs and /openapi.json."""
    from api.server import run

    run(host, port, workers)


FLOWER_CONFIG = Path(__file__).resolve().parent.parent / "flowerconfig.py"


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=None, help="default SKYGATE_FLOWER_PORT (5555)")
@click.option("--address", default="127.0.0.1", show_default=True)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port, address, flower_args):
    """Flower on the configured broker: workers, queues, tasks; Prometheus at /metrics.

    Basic auth from SKYGATE_FLOWER_BASIC_AUTH (user:password). Extra arguments go to Flower.
    """
    try:
        import flower as _  # noqa: F401 - the [flower] extra: the API and workers do without
    except ImportError:
        fail("Flower is not installed: pip install 'skygate[flower]'")
    settings = Settings()
    if not settings.broker_url:
        raise click.UsageError("SKYGATE_BROKER_URL is not set: Flower watches a cluster")
    # ``-A workers`` names the Celery app to the celery program; nothing is imported here.
    args = [sys.executable, "-m", "celery", "-A", "workers", "flower",
            f"--port={port or settings.flower_port}", f"--address={address}",
            f"--conf={FLOWER_CONFIG}"]
    if settings.flower_basic_auth:
        args.append(f"--basic-auth={settings.flower_basic_auth}")
    os.execv(sys.executable, [*args, *flower_args])  # noqa: S606 - replaces this process


COMMANDS = [api, flower]
