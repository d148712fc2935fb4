"""Format-neutral forensic features of a neutralised view, for the methods' named groups.

Each calibrated pixel method (:mod:`pipeline.methods.prnu`, ``texture``, ``ela``) owns its
features (``FEATURES`` and ``features(rgb, gray)``); this module computes several groups on
one image with its luminance computed once — what prepare caches for the methods
(:func:`shared_features`, once per canvas) and scripts/train_model.py reads. The neutral view
itself is :func:`pipeline.imaging.neutralise`.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from pipeline.imaging import luminance, too_small
from pipeline.methods import prnu, texture

# The forensic LR's inputs, in the order its shipped ONNX reads them: a trained artefact's
# layout (the model method's feature groups), not a list of the methods.
MODEL_FEATURES = prnu.FEATURES + texture.FEATURES


def feature_groups() -> dict[str, ModuleType]:
    """Every feature group (the registry's methods that own one), in registry order."""
    # Deferred imports: the registry imports every method module, and the model's imports
    # this one (a cycle at import time).
    from pipeline.methods.registry import feature_modules

    return feature_modules()


def method_features() -> dict[str, list[str]]:
    """Each feature group's feature names (what scripts/train_model.py calibrates)."""
    return {name: module.FEATURES for name, module in feature_groups().items()}


def compute_features(rgb: np.ndarray, *, groups=None) -> tuple[dict[str, float], dict]:
    """Scalar features of an (already neutralised) image for the named method groups (None:
    every group), and each group's raw statistics."""
    modules = feature_groups()
    gray = luminance(rgb)
    features: dict[str, float] = {}
    raw: dict = {}
    for group in modules if groups is None else groups:
        found, raw[group] = modules[group].features(rgb, gray)
        features.update(found)
    return features, raw


def shared_features(neutral: np.ndarray | None, groups) -> dict:
    """The features of the named groups, once per canvas, as JSON-able data (the
    ``neutral_features`` input): ``{"features": {...}, "groups": [the named groups],
    "errors": {group: reason}, "abstain": reason or None}``. A group that fails is recorded,
    not raised: only the methods that read it fail (as they did when each computed its own)."""
    modules = feature_groups()
    groups = [g for g in modules if g in set(groups)]  # a stable order
    out: dict = {"features": {}, "groups": groups, "errors": {}, "abstain": None}
    if not groups:  # nothing votes with them: ``neutral`` is not even read (may be None)
        return out
    if too_small(neutral):
        out["abstain"] = "too small"
        return out
    gray = luminance(neutral)
    for group in groups:
        try:
            found, _ = modules[group].features(neutral, gray)
        except Exception as exc:  # noqa: BLE001 - recorded for the methods that read it
            out["errors"][group] = f"{type(exc).__name__}: {exc}"[:500]
            continue
        out["features"].update({k: float(v) for k, v in found.items()})
    return out
