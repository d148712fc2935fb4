"""The tree is ruff-clean under the rules in pyproject.toml ([tool.ruff.lint]): a finding
fails this test with ruff's own report."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_ruff_check_finds_nothing():
    pytest.importorskip("ruff", reason="ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"ruff check . found:\n{result.stdout}{result.stderr}"
