"""The light install: `pip install -e .` carries what scan, the API and the workers need and
nothing they do not; the extras carry only what they name."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata

from testkit.images import encode, noisy_photo
from tests.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Heavy packages the main job does not use: each lives in the extra that names its use.
OPTIONAL = {"scipy": "test", "matplotlib": "plot", "boto3": "s3", "scikit-learn": "train",
            "pillow-heif": "heif", "flower": "flower"}


def _names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()
            for r in requirements}


def test_base_dependencies_leave_the_heavy_optional_packages_out():
    base = _names(PROJECT["dependencies"])
    assert not base & (set(OPTIONAL) | {"defusedxml"})
    extras = PROJECT["optional-dependencies"]
    for package, extra in OPTIONAL.items():
        assert package in _names(extras[extra]), (package, extra)


def test_scan_api_and_worker_import_none_of_the_optional_packages(tmp_path):
    """One image judged in-process, the API app and the Celery app built: none of them
    imports scipy, matplotlib, boto3 or Flower, so the install without extras runs them."""
    image = tmp_path / "photo.jpg"
    image.write_bytes(encode(noisy_photo(rows=128, cols=160), fmt="JPEG"))
    code = f"""
import sys
from click.testing import CliRunner
from skygate.cli import main
result = CliRunner().invoke(main, ["scan", {str(image)!r}, "--json"])
assert result.exit_code == 0, result.output
import api.app, workers, workers.tasks
api.app.create_app()
loaded = sorted(m for m in ("scipy", "matplotlib", "boto3", "botocore", "flower", "tornado")
                if m in sys.modules)
print("LOADED", loaded)
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SKYGATE_DATA_DIR": str(tmp_path),
           "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout, result.stdout


def _pins(lock: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / lock).read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.split()[0].rstrip("\\")
    return pins


def _extra(name: str) -> list[str]:
    """An extra's requirements, the extras it names (skygate[s3,…]) expanded."""
    out = []
    for text in PROJECT["optional-dependencies"][name]:
        if text.startswith("skygate["):
            for inner in text[len("skygate["):-1].split(","):
                out += _extra(inner)
        else:
            out.append(text)
    return out


def test_the_lock_files_pin_every_declared_dependency_within_its_range():
    """requirements.lock (the image: base + [cluster], with hashes) and requirements-test.lock
    (CI: base + [test]) stay in step with pyproject.toml: regenerate them when a range changes
    (docs/operations.md)."""
    from packaging.requirements import Requirement

    for lock, requirements in (
            ("requirements.lock", PROJECT["dependencies"] + _extra("cluster")),
            ("requirements-test.lock", PROJECT["dependencies"] + _extra("test"))):
        pins = _pins(lock)
        for text in requirements:
            req = Requirement(text)
            name = req.name.lower().replace("_", "-")
            assert name in pins, f"{lock} does not pin {name}"
            assert req.specifier.contains(pins[name], prereleases=True), (lock, text, pins[name])
    assert "--hash=sha256:" in (ROOT / "requirements.lock").read_text()


PRODUCT = ("schemas", "pipeline", "storage", "service", "workers", "api", "skygate")
# Imported only where their feature runs (inside a function): each extra names its use
# (train: onnx reads a graph's construction in pipeline/known_answer.saturation_risks).
FEATURE_EXTRAS = ("s3", "plot", "train", "flower", "heif")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[str]) -> set[str]:
    """The distributions `pip install` brings for these requirements (read from the installed
    metadata, markers evaluated with each requirement's extras)."""
    from packaging.requirements import Requirement

    seen: set[tuple[str, frozenset]] = set()
    names: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name, extras = _normal(req.name), frozenset(req.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        names.add(name)
        if name == "skygate":
            optional = PROJECT["optional-dependencies"]
            todo += [Requirement(r) for e in extras for r in optional[e]]
            continue
        for text in metadata.requires(name) or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e})
                                         for e in (*extras, "")):
                todo.append(sub)
    return names


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level names of the packages the product imports: 'module' (at import time) and
    'deferred' (inside a function, or guarded by ``except ImportError``), TYPE_CHECKING
    blocks left out."""
    found: dict[str, set[str]] = {"module": set(), "deferred": set()}
    files = [ROOT / "celeryconfig.py"] + [p for d in PRODUCT for p in (ROOT / d).rglob("*.py")]
    for path in files:
        tree = ast.parse(path.read_text())

        def visit(node, deferred):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                inner = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                if isinstance(child, ast.Try) and any(
                        "ImportError" in ast.unparse(h.type or ast.Name(""))
                        for h in child.handlers):
                    inner = True  # an optional import: the except branch does without it
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom) and not child.level:
                    names = [child.module or ""]
                else:
                    names = []
                for name in names:
                    found["deferred" if inner else "module"].add(name.split(".")[0])
                visit(child, inner)

        visit(tree, False)
    local = {*PRODUCT, "celeryconfig", "__future__"}
    return {k: {n for n in v if n not in sys.stdlib_module_names and n not in local}
            for k, v in found.items()}


def test_every_import_of_the_product_is_a_declared_dependency():
    """A package the product imports at import time comes with `pip install -e .`; one it
    imports inside a function comes with the base or with the extra of that feature. (httpx
    was once imported by service/webhooks.py while only [test] declared it: the light install
    could not judge an image.)"""
    providers = metadata.packages_distributions()
    base = _closure(PROJECT["dependencies"])
    features = _closure(PROJECT["dependencies"] + [f"skygate[{','.join(FEATURE_EXTRAS)}]"])
    imports = _third_party_imports()
    missing = {
        kind: sorted(name for name in names
                     if not {_normal(d) for d in providers.get(name, [name])} & allowed)
        for kind, names, allowed in (("module", imports["module"], base),
                                     ("deferred", imports["deferred"], features))}
    assert missing == {"module": [], "deferred": []}, missing


def test_skygate_flower_without_the_flower_extra_names_the_install_command(tmp_path):
    """Flower is the [flower] extra (the API, the workers and scan do without it): where it
    is not installed (a stand-in that raises ImportError, first on the path) `skygate
    flower` says how to add it and exits 1, before asking for a broker."""
    absent = tmp_path / "absent" / "flower"
    absent.mkdir(parents=True)
    (absent / "__init__.py").write_text("raise ImportError('the [flower] extra is not installed')")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SKYGATE_DATA_DIR": str(tmp_path),
           "SKYGATE_LOG_FORMAT": "text",
           "PYTHONPATH": f"{absent.parent}:{ROOT}"}
    result = subprocess.run([sys.executable, "-m", "skygate.cli", "flower"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == "error: Flower is not installed: pip install 'skygate[flower]'"
