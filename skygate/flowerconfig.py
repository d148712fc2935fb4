"""Flower settings (``skygate flower`` passes this file with --conf; Flower executes it).

Task arguments are ids, blob keys and file names; the chord hands ``skygate.aggregate`` the
five method results, which are long, so their display is cut short.

Flower 2 serves ``/metrics`` without asking for credentials even when basic auth is set (its
handler lacks the ``authenticated`` guard the pages and the API have); here it gets the same
guard, so Prometheus scrapes with the same ``SKYGATE_FLOWER_BASIC_AUTH``. ``/healthcheck``
stays open for health probes. It also gains ``skygate_queue_depth{queue}``: the messages
waiting in each SkyGate queue, read from the broker at each scrape (Flower's own metrics
count events, not what waits)."""

# Deferred imports: Flower executes this file and reads its module-level names as options.

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


class _QueueDepths:
    """A Prometheus collector: the broker's ready messages per queue, asked at scrape time."""

    def describe(self):
        # The names, without asking the broker (registration calls this, not collect).
        from prometheus_client.core import GaugeMetricFamily

        return [GaugeMetricFamily("skygate_queue_depth_up", ""),
                GaugeMetricFamily("skygate_queue_depth", "", labels=["queue"])]

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from service.runtime.celery_client import celery_client
        from service.runtime.queues import queue_depths

        app = celery_client()
        try:
            depths = queue_depths(app)
        finally:
            app.close()
        up = GaugeMetricFamily("skygate_queue_depth_up",
                               "1 when the broker answered the queue-depth question")
        up.add_metric([], 0 if depths is None else 1)
        yield up
        family = GaugeMetricFamily("skygate_queue_depth",
                                   "Messages waiting in each SkyGate queue", labels=["queue"])
        for queue, count in sorted((depths or {}).items()):
            family.add_metric([queue], count)
        yield family


def _register_queue_depths() -> None:
    # Flower executes this file and reads its module-level names as options: imports stay in
    # the functions that use them.
    import contextlib

    from prometheus_client import REGISTRY

    # Flower may execute this file more than once: the second registration is refused.
    with contextlib.suppress(ValueError):
        REGISTRY.register(_QueueDepths())


_register_queue_depths()
