"""The one home of "now" and of timezone repair: every timestamp SkyGate writes is aware UTC.

SQLite (and some drivers) hand back naive datetimes for columns written as UTC; ``aware``
reads those as UTC and leaves aware values alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

__all__ = ["aware", "iso_z", "utcnow"]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


@overload
def aware(when: datetime) -> datetime: ...
@overload
def aware(when: None) -> None: ...
def aware(when: datetime | None) -> datetime | None:
    """``when`` with UTC attached if it is naive (as SQLite returns it); ``None`` stays None."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


def iso_z(when: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``: ``2026-12-06T08:19:20.123456Z`` (naive means UTC)."""
    if when is None:
        return None
    return aware(when).astimezone(UTC).isoformat().replace("+00:00", "Z")
