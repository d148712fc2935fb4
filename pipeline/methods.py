"""The pixel methods as pure functions: pixels in, :class:`MethodResult` out."""

from __future__ import annotations

import time

import numpy as np

from pipeline.ela import ela, ela_statistics
from pipeline.features import (
    METHOD_FEATURES,
    MIN_SIDE,
    calibrated_probability,
    compute_features,
    load_calibration,
)
from pipeline.prnu import MAX_SIDE, center_crop, luminance, residual_statistics
from pipeline.texture import texture_statistics
from schemas.results import MethodResult, verdict_from_probability

DEFAULT_BAND = 0.15  # |p − 0.5| below this is "uncertain"


def _vote(method: str, features: dict, calibration: dict | None) -> tuple:
    cal = (calibration or load_calibration())["methods"].get(method)
    p, reason = calibrated_probability(features, cal)
    verdict, confidence = verdict_from_probability(p, band=(cal or {}).get("band", DEFAULT_BAND))
    return p, verdict, confidence, reason


def _scored(method: str, neutral: np.ndarray, calibration: dict | None, started: float,
            details: dict, block_map: np.ndarray) -> MethodResult:
    """Calibrated vote on the neutral view, assembled with the method's own details."""
    features, _ = compute_features(neutral, groups=(method,))
    p, verdict, confidence, reason = _vote(method, features, calibration)
    details = {**details, "is_suspicious": bool(verdict),
               "features": {k: round(features[k], 5) for k in METHOD_FEATURES[method]}}
    if reason:
        details["abstain_reason"] = reason
    return MethodResult(
        method=method, ai_probability=p, is_ai_generated=verdict,
        confidence=round(confidence, 4), processing_time=time.perf_counter() - started,
        details=details, block_map=np.round(block_map, 3).tolist(),
    )


def _small(rgb: np.ndarray) -> bool:
    return min(rgb.shape[:2]) < MIN_SIDE


def _abstain(method: str, reason: str, started: float, **details) -> MethodResult:
    return MethodResult(method=method, processing_time=time.perf_counter() - started,
                        details={"abstain_reason": reason, **details})


def _round(d: dict) -> dict:
    return {k: (round(float(v), 5) if isinstance(v, float | np.floating) else v)
            for k, v in d.items() if k != "block_map"}


def detect_prnu(native: np.ndarray, neutral: np.ndarray, *,
                calibration: dict | None = None) -> MethodResult:
    """Noise-residual evidence: native-resolution statistics, calibrated vote on the neutral view.

    Parameters
    ----------
    native : (M, N, 3) uint8 ndarray
        The decoded original.
    neutral : (K, L, 3) uint8 ndarray
        Its neutralised view (:func:`pipeline.features.neutralise`).
    """
    started = time.perf_counter()
    if _small(native):
        return _abstain("prnu", f"image smaller than {MIN_SIDE} px", started)
    raw = residual_statistics(luminance(center_crop(native, max_side=MAX_SIDE)))
    peaks = raw["peaks"]
    # The seed's pattern_score: the strongest periodic residual peak (log10 power ratio).
    pattern = max([v for k, v in peaks.items()] or [0.0])
    details = {
        "pattern_score": round(pattern, 4),
        "native": {**_round({k: v for k, v in raw.items() if k != "peaks"}),
                   "peaks": {k: round(v, 4) for k, v in peaks.items()}},
    }
    return _scored("prnu", neutral, calibration, started, details, raw["block_map"])


def detect_texture(native: np.ndarray, neutral: np.ndarray, *,
                   calibration: dict | None = None) -> MethodResult:
    """Smoothness and micro-texture evidence (see :mod:`pipeline.texture`)."""
    started = time.perf_counter()
    if _small(native):
        return _abstain("texture", f"image smaller than {MIN_SIDE} px", started)
    raw = texture_statistics(luminance(center_crop(native, max_side=MAX_SIDE)))
    details = {"smoothness_score": round(raw["smooth_share"], 4), "native": _round(raw)}
    return _scored("texture", neutral, calibration, started, details, raw["block_map"])


def detect_ela(native: np.ndarray, neutral: np.ndarray, *, quality: int = 90,
               calibration: dict | None = None) -> tuple[MethodResult, np.ndarray]:
    """ELA statistics of the original and the ELA image (returned for the blob store)."""
    started = time.perf_counter()
    view = center_crop(native, max_side=MAX_SIDE)
    image = ela(np.ascontiguousarray(view), quality=quality)
    raw = ela_statistics(np.ascontiguousarray(view), quality=quality)
    if _small(native):
        p, verdict, confidence, reason = None, None, 0.0, f"image smaller than {MIN_SIDE} px"
        features = {}
    else:
        features, _ = compute_features(neutral, groups=("ela",))
        p, verdict, confidence, reason = _vote("ela", features, calibration)
    details = {
        # The seed's error_level_score: mean error level of the original (grey levels).
        "error_level_score": round(raw["error_level_mean"], 4),
        "is_suspicious": bool(verdict),
        "quality": quality,
        "native": _round(raw),
        "features": {k: round(features[k], 5) for k in METHOD_FEATURES["ela"] if k in features},
    }
    if reason:
        details["abstain_reason"] = reason
    result = MethodResult(
        method="ela", ai_probability=p, is_ai_generated=verdict, confidence=round(confidence, 4),
        processing_time=time.perf_counter() - started, details=details,
        block_map=np.round(raw["block_map"], 3).tolist(),
    )
    return result, image
