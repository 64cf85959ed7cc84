"""app/ is the domain and the web app; worker/ is execution. The API must start without torch.

Read with `ast`, nothing is imported:
- no module of app/ imports worker, in any form, anywhere in the module;
- no module of app/ imports torch (or a library that imports it) when it is imported: in its
  top-level statements, including those inside top-level if/try/with blocks and class bodies
  (`if TYPE_CHECKING:` blocks do not run and are skipped);
- no module of app/planner/ reaches such an import through the app/ modules it imports at module
  level, however many steps away (the planner answers instantly on a machine without torch).
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
# Libraries whose import imports torch.
TORCH_IMPORTING = frozenset({"torch", "transformers", "peft", "bitsandbytes", "galore_torch"})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def app_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(APP.rglob("*.py"))}


@cache
def _tree(name: str) -> ast.Module:
    path = app_modules()[name]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(statements: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run when the module is imported: not function bodies."""
    for node in statements:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _module_level(getattr(node, field, []))
        for handler in getattr(node, "handlers", []):
            yield from _module_level(handler.body)
        for case in getattr(node, "cases", []):
            yield from _module_level(case.body)


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved against the importer)."""
    if node.level == 0:
        return node.module or ""
    is_package = app_modules()[importer].name == "__init__.py"
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(importer: str, node: ast.stmt) -> list[str]:
    """Every module an import statement names (for `from a import b`: a, and a.b in case b is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        module = _absolute(importer, node)
        return [module] + [f"{module}.{alias.name}" for alias in node.names if alias.name != "*"]
    return []


def _dynamic_imports(tree: ast.AST) -> list[str]:
    """`importlib.import_module("x")` and `__import__("x")` with a literal name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append(node.args[0].value)
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def module_level_imports(name: str) -> frozenset[str]:
    found: set[str] = set()
    for node in _module_level(_tree(name).body):
        for module in _imported(name, node):
            found.update(_with_parents(module))
    return frozenset(found)


def _app_edges(name: str) -> set[str]:
    """The app modules importing `name` runs at once (its own package's __init__ included)."""
    edges = {m for m in module_level_imports(name) if m in app_modules()}
    edges.update(p for p in _with_parents(name)[:-1] if p in app_modules())
    edges.discard(name)
    return edges


def test_the_walk_sees_every_module_of_app() -> None:
    modules = app_modules()
    assert {"app", "app.main", "app.planner", "app.api.deps"} <= set(modules)
    assert len(modules) > 40


def test_no_module_of_app_imports_worker() -> None:
    wrong = []
    for name in app_modules():
        tree = _tree(name)
        names = [m for node in ast.walk(tree) if isinstance(node, ast.stmt) for m in _imported(name, node)]
        names += _dynamic_imports(tree)
        wrong += [f"{name} imports {m}" for m in names if _top(m) == "worker"]
    assert not wrong, "app/ must not import worker/:\n" + "\n".join(wrong)


def test_no_module_of_app_imports_torch_when_it_is_imported() -> None:
    wrong = sorted(
        f"{name} imports {m} at module level"
        for name in app_modules() for m in module_level_imports(name) if m in TORCH_IMPORTING
    )
    wrong += sorted(
        f"{name} imports {m} when it is imported"
        for name in app_modules() for node in _module_level(_tree(name).body)
        if isinstance(node, (ast.Expr, ast.Assign, ast.AnnAssign, ast.AugAssign))
        for m in _dynamic_imports(node) if _top(m) in TORCH_IMPORTING
    )
    assert not wrong, "app/ must import torch only inside functions:\n" + "\n".join(wrong)


def _path_to_torch(start: str) -> list[str] | None:
    """The chain of app modules from `start` to one importing torch at module level, if any."""
    seen = {start}
    frontier = [[start]]
    while frontier:
        chain = frontier.pop(0)
        heavy = sorted(m for m in module_level_imports(chain[-1]) if _top(m) in TORCH_IMPORTING)
        if heavy:
            return chain + [heavy[0]]
        for nxt in sorted(_app_edges(chain[-1]) - seen):
            seen.add(nxt)
            frontier.append(chain + [nxt])
    return None


def test_no_planner_module_reaches_torch_through_app_modules() -> None:
    planner = [name for name in app_modules() if name == "app.planner" or name.startswith("app.planner.")]
    assert len(planner) > 5
    chains = [" -> ".join(chain) for name in planner if (chain := _path_to_torch(name))]
    assert not chains, "the planner must not import torch, even through other app modules:\n" + "\n".join(chains)


def test_the_graph_resolves_every_import_form() -> None:
    """The walk itself, on a module written for it: plain, from, relative and guarded imports."""
    source = """
import app.planner.memory
from app.planner import compute
from . import fit
from .. import settings
from .setup import TrainingSetup
try:
    import torch
except ImportError:
    torch = None
if TYPE_CHECKING:
    import transformers
class Holder:
    from app import storage
def later():
    import peft
"""
    name = "app.planner.service"
    found = {m for node in _module_level(ast.parse(source).body) for m in _imported(name, node)}
    assert {"app.planner.memory", "app.planner", "app.planner.compute", "app.planner.fit", "app",
            "app.settings", "app.planner.setup", "torch", "app.storage"} <= found
    assert "transformers" not in found and "peft" not in found
    assert "app.api.deps" in _app_edges("app.main")
    assert "app.api" in _app_edges("app.api.deps")  # its package's __init__ runs first
