"""The seed's two MongoDB documents, every field present (``None`` where unknown).

The stores check these same models on write: the embedded store re-validates each body, and
MongoDB gets a ``$jsonSchema`` validator generated from them (storage/documents/validation.py).
Confidences are probabilities (0..1) and processing times seconds (>= 0), as in the SQL tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.clock import utcnow

Confidence = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class Dimensions(_Doc):
    width: int | None = None
    height: int | None = None


class FileInfo(_Doc):
    dimensions: Dimensions = Field(default_factory=Dimensions)
    color_space: str | None = None
    bit_depth: int | None = None
    compression: str | None = None


class GpsCoordinates(_Doc):
    latitude: float | None = None
    longitude: float | None = None


class AnalysisResult(_Doc):
    is_suspicious: bool | None = None
    confidence: Confidence | None = None
    anomalies: list[str] = Field(default_factory=list)


class ExifData(_Doc):
    exists: bool = False
    camera_make: str | None = None
    camera_model: str | None = None
    lens_info: str | None = None
    creation_date: datetime | None = None
    software: str | None = None
    gps_coordinates: GpsCoordinates | None = None
    analysis_result: AnalysisResult = Field(default_factory=AnalysisResult)


class PrnuResults(_Doc):
    pattern_score: float | None = None
    is_suspicious: bool | None = None
    confidence: Confidence | None = None


class ElaResults(_Doc):
    error_level_score: float | None = None
    is_suspicious: bool | None = None
    confidence: Confidence | None = None
    ela_image_path: str | None = None


class TextureAnalysis(_Doc):
    smoothness_score: float | None = None
    is_suspicious: bool | None = None
    confidence: Confidence | None = None


class PixelAnalysis(_Doc):
    prnu_results: PrnuResults = Field(default_factory=PrnuResults)
    ela_results: ElaResults = Field(default_factory=ElaResults)
    texture_analysis: TextureAnalysis = Field(default_factory=TextureAnalysis)


class ModelResult(_Doc):
    model_name: str
    model_version: str
    is_ai_generated: bool | None = None
    confidence: Confidence | None = None
    processing_time: Seconds | None = None
    feature_importance: dict[str, Any] = Field(default_factory=dict)


class BoundingBox(_Doc):
    x: int
    y: int
    width: int
    height: int


class DetectedAnomaly(_Doc):
    type: str
    confidence: Confidence
    bounding_box: BoundingBox
    description: str


class VisualAnomalies(_Doc):
    detected_anomalies: list[DetectedAnomaly] = Field(default_factory=list)
    heatmap_path: str | None = None
    # "model": the voting model's map (pipeline/attribution.py); "forensic": the forensic
    # methods' combined map, shown only when the model drew none. Evidence, not a vote.
    heatmap_source: str | None = None
    forensic_heatmap_path: str | None = None


class ContributingFactor(_Doc):
    factor: str
    weight: float
    contribution: float


class AggregatedResults(_Doc):
    is_ai_generated: bool | None = None
    confidence_score: Confidence | None = None
    contributing_factors: list[ContributingFactor] = Field(default_factory=list)


class DetectionMetadata(_Doc):
    """``detection_metadata``: the rich per-method findings of one detection result."""

    id: str | None = Field(default=None, description="the document's _id as a hex string")
    result_id: int
    upload_id: int
    user_id: int | None = None
    file_info: FileInfo = Field(default_factory=FileInfo)
    exif_data: ExifData = Field(default_factory=ExifData)
    pixel_analysis: PixelAnalysis = Field(default_factory=PixelAnalysis)
    model_results: list[ModelResult] = Field(default_factory=list)
    visual_anomalies: VisualAnomalies = Field(default_factory=VisualAnomalies)
    aggregated_results: AggregatedResults = Field(default_factory=AggregatedResults)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Additions beyond the seed: every blob this result made or used (so DELETE can remove
    # them), and the earlier verdicts of this upload when it was rescored.
    blob_keys: dict[str, str] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)


class InputSize(_Doc):
    width: int
    height: int


class ConfigurationParameters(_Doc):
    """Flexible by ``config_type``; the seed's model fields are named, others pass through."""

    model_path: str | None = None
    weights_path: str | None = None
    input_size: InputSize | None = None
    batch_size: int | None = None
    threshold: float | None = None
    # A feature probe: the encoder whose output `encoder_output` feeds the head at model_path.
    encoder_path: str | None = None
    encoder_output: str | None = None
    # SHA-256 of the files, checked once per process when given.
    encoder_sha256: str | None = None
    model_sha256: str | None = None


class SystemConfiguration(_Doc):
    """``system_configuration``: named settings such as the active detection model."""

    id: str | None = None
    config_name: str
    config_type: str
    parameters: ConfigurationParameters = Field(default_factory=ConfigurationParameters)
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    created_by: int | None = None
