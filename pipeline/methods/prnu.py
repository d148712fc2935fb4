"""Sensor-noise residual (PRNU-style) analysis.

Cameras leave a multiplicative photo-response non-uniformity pattern and shot noise in the
pixels; generators leave clean flat regions and, from their upsampling layers, periodic peaks
in the residual's spectrum. The residual follows Lukáš, Fridrich and Goljan (2006):
W = I − F(I) with F a wavelet-domain Wiener filter.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pywt

from pipeline import wavelets
from pipeline.calibration import calibration_usable
from pipeline.imaging import block_std, evidence_view, luminance, too_small, view_details
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
from schemas.documents import PrnuResults
from schemas.results import MethodResult

#: The format-neutral features this method's calibration reads.
FEATURES = ["log_flat_noise", "log_noise_ratio", "residual_kurtosis", "peak_max"]
GRAY_NDIM = 2


#: The side of a block_map cell, in native pixels (a smaller view's cells cover as many).
MAP_BLOCK = 32

#: The local windows of the Wiener filter: 3×3, 5×5, 7×7 and 9×9.
WINDOW_RADII = (1, 2, 3, 4)


def smallest_local_mean(values: np.ndarray) -> np.ndarray:
    """The smallest of the local means over the :data:`WINDOW_RADII` windows, at each sample:
    ``uniform_filter(values, size, mode="reflect")`` for each size, then their minimum.

    The box sums grow from one padded copy instead: each window's row sums are the last
    window's plus two columns, and its box sums add up its rows (all positive: no running
    sums to cancel), in about half the time of the four ``uniform_filter`` calls.
    """
    reach = WINDOW_RADII[-1]
    rows, cols = values.shape
    # numpy's "symmetric" is scipy's "reflect" (the edge sample repeats), for any length.
    padded = np.pad(values, reach, mode="symmetric")
    across = padded[:, reach: reach + cols].copy()  # sums along rows, grown window by window
    smallest, box = np.empty((rows, cols)), np.empty((rows, cols))
    width = 0
    for r in WINDOW_RADII:
        for d in range(width + 1, r + 1):
            across += padded[:, reach - d: reach - d + cols]
            across += padded[:, reach + d: reach + d + cols]
        width = r
        out = smallest if r == WINDOW_RADII[0] else box
        np.add(across[reach - r: reach - r + rows], across[reach - r + 1: reach - r + 1 + rows],
               out=out)
        for k in range(2, 2 * r + 1):
            out += across[reach - r + k: reach - r + k + rows]
        out *= 1.0 / (2 * r + 1) ** 2
        if out is box:
            np.minimum(smallest, box, out=smallest)
    return smallest


def wavelet_denoise(gray: np.ndarray, *, sigma0: float = 5.0, wavelet: str = "db8",
                    levels: int = 4) -> np.ndarray:
    """Wiener-filter the wavelet detail coefficients (Lukáš et al. 2006, σ0 = 5 for 8-bit).

    Parameters
    ----------
    gray : (M, N) ndarray of float
        Luminance.
    sigma0 : float
        Assumed standard deviation of the noise to remove.
    """
    if gray.ndim != GRAY_NDIM:
        raise ValueError("gray must be 2-D")
    levels = max(1, min(levels, pywt.dwtn_max_level(gray.shape, wavelet)))
    # pywt.wavedec2 / waverec2 (mode="periodization"), the same values (to float64 rounding)
    # as blocked matrix products in about half pywt's time (its convolutions are scalar C).
    coeffs = wavelets.wavedec2(gray, wavelet, level=levels)
    s2 = sigma0 ** 2
    for details in coeffs[1:]:
        for band in details:
            # Local signal variance: the smallest MAP estimate over 3..9 windows keeps edges
            # (max(u - s2, 0) is monotonic in u: the minimum is taken before it, once).
            var = smallest_local_mean(band * band)
            var -= s2
            np.maximum(var, 0, out=var)
            gain_den = var + s2
            var *= band
            np.divide(var, gain_den, out=band)  # band * var / (var + s2), over the band itself
    den = wavelets.waverec2(coeffs, wavelet)
    return den[: gray.shape[0], : gray.shape[1]]


def noise_residual(gray: np.ndarray) -> np.ndarray:
    """W = I − F(I), with row and column means removed (kills linear-pattern artefacts)."""
    residual = wavelet_denoise(gray)
    np.subtract(gray, residual, out=residual)  # over the denoised image: no third copy
    residual -= residual.mean(axis=1, keepdims=True)
    residual -= residual.mean(axis=0, keepdims=True)
    return residual


def _mean_power(spectrum: np.ndarray, *, axis: int) -> np.ndarray:
    """``np.mean(np.abs(spectrum) ** 2, axis=axis)`` of a 2-D complex spectrum, as sums of
    squares of its real and imaginary parts (no modulus, no complex temporaries)."""
    # Real and imaginary parts interleaved along axis 1.
    parts = np.ascontiguousarray(spectrum).view(spectrum.real.dtype)
    if axis == 1:
        return np.einsum("ij,ij->i", parts, parts) / spectrum.shape[1]
    squares = np.einsum("ij,ij->j", parts, parts)
    return (squares[0::2] + squares[1::2]) / spectrum.shape[0]


def periodic_peak_score(residual: np.ndarray) -> dict[str, float]:
    """Strength of periodic peaks in the residual spectrum at periods 2, 4, 8 and 16.

    Averages the power spectrum over rows (and columns), then compares the power at each
    period's harmonics with the median power of the neighbouring frequencies. Returns
    ``log10`` ratios; ~0 means no periodicity. Period 8 is also what JPEG's 8×8 grid makes.
    """
    scores = {}
    for axis in (0, 1):  # columns, then rows
        n = residual.shape[axis]
        spectrum = _mean_power(np.fft.rfft(residual, axis=axis), axis=1 - axis)
        for period in (2, 4, 8, 16):
            if n < 4 * period:
                continue
            ratios = []
            for k in range(1, period // 2 + 1):
                idx = round(k * n / period)
                if idx >= len(spectrum):
                    continue
                lo, hi = max(1, idx - 8), min(len(spectrum), idx + 9)
                neighbours = np.r_[spectrum[lo:max(lo, idx - 1)], spectrum[idx + 2:hi]]
                if neighbours.size:
                    ratios.append(spectrum[idx] / (np.median(neighbours) + 1e-12))
            if ratios:
                key = f"period{period}"
                scores[key] = max(scores.get(key, 0.0), float(np.log10(max(ratios) + 1e-12)))
    return scores


def residual_statistics(gray: np.ndarray, *, block: int = 32) -> dict:
    """Residual statistics of a luminance image, and a per-block map of how noiseless it is.

    Returns a dict with ``residual_std``, ``residual_kurtosis``, ``flat_noise`` (residual std
    in the flattest 10 % of 8×8 blocks: the camera noise floor), ``noise_ratio`` (textured /
    flat), periodic peak scores and ``block_map`` (rows of columns in [0, 1], higher = cleaner
    than the image's own median, i.e. more render-like).
    """
    residual = noise_residual(gray)
    centred = residual - residual.mean()
    centred *= centred
    variance = np.mean(centred)
    std = float(np.sqrt(variance))  # residual.std(): the same two passes
    centred *= centred
    kurtosis = float(np.mean(centred) / (variance ** 2 + 1e-12) - 3.0)
    # Flat vs textured 8×8 blocks, ranked by the luminance's own local spread.
    lum_blocks = block_std(gray, 8).ravel()
    res_blocks = block_std(residual, 8).ravel()
    order = np.argsort(lum_blocks)
    tenth = max(1, len(order) // 10)
    flat = float(np.median(res_blocks[order[:tenth]]))
    textured = float(np.median(res_blocks[order[-max(1, len(order) // 4):]]))
    big = block_std(residual, block)
    reference = np.median(big) + 1e-6
    cleanliness = np.clip(1.0 - big / (2 * reference), 0.0, 1.0)
    return {
        "residual_std": std,
        "residual_kurtosis": kurtosis,
        "flat_noise": flat,
        "noise_ratio": textured / (flat + 1e-3),
        "peaks": periodic_peak_score(residual),
        "block_map": cleanliness,
    }


# --- camera fingerprint enrolment and PCE ----------------------------------------------------


def enroll_fingerprint(grays: list[np.ndarray]) -> np.ndarray:
    """Estimate a camera's PRNU fingerprint K from several of its images (same size).

    K = Σ Wᵢ Iᵢ / Σ Iᵢ², the maximum-likelihood estimate of Chen et al. (2008), with row and
    column means removed. Flat, bright, unsaturated images give the best estimate.
    """
    if not grays:
        raise ValueError("need at least one image")
    shape = grays[0].shape
    num = np.zeros(shape)
    den = np.zeros(shape)
    for gray in grays:
        if gray.shape != shape:
            raise ValueError("all enrolment images must have the same size")
        num += noise_residual(gray) * gray
        den += gray * gray
    fingerprint = num / (den + 1.0)
    fingerprint -= fingerprint.mean(axis=1, keepdims=True)
    fingerprint -= fingerprint.mean(axis=0, keepdims=True)
    return fingerprint


def pce(gray: np.ndarray, fingerprint: np.ndarray, *, exclude: int = 5) -> float:
    """Peak-to-correlation energy of the image's residual against ``fingerprint × image``.

    PCE above ~60 is the usual threshold for "same camera" (Goljan et al. 2009).
    """
    if gray.shape != fingerprint.shape:
        raise ValueError("image and fingerprint must have the same size")
    w = noise_residual(gray)
    s = fingerprint * gray
    w = w - w.mean()
    s = s - s.mean()
    xc = np.real(np.fft.ifft2(np.fft.fft2(w) * np.conj(np.fft.fft2(s))))
    peak_index = np.unravel_index(np.argmax(np.abs(xc)), xc.shape)
    peak = xc[peak_index]
    mask = np.ones_like(xc, dtype=bool)
    rows = np.arange(peak_index[0] - exclude, peak_index[0] + exclude + 1) % xc.shape[0]
    cols = np.arange(peak_index[1] - exclude, peak_index[1] + exclude + 1) % xc.shape[1]
    mask[np.ix_(rows, cols)] = False
    energy = np.mean(xc[mask] ** 2)
    return float(np.sign(peak) * peak ** 2 / (energy + 1e-12))


# --- the method -------------------------------------------------------------------------------


def features(rgb: np.ndarray, gray: np.ndarray) -> tuple[dict[str, float], dict]:
    """The calibrated features of an (already neutralised) image, and the raw statistics."""
    res = residual_statistics(gray)
    peaks = res["peaks"]
    return {
        "log_flat_noise": math.log(res["flat_noise"] + 1e-3),
        "log_noise_ratio": math.log(res["noise_ratio"] + 1e-3),
        "residual_kurtosis": float(np.clip(res["residual_kurtosis"], -3, 50)),
        # Period 8 is excluded: after the q90 round trip it is JPEG's grid, not a generator.
        "peak_max": max([v for k, v in peaks.items() if k != "period8"] or [0.0]),
    }, res


def detect_prnu(native: np.ndarray, neutral: np.ndarray | None, *,
                calibration: dict | None = None, found: dict | None = None,
                full_resolution: bool = True) -> MethodResult:
    """Noise-residual evidence: native-resolution statistics, calibrated vote on the neutral view.

    Parameters
    ----------
    native : (M, N, 3) uint8 ndarray
        The decoded original, or its central crop (only the central ``MAX_SIDE`` window is read).
    neutral : (K, L, 3) uint8 ndarray
        Its neutralised view (:func:`pipeline.imaging.neutralise`); not read when ``found``
        (its features, computed once per canvas) is given.
    full_resolution : bool
        False for evidence only (no usable calibration): the statistics and the block map
        read :func:`pipeline.imaging.evidence_view`, the screen-size view (``details.view``
        says which); the map keeps its cells of :data:`MAP_BLOCK` native pixels.
    """
    started = time.perf_counter()
    if too_small(native):
        return abstain("prnu", too_small_reason(), started)
    view, factor = evidence_view(native, full_resolution=full_resolution)
    raw = residual_statistics(luminance(view), block=max(8, MAP_BLOCK // factor))
    peaks = raw["peaks"]
    # The seed's pattern_score: the strongest periodic residual peak (log10 power ratio).
    pattern = max([v for k, v in peaks.items()] or [0.0])
    details = {
        "pattern_score": round(pattern, 4),
        "native": {**rounded({k: v for k, v in raw.items() if k != "peaks"}),
                   "peaks": {k: round(v, 4) for k, v in peaks.items()}},
        "view": view_details(view, factor),
    }
    if found is None:
        found, _ = features(neutral, luminance(neutral))
    return scored("prnu", found, FEATURES, calibration, started, details, raw["block_map"])


def _run(*, native_pixels: np.ndarray, neutral_features: dict) -> MethodResult:
    # Native resolution only while the calibration votes (METHOD.votes_with_features): a
    # usable calibration brings the full path back with no code change.
    return detect_prnu(native_pixels, None, found=group_features(neutral_features, "prnu"),
                       full_resolution=calibration_usable("prnu"))


def _section(r: MethodResult | None) -> dict:
    return {"pixel_analysis": {"prnu_results": PrnuResults(
        pattern_score=(r.details.get("pattern_score") if r else None),
        is_suspicious=suspicious(r), confidence=confidence_of(r),
        details=r.details if r else None,
    )}}


METHOD = Method(name="prnu", needs=frozenset({NATIVE_PIXELS, NEUTRAL_FEATURES}), run=_run,
                document_section=_section, in_heatmap=True, feature_groups=("prnu",),
                votes_with_features=calibration_votes("prnu"),
                evidence_only=uncalibrated("prnu"))
