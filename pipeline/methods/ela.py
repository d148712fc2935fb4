"""Error level analysis: how much each pixel changes when the image is saved again as JPEG.

Regions pasted in or rendered differently recompress differently. On unprocessed files ELA
mostly tells the file's format and quality (PNG vs JPEG), so its statistics are a forensic
view for a person, and vote only as far as calibration on format-neutral data allows.
"""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image, ImageChops

from pipeline.calibration import calibration_usable
from pipeline.imaging import (
    MAX_SIDE,
    NEUTRAL_QUALITY,
    NEUTRAL_SIDE,
    RGB_CHANNELS,
    block_mean,
    center_crop,
    evidence_factor,
    reduce_by,
    to_png,
    too_small,
    view_details,
)
from pipeline.methods.base import (
    NATIVE_PIXELS,
    NEUTRAL_FEATURES,
    NEUTRAL_PIXELS,
    SETTINGS,
    Finding,
    Method,
    Picture,
    calibration_votes,
    confidence_of,
    group_features,
    rounded,
    suspicious,
    too_small_reason,
    uncalibrated,
    vote,
)
from schemas.documents import ElaResults
from schemas.results import MethodResult

#: The format-neutral features this method's calibration reads.
FEATURES = ["error_level_mean", "block_uniformity", "blockiness"]
#: Where the stored ELA image's blob key goes in the result's details.
IMAGE_KEY = "ela_image_path"
JPEG_GRID = 8  # JPEG's block size: an earlier save leaves edges on this grid
MAX_QUALITY = 100
#: The side of a block_map cell, in native pixels (a smaller view's cells cover as many).
MAP_BLOCK = 32


def ela(image: np.ndarray, *, quality: int = 90, scale: float | None = None) -> np.ndarray:
    """Amplified absolute difference between an image and its JPEG re-save.

    Parameters
    ----------
    image : (M, N, 3) ndarray of np.uint8
    quality : int
        JPEG quality of the re-save (1–100).
    scale : float, optional
        Amplification; by default stretches the 99.5th percentile to 255.

    Returns
    -------
    (M, N, 3) ndarray of np.uint8, the ELA image.
    """
    if image.dtype != np.uint8 or image.shape[2:] != (RGB_CHANNELS,):
        raise ValueError("image must be (M, N, 3) uint8")
    if not 1 <= quality <= MAX_QUALITY:
        raise ValueError("quality must be in 1..100")
    return amplified(error_levels(image, quality=quality), scale=scale)


def amplified(diff: np.ndarray, *, scale: float | None = None) -> np.ndarray:
    """The ELA image of unamplified error levels (:func:`error_levels`), uint8."""
    if diff.dtype == np.uint8 and diff.shape[2:] == (RGB_CHANNELS,):
        # Pillow counts and maps the bytes (its histogram, a lookup table): the same values
        # as np.bincount and np.take, without their intp copies of the image.
        picture = Image.fromarray(diff)
        if scale is None:
            counts = np.asarray(picture.histogram()).reshape(RGB_CHANNELS, 256).sum(axis=0)
            scale = 255.0 / max(_histogram_percentile(counts, 99.5), 1.0)
        return np.array(picture.point(_lookup_table(scale).tolist() * RGB_CHANNELS))
    if scale is None:
        top = (integer_percentile(diff, 99.5) if diff.dtype == np.uint8
               else np.percentile(diff, 99.5))
        scale = 255.0 / max(top, 1.0)
    if diff.dtype == np.uint8:  # a lookup table: the same values, no float copy of the image
        return np.take(_lookup_table(scale), diff)
    return np.clip(diff * scale, 0, 255).astype(np.uint8)


def _lookup_table(scale: float) -> np.ndarray:
    """Each error level 0..255 times ``scale``, clipped to uint8."""
    return np.clip(np.arange(256) * scale, 0, 255).astype(np.uint8)


def integer_percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) of non-negative integers, from their
    histogram: one counting pass instead of a selection over a float copy."""
    return _histogram_percentile(np.bincount(values.ravel()), q)


def _histogram_percentile(counts: np.ndarray, q: float) -> float:
    """The percentile of the integers whose histogram (value → count) is ``counts``."""
    cumulative = np.cumsum(counts)
    position = q / 100 * (cumulative[-1] - 1)
    below = int(np.floor(position))
    lo, hi = np.searchsorted(cumulative, [below, min(below + 1, cumulative[-1] - 1)],
                             side="right")
    return float(lo + (position - below) * (hi - lo))


def error_levels(image: np.ndarray, *, quality: int = 90,
                 resaved: np.ndarray | None = None) -> np.ndarray:
    """Unamplified |image − JPEG(image)| per channel, uint8 (exact: at most 255).

    ``resaved``: JPEG(image) at ``quality`` decoded, when the caller already has it.
    """
    original = Image.fromarray(image)
    if resaved is not None:
        again = Image.fromarray(np.ascontiguousarray(resaved))
    else:
        buf = io.BytesIO()
        original.save(buf, format="JPEG", quality=quality)
        again = Image.open(buf)
        if again.mode != "RGB":
            again = again.convert("RGB")
    return np.array(ImageChops.difference(original, again))  # |a − b| per channel, uint8


def _channel_sum(rgb: np.ndarray) -> np.ndarray:
    """R + G + B of a uint8 image as uint16 (three adds: ``sum(axis=2)`` is 10× slower)."""
    out = rgb[..., 0].astype(np.uint16)
    out += rgb[..., 1]
    out += rgb[..., 2]
    return out


def ela_statistics(image: np.ndarray, *, quality: int = 90, block: int = 32,
                   levels: np.ndarray | None = None, grid: int = JPEG_GRID) -> dict:
    """Error-level statistics and block uniformity.

    ``error_level_mean`` / ``error_level_std`` / ``error_level_p99`` (grey levels),
    ``block_uniformity`` (1 − coefficient of variation of per-block mean error; 1 = every
    block recompresses alike), ``blockiness`` (energy on the 8×8 grid vs elsewhere: the
    trace of an earlier JPEG save) and ``block_map`` (per-block mean error, scaled to [0, 1]).
    ``levels``: :func:`error_levels` of ``image`` at ``quality`` when already computed.
    ``grid``: JPEG's 8 × 8 grid as ``image`` shows it (4 in a view reduced by 2).
    """
    if levels is None:
        levels = error_levels(image, quality=quality)
    # Integer sums over the channels (0..765) stand for the mean error level (sum / 3): exact,
    # and the percentile comes from their histogram instead of a float copy of the image.
    total = _channel_sum(levels)
    counts = np.bincount(total.ravel())  # mean, spread and percentile from one histogram
    values = np.arange(counts.size, dtype=np.float64)
    mean_total = float(values @ counts) / total.size
    std_total = float(np.sqrt(((values - mean_total) ** 2) @ counts / total.size))
    blocks = block_mean(total, block) / RGB_CHANNELS
    cv = float(blocks.std() / (blocks.mean() + 1e-6))
    gray_total = _channel_sum(image).astype(np.int16)  # 3 × the grey level, exact
    dcol = np.abs(np.diff(gray_total, axis=1))
    edges = np.s_[:, grid - 1::grid]
    wide = dcol.shape[1] > grid
    on_grid, off_grid = 0.0, 1.0
    if wide:  # the off-grid mean from the totals: no copy of the off-grid columns
        on_sum, all_sum = int(dcol[edges].sum(dtype=np.int64)), int(dcol.sum(dtype=np.int64))
        on_count = dcol[edges].size
        on_grid = on_sum / on_count / RGB_CHANNELS
        off_grid = (all_sum - on_sum) / (dcol.size - on_count) / RGB_CHANNELS
    top = np.percentile(blocks, 99) if blocks.size else 1.0
    return {
        "error_level_mean": mean_total / RGB_CHANNELS,
        "error_level_std": std_total / RGB_CHANNELS,
        "error_level_p99": _histogram_percentile(counts, 99) / RGB_CHANNELS,
        "block_uniformity": float(max(0.0, 1.0 - cv)),
        "blockiness": float(on_grid / (off_grid + 1e-6)),
        "block_map": np.clip(blocks / max(top, 1e-6), 0, 1),
    }


# --- the method -------------------------------------------------------------------------------


def features(rgb: np.ndarray, gray: np.ndarray | None) -> tuple[dict[str, float], dict]:
    """The calibrated features of an (already neutralised) image, and the raw statistics
    (``gray`` is unused: ELA reads colour)."""
    el = ela_statistics(rgb, quality=NEUTRAL_QUALITY)
    return {
        "error_level_mean": el["error_level_mean"],
        "block_uniformity": el["block_uniformity"],
        "blockiness": el["blockiness"],
    }, el


def detect_ela(native: np.ndarray, neutral: np.ndarray | None, *, quality: int = 90,
               calibration: dict | None = None, found: dict | None = None,
               resaved: np.ndarray | None = None,
               full_resolution: bool = True) -> tuple[MethodResult, np.ndarray]:
    """ELA statistics of the original's central ``MAX_SIDE`` window and its ELA image
    (returned for the blob store; at most MAX_SIDE squared); the vote reads the neutral view's
    features (``found``, or computed from ``neutral``). ``resaved``: that window's JPEG
    re-save at ``quality``, decoded, if the caller has it (see :func:`_run`).
    ``full_resolution`` False (evidence only): the error levels, still of the native window,
    are box-reduced to the screen-size view (:func:`pipeline.imaging.evidence_view`'s
    factor: each view pixel is the mean error of the native pixels it covers) before the
    picture and the statistics are made from them (``details.view`` says which)."""
    started = time.perf_counter()
    if not 1 <= quality <= MAX_QUALITY:
        raise ValueError("quality must be in 1..100")
    view = np.ascontiguousarray(center_crop(native, max_side=MAX_SIDE))
    # One re-save for the picture and the stats.
    levels = error_levels(view, quality=quality,
                          resaved=resaved if resaved is not None and resaved.shape == view.shape
                          else None)
    factor = evidence_factor(view.shape, full_resolution=full_resolution)
    if factor > 1:
        levels, view = reduce_by(levels, factor), reduce_by(view, factor)
    image = amplified(levels)
    raw = ela_statistics(view, quality=quality, levels=levels,
                         block=max(8, MAP_BLOCK // factor), grid=max(1, JPEG_GRID // factor))
    del levels
    if too_small(native):
        p, verdict, confidence, reason = None, None, 0.0, too_small_reason()
        found = {}
    else:
        if found is None:
            found, _ = features(neutral, None)
        p, verdict, confidence, reason = vote("ela", found, calibration)
    details = {
        # The seed's error_level_score: mean error level of the original (grey levels).
        "error_level_score": round(raw["error_level_mean"], 4),
        "is_suspicious": bool(verdict),
        "quality": quality,
        "native": rounded(raw),
        "view": view_details(view, factor),
        "features": {k: round(found[k], 5) for k in FEATURES if k in found},
    }
    if reason:
        details["abstain_reason"] = reason
    result = MethodResult(
        method="ela", ai_probability=p, is_ai_generated=verdict, confidence=round(confidence, 4),
        processing_time=time.perf_counter() - started, details=details,
        block_map=np.round(raw["block_map"], 3).tolist(),
    )
    return result, image


def _run(*, native_pixels: np.ndarray, neutral_pixels: np.ndarray, neutral_features: dict,
         settings) -> Finding:
    # The neutral view (the model's input, made once per process) is the central window saved
    # as JPEG at NEUTRAL_QUALITY: at the same quality it is this method's re-save, ready-made.
    same = settings.ela_quality == NEUTRAL_QUALITY and NEUTRAL_SIDE == MAX_SIDE
    result, image = detect_ela(native_pixels, None, quality=settings.ela_quality,
                               found=group_features(neutral_features, "ela"),
                               resaved=neutral_pixels if same else None,
                               # Native resolution only while the calibration votes.
                               full_resolution=calibration_usable("ela"))
    return Finding(result, {"ela": Picture(to_png(image), ".png")})


def _section(r: MethodResult | None) -> dict:
    return {"pixel_analysis": {"ela_results": ElaResults(
        error_level_score=(r.details.get("error_level_score") if r else None),
        is_suspicious=suspicious(r), confidence=confidence_of(r),
        ela_image_path=(r.details.get(IMAGE_KEY) if r else None),
        details=r.details if r else None,
    )}}


METHOD = Method(name="ela", needs=frozenset({NATIVE_PIXELS, NEUTRAL_PIXELS, NEUTRAL_FEATURES,
                                             SETTINGS}),
                run=_run, document_section=_section, pictures={"ela": IMAGE_KEY},
                feature_groups=("ela",),
                votes_with_features=calibration_votes("ela"),
                evidence_only=uncalibrated("ela"))
