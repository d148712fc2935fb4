"""Evidence that does not decide reads the screen-size view; a usable calibration brings the
native path back (issue 30)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.imaging import (
    EVIDENCE_SIDE,
    MAX_SIDE,
    center_crop,
    evidence_view,
    neutralise,
    reduce_by,
)
from pipeline.methods import ela, prnu, texture
from pipeline.methods.registry import REGISTRY
from schemas.settings import Settings
from testkit.images import noisy_photo

NO_FEATURES = {"features": {}, "groups": [], "errors": {}, "abstain": None}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 1 MP camera-like picture, wider than the central window."""
    return noisy_photo(rows=1024, cols=1200, seed=4)


def _inputs(native: np.ndarray) -> dict:
    return {"native_pixels": native, "neutral_pixels": neutralise(native),
            "neutral_features": NO_FEATURES, "settings": Settings()}


def test_the_evidence_view_is_the_central_window_box_reduced_by_a_power_of_two(photo):
    view, factor = evidence_view(photo, full_resolution=False)
    crop = center_crop(photo, max_side=MAX_SIDE).astype(np.float64)
    assert factor == 2 and view.shape == (512, 512, 3) and max(view.shape) <= EVIDENCE_SIDE
    # Each view pixel is the rounded mean of the 2 × 2 native pixels it covers.
    means = crop.reshape(512, 2, 512, 2, 3).mean(axis=(1, 3))
    assert np.abs(view - means).max() <= 0.5 + 1e-9
    full, one = evidence_view(photo, full_resolution=True)
    assert one == 1 and np.array_equal(full, center_crop(photo, max_side=MAX_SIDE))
    small = noisy_photo(rows=400, cols=500)  # already screen-size: untouched
    assert evidence_view(small, full_resolution=False)[1] == 1
    assert reduce_by(np.full((9, 9), 7, np.uint8), 2).shape == (5, 5)


@pytest.mark.parametrize("module", [prnu, texture, ela])
def test_evidence_only_methods_read_the_view_and_keep_the_map_grid(module, photo, monkeypatch):
    method = REGISTRY[module.__name__.rsplit(".", 1)[1]]
    monkeypatch.setattr(module, "calibration_usable", lambda _name: False)
    cheap = method.execute(_inputs(photo))
    monkeypatch.setattr(module, "calibration_usable", lambda _name: True)
    native = method.execute(_inputs(photo))
    assert cheap.result.details["view"] == {"width": 512, "height": 512, "downscale": 2,
                                            "resolution": "1/2"}
    assert native.result.details["view"] == {"width": 1024, "height": 1024, "downscale": 1,
                                             "resolution": "native"}
    # The same map cells (32 native pixels) on both paths, and similar values.
    cheap_map, native_map = (np.asarray(f.result.block_map) for f in (cheap, native))
    assert cheap_map.shape == native_map.shape == (32, 32)
    assert np.abs(cheap_map - native_map).mean() < 0.25
    # Neither votes without its features: the verdict does not depend on the path.
    for f in (cheap, native):
        assert f.result.ai_probability is None and f.result.is_ai_generated is None


def test_the_native_path_is_the_full_resolution_statistics(photo):
    native = prnu.detect_prnu(photo, None, found={}, full_resolution=True)
    again = prnu.residual_statistics(
        prnu.luminance(center_crop(photo, max_side=MAX_SIDE)))
    assert native.details["native"]["residual_std"] == round(again["residual_std"], 5)


def test_the_evidence_ela_picture_is_screen_size_from_native_error_levels(photo, monkeypatch):
    monkeypatch.setattr(ela, "calibration_usable", lambda _name: False)
    finding = REGISTRY["ela"].execute(_inputs(photo))
    picture = Image.open(io.BytesIO(finding.pictures["ela"].data))
    assert picture.size == (512, 512)
    # Its mean error level is the native window's: box means keep the mean, but for their
    # rounding (a mean of 4 integers rounded half up: + 1/8 grey level on average).
    crop = np.ascontiguousarray(center_crop(photo, max_side=MAX_SIDE))
    levels = ela.error_levels(crop, quality=Settings().ela_quality)
    assert finding.result.details["native"]["error_level_mean"] == pytest.approx(
        levels.mean() + 0.125, abs=0.03)
