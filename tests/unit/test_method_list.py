"""The list of detection methods lives in one place, the registry (pipeline.methods.registry:
its modules, in SEED_ORDER): a module that spells several method names out in a list, tuple,
set or dict has a copy that drifts when a method is added."""

from __future__ import annotations

import ast

from pipeline.methods.registry import REGISTRY
from tests.conftest import ROOT

PACKAGES = ("schemas", "pipeline", "storage", "service", "workers", "api", "skygate", "scripts")
# The one list: the seed methods' order (the CSV columns, the document's sections).
THE_LIST = ("pipeline/methods/registry.py", "SEED_ORDER")
AT_MOST = 2  # two names together (a comparison's pair) are not a list of the methods


def _names_in(node) -> set[str]:
    items = node.keys if isinstance(node, ast.Dict) else node.elts
    return {i.value for i in items if isinstance(i, ast.Constant) and i.value in REGISTRY}


def _assigned_to(tree) -> dict[int, str]:
    """id(value node) → the name it is assigned to."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    out[id(node.value)] = t.id
    return out


def repeated_method_lists(root=ROOT) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:  # history: each revision's rows as they were
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            names = _assigned_to(tree)
            rel = path.relative_to(root).as_posix()
            for node in ast.walk(tree):
                if not isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict):
                    continue
                if (rel, names.get(id(node))) == THE_LIST:
                    continue
                listed = _names_in(node)
                if len(listed) > AT_MOST:
                    found.append(f"{rel}:{node.lineno} lists {sorted(listed)}")
    return found


def test_no_module_repeats_the_method_list():
    found = repeated_method_lists()
    assert not found, ("derive these from pipeline.methods.registry (REGISTRY, method_names, "
                       "stacked_methods, feature_modules):\n" + "\n".join(found))


def test_the_check_sees_a_repeated_list(tmp_path):
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "x.py").write_text('ORDER = ["exif", "prnu", "model"]\n'
                                               'PAIR = ("prnu", "texture")\n')
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    assert repeated_method_lists(tmp_path) == [
        "service/x.py:1 lists ['exif', 'model', 'prnu']"]
