"""Default documents that ``skygate db upgrade`` puts in place when they are missing."""

from __future__ import annotations

from schemas.documents import ConfigurationParameters, InputSize, SystemConfiguration
from storage.documents import DocumentStore

DEFAULT_MODEL_CONFIG = "default_model"
FORENSIC_MODEL_CONFIG = "forensic_lr"
FORENSIC_MODEL_PATH = "builtin:skygate_forensic_lr.onnx"
# Hashes of the shipped files (pipeline/assets/MODEL_CARD.md): checked once per worker
# process, so a truncated or replaced file is named instead of scored.
CLIP_ENCODER_SHA256 = "6191ad123c58c41fa2006911798a452fd80d9b7436dde0fcb45de6a0d1de6467"
CLIP_ENCODER_PATH = "builtin:clip_vitb16_cls_b3_b5_b7_b9_b10.int8rr.onnx"
CLIP_ENCODER_OUTPUT = "block3,block5,block7,block9,block10"
CLIP_PROBE_PATH = "builtin:skygate_clip_probe.onnx"
# Shipped defaults of earlier releases: a default_model still equal to one is ours, unchanged
# by an operator, and is upgraded (their files are no longer shipped).
EARLIER_DEFAULTS = (
    {"model_path": FORENSIC_MODEL_PATH, "encoder_path": None},
    {"model_path": CLIP_PROBE_PATH, "encoder_path": "builtin:clip_vitb16_block5.int8.onnx"},
    # Full-range s8 weights: saturated without AVX-512 VNNI (MODEL_CARD.md, Numerics).
    {"model_path": CLIP_PROBE_PATH, "encoder_path": "builtin:clip_vitb16_block10.int8.onnx"},
)


def default_model_configuration() -> SystemConfiguration:
    # The shipped model (pipeline/assets; scripts/build_clip_encoder.py and
    # scripts/train_model.py). Operators plug in another by writing an active
    # config_type="model" document with their own model_path.
    return SystemConfiguration(
        config_name=DEFAULT_MODEL_CONFIG,
        config_type="model",
        parameters=ConfigurationParameters(
            model_path=CLIP_PROBE_PATH,
            encoder_path=CLIP_ENCODER_PATH,
            encoder_output=CLIP_ENCODER_OUTPUT,
            encoder_sha256=CLIP_ENCODER_SHA256,
            input_size=InputSize(width=224, height=224),
            batch_size=1,
            threshold=0.5,
        ),
        is_active=True,
    )


def forensic_model_configuration() -> SystemConfiguration:
    """The earlier default (forensic-feature LR), kept as an inactive alternative."""
    return SystemConfiguration(
        config_name=FORENSIC_MODEL_CONFIG,
        config_type="model",
        parameters=ConfigurationParameters(
            model_path=FORENSIC_MODEL_PATH, input_size=InputSize(width=1024, height=1024),
            batch_size=1, threshold=0.5),
        is_active=False,
    )


async def ensure_default_configuration(documents: DocumentStore) -> bool:
    """Insert the default model configurations unless present; upgrade an untouched old default.

    A ``default_model`` still pointing at an earlier shipped model (the forensic LR, the
    block-5 CLIP probe) is ours, unchanged by an operator: it becomes the current CLIP probe.
    One an operator pointed elsewhere is left alone.
    """
    changed = False
    if await documents.get_configuration(FORENSIC_MODEL_CONFIG) is None:
        await documents.upsert_configuration(forensic_model_configuration())
        changed = True
    current = await documents.get_configuration(DEFAULT_MODEL_CONFIG)
    if current is None or _earlier_default(current):
        fresh = default_model_configuration()
        if current is not None:
            fresh.is_active = current.is_active
        await documents.upsert_configuration(fresh)
        changed = True
    return changed


def _earlier_default(config: SystemConfiguration) -> bool:
    files = {"model_path": config.parameters.model_path,
             "encoder_path": getattr(config.parameters, "encoder_path", None) or None}
    return files in EARLIER_DEFAULTS
