"""The Celery app: a shim over celeryconfig.py (``celery -A workers worker``)."""

from celery import Celery

app = Celery("skygate")
app.config_from_object("celeryconfig")

__all__ = ["app"]
