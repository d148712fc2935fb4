"""The broker's queues as seen from outside a worker: how many messages each one holds."""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger("skygate.queues")


def queue_depths(app) -> dict[str, int] | None:
    """Ready messages per queue of ``app`` (``None`` when the broker cannot be asked)."""
    depths: dict[str, int] = {}
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
            channel = conn.channel()
            try:
                for queue in app.conf.task_queues or ():
                    try:
                        _, count, _ = channel.queue_declare(queue=queue.name, passive=True)
                    except Exception:  # noqa: BLE001 - a queue not declared yet is empty
                        count = 0
                        # The failed declare closed the channel: open another.
                        with contextlib.suppress(Exception):
                            channel.close()
                        channel = conn.channel()
                    depths[queue.name] = int(count or 0)
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    except Exception as exc:  # noqa: BLE001 - any broker fault: the caller treats it as busy
        log.warning("cannot read queue depths: %s: %s", type(exc).__name__, exc)
        return None
    return depths
