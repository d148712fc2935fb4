"""Detection of one upload: prepare (decode once, keep what the active methods share: see
:mod:`service.canvas`), one method, and the embedded runner that does the whole canvas in
one process (aggregate is :mod:`service.aggregate`). Celery tasks call these one step at a
time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import asdict

from pipeline.decode import InvalidImage, decode_views, pixels_to_bytes
from pipeline.features import shared_features
from pipeline.imaging import MAX_SIDE, neutralise
from pipeline.methods.base import evidence_only, left_for_later
from pipeline.methods.registry import (
    CONFIG,
    NATIVE_PIXELS,
    NEUTRAL_FEATURES,
    NEUTRAL_PIXELS,
    REGISTRY,
    Method,
    feature_groups_of,
    needs_of,
)
from schemas.results import MethodResult
from schemas.settings import Settings
from schemas.text import public_reason
from service import canvas, deliveries
from service.aggregate import aggregate
from service.manifest import Manifest
from service.method_results import error_result, unimplemented
from storage import blobrefs, faults
from storage import repository as repo
from storage.blobs import BlobNotFound
from storage.context import Storage

__all__ = ["aggregate", "aggregate_counted", "detect", "error_result", "prepare", "run_all",
           "run_all_or_fail", "unimplemented", "warm_up"]

log = logging.getLogger("skygate.pipeline")
# A process's own start-up (warm_up): lines of no upload and no task.
startup_log = logging.getLogger("skygate.startup")


async def prepare(storage: Storage, settings: Settings, upload_id: int, **options
                  ) -> tuple[str | None, list[str]]:
    """Decode once; cache the pixels the active methods read and a thumbnail (blob store).

    Returns (manifest blob key, active method names), or (None, []) when the upload failed;
    the options are :func:`prepare_canvas`'s."""
    manifest_key, methods, _ = await prepare_canvas(storage, settings, upload_id, **options)
    return manifest_key, methods


async def prepare_canvas(storage: Storage, settings: Settings, upload_id: int, *,
                         may_count: bool = True, recovered: bool = False,
                         share_pixels: bool = True
                         ) -> tuple[str | None, list[str], Manifest | None]:
    """:func:`prepare`, with the manifest it stored (as read back from its JSON), for the
    embedded runner: its methods and aggregate then never read it from the blob store.
    ``may_count``: False for a retry or a recovery re-dispatch (no worker died on it).
    ``recovered``: sent by the recovery sweep; an upload finished meanwhile is left alone.
    ``share_pixels``: the methods may run in other processes of this host, which then read
    the decoded crop from service.shared_pixels (False: they all run in this process).
    """
    try:
        # The row as this statement left it: prepare reads the upload nowhere else.
        upload = await repo.start_preparing(storage.engine, upload_id,
                                            may_count=may_count and not recovered,
                                            only_unfinished=recovered)
    except LookupError:
        log.info("upload %s was deleted before it was prepared", upload_id)
        return None, [], None
    deliveries = upload.get("delivery_count", 0)
    if deliveries == 0:
        log.info("upload %s finished before its recovery ran: nothing to do", upload_id)
        return None, [], None
    if deliveries > settings.max_deliveries:
        # It was delivered again and again: the image most likely kills its worker.
        reason = (f"gave up after {deliveries - 1} deliveries: processing this image "
                  "repeatedly killed its worker (poison image)")
        await repo.mark_failed(storage.engine, upload_id, reason)
        return None, [], None
    try:
        # The pixel limit is checked on the header, before anything is allocated.
        views = decode_views(await storage.blobs.aget(upload["file_path"]),
                             max_pixels=settings.max_image_pixels, side=MAX_SIDE)
        return await _prepare_decoded(storage, settings, upload_id, upload, views,
                                      share_pixels=share_pixels)
    except (blobrefs.UploadGone, BlobNotFound):
        if await blobrefs.upload_exists(storage, upload_id):
            raise
        log.info("upload %s was deleted while it was prepared", upload_id)
        return None, [], None
    except InvalidImage as exc:
        await repo.mark_failed(storage.engine, upload_id, str(exc))
        log.warning("cannot decode", extra={"upload_id": upload_id, "reason": str(exc)})
        return None, [], None


async def _prepare_decoded(storage: Storage, settings: Settings, upload_id: int,
                           upload: dict, views, *, share_pixels: bool
                           ) -> tuple[str, list[str], Manifest]:
    active = await repo.active_methods(storage.engine)
    methods = list(active)
    needs = needs_of(methods)
    caches: dict = {}
    blobs = []  # (data, suffix, kind): stored together, in one transaction
    # Only what an active method reads is made and cached.
    if needs & {NATIVE_PIXELS, NEUTRAL_PIXELS}:
        if (views.info.width * views.info.height <= canvas.DECODE_AGAIN_PIXELS
                and views.info.file_type not in canvas.SLOW_DECODERS):
            caches["native_from_original"] = True
        else:
            crop = pixels_to_bytes(views.crop)
            caches["native_key"] = storage.blobs.key_for_bytes(crop, ".png")
            blobs.append((crop, ".png", NATIVE_PIXELS))
    # The active configuration of each kind the methods read, once for the whole canvas.
    configs = await _active_configs(storage, methods)
    neutral = None
    if NEUTRAL_FEATURES in needs:
        # Once per canvas, the groups some method votes with (not once per method).
        groups = feature_groups_of(methods, {kind: c["parameters"]
                                             for kind, c in configs.items()})
        neutral = neutralise(views.crop) if groups else None
        caches["neutral_features"] = shared_features(neutral, groups)
    thumb_key = storage.blobs.key_for_bytes(views.thumbnail, ".jpg")
    blobs.append((views.thumbnail, ".jpg", "thumbnail"))
    if share_pixels and (needs & {NATIVE_PIXELS, NEUTRAL_PIXELS}):
        caches["shared_pixels"] = True  # see canvas.remember
    manifest = Manifest(upload_id=upload_id, user_id=upload["user_id"],
                        file_name=upload["original_file_name"],
                        original_key=upload["file_path"], thumbnail_key=thumb_key,
                        file_info=asdict(views.info), configs=configs, methods=active,
                        **caches)
    manifest_json = manifest.to_json()
    manifest_key = storage.blobs.key_for_bytes(manifest_json, ".json")
    blobs.append((manifest_json, ".json", "manifest"))
    # The thumbnail recorded (and the stage touched) in the transaction of its reference.
    await blobrefs.store_many(storage, upload_id, blobs, then=lambda conn: repo.set_thumbnail_in(
        conn, upload_id, thumb_key, stage="detecting"))
    # The methods this process runs next read this decode, not the original again.
    canvas.remember(settings, manifest, views.crop, neutral)
    return manifest_key, methods, Manifest.from_json(manifest_json)


async def _active_configs(storage: Storage, methods) -> dict[str, dict]:
    """The active configuration of each config type the methods read: its ``name`` and
    ``parameters`` (as JSON: they travel in the manifest)."""
    out = {}
    for kind in sorted({REGISTRY[n].config_type for n in methods if n in REGISTRY} - {None}):
        configs = await storage.documents.active_configurations(kind)
        if configs:
            out[kind] = {"name": configs[0].config_name,
                         "parameters": configs[0].parameters.model_dump(mode="json")}
    return out


async def _active_parameters(storage: Storage, methods) -> dict[str, dict]:
    """The active configuration's parameters of each config type the methods read."""
    return {kind: c["parameters"] for kind, c in (await _active_configs(storage, methods)).items()}


# How long warm_up may wait for the database and Mongo before it leaves the loading to the
# first image (the loading itself is synchronous and short: ≈ 0.5 s for the CLIP model).
WARM_UP_LOOKUP_SECONDS = 10.0


async def warm_up(storage: Storage, settings: Settings,
                  names: Iterable[str] | None = None) -> list[str]:
    """Load now what the active methods (of ``names``, if given) load on their first image
    (the model's files), so a process pays it when it starts. Never raises: what fails (the
    database down, a broken model file) is logged on ``skygate.startup`` and left to the
    first image, which records it. Returns the methods loaded."""
    only = None if names is None else set(names)

    async def lookup():
        active = [REGISTRY[n] for n in await repo.active_methods(storage.engine)
                  if n in REGISTRY and REGISTRY[n].warm_up and (only is None or n in only)]
        return active, await _active_parameters(storage, [m.name for m in active])

    try:
        methods, parameters = await asyncio.wait_for(lookup(), WARM_UP_LOOKUP_SECONDS)
    except Exception as exc:  # noqa: BLE001 - e.g. the database is down: loaded on first use
        startup_log.warning("methods not loaded ahead (%s: %s): the first image loads them",
                            type(exc).__name__, exc)
        return []
    warmed = []
    for method in methods:
        try:
            method.warm_up(parameters.get(method.config_type))
            warmed.append(method.name)
        except Exception as exc:  # noqa: BLE001 - the first image says it again, on the record
            startup_log.warning("could not load %s ahead of its first image: %s: %s",
                                method.name, type(exc).__name__, exc,
                                extra={"method": method.name})
    if warmed:
        startup_log.info("loaded ahead of the first image: %s", ", ".join(warmed))
    return warmed


async def detect(storage: Storage, settings: Settings, upload_id: int, method: str,
                 manifest_key: str, *, heartbeat: bool = False, may_count: bool = True,
                 manifest: Manifest | None = None) -> MethodResult:
    """Run one method; a failure is logged with the method, the file and the reason.

    ``heartbeat``: a task in a cluster. Its delivery is counted (:mod:`service.deliveries`:
    past the cap a poison image's method ends ``status=error`` without running), and it
    touches the upload as it starts (the recovery sweep reads that; the stage stays touched
    well inside the sweep's limit, which is more than twice a method's hard time limit) —
    unless a worker died on the delivery before: a poison's redeliveries keep no upload
    alive. ``may_count``: False for a retry after a transient fault.

    ``manifest``: the embedded runner's own, from the prepare it just ran in this process.
    The upload is then not read again before the method: prepare read it, the only write a
    method makes (its pictures) checks in its own statement that the upload still is this
    canvas's, and aggregate checks again before it writes anything."""
    if (later := _left_for_later_at_once(settings, method)) is not None:
        return later
    stage = f"detect.{method}"
    ours = manifest is not None  # the embedded runner's: its prepare read the upload
    if manifest is None:
        manifest = await canvas.read_manifest(storage, manifest_key, upload_id)
    delivery = None
    if heartbeat:
        # Counted, and the upload touched if it is still this canvas's: one transaction.
        delivery = await deliveries.begin(storage, settings, upload_id, stage,
                                          may_count=may_count,
                                          touch=(manifest.original_key, manifest.user_id))
        if delivery is not None and delivery.poisoned:
            await deliveries.end(storage, upload_id, stage)
            return MethodResult(method=method, status="error", error=delivery.reason)
        ours = bool(delivery and delivery.touched)
    try:
        return await _detect(storage, settings, upload_id, method, manifest, ours=ours)
    finally:
        if delivery is not None:
            await deliveries.end(storage, upload_id, stage)


def _left_for_later_at_once(settings: Settings, name: str) -> MethodResult | None:
    """The result of a method that reads no configuration and can decide nothing (its
    evidence waits for a request): known before the manifest, the delivery count or the
    heartbeat, as it runs no image code that could kill a worker or take time."""
    method = REGISTRY.get(name)
    if (settings.evidence == "on_request" and method is not None
            and method.config_type is None and evidence_only(method, None)):
        return left_for_later(name)
    return None


async def _detect(storage: Storage, settings: Settings, upload_id: int, method: str,
                  manifest: Manifest, *, ours: bool) -> MethodResult:
    # Not touched (not in flight any more, a redelivery, or not ours): whether it is ours
    # decides (canvas.our_upload).
    if not ours and await canvas.our_upload(storage, upload_id, manifest) is None:
        # Deleted in flight, its id reused: nothing of this run may land on the new upload.
        log.info("upload %s was deleted during detection: %s not run", upload_id, method,
                 extra={"upload_id": upload_id, "method": method})
        return MethodResult(method=method, status="skipped",
                            details={"abstain_reason": "the upload was deleted"})
    try:
        result = await _run_method(storage, settings, method, manifest)
    except blobrefs.UploadGone:
        # Its picture found the upload deleted (or its id given to another): as above.
        log.info("upload %s was deleted during %s", upload_id, method,
                 extra={"upload_id": upload_id, "method": method})
        return MethodResult(method=method, status="skipped",
                            details={"abstain_reason": "the upload was deleted"})
    except Exception as exc:
        log.error("method %s failed on %s: %s: %s", method, manifest.file_name,
                  type(exc).__name__, exc, exc_info=True,
                  extra={"upload_id": upload_id, "method": method,
                         "file": manifest.file_name, "reason": str(exc)[:500]})
        raise
    if result.status == "error":
        log.warning("method %s failed on %s: %s", method, manifest.file_name,
                    result.error, extra={"upload_id": upload_id, "method": method,
                                         "file": manifest.file_name,
                                         "reason": result.error})
    return result


async def aggregate_counted(storage: Storage, settings: Settings, upload_id: int,
                            manifest_key: str, raw_results: list, *, may_count: bool = True
                            ) -> dict:
    """aggregate as a task in a cluster: its delivery counted, the upload touched (stage
    aggregating) unless a worker died on the delivery before, and past the cap the upload
    failed (a verdict needs aggregate) instead of killing one more worker."""
    delivery = await deliveries.begin(storage, settings, upload_id, "aggregate",
                                      may_count=may_count)
    try:
        if delivery is not None and delivery.poisoned:
            await repo.mark_failed(storage.engine, upload_id, delivery.reason,
                                   only_unfinished=True)
            return {"upload_id": upload_id, "status": "failed", "error": delivery.reason}
        upload = None
        if delivery is not None and not delivery.redelivered:  # touched and read at once
            upload = await repo.touch(storage.engine, upload_id, "aggregating", read=True)
        return await aggregate(storage, settings, upload_id, manifest_key, raw_results,
                               upload=upload)
    finally:
        if delivery is not None:
            await deliveries.end(storage, upload_id, "aggregate")


async def _run_method(storage: Storage, settings: Settings, name: str,
                      manifest: Manifest) -> MethodResult:
    method = REGISTRY.get(name)
    if method is None:
        return unimplemented(name)
    inputs: dict = {}
    config_name = None
    if CONFIG in method.needs:
        config = (manifest.configs or {}).get(method.config_type)
        if config is None:  # not carried (or none active at prepare): read it now
            configs = await storage.documents.active_configurations(method.config_type)
            config = configs and {"name": configs[0].config_name,
                                  "parameters": configs[0].parameters.model_dump()}
        if not config:
            return MethodResult(method=name, status="skipped", details={
                "abstain_reason": f"no active {method.config_type} configuration"})
        inputs[CONFIG] = config["parameters"]
        config_name = config["name"]
    if settings.evidence == "on_request" and evidence_only(method, inputs.get(CONFIG)):
        # Nothing it computes decides: its statistics and pictures wait until a person asks
        # (service.evidence), so the canvas pays only for what votes.
        return left_for_later(name)
    for need in method.needs - {CONFIG}:
        inputs[need] = canvas.load_input(storage, settings, need, manifest, name)
    finding = method.execute(inputs)
    result = finding.result
    if config_name is not None:
        result.details["config_name"] = config_name
    await _store_pictures(storage, manifest, method, finding, result)
    return result


async def _store_pictures(storage: Storage, manifest: Manifest, method: Method, finding,
                          result: MethodResult) -> None:
    """Store the pictures a method made (only while the upload still is this canvas's,
    checked in the same statement); their blob keys go into the result's details."""
    upload_id, owner = manifest.upload_id, (manifest.original_key, manifest.user_id)
    for kind, picture in finding.pictures.items():
        key = await blobrefs.store(storage, upload_id, picture.data, suffix=picture.suffix,
                                   kind=kind, owner=owner)
        result.details[method.pictures.get(kind, f"{kind}_path")] = key


async def run_all(storage: Storage, settings: Settings, upload_id: int, *,
                  may_count: bool = True) -> None:
    """The whole canvas in one process, for the embedded default. A transient fault (the
    blob folder full for a moment, the database away) raises: the caller retries it."""
    manifest_key, methods, manifest = await prepare_canvas(
        storage, settings, upload_id, share_pixels=False, may_count=may_count)
    if manifest_key is None:
        return
    # Prepare's own manifest, for every method and aggregate (prepare read the upload row;
    # see detect's ``manifest``): not read back from the blob store.
    results = []
    for method in methods:
        try:
            results.append((await detect(storage, settings, upload_id, method, manifest_key,
                                         manifest=manifest)).model_dump(mode="json"))
        except Exception as exc:  # one broken method never loses the verdict
            if faults.is_transient(exc):
                raise  # not the method's fault: the canvas is run again
            results.append(error_result(method, exc).model_dump(mode="json"))
    await aggregate(storage, settings, upload_id, manifest_key, results, manifest=manifest)


# How often the embedded runner runs a canvas again after a transient fault (with backoff:
# about 30 s in all) before it records the failure (`skygate retry --failed` re-runs it).
EMBEDDED_RETRIES = 6


async def run_all_or_fail(storage: Storage, settings: Settings, upload_id: int) -> None:
    """``run_all`` for in-process callers (scan, the embedded API, retry/rescore): a
    transient fault is retried with backoff; a crash is recorded on the upload as its
    failure (without server paths), never raised, so one file never loses a batch."""
    attempt = 0
    while True:
        try:
            await run_all(storage, settings, upload_id, may_count=attempt == 0)
            return
        except Exception as exc:
            if faults.is_transient(exc) and attempt < EMBEDDED_RETRIES:
                attempt += 1
                delay = faults.backoff(attempt, base=0.5, cap=8.0)
                log.warning("transient fault, running upload %s again in %.1fs: %s",
                            upload_id, delay, public_reason(exc),
                            extra={"upload_id": upload_id})
                await asyncio.sleep(delay)
                continue
            log.exception("detection failed", extra={"upload_id": upload_id})
            await repo.mark_failed(storage.engine, upload_id, public_reason(exc))
            await canvas.release(storage, upload_id)
            return
