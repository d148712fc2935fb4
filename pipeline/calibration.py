"""The calibrated scoring that turns a method's format-neutral features into a vote."""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).parent / "assets"


@lru_cache
def load_calibration(path: str | None = None) -> dict:
    """Per-method logistic calibrations fitted by scripts/train_model.py (empty if absent)."""
    file = Path(path) if path else ASSETS / "calibration.json"
    if not file.is_file():
        return {"methods": {}}
    return json.loads(file.read_text())


def calibration_usable(method: str) -> bool:
    """Whether ``method``'s shipped calibration votes (an unusable one abstains whatever its
    features say, so prepare need not compute them: pipeline.methods.registry)."""
    return bool(load_calibration()["methods"].get(method, {}).get("usable", False))


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
    if any(n not in features for n in names):
        # Prepare skipped them under an unusable calibration that a retrain has since replaced.
        return None, "features not computed for this upload (calibration changed in flight)"
    x = np.array([features[n] for n in names], dtype=np.float64)
    if not np.all(np.isfinite(x)):
        return None, "feature not computable on this image"
    z = (x - np.array(calibration["mean"])) / np.array(calibration["scale"])
    if np.max(np.abs(z)) > calibration.get("max_abs_z", 5.0):
        worst = names[int(np.argmax(np.abs(z)))]
        return None, f"out of calibrated range ({worst}, z={z[np.argmax(np.abs(z))]:.1f})"
    logit = float(z @ np.array(calibration["coef"]) + calibration["intercept"])
    return 1.0 / (1.0 + math.exp(-logit)), None
