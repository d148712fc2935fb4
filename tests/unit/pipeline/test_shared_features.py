"""The features computed once per image and shared by the methods, and the vectorised helpers
that compute them: the same votes as each method computing its own, failures contained."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.calibration import load_calibration
from pipeline.imaging import neutralise
from pipeline.methods.ela import detect_ela, ela
from pipeline.methods.model import detect_model
from pipeline.methods.prnu import (
    detect_prnu,
)
from pipeline.methods.texture import detect_texture
from storage.seed import default_model_configuration, forensic_model_configuration
from testkit.images import noisy_photo, smooth_scene

# --- computed once: the shared features and the vectorised helpers ---------------------------


def test_block_statistics_match_the_block_view_definition():
    from pipeline.imaging import block_mean, block_std, block_view

    x = noisy_photo(rows=203, cols=150, seed=9)[:, :, 1].astype(np.float64)
    for block in (8, 32):
        assert np.allclose(block_std(x, block), block_view(x, block).std(axis=(2, 3)),
                           rtol=0, atol=1e-12)
        assert np.allclose(block_mean(x, block), block_view(x, block).mean(axis=(2, 3)),
                           rtol=0, atol=1e-12)


def test_methods_reading_the_shared_features_vote_as_when_they_compute_them():
    """prepare computes the neutral view's features once; prnu, texture, ela and the forensic
    model read them and give the same result as computing their own."""
    from pipeline.features import shared_features

    arr = noisy_photo(rows=300, cols=340, seed=11)
    neutral = neutralise(arr)
    shared = shared_features(neutral, ("prnu", "texture", "ela"))
    assert not shared["errors"] and shared["abstain"] is None
    for detect, group in ((detect_prnu, "prnu"), (detect_texture, "texture")):
        own, read = detect(arr, neutral), detect(arr, None, found=shared["features"])
        assert own.details["features"] == read.details["features"], group
        assert own.ai_probability == read.ai_probability
    (own, own_img), (read, read_img) = (detect_ela(arr, neutral),
                                        detect_ela(arr, None, found=shared["features"]))
    assert own.details["features"] == read.details["features"]
    assert np.array_equal(own_img, read_img)
    params = forensic_model_configuration().parameters.model_dump()
    assert (detect_model(neutral, params).ai_probability
            == detect_model(neutral, params, shared=shared).ai_probability)


def test_a_feature_group_that_fails_fails_only_the_methods_reading_it():
    from pipeline.features import shared_features
    from pipeline.methods.base import group_features

    flat = np.zeros((8, 8, 3), np.uint8)
    assert shared_features(flat, ("prnu",))["abstain"]  # too small: every reader abstains
    broken = {"features": {}, "errors": {"prnu": "ValueError: boom"}, "abstain": None}
    with pytest.raises(RuntimeError, match="prnu features failed: ValueError: boom"):
        group_features(broken, "prnu")
    assert group_features(broken, "texture") == {}


def test_only_the_feature_groups_some_method_votes_with_are_computed(monkeypatch):
    """Under the shipped calibrations (prnu, texture, ela unusable) and the CLIP model no
    method votes with the neutral features, so prepare computes none; the forensic model or a
    usable calibration brings its groups back."""
    from pipeline import calibration
    from pipeline.methods.registry import REGISTRY, feature_groups_of

    clip = default_model_configuration().parameters.model_dump()
    forensic = forensic_model_configuration().parameters.model_dump()
    shipped = load_calibration()["methods"]
    assert not any(shipped[m]["usable"] for m in ("prnu", "texture", "ela"))
    assert feature_groups_of(REGISTRY, {"model": clip}) == ()
    assert feature_groups_of(REGISTRY, {"model": forensic}) == ("prnu", "texture")
    assert feature_groups_of(REGISTRY) == ("prnu", "ela", "texture")  # what they may read
    usable = {"methods": {**shipped, "ela": {**shipped["ela"], "usable": True}}}
    monkeypatch.setattr(calibration, "load_calibration", lambda path=None: usable)
    assert feature_groups_of(REGISTRY, {"model": clip}) == ("ela",)


def test_methods_without_their_features_keep_their_evidence_and_abstain():
    """A group prepare did not compute: the method still reports its native statistics and
    map, abstains with its calibration's reason, and shows no features it never computed."""
    from pipeline.features import shared_features
    from pipeline.methods.base import group_features

    arr = noisy_photo(rows=300, cols=340, seed=11)
    none = shared_features(None, ())
    assert none == {"features": {}, "groups": [], "errors": {}, "abstain": None}
    for detect, group in ((detect_prnu, "prnu"), (detect_texture, "texture")):
        full = detect(arr, neutralise(arr))
        read = detect(arr, None, found=group_features(none, group))
        assert "features" not in read.details and "features" in full.details
        assert read.ai_probability is None
        assert "no reliable signal" in read.details["abstain_reason"]
        assert read.block_map == full.block_map
        assert {k: v for k, v in read.details.items() if k != "features"} == {
            k: v for k, v in full.details.items() if k != "features"}
    (full, full_img), (read, read_img) = (
        detect_ela(arr, neutralise(arr)), detect_ela(arr, None, found=group_features(none, "ela")))
    assert read.details["features"] == {} and np.array_equal(full_img, read_img)
    assert read.details["error_level_score"] == full.details["error_level_score"]
    # The forensic model computes what prepare skipped (its configuration changed in flight).
    params = forensic_model_configuration().parameters.model_dump()
    neutral = neutralise(arr)
    assert (detect_model(neutral, params).ai_probability
            == detect_model(neutral, params, shared=none).ai_probability)


def test_a_usable_calibration_without_its_features_abstains_with_the_reason():
    from pipeline.calibration import calibrated_probability

    cal = {"usable": True, "features": ["a", "b"], "mean": [0, 0], "scale": [1, 1],
           "coef": [1, 1], "intercept": 0.0}
    assert calibrated_probability({"a": 0.1, "b": 0.2}, cal)[0] is not None
    p, reason = calibrated_probability({"a": 0.1}, cal)
    assert p is None and "not computed" in reason


def test_ela_statistics_on_integers_equal_the_float_definition():
    """Error levels are kept as integers and their percentiles read off a histogram: the
    figures equal numpy's float computation."""
    from pipeline.imaging import block_mean
    from pipeline.methods.ela import ela_statistics, error_levels, integer_percentile

    rng = np.random.default_rng(3)
    for values in (rng.integers(0, 766, 10_001), rng.integers(0, 3, 7), np.array([5])):
        for q in (0, 12.5, 50, 99, 99.5, 100):
            assert integer_percentile(values, q) == pytest.approx(np.percentile(values, q))
    for arr in (noisy_photo(rows=300, cols=340, seed=11), smooth_scene(rows=257, cols=190)):
        levels = error_levels(arr)
        assert levels.dtype == np.uint8
        diff = levels.astype(np.float64).mean(axis=2)
        stats = ela_statistics(arr, levels=levels)
        assert stats["error_level_mean"] == pytest.approx(diff.mean(), rel=1e-12)
        assert stats["error_level_std"] == pytest.approx(diff.std(), rel=1e-12)
        assert stats["error_level_p99"] == pytest.approx(np.percentile(diff, 99), rel=1e-12)
        blocks = block_mean(diff, 32)
        top = np.percentile(blocks, 99)
        assert np.allclose(stats["block_map"], np.clip(blocks / top, 0, 1), atol=1e-12)
        gray = arr.astype(np.float64).mean(axis=2)
        dcol = np.abs(np.diff(gray, axis=1))
        on = dcol[:, 7::8].mean()
        off = np.delete(dcol, np.s_[7::8], axis=1).mean()
        assert stats["blockiness"] == pytest.approx(on / (off + 1e-6), rel=1e-9)
        amplified = ela(arr)
        scale = 255.0 / max(np.percentile(levels.astype(np.float64), 99.5), 1.0)
        assert np.array_equal(amplified,
                              np.clip(levels.astype(np.float64) * scale, 0, 255).astype(np.uint8))


def test_native_statistics_read_only_the_central_window():
    """A method given the whole image or only its central MAX_SIDE crop reports the same."""
    from pipeline.imaging import MAX_SIDE, center_crop

    arr = noisy_photo(rows=MAX_SIDE + 90, cols=MAX_SIDE + 40, seed=12)
    crop = np.ascontiguousarray(center_crop(arr, max_side=MAX_SIDE))
    neutral = neutralise(arr)
    assert detect_prnu(arr, neutral).details == detect_prnu(crop, neutral).details
    assert detect_texture(arr, neutral).details == detect_texture(crop, neutral).details
