"""Format-neutral forensic features, and the calibrated scoring that turns them into a vote.

The corpus's trap is format bias: nearly every AI image is PNG and every camera photo JPEG.
So every pixel method scores a *neutralised* view — the centre crop (no resampling),
re-encoded as JPEG q90 with no metadata — the same view the calibration and the model were
trained on (scripts/train_model.py). Raw-image statistics are still reported as details.
"""

from __future__ import annotations

import io
import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.ela import ela_statistics
from pipeline.prnu import center_crop, luminance, residual_statistics
from pipeline.texture import texture_statistics

ASSETS = Path(__file__).parent / "assets"
NEUTRAL_SIDE = 1024
NEUTRAL_QUALITY = 90
MIN_SIDE = 64  # below this, block statistics are too few to mean anything: abstain

METHOD_FEATURES = {
    "prnu": ["log_flat_noise", "log_noise_ratio", "residual_kurtosis", "peak_max"],
    "texture": ["smooth_share", "lbp_entropy", "spectral_slope", "log_gradient_tail"],
    "ela": ["error_level_mean", "block_uniformity", "blockiness"],
}
MODEL_FEATURES = METHOD_FEATURES["prnu"] + METHOD_FEATURES["texture"]


def neutralise(rgb: np.ndarray, *, side: int = NEUTRAL_SIDE,
               quality: int = NEUTRAL_QUALITY) -> np.ndarray:
    """Centre crop ≤ ``side`` and a JPEG round trip at ``quality``: (M, N, 3) uint8."""
    crop = np.ascontiguousarray(center_crop(rgb, max_side=side))
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)


def compute_features(rgb: np.ndarray, *, groups=("prnu", "texture", "ela")) -> tuple[
        dict[str, float], dict]:
    """Scalar features of an (already neutralised) image for the named method groups."""
    gray = luminance(rgb)
    features: dict[str, float] = {}
    raw: dict = {}
    if "prnu" in groups:
        res = raw["prnu"] = residual_statistics(gray)
        peaks = res["peaks"]
        features.update({
            "log_flat_noise": math.log(res["flat_noise"] + 1e-3),
            "log_noise_ratio": math.log(res["noise_ratio"] + 1e-3),
            "residual_kurtosis": float(np.clip(res["residual_kurtosis"], -3, 50)),
            # Period 8 is excluded: after the q90 round trip it is JPEG's grid, not a generator.
            "peak_max": max([v for k, v in peaks.items() if k != "period8"] or [0.0]),
        })
    if "texture" in groups:
        tex = raw["texture"] = texture_statistics(gray)
        features.update({
            "smooth_share": tex["smooth_share"],
            "lbp_entropy": tex["lbp_entropy"],
            "spectral_slope": tex["spectral_slope"],
            "log_gradient_tail": math.log(tex["gradient_tail"] + 1e-3),
        })
    if "ela" in groups:
        el = raw["ela"] = ela_statistics(rgb, quality=NEUTRAL_QUALITY)
        features.update({
            "error_level_mean": el["error_level_mean"],
            "block_uniformity": el["block_uniformity"],
            "blockiness": el["blockiness"],
        })
    return features, raw


@lru_cache
def load_calibration(path: str | None = None) -> dict:
    """Per-method logistic calibrations fitted by scripts/train_model.py (empty if absent)."""
    file = Path(path) if path else ASSETS / "calibration.json"
    if not file.is_file():
        return {"methods": {}}
    return json.loads(file.read_text())


def calibrated_probability(features: dict[str, float], calibration: dict | None) -> tuple[
        float | None, str | None]:
    """P(AI) from a per-method logistic calibration, or (None, reason) when it abstains.

    Abstains when the calibration is missing or was not better than chance in grouped
    cross-validation, or when the image's features lie far outside the training range
    (an image unlike anything calibrated on: say so rather than guess).
    """
    if not calibration:
        return None, "no calibration for this method"
    if not calibration.get("usable", False):
        return None, (f"no reliable signal on format-neutral data (grouped-CV AUC "
                      f"{calibration.get('cv_auc', float('nan')):.2f})")
    names = calibration["features"]
    x = np.array([features[n] for n in names], dtype=np.float64)
    if not np.all(np.isfinite(x)):
        return None, "feature not computable on this image"
    z = (x - np.array(calibration["mean"])) / np.array(calibration["scale"])
    if np.max(np.abs(z)) > calibration.get("max_abs_z", 5.0):
        worst = names[int(np.argmax(np.abs(z)))]
        return None, f"out of calibrated range ({worst}, z={z[np.argmax(np.abs(z))]:.1f})"
    logit = float(z @ np.array(calibration["coef"]) + calibration["intercept"])
    return 1.0 / (1.0 + math.exp(-logit)), None
