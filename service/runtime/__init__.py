"""Process plumbing every SkyGate process shares, apart from the upload lifecycle: the
worker's event loop and storage (process_loop), the allocator's settings (allocator),
logging (logs), the dependency checks of ``skygate doctor`` and ``/readyz`` (health), the
Celery client of the front doors (celery_client) and the broker's queue depths (queues).

Nothing here is imported on package import: a process loads only what it uses."""
