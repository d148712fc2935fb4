"""pipeline.metrics against hand-computed cases (no scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.metrics import (
    expected_calibration_error,
    reliability_bins,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)


def test_auc_perfect_reversed_and_tied():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auc_hand_computed_with_and_without_ties():
    # Pairs (AI, real): (0.35 > 0.1) yes, (0.35 > 0.4) no, (0.8 > both) yes -> 3 of 4.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # One real at 0.2; AI at 0.2 (tie: one half) and 0.9 -> 1.5 of 2.
    assert roc_auc([0, 1, 1], [0.2, 0.2, 0.9]) == pytest.approx(0.75)
    # Reals 0.3, 0.5; AIs 0.5, 0.5, 0.7: pairs won 1 + 0.5 + 1 + 0.5 + 1 + 1 = 5 of 6.
    assert roc_auc([0, 0, 1, 1, 1], [0.3, 0.5, 0.5, 0.5, 0.7]) == pytest.approx(5 / 6)
    # Order of the inputs does not matter, booleans and lists both work.
    assert roc_auc(np.array([True, False, True, False, True]),
                   np.array([0.5, 0.5, 0.7, 0.3, 0.5])) == pytest.approx(5 / 6)


def test_auc_matches_pair_counting_on_random_data():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounding makes many ties
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, s) == pytest.approx(wins / (pos.size * neg.size))


def test_auc_is_nan_with_one_class_and_rejects_bad_input():
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert math.isnan(roc_auc([], []))
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0, 1], [0.5])
    with pytest.raises(ValueError, match="labels must be 0"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="must be finite numbers"):
        roc_auc([0, 1], [0.1, float("nan")])


def test_roc_curve_points():
    fpr, tpr, thresholds = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thresholds[0] == np.inf and thresholds[1:].tolist() == [0.8, 0.4, 0.35, 0.1]
    # Tied scores are one point: the curve goes diagonally through them.
    fpr, tpr, _ = roc_curve([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])
    assert fpr.tolist() == [0.0, 1.0] and tpr.tolist() == [0.0, 1.0]
    # The trapezoid area under the curve is the rank AUC.
    y, s = [0, 0, 1, 1, 1], [0.3, 0.5, 0.5, 0.5, 0.7]
    fpr, tpr, _ = roc_curve(y, s)
    assert np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2) == pytest.approx(roc_auc(y, s))


def test_tpr_at_fpr():
    labels = [0] * 20 + [1] * 10
    real = list(np.linspace(0.0, 0.5, 20))  # the highest real scores 0.5
    ai = [0.9, 0.8, 0.7, 0.6, 0.55, 0.45, 0.4, 0.3, 0.2, 0.1]
    # 5 % of 20 reals = 1 false positive allowed: threshold 0.5 catches 5 AI.
    assert tpr_at_fpr(labels, real + ai, 0.05) == pytest.approx(0.5)
    # No false positive at all: still 5 (0.55 is above every real).
    assert tpr_at_fpr(labels, real + ai, 0.0) == pytest.approx(0.5)
    assert tpr_at_fpr(labels, real + ai, 1.0) == 1.0
    assert tpr_at_fpr([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert tpr_at_fpr([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert math.isnan(tpr_at_fpr([0, 0], [0.1, 0.2]))


def test_ece_of_calibrated_and_overconfident_predictions():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 50_000)
    y = (rng.uniform(0, 1, p.size) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    # Same labels, but every prediction pushed to 0 or 1: badly overconfident.
    assert expected_calibration_error(y, np.where(p > 0.5, 1.0, 0.0)) > 0.2
    # Hand case: bin [0.9, 1.0] holds 0.9 and 1.0 (mean 0.95) with 1 of 2 AI -> gap 0.45;
    # bin [0.1, 0.2) holds 0.1 with 0 of 1 AI -> gap 0.1. ECE = (2*0.45 + 1*0.1) / 3.
    assert expected_calibration_error([1, 0, 0], [0.9, 1.0, 0.1]) == pytest.approx(1.0 / 3)
    assert math.isnan(expected_calibration_error([], []))


def test_reliability_bins():
    mean_pred, observed, counts = reliability_bins([1, 0, 0, 1], [0.05, 0.05, 0.55, 1.0], bins=4)
    assert counts.tolist() == [2, 0, 1, 1]
    assert mean_pred[0] == pytest.approx(0.05) and observed[0] == pytest.approx(0.5)
    assert math.isnan(mean_pred[1]) and math.isnan(observed[1])
    assert observed[2] == 0.0 and observed[3] == 1.0 and mean_pred[3] == 1.0
    with pytest.raises(ValueError, match=r"probs must be in \[0, 1\]"):
        reliability_bins([1], [1.5])
