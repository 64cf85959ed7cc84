"""The suite's own rules: every test is marked unit, integration, browser or chaos, every test module
says which in its `pytestmark`, and shared helpers come from tests/helpers/ only."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
SUITE_MARKERS = ("unit", "integration", "browser", "chaos")


def _test_modules() -> list[Path]:
    return sorted(TESTS.glob("test_*.py"))


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from tests import conftest` / `from tests import test_x`
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _marker_names(node: ast.expr) -> set[str]:
    """`pytest.mark.NAME` and `pytest.mark.NAME(...)` anywhere in a pytestmark value."""
    names = set()
    for sub in ast.walk(node):
        if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute) and sub.value.attr == "mark"
                and isinstance(sub.value.value, ast.Name) and sub.value.value.id == "pytest"):
            names.add(sub.attr)
    return names


def test_no_collected_test_lacks_a_suite_marker() -> None:
    """Collect the whole suite, keeping only tests with none of the four markers: there must be none."""
    unmarked = " and ".join(f"not {name}" for name in SUITE_MARKERS)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-m", unmarked, str(TESTS)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    selected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert selected == [], "tests without a unit/integration/browser/chaos marker:\n" + "\n".join(selected)
    assert proc.returncode == 5, proc.stdout[-3000:] + proc.stderr[-3000:]  # 5: every test deselected


def test_every_test_module_declares_its_suite_marker() -> None:
    missing = []
    for module in _test_modules():
        tree = ast.parse(module.read_text(encoding="utf-8"))
        declared = [node for node in tree.body if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)]
        if not declared or not _marker_names(declared[-1].value) & set(SUITE_MARKERS):
            missing.append(module.name)
    assert missing == [], f"test modules without a module-level pytestmark naming one of {SUITE_MARKERS}"


def test_shared_code_comes_from_tests_helpers_only() -> None:
    """Test modules and conftest.py import shared code from tests.helpers: not from conftest.py
    (fixtures only), not from another test module."""
    wrong = [f"{module.name}:{line}: {name}" for module in [*_test_modules(), TESTS / "conftest.py"]
             for line, name in _imported_modules(module)
             if name.startswith(("conftest", "test_")) or (name.startswith("tests.") and not name.startswith("tests.helpers"))]
    assert wrong == []


def test_helpers_import_no_test_module_and_no_conftest() -> None:
    wrong = [f"helpers/{module.name}:{line}: {name}" for module in sorted((TESTS / "helpers").glob("*.py"))
             for line, name in _imported_modules(module)
             if name.startswith(("tests.test_", "tests.conftest", "conftest", "test_"))]
    assert wrong == []
