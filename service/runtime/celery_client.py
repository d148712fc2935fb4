"""A Celery client for the front doors: sends tasks by their public names and inspects
workers, without importing the task code (which lives in ``workers/``)."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery


@lru_cache(maxsize=1)
def celery_client() -> Celery:
    app = Celery("skygate")
    app.config_from_object("celeryconfig")
    return app
