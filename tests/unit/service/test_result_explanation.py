"""Why a verdict, where it is read: the API's result body (service.results.result_body) and
the scan records carry the explanation built from the stored document (issue 25)."""

from __future__ import annotations

from pipeline.explanation import explanation_lines
from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import corpus_dir, migrated, run


def _judge(settings, data: bytes, name: str) -> tuple[dict, dict]:
    """(the API result body, the scan record) of one file judged on embedded storage."""
    from service import detection, ingest, results
    from skygate.batch import record_for
    from storage import repository as repo
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            await migrated(storage)
            outcome = await ingest.ingest_bytes(storage, settings, data=data,
                                               original_file_name=name, user_id=None)
            await detection.run_all(storage, settings, outcome.upload_id)
            result = await repo.result_for_upload(storage.engine, outcome.upload_id)
            doc = await storage.documents.get_detection_metadata(result["result_id"])
            body = results.result_body(outcome.upload_id, result, doc).body
            record = await record_for(storage.engine, storage.documents,
                                      path=name, sha256=outcome.sha256,
                                      upload_id=outcome.upload_id, status="done")
            return body, record

    return run(go())


def test_a_c2pa_manifest_is_shown_with_its_generator_signer_and_validity(embedded):
    path = corpus_dir("c2pa") / "c2pa-rs__cli_sample_C.jpg"
    body, record = _judge(embedded, path.read_bytes(), path.name)
    why = body["explanation"]
    c2pa = why["provenance"]["c2pa"]
    assert c2pa["claim_generator"].startswith("make_test_images")
    assert c2pa["validation_state"] == "Valid" and c2pa["signer"].startswith("C2PA Signer")
    assert "c2pa.created" in c2pa["actions"]
    assert record["explanation"] == why and record["ai_probability"] == body["ai_probability"]
    text = "\n".join(explanation_lines(why))
    assert "C2PA: make_test_images" in text and "Valid" in text


def test_a_declared_ai_png_names_its_chunks_and_the_methods_that_did_not_vote(embedded):
    body, _ = _judge(embedded, encode(smooth_scene(seed=4), text={"parameters": SD_PARAMETERS}),
                     "render.png")
    why = body["explanation"]
    assert why["verdict"] == "ai" and why["decided_by"] == "declared provenance"
    assert why["provenance"]["generator_chunks"] == ["parameters"]
    assert why["algorithm_version"] == body["algorithm_version"]
    assert why["model"]["name"].startswith("skygate_clip_probe")


def test_a_photo_lists_the_voting_model_and_the_evidence_only_methods(embedded):
    embedded = embedded.model_copy(update={"model_heatmap": True})  # the model draws its map
    body, _ = _judge(embedded, encode(noisy_photo(seed=5, rows=512, cols=512), fmt="JPEG"),
                     "photo.jpg")
    why = body["explanation"]
    assert [v["method"] for v in why["voted"]] == ["model"]
    assert why["voted"][0]["contribution"] != 0 and 0 <= why["ai_probability"] <= 1
    reasons = {n["method"]: n["reason"] for n in why["not_voting"]}
    assert set(reasons) == {"exif", "prnu", "ela", "texture"}
    assert all(reasons.values()) and "Uncertain 0.00" not in str(why)
    assert why["heatmap"] == "model"
    assert why["provenance"]["c2pa"] is None
    lines = explanation_lines(why)
    assert lines[0].startswith(f"verdict: {why['verdict'].upper()}  P(AI)")
    assert any(line.startswith("  not voting: prnu: ") for line in lines)
