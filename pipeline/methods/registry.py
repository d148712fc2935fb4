"""Every detection method, by name: what the service, the tasks and the document read.

Adding a method: a module in this package with a ``METHOD = Method(...)``, its line in
``_MODULES`` below, and its ``detection_methods`` row (a migration) with a weight. The
service runs it, ``skygate.detect.<name>`` exists, and its result reaches the rows and the
document (under its own section, or ``method_results.<name>``) with nothing else to change.
"""

from __future__ import annotations

from pipeline.methods import ela, exif, model, prnu, texture
from pipeline.methods.base import (
    CONFIG,
    INPUTS,
    NATIVE_PIXELS,
    NEUTRAL_FEATURES,
    NEUTRAL_PIXELS,
    ORIGINAL_BYTES,
    SETTINGS,
    Finding,
    Method,
    Picture,
)

__all__ = ["CONFIG", "INPUTS", "METHOD_NAMES", "NATIVE_PIXELS", "NEUTRAL_FEATURES",
           "NEUTRAL_PIXELS", "ORIGINAL_BYTES", "REGISTRY", "SETTINGS", "Finding", "Method",
           "Picture", "feature_groups_of", "needs_of"]

# In this order: the order of CSV columns and of the document's sections.
_MODULES = (exif, prnu, ela, texture, model)

REGISTRY: dict[str, Method] = {m.METHOD.name: m.METHOD for m in _MODULES}
METHOD_NAMES: tuple[str, ...] = tuple(REGISTRY)


def needs_of(names) -> frozenset[str]:
    """Every input the named methods read (names without a registry entry read nothing)."""
    return frozenset().union(*(REGISTRY[n].needs for n in names if n in REGISTRY))


def feature_groups_of(names) -> tuple[str, ...]:
    """The ``neutral_features`` groups the named methods read, once each."""
    groups = dict.fromkeys(g for n in names if n in REGISTRY for g in REGISTRY[n].feature_groups)
    return tuple(groups)
