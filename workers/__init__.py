"""The Celery app: a shim over celeryconfig.py (``celery -A workers worker``)."""

import sys

from celery import Celery

# Deferred imports: the signal handlers load settings and logging when a worker starts, not on
# `import workers`.

app = Celery("skygate")
app.config_from_object("celeryconfig")

__all__ = ["app"]


from celery.signals import celeryd_init, setup_logging  # noqa: E402


@celeryd_init.connect
def _json_from_the_start(instance=None, **_):
    # Where logs are JSON lines, every line must parse: logging is set up before Celery checks
    # its privileges (its warning becomes a record), the ASCII-art banner is off (`celery -q`),
    # and the shutdown notices Celery writes from its signal handlers become JSON lines.
    from schemas.settings import Settings
    from service.runtime.logs import configure, json_notice, use_json

    settings = Settings()
    if instance is None or not use_json(settings, sys.stderr):
        return
    configure(settings)
    instance.quiet = True
    import celery.apps.worker

    celery.apps.worker.safe_say = json_notice


@setup_logging.connect
def _configure_logging(loglevel=None, **_):
    # Connected, so Celery leaves logging to us: JSON lines with upload_id and task id.
    from service.runtime.logs import configure

    configure(level=loglevel)
