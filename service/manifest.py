"""The canvas manifest: what prepare records for the method tasks and aggregate of one upload
(stored as a JSON intermediate blob, released with the canvas). Written by
``service.detection``, read by ``service.canvas`` and ``service.aggregate``: one type, so a
key cannot be written under one name and read under another."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Manifest:
    upload_id: int
    user_id: int | None
    file_name: str
    original_key: str
    thumbnail_key: str | None
    # pipeline.decode.FileInfo as a dict (what the document records); None in a manifest
    # rebuilt from the upload row (read_manifest), which aggregate never reads.
    file_info: dict | None = None
    # The central crop: cached as a PNG under this key, or decoded again from the original
    # (a small image), or neither (no active method reads pixels).
    native_key: str | None = None
    native_from_original: bool = False
    # pipeline.features.shared_features of the neutral view, once per canvas (when a method
    # votes with them).
    neutral_features: dict | None = None
    # The crop is shared with this host's other worker processes (service.shared_pixels).
    shared_pixels: bool = False
    # The active configuration of each config type the methods read, as prepare found it:
    # ``{config_type: {"name": ..., "parameters": {...}}}``; one read for the whole canvas,
    # and every method of it runs with the same one. None (a manifest rebuilt from the upload
    # row, or written before): each method reads the active one itself.
    configs: dict | None = None
    # The active methods prepare started the canvas with, ``{name: {"method_id", "weight"}}``
    # (repository.active_methods): aggregate weighs the votes of the methods that ran with the
    # weights they ran under. None (rebuilt or older): aggregate reads the active ones.
    methods: dict | None = None

    @property
    def pixels_key(self) -> str | None:
        """The content-addressed key the crop is decoded from (its cache key), if any."""
        return self.native_key or (self.original_key if self.native_from_original else None)

    def to_json(self) -> bytes:
        """Sorted JSON; the caches left unset are left out (absent, as before)."""
        data = {k: v for k, v in asdict(self).items()
                if v is not None or k in _ALWAYS}
        return json.dumps({k: v for k, v in data.items() if v is not False},
                          sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Manifest:
        """The manifest of ``raw`` (a ValueError on anything else: a blob that is not one)."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a canvas manifest is a JSON object")
        try:
            return cls(**{k: data[k] for k in _FIELDS if k in data})
        except TypeError as exc:  # a key it cannot do without is missing
            raise ValueError(f"not a canvas manifest: {exc}") from None


_FIELDS = frozenset(f.name for f in fields(Manifest))
_ALWAYS = frozenset({"upload_id", "user_id", "file_name", "original_key", "thumbnail_key"})
