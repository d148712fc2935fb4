"""The Celery app: a shim over celeryconfig.py (``celery -A workers worker``)."""

from celery import Celery

app = Celery("skygate")
app.config_from_object("celeryconfig")

__all__ = ["app"]


from celery.signals import setup_logging  # noqa: E402


@setup_logging.connect
def _configure_logging(loglevel=None, **_):
    # Connected, so Celery leaves logging to us: JSON lines with upload_id and task id.
    from service.logs import configure

    configure(level=loglevel)
