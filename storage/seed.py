"""Default documents that ``skygate db upgrade`` puts in place when they are missing."""

from __future__ import annotations

from schemas.documents import ConfigurationParameters, InputSize, SystemConfiguration
from storage.documents import DocumentStore

DEFAULT_MODEL_CONFIG = "default_model"


def default_model_configuration() -> SystemConfiguration:
    # The shipped model (pipeline/assets, made by scripts/train_model.py). Operators plug in
    # another by writing an active config_type="model" document with their own model_path.
    return SystemConfiguration(
        config_name=DEFAULT_MODEL_CONFIG,
        config_type="model",
        parameters=ConfigurationParameters(
            model_path="builtin:skygate_forensic_lr.onnx",
            input_size=InputSize(width=1024, height=1024),
            batch_size=1,
            threshold=0.5,
        ),
        is_active=True,
    )


async def ensure_default_configuration(documents: DocumentStore) -> bool:
    """Insert the default model configuration unless one by that name exists."""
    if await documents.get_configuration(DEFAULT_MODEL_CONFIG) is not None:
        return False
    await documents.upsert_configuration(default_model_configuration())
    return True
