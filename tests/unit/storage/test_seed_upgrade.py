"""`skygate db upgrade` replaces an untouched earlier default model configuration and leaves
an operator's own alone (embedded document store, no servers)."""

from __future__ import annotations

import pytest

from schemas.documents import ConfigurationParameters, InputSize, SystemConfiguration
from tests.conftest import run


def _default(**parameters) -> SystemConfiguration:
    return SystemConfiguration(
        config_name="default_model", config_type="model", is_active=False,
        parameters=ConfigurationParameters(input_size=InputSize(width=224, height=224),
                                           batch_size=1, threshold=0.5, **parameters))


def _after_upgrade(settings, stored: SystemConfiguration | None):
    from storage import migrate, seed
    from storage.context import open_storage

    async def go():
        async with open_storage(settings) as storage:
            await migrate.upgrade(storage.engine)
            if stored is not None:
                await storage.documents.upsert_configuration(stored)
            changed = await seed.ensure_default_configuration(storage.documents)
            return changed, await storage.documents.get_configuration("default_model")

    return run(go())


@pytest.mark.parametrize("earlier", [
    {"model_path": "builtin:skygate_forensic_lr.onnx"},
    {"model_path": "builtin:skygate_clip_probe.onnx",
     "encoder_path": "builtin:clip_vitb16_block5.int8.onnx", "encoder_output": "block5"},
    # Full-range s8 weights: wrong features without AVX-512 VNNI.
    {"model_path": "builtin:skygate_clip_probe.onnx",
     "encoder_path": "builtin:clip_vitb16_block10.int8.onnx", "encoder_output": "block10",
     "encoder_sha256": "3cab06dee345860a463f1016ed04136b81dfc098b3d36f29392d07f7ae19f6b4"},
], ids=["forensic-lr", "clip-block5", "clip-block10-s8"])
def test_an_untouched_earlier_default_becomes_the_shipped_model(embedded, earlier):
    from storage.seed import default_model_configuration

    changed, now = _after_upgrade(embedded, _default(**earlier))
    shipped = default_model_configuration().parameters
    assert changed
    assert now.parameters.encoder_path == shipped.encoder_path
    assert now.parameters.encoder_output == shipped.encoder_output == \
        "block3,block5,block7,block9,block10"
    assert now.parameters.encoder_sha256 == shipped.encoder_sha256
    assert now.is_active is False  # the operator's choice to deactivate it stays


def test_an_operators_own_model_is_left_alone(embedded):
    own = _default(model_path="/models/ours.onnx",
                   encoder_path="builtin:clip_vitb16_block5.int8.onnx", encoder_output="block5")
    changed, now = _after_upgrade(embedded, own)
    assert now.parameters.model_path == "/models/ours.onnx"
    assert now.parameters.encoder_output == "block5"
    assert not changed or now.parameters == own.parameters  # only the forensic row was added


def test_a_fresh_store_gets_the_shipped_model(embedded):
    from pipeline.methods.model import resolve_model_path

    changed, now = _after_upgrade(embedded, None)
    assert changed and now.is_active
    for key in ("model_path", "encoder_path"):
        assert resolve_model_path(getattr(now.parameters, key)).is_file()
