"""Default documents that ``skygate db upgrade`` puts in place when they are missing."""

from __future__ import annotations

from schemas.documents import ConfigurationParameters, InputSize, SystemConfiguration
from storage.documents import DocumentStore

DEFAULT_MODEL_CONFIG = "default_model"
FORENSIC_MODEL_CONFIG = "forensic_lr"
FORENSIC_MODEL_PATH = "builtin:skygate_forensic_lr.onnx"
# Hashes of the shipped files (pipeline/assets/MODEL_CARD.md): checked once per worker
# process, so a truncated or replaced file is named instead of scored.
CLIP_ENCODER_SHA256 = "e474e7c44c487aa2ecf5f749f006fde06cc4e984eec6bc9bd3049383fe6c3b7c"


def default_model_configuration() -> SystemConfiguration:
    # The shipped model (pipeline/assets; scripts/build_clip_encoder.py and
    # scripts/train_model.py). Operators plug in another by writing an active
    # config_type="model" document with their own model_path.
    return SystemConfiguration(
        config_name=DEFAULT_MODEL_CONFIG,
        config_type="model",
        parameters=ConfigurationParameters(
            model_path="builtin:skygate_clip_probe.onnx",
            encoder_path="builtin:clip_vitb16_block5.int8.onnx",
            encoder_output="block5",
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

    A ``default_model`` still pointing at the shipped forensic LR is ours, unchanged by an
    operator: it becomes the CLIP probe. One an operator edited is left alone.
    """
    changed = False
    if await documents.get_configuration(FORENSIC_MODEL_CONFIG) is None:
        await documents.upsert_configuration(forensic_model_configuration())
        changed = True
    current = await documents.get_configuration(DEFAULT_MODEL_CONFIG)
    if current is None or (current.parameters.model_path == FORENSIC_MODEL_PATH
                           and not getattr(current.parameters, "encoder_path", None)):
        fresh = default_model_configuration()
        if current is not None:
            fresh.is_active = current.is_active
        await documents.upsert_configuration(fresh)
        changed = True
    return changed
