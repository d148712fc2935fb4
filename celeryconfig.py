"""Celery settings, read from the same SKYGATE_* settings as everything else. JSON only."""

from kombu import Exchange, Queue

from schemas.settings import Settings

_settings = Settings()

broker_url = _settings.broker_url or "memory://"
result_backend = _settings.result_backend or (
    _settings.broker_url if (_settings.broker_url or "").startswith("redis") else "cache+memory://"
)

# Messages carry ids and small JSON, never image bytes; JSON is the only accepted content.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# Reliability is design, not tuning: ack after the work, requeue when a worker dies,
# one message at a time on heavy queues (the -O fair default + prefetch 1).
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# A new pool process loads the model before its first task (workers.tasks._warm_up: at most
# 10 s waiting for the database, then ≈ 0.5 s of loading): allow it that long to start, with
# room for a busy machine (Celery's default, 4 s, would kill it and start another in a loop).
worker_proc_alive_timeout = 60.0
# Flower shows a task as started from the worker's task-started event; a STARTED state in the
# result backend would cost every task one more Redis write, and nothing reads it.
task_track_started = False
# Chords need results kept; never 0 (that hangs chords).
result_expires = 24 * 3600
result_extended = True
# A broker that restarts is waited for, however long it takes (at start-up and after).
broker_connection_retry_on_startup = True
broker_connection_retry = True
broker_connection_max_retries = None
broker_heartbeat = 30
if broker_url.startswith(("amqp", "pyamqp")):
    # RabbitMQ: durable queues (kombu's default) and persistent messages survive a broker
    # restart; publisher confirms make send_task return only once the broker has the message;
    # a dead worker's unacked messages are requeued the moment its connection drops.
    broker_transport_options = {"confirm_publish": True}
else:
    # Redis: an unacked message (its worker died) is delivered again after
    # visibility_timeout. A reserved message waits at most one hard time limit for the task
    # before it and then runs at most one more, so the timeout is kept above 2 x the hard
    # limit (a live task is never delivered twice) — and minutes, not an hour (600 s).
    broker_transport_options = {
        "visibility_timeout": _settings.visibility_timeout,
        "socket_timeout": 30, "socket_connect_timeout": 10, "retry_on_timeout": True,
        "health_check_interval": 25,
    }
    if _settings.visibility_timeout <= 2 * _settings.method_time_limit:
        raise ValueError(
            f"SKYGATE_VISIBILITY_TIMEOUT ({_settings.visibility_timeout}s) must exceed twice "
            f"SKYGATE_METHOD_TIME_LIMIT ({_settings.method_time_limit}s): a live task would be "
            "delivered again")
result_backend_transport_options = {"visibility_timeout": _settings.visibility_timeout}
# Storing a result while the Redis backend restarts is retried, not lost.
result_backend_always_retry = True
result_backend_max_retries = 20
redis_backend_health_check_interval = 25
redis_socket_connect_timeout = 10
task_soft_time_limit = _settings.method_soft_time_limit
task_time_limit = _settings.method_time_limit

# Flower needs events.
worker_send_task_events = True
task_send_sent_event = True

_exchange = Exchange("skygate", type="direct")
task_queues = [
    Queue("ingest", _exchange, routing_key="ingest"),
    Queue("detect", _exchange, routing_key="detect"),
    Queue("model", _exchange, routing_key="model"),
    Queue("aggregate", _exchange, routing_key="aggregate"),
    # Outbound webhook calls wait on other people's servers: never in a verdict's queue.
    Queue("webhooks", _exchange, routing_key="webhooks"),
]
task_default_queue = "ingest"
task_default_exchange = "skygate"
task_default_routing_key = "ingest"
# Finish the canvases in flight before starting new ones: on Redis a worker takes a message
# of a lower priority number first, across all its queues, so ingest and prepare (which start a
# canvas) wait while any method or aggregate task of a started one is ready. An image's verdict
# comes as soon as its own work is done instead of after every queued image was prepared, the
# intermediates alive at once stay few, and a worker's methods find the canvas's crop still in
# its process (service.canvas keeps the last few; with queues taken in turn, -c 1 interleaved
# 16 canvases and decoded each image ~2.5 times). Plain RabbitMQ queues (no x-max-priority)
# ignore priorities: their order is the broker's, as before. (Redis takes the lower number
# first, AMQP priority queues the higher: only ingest and prepare share the ingest queue, both
# at this value, so no queue mixes the two readings.)
NEW_CANVAS_PRIORITY = 6
task_routes = {
    "skygate.ingest": {"queue": "ingest", "routing_key": "ingest",
                       "priority": NEW_CANVAS_PRIORITY},
    "skygate.prepare": {"queue": "ingest", "routing_key": "ingest",
                        "priority": NEW_CANVAS_PRIORITY},
    "skygate.detect.model": {"queue": "model", "routing_key": "model"},
    "skygate.detect.*": {"queue": "detect", "routing_key": "detect"},
    "skygate.aggregate": {"queue": "aggregate", "routing_key": "aggregate"},
    "skygate.upload_failed": {"queue": "aggregate", "routing_key": "aggregate"},
    "skygate.webhook.deliver": {"queue": "webhooks", "routing_key": "webhooks"},
}
imports = ["workers.tasks"]
