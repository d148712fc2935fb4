"""Flower settings (``skygate flower`` passes this file with --conf).

Task arguments are ids, blob keys and file names; the chord hands ``skygate.aggregate`` the
five method results, which are long, so their display is cut short."""

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
