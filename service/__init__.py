"""The upload lifecycle, below every front door (Celery tasks, the HTTP API, the CLI):
ingest (validate once, store, record), dispatch (Celery or in-process behind one
interface), detection steps, recovery, webhooks. The process plumbing they share (the
worker's event loop, logging, health checks, the Celery client) is in ``service.runtime``."""
