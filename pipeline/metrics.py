"""Detector metrics in plain numpy: ROC AUC, the ROC curve, TPR at a fixed FPR, and
calibration (expected calibration error, reliability bins).

Every function takes 1-D array-likes of the same length: ``labels`` with 1 = AI-generated and
0 = real photograph, and ``scores``/``probs`` with the detector's P(AI) (any monotone score
for the ranking metrics, a probability in [0, 1] for the calibration ones). Used by
``skygate eval`` and by ``scripts/train_model.py``; no scikit-learn at run time.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "expected_calibration_error",
    "reliability_bins",
    "roc_auc",
    "roc_curve",
    "tpr_at_fpr",
]


def _check(labels, scores, *, name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and {name} must be 1-D")
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.shape[0]}) and {name} ({s.shape[0]}) differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (AI)")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} must be finite numbers")
    return y.astype(np.int8), s


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # Start index of each run of equal values, and the run lengths.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    lengths = np.diff(np.r_[starts, ordered.size])
    mean_rank = starts + (lengths + 1) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, lengths)
    return ranks


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve, from ranks (the Mann-Whitney U statistic).

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        1 for AI-generated, 0 for real.
    scores : array_like of float, shape (n,)
        Higher means more likely AI.

    Returns
    -------
    float
        The probability that a random AI image scores above a random real one, ties counting
        one half: 1.0 for a perfect ranking, 0.0 for a reversed one, 0.5 when all scores tie.
        NaN when either class is missing.
    """
    y, s = _check(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve: one point per distinct score, calling AI every score >= the threshold.

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        1 for AI-generated, 0 for real.
    scores : array_like of float, shape (n,)
        Higher means more likely AI.

    Returns
    -------
    fpr : ndarray
        False-positive rate (real images called AI) at each threshold, from 0 up to 1.
    tpr : ndarray
        True-positive rate (AI images called AI) at each threshold.
    thresholds : ndarray
        Decreasing; the first is ``inf`` (nothing called AI, the point (0, 0)).

    Notes
    -----
    A class that is missing gives a rate of NaN for that axis.
    """
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores: the curve moves once per distinct score.
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True]) if s.size else (
        np.array([], dtype=int))
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0.0, tp] / n_pos if n_pos else np.full(last.size + 1, np.nan)
        fpr = np.r_[0.0, fp] / n_neg if n_neg else np.full(last.size + 1, np.nan)
    thresholds = np.r_[np.inf, s_sorted[last]]
    return fpr.astype(np.float64), tpr.astype(np.float64), thresholds


def tpr_at_fpr(labels, scores, fpr: float = 0.05) -> float:
    """The best true-positive rate reachable without exceeding a false-positive rate.

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        1 for AI-generated, 0 for real.
    scores : array_like of float, shape (n,)
        Higher means more likely AI.
    fpr : float, default 0.05
        The largest share of real images that may be called AI.

    Returns
    -------
    float
        The highest TPR over the thresholds whose FPR is at most ``fpr`` (no interpolation
        between points, so the figure is reachable by an actual threshold). NaN when either
        class is missing.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError("fpr must be in [0, 1]")
    f, t, _ = roc_curve(labels, scores)
    if f.size == 0 or np.isnan(f).any() or np.isnan(t).any():
        return float("nan")
    allowed = f <= fpr + 1e-12
    return float(t[allowed].max())


def reliability_bins(labels, probs, bins: int = 10) -> tuple[np.ndarray, np.ndarray,
                                                             np.ndarray]:
    """Predicted against observed P(AI) in equal-width bins over [0, 1].

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        1 for AI-generated, 0 for real.
    probs : array_like of float, shape (n,)
        Predicted P(AI), each in [0, 1].
    bins : int, default 10
        Number of equal-width bins; bin ``i`` holds ``i/bins <= p < (i+1)/bins`` (the last
        one includes 1.0).

    Returns
    -------
    mean_predicted : ndarray, shape (bins,)
        Mean predicted probability in each bin (NaN for an empty bin).
    observed_rate : ndarray, shape (bins,)
        Share of AI images in each bin (NaN for an empty bin).
    counts : ndarray of int, shape (bins,)
        Number of images in each bin.
    """
    if int(bins) < 1:
        raise ValueError("bins must be at least 1")
    bins = int(bins)
    y, p = _check(labels, probs, name="probs")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("probs must be in [0, 1]")
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_y = np.bincount(index, weights=y.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.where(counts > 0, sum_p / counts, np.nan)
        observed_rate = np.where(counts > 0, sum_y / counts, np.nan)
    return mean_predicted, observed_rate, counts


def expected_calibration_error(labels, probs, bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean gap between predicted and observed
    P(AI) over equal-width bins.

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        1 for AI-generated, 0 for real.
    probs : array_like of float, shape (n,)
        Predicted P(AI), each in [0, 1].
    bins : int, default 10
        Number of equal-width bins over [0, 1].

    Returns
    -------
    float
        ``sum_b (n_b / n) * |mean_predicted_b - observed_rate_b|``, in [0, 1]; 0 for perfect
        calibration. NaN for no samples.
    """
    mean_predicted, observed_rate, counts = reliability_bins(labels, probs, bins)
    total = counts.sum()
    if total == 0:
        return float("nan")
    used = counts > 0
    gaps = np.abs(mean_predicted[used] - observed_rate[used])
    return float((counts[used] * gaps).sum() / total)
