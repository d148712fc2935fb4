"""Every detection method, by name: what the service, the tasks and the document read.

Adding a method: a module in this package with a ``METHOD = Method(...)`` (found here by
itself) and its ``detection_methods`` row (a migration) with a weight. The
service runs it, ``skygate.detect.<name>`` exists, and its result reaches the rows and the
document (under its own section, or ``method_results.<name>``) with nothing else to change.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
from collections.abc import Mapping
from types import ModuleType

import pipeline.methods as _package
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
           "Picture", "feature_groups_of", "feature_modules", "method_names", "needs_of",
           "stacked_methods"]

# The seed's methods first, in this order (the order of CSV columns and of the document's
# sections); any other method after them, by name.
SEED_ORDER = ("exif", "prnu", "ela", "texture", "model")
_NOT_METHODS = frozenset({"base", "registry"})


def discover(paths=None) -> dict[str, Method]:
    """Every ``METHOD`` defined by a module of this package (or of ``paths``), in order."""
    found: dict[str, Method] = {}
    for info in pkgutil.iter_modules(paths or _package.__path__):
        if info.name in _NOT_METHODS or info.name.startswith("_"):
            continue
        module = (importlib.import_module(f"{_package.__name__}.{info.name}") if paths is None
                  else _load(info))
        method = getattr(module, "METHOD", None)
        if isinstance(method, Method):
            if method.name in found:
                raise ValueError(f"two modules define the method {method.name!r}")
            found[method.name] = method
    rank = {name: i for i, name in enumerate(SEED_ORDER)}
    return dict(sorted(found.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def _load(info):
    """A module from another folder (a test's toy method), imported under its own name."""
    spec = info.module_finder.find_spec(info.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REGISTRY: dict[str, Method] = discover()
METHOD_NAMES: tuple[str, ...] = tuple(REGISTRY)


def method_names() -> tuple[str, ...]:
    """The registered methods now, in registry order (the CSV columns, the document's
    sections): :data:`METHOD_NAMES` read at call time."""
    return tuple(REGISTRY)


def stacked_methods() -> list[str]:
    """The methods whose weights the ensemble's stacking fit learns (``Method.stacked``), in
    registry order: scripts/train_model.py fits them, ensemble.json holds their weights."""
    return [name for name, method in REGISTRY.items() if method.stacked]


def feature_modules() -> dict[str, ModuleType]:
    """The method modules that own a ``neutral_features`` group (``FEATURES`` and
    ``features(rgb, gray)``), by their method's name, in registry order."""
    found = {}
    for name, method in REGISTRY.items():
        module = inspect.getmodule(method.run)
        if hasattr(module, "FEATURES") and callable(getattr(module, "features", None)):
            found[name] = module
    return found


def needs_of(names) -> frozenset[str]:
    """Every input the named methods read (names without a registry entry read nothing)."""
    return frozenset().union(*(REGISTRY[n].needs for n in names if n in REGISTRY))


def feature_groups_of(names, configs: Mapping[str, dict] | None = None) -> tuple[str, ...]:
    """The ``neutral_features`` groups the named methods vote with, once each.

    ``configs``: the active configurations' parameters by ``config_type`` (a method whose
    type is missing is judged with None). Without ``configs``: every group they may read.
    """
    def votes(method: Method) -> bool:
        if configs is None or method.votes_with_features is None:
            return True
        return method.votes_with_features(configs.get(method.config_type or ""))

    groups = dict.fromkeys(g for n in names if n in REGISTRY and votes(REGISTRY[n])
                           for g in REGISTRY[n].feature_groups)
    return tuple(groups)
