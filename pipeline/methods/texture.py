"""Smoothness and micro-texture statistics, globally and per block.

Camera pictures carry micro-texture everywhere (sensor noise, fine detail, demosaicing);
renders have large, very smooth regions and fewer high-frequency details. These statistics
are what the corpus notes found to survive format neutralisation.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache

import numpy as np

from pipeline.calibration import calibration_usable
from pipeline.imaging import (
    block_mean,
    block_std,
    evidence_view,
    luminance,
    too_small,
    view_details,
)
from pipeline.methods.base import (
    NATIVE_PIXELS,
    NEUTRAL_FEATURES,
    Method,
    abstain,
    calibration_votes,
    confidence_of,
    group_features,
    rounded,
    scored,
    suspicious,
    too_small_reason,
    uncalibrated,
)
from pipeline.order_stats import percentiles
from schemas.documents import TextureAnalysis
from schemas.results import MethodResult

#: The format-neutral features this method's calibration reads.
FEATURES = ["smooth_share", "lbp_entropy", "spectral_slope", "log_gradient_tail"]
GRAY_NDIM = 2
MIN_GRAY_SIDE = 16
MAX_UNIFORM_TRANSITIONS = 2  # "uniform" LBP patterns (Ojala 2002)
MIN_SLOPE_POINTS = 4  # radial frequencies needed to fit a slope
FREQ_START = 2  # the lowest radial frequencies are the window's, not the image's
#: The side of a block_map cell, in native pixels (a smaller view's cells cover as many).
MAP_BLOCK = 32


def lbp_codes(gray: np.ndarray) -> np.ndarray:
    """8-neighbour, radius-1 local binary pattern codes of a (M, N) image, shape (M-2, N-2)."""
    centre = np.ascontiguousarray(gray[1:-1, 1:-1])
    codes = np.zeros(centre.shape, dtype=np.uint8)
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    rows, cols = gray.shape
    above = np.empty(centre.shape, dtype=bool)  # one buffer for every comparison and bit
    bits = above.view(np.uint8)
    for bit, (dr, dc) in enumerate(offsets):
        neighbour = gray[1 + dr: rows - 1 + dr, 1 + dc: cols - 1 + dc]
        np.greater_equal(neighbour, centre, out=above)
        np.left_shift(bits, bit, out=bits)
        codes |= bits
    return codes


@lru_cache(maxsize=1)
def _uniform_mapping() -> tuple[np.ndarray, int]:
    # "Uniform" patterns (≤ 2 transitions) get their own bin; the rest share one (Ojala 2002).
    transitions = np.array(
        [bin((c ^ ((c >> 1) | ((c & 1) << 7))) & 0xFF).count("1") for c in range(256)]
    )
    uniform = transitions <= MAX_UNIFORM_TRANSITIONS
    mapping = np.full(256, uniform.sum(), dtype=np.int64)
    mapping[uniform] = np.arange(uniform.sum())
    return mapping, int(uniform.sum()) + 1


def _uniform_lbp_histogram(codes: np.ndarray) -> np.ndarray:
    mapping, bins = _uniform_mapping()
    # A histogram of the 256 codes first, then mapped: the same counts, 256 bins to fold.
    counts = np.bincount(codes.ravel(), minlength=256)
    hist = np.bincount(mapping, weights=counts, minlength=bins).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


@lru_cache(maxsize=4)
def _spectrum_geometry(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      np.ndarray]:
    """Per shape, once: the Hann window, the radius bin of each frequency of the real FFT's
    half plane, its weight (2 for a column that stands for its mirror image too), and the
    counts per bin over the full plane."""
    window = np.outer(np.hanning(rows), np.hanning(cols))
    r = np.hypot(*np.meshgrid(np.arange(rows) - rows // 2, np.arange(cols) - cols // 2,
                              indexing="ij")).astype(np.int64)
    # The spectrum is used fftshift-ed: index the unshifted one with the shifted radii.
    radius = np.fft.ifftshift(r)
    half = cols // 2 + 1
    weight = np.full(half, 2.0)
    weight[0] = 1.0
    if cols % 2 == 0:
        weight[-1] = 1.0  # the Nyquist column has no mirror image
    return (window, radius[:, :half].ravel(), np.broadcast_to(weight, (rows, half)).ravel(),
            np.maximum(np.bincount(radius.ravel()), 1))


def spectral_slope(gray: np.ndarray) -> float:
    """Slope of the radially averaged log power spectrum against log frequency.

    Natural photographs fall near −2 (1/f² power); renders are often steeper (less fine detail).
    The real FFT's half plane stands for the full one (a real image's spectrum is Hermitian):
    the same radial averages at half the cost.
    """
    rows, cols = gray.shape
    window, radius, weight, counts = _spectrum_geometry(rows, cols)
    spectrum = np.fft.rfft2((gray - gray.mean()) * window)
    power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
    radial = np.bincount(radius, power.ravel() * weight, minlength=counts.size) / counts
    top = min(rows, cols) // 2
    freqs = np.arange(FREQ_START, top)
    if freqs.size < MIN_SLOPE_POINTS:
        return float("nan")
    slope, _ = np.polyfit(np.log(freqs), np.log(radial[FREQ_START:top] + 1e-9), 1)
    return float(slope)


def texture_statistics(gray: np.ndarray, *, block: int = 32) -> dict:
    """Global and per-block texture statistics of a luminance image.

    Parameters
    ----------
    gray : (M, N) ndarray of float
        Luminance in [0, 255], at least 16 × 16.

    Returns
    -------
    dict with ``smooth_share`` (share of 8×8 blocks with std < 1 grey level),
    ``local_variance`` (median 8×8 block variance), ``gradient_energy`` (mean squared
    gradient), ``gradient_tail`` (99th / 50th percentile of gradient magnitude),
    ``lbp_entropy`` (bits), ``spectral_slope`` and ``block_map`` (rows of columns in [0, 1],
    the share of very smooth 8×8 blocks in each ``block`` × ``block`` tile).
    """
    if gray.ndim != GRAY_NDIM or min(gray.shape) < MIN_GRAY_SIDE:
        raise ValueError(f"need a 2-D image of at least 16×16, got {gray.shape}")
    stds = block_std(gray, 8)
    drow, dcol = np.gradient(gray)
    drow *= drow
    dcol *= dcol
    drow += dcol
    energy = float(drow.mean())  # mean squared gradient magnitude
    # Percentiles of the gradient magnitude, the square root of only the values they read.
    p50, p99 = percentiles(drow, [50, 99], transform=np.sqrt)
    hist = _uniform_lbp_histogram(lbp_codes(gray))
    nz = hist[hist > 0]
    smooth = (stds < 1.0).astype(np.float64)
    per_tile = max(1, block // 8)
    tiles = (block_mean(smooth, per_tile) if min(smooth.shape) >= per_tile
             else smooth)
    return {
        "smooth_share": float(smooth.mean()),
        "local_variance": float(np.median(stds * stds)),
        "gradient_energy": energy,
        "gradient_tail": float(p99 / (p50 + 1e-3)),
        "lbp_entropy": float(-(nz * np.log2(nz)).sum()),
        "spectral_slope": spectral_slope(gray),
        "block_map": tiles,
    }


# --- the method -------------------------------------------------------------------------------


def features(rgb: np.ndarray, gray: np.ndarray) -> tuple[dict[str, float], dict]:
    """The calibrated features of an (already neutralised) image, and the raw statistics."""
    tex = texture_statistics(gray)
    return {
        "smooth_share": tex["smooth_share"],
        "lbp_entropy": tex["lbp_entropy"],
        "spectral_slope": tex["spectral_slope"],
        "log_gradient_tail": math.log(tex["gradient_tail"] + 1e-3),
    }, tex


def detect_texture(native: np.ndarray, neutral: np.ndarray | None, *,
                   calibration: dict | None = None, found: dict | None = None,
                   full_resolution: bool = True) -> MethodResult:
    """Smoothness and micro-texture evidence: native statistics (central ``MAX_SIDE`` window),
    calibrated vote on the neutral view's features (``found``, or computed from ``neutral``).
    ``full_resolution`` False (evidence only): the statistics read the screen-size
    :func:`pipeline.imaging.evidence_view` instead (``details.view`` says which)."""
    started = time.perf_counter()
    if too_small(native):
        return abstain("texture", too_small_reason(), started)
    view, factor = evidence_view(native, full_resolution=full_resolution)
    raw = texture_statistics(luminance(view), block=max(8, MAP_BLOCK // factor))
    details = {"smoothness_score": round(raw["smooth_share"], 4), "native": rounded(raw),
               "view": view_details(view, factor)}
    if found is None:
        found, _ = features(neutral, luminance(neutral))
    return scored("texture", found, FEATURES, calibration, started, details, raw["block_map"])


def _run(*, native_pixels: np.ndarray, neutral_features: dict) -> MethodResult:
    # Native resolution only while the calibration votes (METHOD.votes_with_features).
    return detect_texture(native_pixels, None,
                          found=group_features(neutral_features, "texture"),
                          full_resolution=calibration_usable("texture"))


def _section(r: MethodResult | None) -> dict:
    return {"pixel_analysis": {"texture_analysis": TextureAnalysis(
        smoothness_score=(r.details.get("smoothness_score") if r else None),
        is_suspicious=suspicious(r), confidence=confidence_of(r),
        details=r.details if r else None,
    )}}


METHOD = Method(name="texture", needs=frozenset({NATIVE_PIXELS, NEUTRAL_FEATURES}), run=_run,
                document_section=_section, in_heatmap=True, feature_groups=("texture",),
                votes_with_features=calibration_votes("texture"),
                evidence_only=uncalibrated("texture"))
