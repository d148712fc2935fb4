"""Fit the shipped calibrations and the default ONNX model from ../shared/corpus.

Every image is neutralised exactly as at inference (centre crop ≤ 1024, JPEG q90, no
metadata), features are computed, and small L2-regularised logistic models are evaluated with
cross-validation grouped by source repository (no source is ever in both train and test).
Writes pipeline/assets/{calibration.json, skygate_forensic_lr.onnx, MODEL_CARD.md}.

    pip install -e ".[train]" && python scripts/train_model.py [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.decode import InvalidImage, decode_image  # noqa: E402
from pipeline.features import (  # noqa: E402
    ASSETS,
    METHOD_FEATURES,
    MODEL_FEATURES,
    NEUTRAL_SIDE,
    compute_features,
    neutralise,
)
from pipeline.prnu import center_crop  # noqa: E402

SEED = 20261125
C = 0.3
MIN_USABLE_AUC = 0.65


def featurise(path: str):
    try:
        rgb = decode_image(Path(path).read_bytes(), max_pixels=100_000_000).rgb
    except InvalidImage as exc:
        return path, None, None, str(exc)
    neutral, _ = compute_features(neutralise(rgb))
    raw, _ = compute_features(np.ascontiguousarray(center_crop(rgb, max_side=NEUTRAL_SIDE)))
    # The half-size view the corpus notes test robustness with.
    from PIL import Image
    small = np.asarray(Image.fromarray(rgb).resize((max(1, rgb.shape[1] // 2),
                                                    max(1, rgb.shape[0] // 2)),
                                                   Image.Resampling.LANCZOS))
    half, _ = compute_features(neutralise(small))
    return path, neutral, (raw, half), None


def grouped_auc(X, y, groups, *, n_splits=5):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = np.zeros(len(y))
    fold_aucs = []
    for train, test in GroupKFold(n_splits=n_splits).split(X, y, groups):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced",
                                                                 max_iter=2000))
        clf.fit(X[train], y[train])
        scores[test] = clf.predict_proba(X[test])[:, 1]
        if len(set(y[test])) == 2:
            fold_aucs.append(roc_auc_score(y[test], scores[test]))
    return roc_auc_score(y, scores), fold_aucs, scores


def fit(X, y):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
    clf.fit(scaler.transform(X), y)
    return scaler, clf


def export_onnx(scaler, clf, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = len(MODEL_FEATURES)
    inits = [
        numpy_helper.from_array(scaler.mean_.astype(np.float32), "mean"),
        numpy_helper.from_array(scaler.scale_.astype(np.float32), "scale"),
        numpy_helper.from_array(clf.coef_.T.astype(np.float32), "coef"),
        numpy_helper.from_array(clf.intercept_.astype(np.float32), "intercept"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["z"]),
        helper.make_node("MatMul", ["z", "coef"], ["linear"]),
        helper.make_node("Add", ["linear", "intercept"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
    ]
    graph = helper.make_graph(
        nodes, "skygate_forensic_lr",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="skygate scripts/train_model.py")
    model.ir_version = 8
    model.doc_string = "P(AI) from format-neutral forensic features: " + ", ".join(MODEL_FEATURES)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with open(args.corpus / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["label"] in ("ai", "real") and not row["file"].startswith("c2pa/"):
                rows.append(row)
    paths = [str(args.corpus / r["file"]) for r in rows]
    with ProcessPoolExecutor(args.workers) as pool:
        out = list(pool.map(featurise, paths, chunksize=2))
    kept = [(r, neu, extra) for r, (_, neu, extra, err) in zip(rows, out) if neu is not None]
    skipped = [(p, err) for p, _, _, err in out if err]
    y = np.array([1 if r["label"] == "ai" else 0 for r, _, _ in kept])
    groups = np.array([r["source_repo"] for r, _, _ in kept])
    is_web = np.array([r["file"].startswith("real_web/") for r, _, _ in kept])

    def matrix(which, names):
        if which == "neutral":
            return np.array([[neu[n] for n in names] for _, neu, _ in kept])
        idx = 0 if which == "raw" else 1
        return np.array([[extra[idx][n] for n in names] for _, _, extra in kept])

    report = {}
    calibration = {"version": 1, "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
                   "n_images": int(len(y)), "n_ai": int(y.sum()), "methods": {}}
    for method, names in [*METHOD_FEATURES.items(), ("model", MODEL_FEATURES)]:
        Xn = matrix("neutral", names)
        auc_n, folds, scores = grouped_auc(Xn, y, groups)
        auc_raw, _, _ = grouped_auc(matrix("raw", names), y, groups)
        auc_half, _, _ = grouped_auc(matrix("half", names), y, groups)
        # Accuracy at the decision bands the product uses, on held-out (grouped) scores.
        decided = np.abs(scores - 0.5) >= 0.15
        acc = float(((scores[decided] > 0.5) == y[decided]).mean()) if decided.any() else None
        web_real_fp = float((scores[is_web & (y == 0)] > 0.65).mean())
        report[method] = {
            "features": names, "auc_neutral": auc_n, "auc_raw": auc_raw, "auc_half_size": auc_half,
            "fold_aucs": folds, "decided_share": float(decided.mean()),
            "accuracy_when_decided": acc, "real_web_called_ai": web_real_fp,
        }
        scaler, clf = fit(Xn, y)
        z = (Xn - scaler.mean_) / scaler.scale_
        entry = {
            "features": names, "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
            "coef": clf.coef_[0].tolist(), "intercept": float(clf.intercept_[0]),
            "cv_auc": auc_n, "usable": bool(auc_n >= MIN_USABLE_AUC), "band": 0.15,
            "max_abs_z": float(max(5.0, np.abs(z).max() * 1.25)),
        }
        if method == "model":
            export_onnx(scaler, clf, ASSETS / "skygate_forensic_lr.onnx")
        else:
            calibration["methods"][method] = entry
    (ASSETS / "calibration.json").write_text(json.dumps(calibration, indent=1))
    write_card(report, len(y), int(y.sum()), sorted(set(groups)), skipped)
    print(json.dumps(report, indent=1))


def write_card(report, n, n_ai, groups, skipped) -> None:
    lines = [
        "# Model card: skygate_forensic_lr (default `model` method) and method calibrations",
        "",
        f"Trained {datetime.now(UTC).date()} by `scripts/train_model.py` on ../shared/corpus:",
        f"{n} images ({n_ai} AI, {n - n_ai} real) from {len(groups)} source repositories;",
        "C2PA fixtures and undecodable files left out"
        + (f" ({len(skipped)}: {', '.join(Path(p).name for p, _ in skipped)})." if skipped else "."),
        "",
        "**What it is.** L2-regularised logistic regression (C=0.3, balanced classes) on",
        "eight format-neutral features: " + ", ".join(MODEL_FEATURES) + ".",
        "Input: the centre crop ≤ 1024 px re-encoded as JPEG q90 without metadata (the same",
        "neutralisation at training and inference), so PNG-vs-JPEG does not decide the answer.",
        "",
        "**How it was measured.** 5-fold cross-validation grouped by source repository (no",
        "source in both train and test). AUC on held-out scores; *raw* = the same features",
        "without the JPEG round trip (format bias allowed in); *half size* = neutralised after",
        "a 2× downscale (web processing).",
        "",
        "| scorer | AUC neutral | AUC raw | AUC half size | fold AUCs | share decided | accuracy when decided | real_web called AI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report.items():
        folds = ", ".join(f"{a:.2f}" for a in r["fold_aucs"])
        acc = "n/a" if r["accuracy_when_decided"] is None else f"{r['accuracy_when_decided']:.2f}"
        lines.append(
            f"| {name} | {r['auc_neutral']:.3f} | {r['auc_raw']:.3f} | {r['auc_half_size']:.3f} "
            f"| {folds} | {r['decided_share']:.2f} | {acc} | {r['real_web_called_ai']:.2f} |"
        )
    lines += [
        "",
        f"A method whose neutral AUC is below {MIN_USABLE_AUC} is shipped as `usable: false`",
        "and always abstains. Every method also abstains when an image's features lie far",
        "outside the training range, and inside P(AI) 0.35–0.65.",
        "",
        "**Limits.** 188 images train nothing deep; `real/` is dominated by 2000s compact",
        "cameras, so modern phone photos (heavy denoising) and edited web photos are where",
        "these features call real photos AI (see the real_web column). The sources SkyGate",
        "will meet are not in this corpus: treat figures as optimistic. Plug in a stronger",
        "model through `system_configuration` (README, 'Plugging in another model').",
    ]
    (ASSETS / "MODEL_CARD.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
