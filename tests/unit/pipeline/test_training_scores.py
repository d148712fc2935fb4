"""The shipped head scores the training corpus as the training run reported.

scripts/train_model.py stores the head's P(AI) for every training image's inference view,
computed from its feature cache. Recomputing a spread of them through the product's own path
(decode, neutralise, the configured encoder and head) catches a cache of another encoder, a
head trained on other features, or an encoder that computes differently here.
"""

from __future__ import annotations

import json

import pytest

from pipeline.calibration import ASSETS
from pipeline.clip import sha256_of
from pipeline.decode import decode_image
from pipeline.imaging import neutralise
from pipeline.methods.model import detect_model, resolve_model_path
from pipeline.metrics import roc_auc
from storage.seed import default_model_configuration
from tests.conftest import corpus_dir

SCORES = json.loads((ASSETS / "training_scores.json").read_text())
PARAMS = default_model_configuration().parameters.model_dump()
SAMPLE = 36  # images recomputed: every n-th file of the sorted list, across folders
TOLERANCE = 0.02  # P(AI); the same features give the same P to float rounding


def test_scores_belong_to_the_shipped_files():
    assert SCORES["encoder_sha256"] == sha256_of(resolve_model_path(PARAMS["encoder_path"]))
    assert SCORES["head_sha256"] == sha256_of(resolve_model_path(PARAMS["model_path"]))
    card = (ASSETS / "MODEL_CARD.md").read_text()
    assert f"in-sample AUC {SCORES['in_sample_auc']:.3f}" in card


def test_the_reported_in_sample_auc_is_what_the_scores_give():
    corpus = corpus_dir()
    labels = {}
    import csv
    with open(corpus / "manifest.csv", newline="") as fh:
        labels = {r["file"]: int(r["label"] == "ai") for r in csv.DictReader(fh)}
    files = sorted(SCORES["scores"])
    auc = roc_auc([labels[f] for f in files], [SCORES["scores"][f] for f in files])
    assert round(auc, 4) == pytest.approx(SCORES["in_sample_auc"], abs=1e-4)


def test_the_product_path_reproduces_the_training_scores():
    corpus = corpus_dir()
    files = sorted(SCORES["scores"])
    picked = files[:: max(1, len(files) // SAMPLE)]
    off = []
    for name in picked:
        rgb = decode_image((corpus / name).read_bytes(), max_pixels=100_000_000).rgb
        got = detect_model(neutralise(rgb), PARAMS).details["raw_probability"]
        if abs(got - SCORES["scores"][name]) > TOLERANCE:
            off.append(f"{name}: {got:.4f} vs trained {SCORES['scores'][name]:.4f}")
    assert not off, f"{len(off)} of {len(picked)} differ: {off[:5]}"
