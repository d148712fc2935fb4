"""Flower settings (``skygate flower`` passes this file with --conf; Flower executes it).

Task arguments are ids, blob keys and file names; the chord hands ``skygate.aggregate`` the
five method results, which are long, so their display is cut short.

Flower 2 serves ``/metrics`` without asking for credentials even when basic auth is set (its
handler lacks the ``authenticated`` guard the pages and the API have); here it gets the same
guard, so Prometheus scrapes with the same ``SKYGATE_FLOWER_BASIC_AUTH``. ``/healthcheck``
stays open for health probes."""

purge_offline_workers = 600
# Prometheus metrics at /metrics are always on in Flower 2; keep task history bounded.
max_tasks = 10_000


# Characters of a task's arguments and result shown before they are cut.
_SHOWN = 300


def format_task(task):
    if task.args and len(task.args) > _SHOWN:
        task.args = task.args[:_SHOWN] + "… (cut)"
    if task.result and len(task.result) > _SHOWN:
        task.result = task.result[:_SHOWN] + "… (cut)"
    return task


def _protect_metrics() -> None:
    from flower.views.monitor import Metrics
    from tornado import web

    if not getattr(Metrics.get, "_skygate_guarded", False):
        Metrics.get = web.authenticated(Metrics.get)
        Metrics.get._skygate_guarded = True


_protect_metrics()
