"""A backup's bookkeeping: the checksum file, the manifest, the settings fingerprint.

``SHA256SUMS`` lists every other file of the backup in ``sha256sum`` format (``sha256sum -c
SHA256SUMS`` checks it by hand); :func:`verify_checksums` reads it back and names every file
that is missing, altered, truncated or unexpected.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

CHECKSUMS = "SHA256SUMS"
MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1 << 20
_SECRET_NAME = re.compile(r"pass|secret|auth|token|credential", re.IGNORECASE)


class BackupError(Exception):
    """A backup cannot be written or restored; the message says why."""


class ChecksumMismatch(BackupError):
    """The backup is damaged: ``problems`` maps each bad file (relative path) to what is wrong."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        listed = "; ".join(f"{path}: {why}" for path, why in sorted(problems.items()))
        super().__init__(f"backup failed its checksum check, nothing restored: {listed}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def write_checksums(root: Path) -> int:
    """Hash every file under ``root`` into ``root/SHA256SUMS``; returns the file count."""
    names = [n for n in _files(root) if n != CHECKSUMS]
    lines = [f"{sha256_file(root / n)}  {n}\n" for n in names]
    (root / CHECKSUMS).write_text("".join(lines), encoding="utf-8")
    return len(names)


def verify_checksums(root: Path) -> dict:
    """Check every file against ``SHA256SUMS`` and return the manifest; raise
    :class:`ChecksumMismatch` naming each missing, altered or unlisted file."""
    sums = root / CHECKSUMS
    if not root.is_dir():
        raise BackupError(f"{root}: not a backup folder")
    if not sums.is_file():
        raise ChecksumMismatch({CHECKSUMS: "missing: not a complete SkyGate backup"})
    expected: dict[str, str] = {}
    for number, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ChecksumMismatch({CHECKSUMS: f"line {number} is malformed"})
        expected[name] = digest
    problems: dict[str, str] = {}
    present = set(_files(root)) - {CHECKSUMS}
    for name, digest in expected.items():
        if name not in present:
            problems[name] = "missing"
        elif (actual := sha256_file(root / name)) != digest:
            problems[name] = f"sha256 {actual[:12]}…, expected {digest[:12]}…"
    for name in sorted(present - set(expected)):
        problems[name] = "not listed in SHA256SUMS"
    if MANIFEST not in expected:
        problems.setdefault(MANIFEST, "missing")
    if problems:
        raise ChecksumMismatch(problems)
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{root}: backup format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


def redact_url(url: str) -> str:
    """The URL without its secrets: the password (``user:***@host``) and any query
    parameter named like one (``?password=***``, ``?authSource`` too: better safe)."""
    parts = urlsplit(url)
    if parts.query:
        query = urlencode([(k, "***" if _SECRET_NAME.search(k) else v)
                           for k, v in parse_qsl(parts.query, keep_blank_values=True)],
                          safe="*")
        parts = parts._replace(query=query)
    if parts.password is None:
        return urlunsplit(parts)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def settings_fingerprint(settings) -> dict:
    """Where the backup came from, with no secret in it, and a hash of the non-secret settings
    (two backups with the same fingerprint were taken under the same configuration)."""
    data = settings.model_dump(mode="json")
    for name, value in data.items():
        if _SECRET_NAME.search(name):
            data[name] = "set" if value else None
        elif isinstance(value, str) and "://" in value:
            data[name] = redact_url(value)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return {
        "sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "database": redact_url(settings.sqlalchemy_url),
        "mongo": data.get("mongo_url"),
        "mongo_database": settings.mongo_database if settings.mongo_url else None,
        "blob_url": data.get("blob_url"),
    }
