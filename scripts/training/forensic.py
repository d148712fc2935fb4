"""The forensic methods' calibrations (prnu, texture, ela) and the forensic LR model.

Every image is neutralised exactly as at inference (centre crop ≤ 1024, JPEG q90, no
metadata); small L2-regularised logistic models are evaluated with cross-validation that
leaves whole sources out. Their held-out probabilities feed the ensemble's stacking fit.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.decode import InvalidImage, decode_image
from pipeline.features import MODEL_FEATURES, compute_features, method_features
from pipeline.imaging import neutralise
from scripts.training.probe import fit_probe, probe_logit

# Deferred imports: heavy libraries (onnx, onnxruntime, scikit-learn, the clients) load only in
# the mode or child process that uses them.

C = 0.3
MIN_USABLE_AUC = 0.65
ALL_FEATURES = sorted({n for names in method_features().values() for n in names})


def _featurise(path: str):
    try:
        rgb = decode_image(Path(path).read_bytes(), max_pixels=100_000_000).rgb
    except (InvalidImage, OSError) as exc:
        return None, str(exc)
    features, _ = compute_features(neutralise(rgb))
    return [features[n] for n in ALL_FEATURES], None


def extract(rows, *, cache: Path, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(n_images, len(ALL_FEATURES)) neutral-view features (NaN rows where decoding failed)."""
    keys = [r.file for r in rows]
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        if list(data["keys"]) == keys and list(data["names"]) == ALL_FEATURES:
            return data["X"], data["ok"]
    with ProcessPoolExecutor(workers) as pool:
        out = list(pool.map(_featurise, [str(r.path) for r in rows], chunksize=2))
    X = np.array([f if f is not None else [np.nan] * len(ALL_FEATURES) for f, _ in out])
    ok = np.array([f is not None for f, _ in out])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, keys=np.array(keys), names=np.array(ALL_FEATURES), X=X, ok=ok)
    return X, ok


def columns(X: np.ndarray, names: list[str]) -> np.ndarray:
    return X[:, [ALL_FEATURES.index(n) for n in names]]


def held_out_probabilities(Xm: np.ndarray, y, groups, ok) -> np.ndarray:
    """Leave-one-source-out P(AI) of one method's features (NaN where not scored)."""
    out = np.full(len(y), np.nan)
    for g in np.unique(groups[ok]):
        test, train = ok & (groups == g), ok & (groups != g)
        if len(set(y[train])) < 2:
            continue
        out[test] = 1 / (1 + np.exp(-probe_logit(fit_probe(Xm[train], y[train], C=C), Xm[test])))
    return out


def calibration_entry(Xm: np.ndarray, y, names: list[str], cv_auc: float) -> dict:
    """The shipped per-method calibration (read by pipeline.features.calibrated_probability)."""
    scaler, clf = fit_probe(Xm, y, C=C)
    z = (Xm - scaler.mean_) / scaler.scale_
    return {
        "features": names, "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
        "coef": clf.coef_[0].tolist(), "intercept": float(clf.intercept_[0]),
        "cv_auc": cv_auc if math.isfinite(cv_auc) else 0.0,
        "usable": bool(cv_auc >= MIN_USABLE_AUC), "band": 0.15,
        "max_abs_z": float(max(5.0, np.abs(z).max() * 1.25)),
    }


def export_forensic_onnx(Xm: np.ndarray, y, path: Path) -> None:
    """The forensic LR as ONNX (a non-default model configuration)."""
    from scripts.training.onnx_heads import logistic_head

    scaler, clf = fit_probe(Xm, y, C=C)
    logistic_head(scaler.mean_, scaler.scale_, clf.coef_[0], float(clf.intercept_[0]),
                  path=path, name="skygate_forensic_lr",
                  doc="P(AI) from format-neutral forensic features: " + ", ".join(MODEL_FEATURES))
