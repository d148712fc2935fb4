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
task_track_started = True
# Chords need results kept; never 0 (that hangs chords).
result_expires = 24 * 3600
result_extended = True
broker_connection_retry_on_startup = True
# With acks_late on Redis a task running past this is delivered again: far above every limit.
broker_transport_options = {"visibility_timeout": _settings.visibility_timeout}
result_backend_transport_options = {"visibility_timeout": _settings.visibility_timeout}
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
]
task_default_queue = "ingest"
task_default_exchange = "skygate"
task_default_routing_key = "ingest"
task_routes = {
    "skygate.ingest": {"queue": "ingest", "routing_key": "ingest"},
    "skygate.prepare": {"queue": "ingest", "routing_key": "ingest"},
    "skygate.detect.model": {"queue": "model", "routing_key": "model"},
    "skygate.detect.*": {"queue": "detect", "routing_key": "detect"},
    "skygate.aggregate": {"queue": "aggregate", "routing_key": "aggregate"},
    "skygate.upload_failed": {"queue": "aggregate", "routing_key": "aggregate"},
}
imports = ["workers.tasks"]
