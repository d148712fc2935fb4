"""One classification of the errors the pipeline meets: transient (retry with backoff and
jitter) or permanent (fail with the reason). Database, Mongo, broker and blob store alike.

Transient: the service is not there *right now* — connection refused or reset, a server
that is starting up or shutting down, a failover, a timeout, too many connections, a
serialization conflict, a blob folder that is read-only, full or failing for a while
(EROFS, ENOSPC, EDQUOT, EIO, EAGAIN…), an S3 store that does not answer. Permanent:
everything else, in particular constraint violations and bad data, which a retry would only
repeat.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket

# Deferred imports: each client library's error types are imported only where it is installed and
# used.

log = logging.getLogger("skygate.faults")

# PostgreSQL SQLSTATEs worth retrying: class 08 (connection exception), 57P01 admin
# shutdown, 57P02 crash shutdown, 57P03 cannot connect now ("the database system is starting
# up"), 53300 too many connections, 53000 insufficient resources, 40001 serialization
# failure, 40P01 deadlock, 55P03 lock not available, 58000 system error, XX000? no (internal).
_PG_TRANSIENT_PREFIXES = ("08",)
_PG_TRANSIENT = {"57P01", "57P02", "57P03", "57014", "53300", "53000", "40001", "40P01",
                 "55P03", "58000", "58030"}
# Mongo server error codes that mean "try again": shutdown, step-down, not primary, network.
_MONGO_TRANSIENT_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
# OSErrors of a disk or a network file system that pass: a folder remounted read-only, full,
# over quota, an I/O error, a busy or stale handle, too many open files. A missing file
# (ENOENT), a permission refused or a bad name stay permanent.
_OS_TRANSIENT_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN,
                        errno.EBUSY, errno.ENFILE, errno.EMFILE, errno.ESTALE, errno.ETIMEDOUT,
                        errno.ENOLCK, errno.ENOBUFS}
# Words that betray a transient fault when the driver gives no structured code.
_TRANSIENT_WORDS = (
    "connection refused", "connection reset", "connection was closed", "connection is closed",
    "connection closed", "server closed the connection", "starting up", "shutting down",
    "the database system is in recovery mode", "not accepting connections", "failover",
    "broken pipe", "timed out", "timeout", "could not connect", "cannot connect now",
    "connection lost", "connection does not exist", "terminating connection",
    "no connection", "temporarily unavailable", "network is unreachable",
)


def _chain(exc: BaseException, contexts: bool = True):
    """The exception, its SQLAlchemy ``orig`` and its causes/contexts, each once."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend([getattr(e, "orig", None), e.__cause__,
                      None if e.__suppress_context__ or not contexts else e.__context__])


def _permanent(e: BaseException) -> bool:
    try:
        from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError
        if isinstance(e, (IntegrityError, DataError, ProgrammingError)):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        from pymongo.errors import DuplicateKeyError, InvalidOperation, WriteError
        if isinstance(e, (DuplicateKeyError, InvalidOperation)):
            return True
        if isinstance(e, WriteError) and getattr(e, "code", None) not in _MONGO_TRANSIENT_CODES:
            return True
    except ImportError:  # pragma: no cover
        pass
    code = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
    # SQLSTATE classes: data exception, integrity constraint violation, syntax or access rule.
    return isinstance(code, str) and code[:2] in ("22", "23", "42")


def _asyncpg_transient(e: BaseException) -> bool | None:
    try:
        import asyncpg
        if isinstance(e, (asyncpg.exceptions.CannotConnectNowError,
                          asyncpg.exceptions.ConnectionDoesNotExistError,
                          asyncpg.exceptions.ConnectionFailureError,
                          asyncpg.exceptions.AdminShutdownError,
                          asyncpg.exceptions.CrashShutdownError,
                          asyncpg.exceptions.TooManyConnectionsError,
                          asyncpg.exceptions.InterfaceError)):
            return not isinstance(e, asyncpg.exceptions.InterfaceWarning)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return None


def _sqlalchemy_transient(e: BaseException) -> bool | None:
    try:
        from sqlalchemy.exc import DBAPIError, DisconnectionError
        from sqlalchemy.exc import TimeoutError as PoolTimeout
        if isinstance(e, (DisconnectionError, PoolTimeout)):
            return True
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
    except ImportError:  # pragma: no cover
        pass
    return None


def _pymongo_transient(e: BaseException) -> bool | None:
    try:
        from pymongo.errors import (
            AutoReconnect,
            ConnectionFailure,
            ExecutionTimeout,
            OperationFailure,
            WTimeoutError,
        )
        if isinstance(e, (AutoReconnect, ConnectionFailure, ExecutionTimeout, WTimeoutError)):
            return True
        if isinstance(e, OperationFailure) and getattr(e, "code", None) in _MONGO_TRANSIENT_CODES:
            return True
        if isinstance(e, OperationFailure) and "RetryableWriteError" in (
                getattr(e, "details", None) or {}).get("errorLabels", []):
            return True
    except ImportError:  # pragma: no cover
        pass
    return None


def _os_transient(e: BaseException) -> bool | None:
    if isinstance(e, OSError) and e.errno is not None:
        return e.errno in _OS_TRANSIENT_ERRNOS or None
    return None


def _s3_transient(e: BaseException) -> bool | None:
    # storage.blobs.s3 turns these into BlobStoreUnavailable (a ConnectionError); raised
    # anywhere else (a boto3 call of its own), botocore's connection failures are the same.
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
        if isinstance(e, (BotoConnectionError, HTTPClientError)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return None


def _broker_transient(e: BaseException) -> bool | None:
    try:
        import kombu.exceptions
        if isinstance(e, kombu.exceptions.OperationalError):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import redis.exceptions
        if isinstance(e, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                          redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError)):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import amqp.exceptions
        if isinstance(e, (amqp.exceptions.ConnectionError,
                          amqp.exceptions.RecoverableConnectionError,
                          amqp.exceptions.RecoverableChannelError)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return None


# Each answers True/False when it recognises the exception, None when it has no opinion.
_TRANSIENT_CHECKS = (_os_transient, _s3_transient, _asyncpg_transient, _sqlalchemy_transient,
                     _pymongo_transient, _broker_transient)


def _transient_one(e: BaseException) -> bool:
    if isinstance(e, (ConnectionError, TimeoutError, asyncio.TimeoutError, socket.timeout,
                      socket.gaierror)):
        return True
    code = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
    if isinstance(code, str) and (code in _PG_TRANSIENT or code.startswith(_PG_TRANSIENT_PREFIXES)):
        return True
    for check in _TRANSIENT_CHECKS:
        verdict = check(e)
        if verdict is not None:
            return verdict
    text = str(e).lower()
    return any(word in text for word in _TRANSIENT_WORDS)


def is_transient(exc: BaseException) -> bool:
    """True when retrying later can succeed. A permanent fault anywhere in the chain wins
    (a constraint violation stays a constraint violation, however it is wrapped)."""
    if any(_permanent(e) for e in _chain(exc, contexts=False)):
        return False
    return any(_transient_one(e) for e in _chain(exc))


def backoff(attempt: int, *, base: float = 1.0, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: uniform in [0.5, 1] × min(cap, base·2^attempt)."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


async def retrying(fn, *args, deadline: float | None = None, what: str = "call",
                   attempts: int | None = None, **kwargs):
    """``await fn(*args, **kwargs)``, retrying transient faults with backoff until
    ``deadline`` (``loop.time()``) or ``attempts``; permanent faults raise at once."""
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            delay = backoff(attempt, base=0.5, cap=5.0)
            if attempts is not None and attempt >= attempts:
                raise
            if deadline is not None and loop.time() + delay > deadline:
                raise
            log.warning("%s: transient fault, retrying in %.1fs: %s: %s", what, delay,
                        type(exc).__name__, str(exc)[:200])
            await asyncio.sleep(delay)
