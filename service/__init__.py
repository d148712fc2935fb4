"""The upload lifecycle, below every front door (Celery tasks, the HTTP API, the CLI):
ingest (validate once, store, record), dispatch (Celery or in-process behind one
interface), detection steps, removal; plus logging, health checks and the per-process
runtime they share."""
