"""Build the seed's ``detection_metadata`` document from the methods' outputs."""

from __future__ import annotations

from schemas.documents import (
    AggregatedResults,
    AnalysisResult,
    DetectedAnomaly,
    DetectionMetadata,
    Dimensions,
    ElaResults,
    ExifData,
    FileInfo,
    GpsCoordinates,
    ModelResult,
    PixelAnalysis,
    PrnuResults,
    TextureAnalysis,
    VisualAnomalies,
)
from schemas.results import MethodResult


def _suspicious(r: MethodResult | None) -> bool | None:
    return None if r is None or r.abstained else bool(r.ai_probability > 0.5)


def _conf(r: MethodResult | None) -> float | None:
    return None if r is None or r.abstained else r.confidence


def build_metadata_document(*, result_id: int, upload_id: int, user_id: int | None,
                            file_info: dict, results: dict[str, MethodResult], verdict,
                            heatmap_path: str | None, anomalies: list[dict]) -> DetectionMetadata:
    exif = results.get("exif")
    ed = exif.details if exif else {}
    gps = ed.get("gps_coordinates")
    prnu, ela, texture, model = (results.get(k) for k in ("prnu", "ela", "texture", "model"))
    model_results = []
    if model is not None and model.details.get("model_name"):
        model_results.append(ModelResult(
            model_name=model.details["model_name"], model_version=model.details["model_version"],
            is_ai_generated=model.is_ai_generated, confidence=_conf(model),
            processing_time=round(model.processing_time, 4),
            feature_importance=model.details.get("feature_importance", {}),
        ))
    return DetectionMetadata(
        result_id=result_id, upload_id=upload_id, user_id=user_id,
        file_info=FileInfo(
            dimensions=Dimensions(width=file_info.get("width"), height=file_info.get("height")),
            color_space=file_info.get("color_space"), bit_depth=file_info.get("bit_depth"),
            compression=file_info.get("compression"),
            file_type=file_info.get("file_type"), jpeg_quality=file_info.get("jpeg_quality"),
        ),
        exif_data=ExifData(
            exists=bool(ed.get("exists")), camera_make=ed.get("camera_make"),
            camera_model=ed.get("camera_model"), lens_info=ed.get("lens_info"),
            creation_date=ed.get("creation_date"), software=ed.get("software"),
            gps_coordinates=GpsCoordinates(**gps) if gps else None,
            analysis_result=AnalysisResult(
                is_suspicious=ed.get("is_suspicious"), confidence=_conf(exif),
                anomalies=ed.get("anomalies", []),
            ),
            evidence=ed.get("evidence", []), digital_source_types=ed.get("digital_source_types"),
            generator_chunks=ed.get("generator_chunks"), c2pa=ed.get("c2pa"),
        ),
        pixel_analysis=PixelAnalysis(
            prnu_results=PrnuResults(
                pattern_score=(prnu.details.get("pattern_score") if prnu else None),
                is_suspicious=_suspicious(prnu), confidence=_conf(prnu),
                details=prnu.details if prnu else None,
            ),
            ela_results=ElaResults(
                error_level_score=(ela.details.get("error_level_score") if ela else None),
                is_suspicious=_suspicious(ela), confidence=_conf(ela),
                ela_image_path=(ela.details.get("ela_image_path") if ela else None),
                details=ela.details if ela else None,
            ),
            texture_analysis=TextureAnalysis(
                smoothness_score=(texture.details.get("smoothness_score") if texture else None),
                is_suspicious=_suspicious(texture), confidence=_conf(texture),
                details=texture.details if texture else None,
            ),
        ),
        model_results=model_results,
        visual_anomalies=VisualAnomalies(
            detected_anomalies=[DetectedAnomaly(**a) for a in anomalies],
            heatmap_path=heatmap_path,
        ),
        aggregated_results=AggregatedResults(
            is_ai_generated=verdict.is_ai_generated, confidence_score=verdict.confidence,
            contributing_factors=verdict.contributing_factors,
            ai_probability=verdict.ai_probability, summary=verdict.summary,
            algorithm_version=verdict.algorithm_version,
        ),
    )
