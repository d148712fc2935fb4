"""The import rule of the architecture: schemas ← pipeline ← storage ← service ← the front
doors (workers, api, skygate). A lower layer never imports a higher one, and a front door
never imports another front door — function-level (deferred) imports included. Outside the
product: nothing but the tests imports ``tests``, the scripts import ``testkit`` (the helpers
both share), never ``tests``."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

LAYER = {"schemas": 0, "pipeline": 1, "storage": 2, "service": 3,
         "workers": 4, "api": 4, "skygate": 4}
# Deliberate crossings, each with its reason.
ALLOWED = {
    # `skygate api` is the command that runs the HTTP server: it has to start it.
    ("skygate", "api.server"),
}


def _imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def test_imports_only_flow_down_the_layers():
    wrong = []
    for package, level in LAYER.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for line, module in _imports(path):
                top = module.split(".")[0]
                if top not in LAYER or top == package or (package, module) in ALLOWED:
                    continue
                other = LAYER[top]
                if other > level or (other == level == 4):
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


# Outside the product: who may not import whom. The shared test and benchmark helpers live in
# testkit, which both the tests and the scripts may import.
NEVER = {
    "scripts": {"tests"},
    "testkit": {"tests", "scripts"},
    **{package: {"tests", "scripts", "testkit"} for package in LAYER},
}


def test_nothing_imports_the_tests_but_the_tests():
    wrong = []
    for package, forbidden in NEVER.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module in _imports(path):
                if module.split(".")[0] in forbidden:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "imports of tests or scripts:\n" + "\n".join(wrong)


def test_storage_never_imports_service():
    # The layer rule says it already; said once more because account and removal rules
    # belong to service, over storage's repositories, never the other way round.
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in sorted((ROOT / "storage").rglob("*.py"))
             for line, module in _imports(path) if module.split(".")[0] == "service"]
    assert not wrong, "\n".join(wrong)


def test_the_layer_table_names_every_package():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"tests", "testkit"} == set(LAYER)


def test_the_process_plumbing_stands_below_the_upload_lifecycle():
    # service/runtime/ (the process loop, logs, health, the Celery client, queues, the
    # allocator) serves every process; it never reaches up into the lifecycle modules of
    # service (ingest, dispatch, detection, ...), which may all use it.
    runtime = ROOT / "service" / "runtime"
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in sorted(runtime.rglob("*.py"))
             for line, module in _imports(path)
             if module.split(".")[0] == "service" and not module.startswith("service.runtime")]
    assert not wrong, "\n".join(wrong)
