"""Text that reaches PostgreSQL or MongoDB: no NUL bytes, no control characters, bounded.

PostgreSQL refuses U+0000 in ``text``/``varchar`` and inside ``jsonb`` strings; metadata read
from files (EXIF, XMP, PNG chunks) and names sent by clients carry it often (NUL-padded camera
tags). Every value written goes through :func:`clean_text` or :func:`clean_json`.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import PurePosixPath

# C0 and C1 control characters except tab, newline and carriage return; and lone surrogates,
# which JSON can carry ("\\ud800") and no database encoding takes.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Plus line breaks and the bidi overrides that make a file name lie about its extension.
_NAME_BAD = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Longest extension kept when a file name is cut to its limit; longer ones are not extensions.
_MAX_EXTENSION = 16


def clean_text(value: str, *, limit: int | None = None) -> str:
    """Drop control characters (keeping tab and line breaks); cut to ``limit`` characters."""
    text = _CONTROL.sub("", value)
    return text[:limit] if limit is not None else text


def cut_at_nul(value: str) -> str:
    """C strings in file metadata end at the first NUL; what follows is padding or garbage."""
    return value.split("\x00", 1)[0]


def clean_json(value):
    """A copy of a JSON-like value with every string (keys too) cleaned and every float
    finite (NaN and infinities become None: JSON and jsonb have no such numbers)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)) if isinstance(k, str) else k: clean_json(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def clean_file_name(name: str | None, *, limit: int = 255) -> str:
    """A client's file name as stored: the last path component, no control characters or
    bidi overrides, at most ``limit`` characters (the extension kept), never empty."""
    text = _NAME_BAD.sub("", name or "")
    text = PurePosixPath(text.replace("\\", "/")).name.strip()
    if text in ("", ".", ".."):
        return "upload"
    if len(text) > limit:
        stem, dot, ext = text.rpartition(".")
        if dot and 0 < len(ext) <= _MAX_EXTENSION:
            text = stem[:limit - len(ext) - 1] + "." + ext
        else:
            text = text[:limit]
    return text


# An absolute file system path (POSIX or Windows) inside a message: what an OSError's text
# and many libraries' messages carry ("[Errno 30] Read-only file system: '/srv/blobs/02'").
_PATH = re.compile(r"(?<![\w./\\-])(?:[A-Za-z]:)?[/\\](?:[^\s'\"`,;()<>/\\]+[/\\]?)+")
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*|\[WinError -?\d+\]\s*")


def without_paths(text: str) -> str:
    """``text`` with every absolute file system path replaced by ``<path>`` and errno tags
    dropped: a reason shown to API users names no server path."""
    return _PATH.sub("<path>", _ERRNO.sub("", text))


def public_reason(exc: BaseException) -> str:
    """A failure's reason as stored and shown: its kind and message, no server path, no
    errno tag (an OSError says what happened: "OSError: No space left on device")."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        message = exc.strerror or os.strerror(exc.errno)
    else:
        message = str(exc)
    message = without_paths(message).strip().rstrip(":").strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
