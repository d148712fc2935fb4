"""Format-neutral forensic features of a neutralised view, for the methods' named groups.

Each calibrated pixel method (:mod:`pipeline.methods.prnu`, ``texture``, ``ela``) owns its
features (``FEATURES`` and ``features(rgb, gray)``); this module computes several groups on
one image with its luminance computed once — what the model's forensic variant and
scripts/train_model.py read. The neutral view itself is :func:`pipeline.imaging.neutralise`.
"""

from __future__ import annotations

import numpy as np

from pipeline.imaging import luminance
from pipeline.methods import ela, prnu, texture

_GROUPS = {"prnu": prnu, "texture": texture, "ela": ela}

METHOD_FEATURES = {name: module.FEATURES for name, module in _GROUPS.items()}
MODEL_FEATURES = METHOD_FEATURES["prnu"] + METHOD_FEATURES["texture"]


def compute_features(rgb: np.ndarray, *, groups=("prnu", "texture", "ela")) -> tuple[
        dict[str, float], dict]:
    """Scalar features of an (already neutralised) image for the named method groups, and
    each group's raw statistics."""
    gray = luminance(rgb)
    features: dict[str, float] = {}
    raw: dict = {}
    for group in groups:
        found, raw[group] = _GROUPS[group].features(rgb, gray)
        features.update(found)
    return features, raw
