"""Flower settings (``skygate flower`` passes this file with --conf).

Task arguments are ids, blob keys and file names; the chord hands ``skygate.aggregate`` the
five method results, which are long, so their display is cut short."""

purge_offline_workers = 600
# Prometheus metrics at /metrics are always on in Flower 2; keep task history bounded.
max_tasks = 10_000


def format_task(task):
    if task.args and len(task.args) > 300:
        task.args = task.args[:300] + "… (cut)"
    if task.result and len(task.result) > 300:
        task.result = task.result[:300] + "… (cut)"
    return task
