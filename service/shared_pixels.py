"""Decoded crops and neutral views that the worker processes of one host share, in RAM.

A canvas's methods run in whichever pool process takes them. With ``-c 2``, the process
that had not prepared the canvas decoded the original again (8 ms on a 1 MP JPEG, measured)
and made its neutral view again (12 ms): about 5 % of a canvas's CPU, done twice. Prepare
leaves both here, in a tmpfs folder private to this user (``/dev/shm``); a method in another
process of the same host reads them (under 1 ms for 3 MB) instead of decoding.

This is a cache, never the truth: a file that is missing (another host, dropped, the folder
unusable) makes the caller decode as before. It is bounded by count (each put drops the
oldest files beyond ``keep``), and aggregate drops its canvas's files when the verdict is
stored. Files are written under a temporary name and renamed, so a reader never sees half
a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import numpy as np

log = logging.getLogger("skygate.pipeline")

#: 8 canvases' crop and neutral view (<= 1024 x 1024 x 3 bytes each): at most 48 MB of RAM.
KEEP_FILES = 16
_SUFFIX = ".npy"
_IMAGE_NDIM = 3  # rows, columns, channels


def default_dir() -> Path | None:
    """``/dev/shm/skygate-<uid>`` where the host has a tmpfs at ``/dev/shm``, else None."""
    shm = Path("/dev/shm")  # noqa: S108 - used only as a folder private to this user
    if not shm.is_dir() or not hasattr(os, "getuid"):
        return None
    return shm / f"skygate-{os.getuid()}"


class SharedPixels:
    """Read-only uint8 pixel arrays by (kind, content-addressed key), in ``root``."""

    def __init__(self, root: Path, *, keep: int = KEEP_FILES):
        self.root, self.keep = Path(root), keep
        self.usable = self._private_folder()

    def _private_folder(self) -> bool:
        # The folder may already exist (another worker of this user): use it only if it is
        # ours and nobody else may write or read there (/dev/shm is world-writable).
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.root.lstat()
        except OSError as exc:
            log.info("shared pixels off: %s: %s", self.root, exc)
            return False
        private = (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
                   and not info.st_mode & (stat.S_IRWXG | stat.S_IRWXO))
        if not private:
            log.warning("shared pixels off: %s is not a folder private to this user",
                        self.root)
        return private

    def _path(self, kind: str, key: str) -> Path:
        return self.root / (hashlib.sha256(f"{kind}\0{key}".encode()).hexdigest()[:40] + _SUFFIX)

    def get(self, kind: str, key: str) -> np.ndarray | None:
        if not self.usable:
            return None
        try:
            pixels = np.load(self._path(kind, key), allow_pickle=False)
        except (OSError, ValueError):  # absent, dropped meanwhile, or unreadable: decode
            return None
        if pixels.dtype != np.uint8 or pixels.ndim != _IMAGE_NDIM:
            return None
        return pixels

    def put(self, kind: str, key: str, pixels: np.ndarray) -> None:
        if not self.usable:
            return
        path = self._path(kind, key)
        if path.exists():
            return
        temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as out:
                np.save(out, np.ascontiguousarray(pixels), allow_pickle=False)
            os.replace(temporary, path)
        except OSError as exc:  # tmpfs full: the methods decode instead
            log.info("shared pixels not written (%s): %s", path.name, exc)
            temporary.unlink(missing_ok=True)
            return
        self._prune()

    def discard(self, entries: Iterable[tuple[str, str]]) -> None:
        if not self.usable:
            return
        for kind, key in entries:
            self._path(kind, key).unlink(missing_ok=True)

    def _prune(self) -> None:
        files = []
        for path in self.root.glob("*" + _SUFFIX):
            try:
                files.append((path.stat().st_mtime_ns, path))
            except FileNotFoundError:  # another process pruned it
                continue
        files.sort()
        for _, path in files[:max(0, len(files) - self.keep)]:
            path.unlink(missing_ok=True)
