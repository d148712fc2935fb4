"""Runtime configuration: one class, read from ``SKYGATE_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """The embedded default's data folder when SKYGATE_DATA_DIR is not set: the user's data
    folder (XDG), never the working directory, so that runs from anywhere share one store."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "skygate"


class Settings(BaseSettings):
    """Every knob of SkyGate. With nothing set, the embedded default runs with no servers."""

    model_config = SettingsConfigDict(env_prefix="SKYGATE_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir,
                           description="SQLite file and blob folder (default: "
                                       "$XDG_DATA_HOME/skygate, else ~/.local/share/skygate)")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite if unset")
    mongo_url: str | None = Field(default=None,
                                  description="MongoDB URL; documents in SQL if unset")
    broker_url: str | None = Field(default=None, description="Celery broker (redis:// or amqp://)")
    result_backend: str | None = Field(default=None, description="Celery result backend (redis://)")

    # Blob store: file:///path (default: the data dir's blobs/) or s3://bucket/prefix.
    blob_url: str | None = Field(default=None, description="file:///path or s3://bucket/prefix")
    # S3 (and look-alikes such as MinIO): region and credentials come from the standard AWS
    # variables (AWS_REGION / AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY…).
    s3_endpoint_url: str | None = Field(default=None, description="e.g. http://minio:9000")
    # botocore's retry mode ("standard" or "adaptive") and attempts per request, first included.
    s3_retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    s3_max_attempts: int = Field(default=5, ge=1)
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 60.0

    max_upload_bytes: int = 50 * 1024 * 1024
    # 80 MP covers full-frame and medium-format cameras; anything larger is treated as a bomb.
    max_image_pixels: int = 80_000_000
    max_deliveries: int = 3
    # The voting model's occlusion map (pipeline/attribution.py) costs ~9 encoder runs an image
    # (~8x the model): drawn only where asked (`skygate scan --report` turns it on for its run).
    model_heatmap: bool = Field(default=False, description="draw the voting model's map for "
                                "every image (about 8x the model's CPU)")
    # The evidence-only methods (no usable calibration: they do not vote) compute their
    # statistics and pictures when a person first asks for them (service/evidence.py), not
    # for every image: "eager" computes them in every canvas (`scan --report` does).
    evidence: Literal["on_request", "eager"] = Field(
        default="on_request", description="when the evidence-only methods (prnu, texture, ela "
        "while uncalibrated) run: on_request (first picture or report asked) or eager")
    ela_quality: int = 90
    method_soft_time_limit: int = 120
    method_time_limit: int = 150
    # Redis redelivers unacked tasks after this. A message a worker has reserved waits at most
    # one hard time limit for the task before it, then runs at most one: the default keeps
    # it above 2 x method_time_limit (no live task is run twice) while a dead worker's
    # messages come back within minutes, not an hour.
    visibility_timeout: int = 600
    # Recovery: an upload queued or processing whose stage was not touched for this long
    # (default 2 x method_time_limit + 60 s) is re-dispatched by the sweep every worker runs
    # each sweep_interval seconds (0: no sweep in this worker; `skygate recover` by hand).
    stuck_after: int | None = None
    sweep_interval: float = 30.0
    # Where the worker processes of one host share the decoded crops of the canvases in
    # flight (service.shared_pixels): "auto" is /dev/shm/skygate-<uid> (RAM; none without
    # /dev/shm), "" turns it off, anything else is a folder used as is.
    shared_pixels_dir: str = "auto"
    # A canvas's intermediates (crop, manifest) nobody touched this long are released by the
    # sweep and by `skygate blobs gc` (aggregate releases them at once on the normal path).
    intermediate_ttl: int = Field(default=24 * 3600, ge=60)
    # Transient faults (database, Mongo, broker) are retried this many times with backoff.
    transient_retries: int = 8
    # A worker starting while its database or Mongo is down waits this long for them.
    startup_wait: float = 300.0
    log_level: str = "INFO"
    # Log format: "json", "text", or "auto" (JSON unless stderr is a terminal).
    log_format: str = "auto"

    # HTTP API.
    api_max_files: int = Field(default=20, description="files per POST /v1/uploads")
    # An API key's request_limit counts requests in a rolling window of this many seconds.
    quota_period_seconds: int = 86_400
    # Behind a proxy, trust X-Forwarded-For for the client IP in usage_logs.
    trust_forwarded_for: bool = False
    # Slow clients: a request's headers must arrive within api_header_timeout seconds of the
    # connection (or of the previous response), and its body may not stall for longer than
    # api_body_timeout seconds between two chunks; past api_limit_concurrency open
    # connections and requests the server answers 503 at once.
    api_header_timeout: float = 10.0
    api_body_timeout: float = 30.0
    # ... and once api_body_timeout has passed, the body must have averaged this many bytes/s,
    # and the whole body must be in within api_body_deadline seconds of the request's start.
    api_min_body_rate: int = 1024
    api_body_deadline: float = Field(default=600.0, gt=0)
    api_limit_concurrency: int = 200
    # Open connections one client (socket peer address) may hold at once; past it the server
    # answers 503 and closes, so slow clients from one address cannot take every slot
    # (0: no limit; not applied behind a proxy, with trust_forwarded_for: limit there).
    api_max_connections_per_client: int = Field(default=32, ge=0)
    # POST /v1/keys: failed logins free per (username, client IP), and per client IP, in one
    # window; past them each further attempt waits twice as long after the last failure (1 s,
    # 2 s, 4 s … up to login_max_delay), else 429 with Retry-After. Never a lock of the user:
    # the owner from another client logs in (storage/login_throttle.py).
    login_max_failures: int = 10
    login_max_failures_per_ip: int = 50
    login_window_seconds: int = 900
    login_max_delay: int = Field(default=900, ge=1)

    # Webhooks (service/webhooks.py). Outbound requests go to public https:// addresses
    # only, unless the operator allows http:// or private/loopback/link-local destinations
    # (a receiver on the same host or network). Each attempt has webhook_timeout seconds in
    # all; failed ones are retried with exponential backoff and jitter (webhook_retry_base
    # seconds first, times 3 each time, at most webhook_retry_cap) until webhook_retry_window
    # seconds after the event. A rotated secret keeps signing for webhook_secret_overlap.
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    webhook_timeout: float = Field(default=10.0, gt=0, le=60)
    # PEM file of the CAs that receivers' certificates are checked against (a private CA);
    # unset: the usual public CAs (certifi's bundle).
    webhook_ca_file: Path | None = None
    webhook_retry_base: float = Field(default=10.0, gt=0)
    webhook_retry_cap: float = Field(default=3 * 3600.0, gt=0)
    webhook_retry_window: int = Field(default=24 * 3600, ge=0)
    webhook_secret_overlap: int = Field(default=24 * 3600, ge=0)
    # Events and their delivery log are kept this many days (none still pending is removed).
    webhook_log_days: int = Field(default=30, ge=1)
    # The API's external URL (https://api.example.org) for the links in webhook events;
    # unset, the URL the endpoint was registered through.
    public_url: str | None = None
    # POST /v1/uploads?wait=N and GET .../result?wait=N: requests waiting at once per API
    # process (past it, the answer comes at once, as without wait).
    api_max_waiters: int = Field(default=100, ge=0)
    # Idempotency-Key: how long the first answer to a key is kept.
    idempotency_ttl: int = Field(default=24 * 3600, ge=60)

    # Finished results cache (service/results.py): a redis:// URL; unset means the result
    # backend's or else the broker's URL when it is redis://, and "off" (or "") turns it
    # off. The embedded default has neither, so no cache.
    cache_url: str | None = Field(default=None, description="redis:// for the results cache")
    cache_ttl: int = Field(default=3600, ge=1, description="seconds a cached result lives")

    # Connection pools. PostgreSQL (SQLAlchemy, per process): connections kept open, extra
    # ones allowed under load, seconds a request waits for one, and a ping before reuse.
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    db_pool_timeout: float = Field(default=30.0, gt=0)
    db_pool_pre_ping: bool = True
    # MongoDB (PyMongo, per process and server): at most / at least this many connections,
    # and milliseconds an operation waits for a free one (0: no limit).
    mongo_max_pool_size: int = Field(default=100, ge=1)
    mongo_min_pool_size: int = Field(default=0, ge=0)
    mongo_wait_queue_timeout_ms: int = Field(default=10_000, ge=0)

    # Flower.
    flower_port: int = 5555
    flower_basic_auth: str | None = Field(default=None, description="user:password for Flower")

    @property
    def stuck_after_seconds(self) -> int:
        return self.stuck_after or 2 * self.method_time_limit + 60

    @property
    def blob_dir(self) -> Path:
        """The blob folder: a ``file://`` blob URL's path, else the data dir's ``blobs/``."""
        if self.blob_url:
            scheme, location, _ = parse_blob_url(self.blob_url)
            if scheme == "file":
                return Path(location)
        return self.data_dir / "blobs"

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL, upgrading plain ``postgresql://`` to asyncpg."""
        if not self.database_url:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'skygate.db').resolve()}"
        url = self.database_url
        for plain in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url[len(plain):]
        if url.startswith("sqlite://") and not url.startswith("sqlite+"):
            return "sqlite+aiosqlite://" + url[len("sqlite://"):]
        return url

    @property
    def mongo_database(self) -> str:
        """Database name from the Mongo URL's path, ``skygate`` when it has none."""
        if not self.mongo_url:
            return "skygate"
        name = urlsplit(self.mongo_url).path.lstrip("/").split("/")[0]
        return name or "skygate"

    @property
    def result_cache_url(self) -> str | None:
        """The results cache's Redis URL, or None for no cache (see ``cache_url``)."""
        if self.cache_url is not None:
            off = self.cache_url.strip().lower() in {"", "off", "none", "false", "0"}
            return None if off else self.cache_url
        for url in (self.result_backend, self.broker_url):
            if url and url.startswith(("redis://", "rediss://", "unix://")):
                return url
        return None

    @property
    def is_embedded(self) -> bool:
        return not self.broker_url


@lru_cache
def get_settings() -> Settings:
    return Settings()


def parse_blob_url(url: str) -> tuple[str, str, str]:
    """``(scheme, location, prefix)``: ``("file", "/abs/path", "")`` or
    ``("s3", "bucket", "prefix")``. A bare path counts as ``file``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        # file:///abs/path, file://./relative (netloc "."), or a plain path.
        path = unquote(parts.netloc + parts.path) if scheme else url
        if not path:
            raise ValueError(f"blob URL {url!r} names no folder")
        return "file", path, ""
    if scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"blob URL {url!r} names no bucket: s3://BUCKET[/PREFIX]")
        return "s3", parts.netloc, parts.path.strip("/")
    raise ValueError(f"unsupported blob URL {url!r}: use file:///path or s3://bucket/prefix")
