"""The ensemble: declared provenance over pixel votes, stacking in log-odds, abstentions,
the shipped weights against their migration; and every declared-AI corpus image coming out AI."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import ensemble
from pipeline.methods.exif import analyze_metadata
from schemas.results import MethodResult
from tests.conftest import ROOT, corpus_dir

# --- ensemble -------------------------------------------------------------------------------

def _r(method, p, **details):
    return MethodResult(method=method, ai_probability=p, details=details)


def test_declared_provenance_dominates_pixel_votes():
    v = ensemble.aggregate(
        [_r("exif", 0.98, declared=True, evidence=["parameters chunk"]),
         _r("prnu", 0.1), _r("texture", 0.1), _r("model", 0.1)],
        {"exif": 1, "prnu": 0.6, "texture": 0.6, "model": 0.8})
    assert v.is_ai_generated is True and v.confidence >= 0.95


FIXED = ensemble.EnsembleModel(intercept=0.0, ai_at=0.7, real_at=0.3, algorithm_version="t")


def test_declared_provenance_decides_even_when_exif_has_no_weight():
    v = ensemble.aggregate(
        [_r("exif", 0.98, declared=True, evidence=["C2PA trainedAlgorithmicMedia"]),
         _r("model", 0.05)], {"exif": 0.0, "model": 1.5}, FIXED)
    assert v.is_ai_generated is True and v.summary.startswith("declared AI provenance")
    factors = {f["factor"]: f for f in v.contributing_factors}
    assert factors["exif"]["contribution"] == 0 and factors["exif"]["ai_probability"] == 0.98


def test_stacking_adds_weighted_log_odds_to_the_intercept():
    model = ensemble.EnsembleModel(intercept=-0.5, ai_at=0.8, real_at=0.2, algorithm_version="t")
    v = ensemble.aggregate([_r("model", 0.9), _r("prnu", 0.6)], {"model": 2.0, "prnu": 0.5},
                           model)
    z = -0.5 + 2.0 * np.log(9) + 0.5 * np.log(1.5)
    assert v.ai_probability == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-4)
    assert v.is_ai_generated is True and v.algorithm_version == "t"


def test_shipped_ensemble_matches_the_weights_migration():
    import importlib.util
    import json

    from pipeline.ensemble import ASSETS
    from pipeline.methods.registry import stacked_methods

    # The newest migration that sets fitted weights (0008, then each retrain's own).
    path = sorted((ROOT / "storage" / "migrations" / "versions").glob("*_weights*.py"))[-1]
    spec = importlib.util.spec_from_file_location("fitted_weights", path)
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    shipped = json.loads((ASSETS / "ensemble.json").read_text())
    # The stacked methods are the registry's (Method.stacked), in any order.
    stacked = stacked_methods()
    assert {m: w for m, w in migration.WEIGHTS.items() if m in stacked} == shipped["weights"]
    assert set(shipped["weights"]) == set(stacked)
    assert shipped["real_at"] < 0.5 <= shipped["ai_at"]
    assert shipped["algorithm_version"] == ensemble.ALGORITHM_VERSION


def test_abstentions_and_errors_do_not_vote():
    v = ensemble.aggregate(
        [_r("exif", None), MethodResult(method="prnu", status="error", error="boom"),
         _r("model", 0.9)], {"exif": 1, "prnu": 0.6, "model": 0.8}, FIXED)
    assert v.is_ai_generated is True
    factors = {f["factor"]: f for f in v.contributing_factors}
    assert factors["prnu"]["contribution"] == 0 and factors["prnu"]["status"] == "error"
    assert factors["model"]["contribution"] > 0


def test_nothing_to_go_on_is_uncertain():
    v = ensemble.aggregate([_r("exif", None)], {"exif": 1})
    assert v.is_ai_generated is None and v.ai_probability == 0.5


def test_weak_disagreeing_votes_are_uncertain():
    v = ensemble.aggregate([_r("prnu", 0.7), _r("texture", 0.3)], {"prnu": 0.6, "texture": 0.6},
                           FIXED)
    assert v.is_ai_generated is None


# --- declared provenance on the corpus ------------------------------------------------------

def _fixture_rows():
    import csv

    path = corpus_dir("c2pa") / "FIXTURES.txt"
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


@pytest.mark.corpus
@pytest.mark.slow
def test_every_c2pa_fixture_comes_out_as_it_declares():
    """Only a trainedAlgorithmicMedia declaration makes a fixture AI; the rest never crash and
    never claim AI (plain algorithmicMedia is a test gradient, not generative AI)."""
    ai_model = _r("model", 0.05)  # the pixels' worst case: a confident "real" from the model
    checked = 0
    for row in _fixture_rows():
        name = row["copied_as"].split("/", 1)[1]
        file = corpus_dir("c2pa") / name
        if not file.is_file():
            continue
        r = analyze_metadata(file.read_bytes())
        v = ensemble.aggregate([r, ai_model], {"exif": 0.0, "model": 1.0}, FIXED)
        declared_ai = row["ai_declared"].startswith("yes")
        assert bool(r.details["declared"]) == declared_ai, (name, r.details.get("evidence"))
        assert (v.is_ai_generated is True) == declared_ai, (name, v.summary)
        checked += 1
    assert checked >= 50


@pytest.mark.corpus
@pytest.mark.slow
def test_declared_ai_corpus_images_are_ai_whatever_the_pixels_say():
    import csv

    text = (corpus_dir() / "manifest.csv").read_text().splitlines()
    rows = [r for r in csv.DictReader(text)
            if r["label"] == "ai" and r["has_provenance_metadata"] == "yes"]
    assert len(rows) >= 40
    for row in rows:
        r = analyze_metadata((corpus_dir() / row["file"]).read_bytes())
        v = ensemble.aggregate([r, _r("model", 0.05)], {"exif": 0.0, "model": 1.0}, FIXED)
        assert v.is_ai_generated is True, (row["file"], r.details.get("evidence"))
