"""Exact order statistics and percentiles of large arrays, faster than a full selection:
numpy's values (``np.sort(...)[k]``, ``np.percentile(..., method="linear")``), found by
partitioning only a bracket that an evenly spaced sample locates."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Evenly spaced values sampled to bracket the ranks :func:`order_statistics` selects.
RANK_SAMPLE = 16384
#: Half-width of a bracket, in standard deviations of a rank in the sample.
RANK_MARGIN_SD = 6
UPPER_HALF = 0.5  # numpy's _lerp interpolates down from the upper value from here on


def order_statistics(values: np.ndarray, ranks: list[int]) -> np.ndarray:
    """``np.sort(values, axis=None)[ranks]`` for finite values, without partitioning them all.

    An evenly spaced sample brackets each run of adjacent ranks; one pass counts the values
    below the bracket and only those inside it are partitioned. A bracket the sample misplaces
    falls back to partitioning everything: the values are exact either way.
    """
    flat = values.ravel()
    n = flat.size
    ranks = sorted(set(ranks))
    if n <= 4 * RANK_SAMPLE:
        return np.partition(flat, ranks)[ranks]
    sample = np.sort(flat[:: n // RANK_SAMPLE])
    m = sample.size
    margin = int(RANK_MARGIN_SD * np.sqrt(m) / 2) + 1  # a rank's spread is <= √m / 2
    runs: list[list[int]] = []
    for k in ranks:
        if runs and k == runs[-1][-1] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    found = {}
    for run in runs:
        first, last = run[0] * m // n - margin, run[-1] * m // n + margin
        inside = np.ones(n, dtype=bool) if first < 0 else flat >= sample[first]
        if last < m:
            inside &= flat <= sample[last]
        below = 0 if first < 0 else int(np.count_nonzero(flat < sample[first]))
        candidates = flat[inside]
        if not below <= run[0] <= run[-1] < below + candidates.size:
            return np.partition(flat, ranks)[ranks]
        chosen = np.partition(candidates, [k - below for k in run])
        found.update({k: chosen[k - below] for k in run})
    return np.array([found[k] for k in ranks])


def percentiles(values: np.ndarray, qs: list[float],
                transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """``np.percentile(transform(values), qs)`` (method "linear") of finite values, the same
    numbers: its ranks from :func:`order_statistics`, then numpy's interpolation.

    ``transform`` must be non-decreasing (``np.sqrt`` of squared magnitudes): it maps the
    values' order statistics to its own, so only the selected ones are transformed.
    """
    n = values.size
    virtual = (n - 1) * np.true_divide(np.asarray(qs), 100)
    previous = np.floor(virtual)
    following = previous + 1
    previous[virtual >= n - 1] = following[virtual >= n - 1] = n - 1
    previous[virtual < 0] = following[virtual < 0] = 0
    lower, upper = previous.astype(np.intp), following.astype(np.intp)
    ranks = sorted({*lower.tolist(), *upper.tolist()})
    selected = dict(zip(ranks, order_statistics(values, ranks).tolist(), strict=True))
    a = np.array([selected[k] for k in lower.tolist()])
    b = np.array([selected[k] for k in upper.tolist()])
    if transform is not None:
        a, b = transform(a), transform(b)
    t = virtual - previous
    diff = b - a  # numpy's _lerp, exactly
    out = a + diff * t
    np.subtract(b, diff * (1 - t), out=out, where=t >= UPPER_HALF)
    return out
