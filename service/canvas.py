"""The canvas's intermediates: what prepare keeps for the methods of one upload, how each
method's inputs are loaded from it, and their release.

What the methods share lives only as long as the canvas (``storage.blobrefs``'s intermediate
kinds): the decoded image's central crop as a lossless PNG (or nothing, for a small image
each method decodes again), the neutral view's features (computed once, in the manifest) and
the manifest itself. Aggregate releases them once the verdict is stored; the recovery sweep
releases those of abandoned canvases."""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np

from pipeline.decode import decode_crop, pixels_from_bytes
from pipeline.features import shared_features
from pipeline.imaging import MAX_SIDE, neutralise
from pipeline.methods.registry import (
    NATIVE_PIXELS,
    NEUTRAL_FEATURES,
    NEUTRAL_PIXELS,
    ORIGINAL_BYTES,
    REGISTRY,
    SETTINGS,
)
from schemas.settings import Settings
from service import shared_pixels
from service.manifest import Manifest
from service.shared_pixels import SharedPixels
from storage import blobrefs
from storage import repository as repo
from storage.blobs import BlobNotFound
from storage.context import Storage

log = logging.getLogger("skygate.pipeline")


# Every pixel input derives from the central crop (its neutral view is a JPEG round trip of
# it, cheaper to redo than to store and read back). A small image is decoded again by each
# method that reads it: measured on a 1 MP JPEG, a decode costs 4 ms where writing the crop as
# PNG costs 54 ms and reading it back 21 ms; above this many pixels the crop is cached.
_PIXEL_NEEDS = frozenset({NATIVE_PIXELS, NEUTRAL_PIXELS, NEUTRAL_FEATURES})
DECODE_AGAIN_PIXELS = 2 * MAX_SIDE * MAX_SIDE
SLOW_DECODERS = frozenset({"heif", "avif"})  # HEVC/AV1: always cache their crop


# The crops read lately and their neutral views, by (kind, content-addressed key): the methods
# of one canvas that run in the same process decode the original (or its PNG) once. A worker
# interleaves the tasks of the canvases in flight (the detect and model queues are consumed in
# turn), so a few are kept, not only the last: at most RECENT_CANVASES x 2 views of <= 3 MB.
RECENT_CANVASES = 4
_recent: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()


def _cached(kind: str, key: str, make) -> np.ndarray:
    hit = _recent.get((kind, key))
    if hit is not None:
        _recent.move_to_end((kind, key))
        return hit
    value = make()
    value.setflags(write=False)  # shared between methods: nobody writes into it
    _recent[(kind, key)] = value
    while len(_recent) > 2 * RECENT_CANVASES:
        _recent.popitem(last=False)
    return value


@functools.cache
def _shared_in(folder: str) -> SharedPixels | None:
    root = shared_pixels.default_dir() if folder == "auto" else (Path(folder) if folder else None)
    return SharedPixels(root) if root is not None else None


def _shared(settings: Settings, manifest: Manifest) -> SharedPixels | None:
    """The host's shared pixels, for a canvas whose methods may run in several processes
    (prepare says so in the manifest; not for the embedded default's one-process canvas)."""
    return _shared_in(settings.shared_pixels_dir) if manifest.shared_pixels else None


def remember(settings: Settings, manifest: Manifest, crop: np.ndarray,
             neutral: np.ndarray | None) -> None:
    """Seed this process's recent crops with prepare's own decode (and neutral view, when it
    made one), under the key the methods look them up by, and share them with the other
    processes of this host: the methods of the canvas decode nothing (measured: 8 ms of
    decode and 12 ms of neutral view per canvas on a 1 MP JPEG)."""
    key = manifest.pixels_key
    if key is None:
        return
    shared = _shared(settings, manifest)
    for kind, pixels in ((NATIVE_PIXELS, crop), (NEUTRAL_PIXELS, neutral)):
        if pixels is not None:
            _cached(kind, key, lambda p=pixels: p)
            if shared is not None:
                shared.put(kind, key, pixels)


def _from_host(settings: Settings, manifest: Manifest, kind: str, key: str, make, *,
               share: bool = False):
    """What another process of this host left (:mod:`service.shared_pixels`), else make()
    (and, ``share``, leave it for them: a neutral view prepare did not need itself)."""
    shared = _shared(settings, manifest)
    pixels = shared.get(kind, key) if shared is not None else None
    if pixels is None:
        pixels = make()
        if share and shared is not None:
            shared.put(kind, key, pixels)
    return pixels


def _native(storage: Storage, settings: Settings, manifest: Manifest) -> np.ndarray | None:
    """The central crop: the cached PNG, or (a small image) the original decoded again."""
    if manifest.native_key:
        key = manifest.native_key
        try:
            return _cached(NATIVE_PIXELS, key, lambda: _from_host(
                settings, manifest, NATIVE_PIXELS, key,
                lambda: pixels_from_bytes(storage.blobs.get(key))))
        except BlobNotFound:
            # Released by an earlier run's aggregate (a recovered canvas racing the one it
            # replaced): the original still has the pixels.
            log.info("crop %s is gone: decoding the original again", key)
    if manifest.native_key or manifest.native_from_original:
        key = manifest.original_key
        return _cached(NATIVE_PIXELS, key, lambda: _from_host(
            settings, manifest, NATIVE_PIXELS, key, lambda: decode_crop(
                storage.blobs.get(key), max_pixels=settings.max_image_pixels, side=MAX_SIDE)))
    return None


def _neutral(storage: Storage, settings: Settings, manifest: Manifest) -> np.ndarray | None:
    crop = _native(storage, settings, manifest)
    if crop is None:
        return None
    key = manifest.pixels_key
    return _cached(NEUTRAL_PIXELS, key, lambda: _from_host(
        settings, manifest, NEUTRAL_PIXELS, key, lambda: neutralise(crop), share=True))


def load_input(storage: Storage, settings: Settings, need: str, manifest: Manifest,
               name: str):
    if need == ORIGINAL_BYTES:
        return storage.blobs.get(manifest.original_key)
    if need == SETTINGS:
        return settings
    if need not in _PIXEL_NEEDS:
        raise LookupError(f"method {name!r} needs {need}, which the service cannot provide")
    if need == NEUTRAL_FEATURES and manifest.neutral_features is not None:
        return manifest.neutral_features
    pixels = (_native if need == NATIVE_PIXELS else _neutral)(storage, settings, manifest)
    if pixels is None:
        raise LookupError(f"method {name!r} needs {need}, which prepare did not cache "
                          "(was the method activated while this upload was in flight?)")
    if need == NEUTRAL_FEATURES:
        # A method activated while this upload was in flight: its own groups, computed here.
        return shared_features(pixels, REGISTRY[name].feature_groups)
    return pixels


async def read_manifest(storage: Storage, manifest_key: str, upload_id: int) -> Manifest:
    """The canvas's manifest; if an earlier run of the same upload already released it (a
    recovered canvas racing the one it replaced), a manifest rebuilt from the upload row:
    every pixel input is then decoded again from the original."""
    try:
        return Manifest.from_json(await storage.blobs.aget(manifest_key))
    except BlobNotFound:
        upload = await repo.get_upload(storage.engine, upload_id)
        if upload is None:
            raise
        log.info("manifest %s is gone: the methods read the original", manifest_key,
                 extra={"upload_id": upload_id})
        return Manifest(upload_id=upload_id, user_id=upload["user_id"],
                        file_name=upload["original_file_name"],
                        original_key=upload["file_path"], native_from_original=True,
                        thumbnail_key=upload["thumbnail_path"])


async def our_upload(storage: Storage, upload_id: int, manifest: Manifest) -> dict | None:
    """The upload row, if it still is the one this canvas was prepared for, else None: on
    SQLite a deleted newest upload's id is given to the next upload, so an id alone is not
    enough for a run that outlived its upload (same original, same owner: the same upload)."""
    upload = await repo.get_upload(storage.engine, upload_id)
    return upload if upload is not None and same_upload(upload, manifest) else None


def same_upload(upload: dict, manifest: Manifest) -> bool:
    """Whether the upload row read is the one ``manifest``'s canvas was prepared for."""
    return (upload["file_path"] == manifest.original_key
            and upload["user_id"] == manifest.user_id)


async def release(storage: Storage, upload_id: int, *, settings: Settings | None = None,
                  manifest: Manifest | None = None) -> None:
    """The canvas is over: its intermediates go (a failure leaves them to the sweep), and
    with ``manifest``, its pixels shared on this host (else they age out)."""
    key = manifest.pixels_key if manifest else None
    shared = _shared(settings, manifest) if settings is not None and key else None
    if shared is not None:
        shared.discard([(NATIVE_PIXELS, key), (NEUTRAL_PIXELS, key)])
    try:
        await blobrefs.release_intermediates(storage, upload_id)
    except Exception as exc:  # noqa: BLE001 - the verdict is stored; the sweep retries this
        log.warning("could not release the intermediates of upload %s: %s: %s", upload_id,
                    type(exc).__name__, exc, extra={"upload_id": upload_id})
