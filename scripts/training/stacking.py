"""The ensemble: a stacking model over the methods' log-odds, and its verdict thresholds."""

from __future__ import annotations

import numpy as np

from pipeline.ensemble import logit

# Deferred imports: heavy libraries (onnx, onnxruntime, scikit-learn, the clients) load only in
# the mode or child process that uses them.

STACK_C = 1.0


def design(probabilities: dict[str, np.ndarray], methods: list[str]) -> np.ndarray:
    """(n, len(methods)) log-odds; an abstention (NaN) contributes 0, as at inference."""
    cols = []
    for m in methods:
        p = probabilities[m]
        cols.append(np.array([0.0 if not np.isfinite(v) else logit(float(v)) for v in p]))
    return np.stack(cols, axis=1)


def fit_stack(X: np.ndarray, y: np.ndarray, methods: list[str]) -> tuple[dict[str, float], float]:
    """Non-negative weights and an intercept; a method whose fitted weight is ≤ 0 gets 0.

    A negative weight would mean "the more this method says AI, the more real": the data
    then says the method carries no usable signal here, so it is dropped and the rest refit.
    """
    from sklearn.linear_model import LogisticRegression

    active = list(range(len(methods)))
    while True:
        clf = LogisticRegression(C=STACK_C, max_iter=5000).fit(X[:, active], y)
        coef = clf.coef_[0]
        if (coef > 0).all() or not active:
            break
        active = [a for a, c in zip(active, coef, strict=True) if c > 0]
        if not active:
            break
    weights = dict.fromkeys(methods, 0.0)
    if active:
        for a, c in zip(active, coef, strict=True):
            weights[methods[a]] = float(c)
        return weights, float(clf.intercept_[0])
    return weights, 0.0


def stacked_probability(X: np.ndarray, methods: list[str], weights: dict[str, float],
                        intercept: float) -> np.ndarray:
    w = np.array([weights[m] for m in methods])
    voted = (X != 0) & (w > 0)
    z = intercept + X @ w
    p = 1 / (1 + np.exp(-z))
    return np.where(voted.any(axis=1), p, 0.5)  # nobody voted: 0.5, as at inference


def thresholds(y: np.ndarray, p: np.ndarray, *, max_real_called_ai: float = 0.05,
               max_ai_called_real: float = 0.05) -> tuple[float, float]:
    """(ai_at, real_at): the loosest cut-offs that keep each error rate within its bound.

    ``ai_at`` is the lowest P(AI) ≥ 0.5 at which at most ``max_real_called_ai`` of the real
    photos score at or above it; ``real_at`` mirrors it for AI images called real.
    """
    real, ai = np.sort(p[y == 0]), np.sort(p[y == 1])
    grid = np.round(np.arange(0.50, 0.991, 0.01), 2)
    ai_at = next((t for t in grid if (real >= t).mean() <= max_real_called_ai), 0.99)
    low = np.round(np.arange(0.50, 0.009, -0.01), 2)
    real_at = next((t for t in low if (ai <= t).mean() <= max_ai_called_real), 0.01)
    return float(ai_at), float(min(real_at, ai_at - 0.01))


MIN_SOURCE_IMAGES = 8  # real sources smaller than this are judged together, as one group


def real_source_groups(sources: np.ndarray, y: np.ndarray,
                       min_images: int = MIN_SOURCE_IMAGES) -> np.ndarray:
    """Each real photo's group for the per-source error bound: its source, or "(small
    sources)" for sources with fewer than ``min_images`` photos (one photo of three is
    33 %: noise, not a measurement). AI images get ""."""
    real = y == 0
    names, counts = np.unique(sources[real], return_counts=True)
    small = set(names[counts < min_images])
    return np.array(["" if not r else ("(small sources)" if s in small else s)
                     for s, r in zip(sources, real, strict=True)], dtype=object)


def real_called_ai_by_group(p: np.ndarray, groups: np.ndarray, at: float) -> dict[str, float]:
    """Share of each real group's photos with P(AI) ≥ ``at``."""
    return {g: float((p[groups == g] >= at).mean()) for g in sorted(set(groups) - {""})}


def ai_threshold_by_source(p: np.ndarray, y: np.ndarray, groups: np.ndarray, *,
                           max_real_called_ai: float = 0.05) -> float:
    """The lowest P(AI) ≥ 0.5 at which every real group (and all real photos pooled) has at
    most ``max_real_called_ai`` of its photos called AI: the worst source bounds the
    threshold, not the average."""
    for t in np.round(np.arange(0.50, 0.991, 0.01), 2):
        shares = real_called_ai_by_group(p, groups, t)
        if max(shares.values()) <= max_real_called_ai and \
                (p[y == 0] >= t).mean() <= max_real_called_ai:
            return float(t)
    return 0.99
