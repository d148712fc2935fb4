"""No module of the product, the scripts, testkit or the tests over 400 lines (the house rule):
a module that grows past it has taken a second job, which gets a module of its own."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

MAX_LINES = 400
CHECKED = ("schemas", "pipeline", "storage", "service", "workers", "api", "skygate",
           "scripts", "testkit")
# Test modules too: a long one is split by topic, its shared fixtures in a conftest.py.
SIZED = (*CHECKED, "tests")


def test_no_module_is_over_400_lines():
    long = []
    for package in SIZED:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(long)


def _function_level_imports(tree) -> int:
    return sum(isinstance(node, ast.Import | ast.ImportFrom)
               for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
               for node in fn.body)


def test_a_module_that_defers_imports_says_why_once():
    # A function-level import defers something heavy (a client library, a model, an extra):
    # the module says what, once, in a "# Deferred imports: ..." comment. Cheap imports go at
    # the top.
    silent = []
    for package in CHECKED:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            source = path.read_text(encoding="utf-8")
            if (_function_level_imports(ast.parse(source))
                    and not re.search(r"^\s*# Deferred imports", source, re.M | re.I)):
                silent.append(str(path.relative_to(ROOT)))
    assert not silent, "function-level imports without their reason:\n" + "\n".join(silent)
