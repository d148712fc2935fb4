"""Linear probes on frozen features, judged by leaving whole sources or generators out."""

from __future__ import annotations

import numpy as np

from pipeline.metrics import roc_auc, tpr_at_fpr

# Deferred imports: heavy libraries (onnx, onnxruntime, scikit-learn, the clients) load only in
# the mode or child process that uses them.

PROBES = ("lr", "svm")


def fit_probe(X: np.ndarray, y: np.ndarray, *, C: float, kind: str = "lr"):
    """Standardise, then a linear classifier with balanced classes: (scaler, clf).

    ``kind``: ``lr`` (L2 logistic regression) or ``svm`` (L2 linear SVM, hinge² loss: a
    margin instead of a likelihood, steadier with 768 features and a few hundred images).
    Both give a linear decision value; Platt scaling of held-out values makes it P(AI).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if kind not in PROBES:
        raise ValueError(f"probe kind must be one of {PROBES}")
    scaler = StandardScaler().fit(X)
    clf = (LogisticRegression(C=C, class_weight="balanced", max_iter=5000) if kind == "lr"
           else LinearSVC(C=C, class_weight="balanced", max_iter=50000, random_state=0))
    clf.fit(scaler.transform(X), y)
    return scaler, clf


def probe_logit(model, X: np.ndarray) -> np.ndarray:
    scaler, clf = model
    return clf.decision_function(scaler.transform(X))


def held_out_logits(feats: np.ndarray, y: np.ndarray, groups: np.ndarray, ok: np.ndarray, *,
                    C: float, kind: str = "lr", train_views: slice = slice(None)
                    ) -> np.ndarray:
    """Out-of-group logits of every view: each group scored by a probe that never saw it.

    Parameters
    ----------
    feats : (n_images, n_views, D) ndarray
        View 0 is the inference view; the others are augmented copies (used in training).
    groups : (n_images,) ndarray
        Group of each image (source or generator family); one fold per group.
    """
    n, v, d = feats.shape
    out = np.full((n, v), np.nan)
    for g in np.unique(groups[ok]):
        test = ok & (groups == g)
        train = ok & (groups != g)
        if len(set(y[train])) < 2:
            continue
        Xtr = feats[train][:, train_views].reshape(-1, d)
        ytr = np.repeat(y[train], feats[train][:, train_views].shape[1])
        model = fit_probe(Xtr, ytr, C=C, kind=kind)
        out[test] = probe_logit(model, feats[test].reshape(-1, d)).reshape(-1, v)
    return out


def summarise(y: np.ndarray, scores: np.ndarray) -> dict:
    keep = np.isfinite(scores)
    return {"auc": roc_auc(y[keep], scores[keep]),
            "tpr_at_5pct_fpr": tpr_at_fpr(y[keep], scores[keep], fpr=0.05),
            "n": int(keep.sum())}
