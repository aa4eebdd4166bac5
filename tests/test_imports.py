"""Import hygiene: a light config import, no import cycles, small modules.

(1) ``import lpr_agent.config`` is what every CLI verb and the config loader
pay for: it must not pull in the heavy stacks. (2) A cycle among the modules'
top-level imports (``TYPE_CHECKING`` blocks and imports inside functions aside)
makes import order matter and breaks lazy loading. (3) No module over 500 lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lpr_agent", "server_stub")
HEAVY = ("socketio", "engineio", "aiohttp", "cv2", "onnxruntime", "psutil", "numpy")
MAX_LINES = 500


@pytest.mark.parametrize("module", HEAVY)
def test_config_import_does_not_load(module: str) -> None:
    code = (f"import sys, lpr_agent.config; "
            f"print({module!r} in sys.modules or any(m.startswith({module!r} + '.') "
            f"for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, check=True).stdout.strip()
    if out != "False":
        chain = subprocess.run([sys.executable, "-X", "importtime", "-c",
                                "import lpr_agent.config"], capture_output=True, text=True,
                               cwd=ROOT, timeout=60).stderr
        first = next((line for line in chain.splitlines()
                      if line.rstrip().endswith(f"| {module}") or f"  {module}" in line), "")
        pytest.fail(f"import lpr_agent.config loads {module} ({first.strip()})")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Project modules imported when ``module`` is imported (module level only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def target(name: str) -> None:
        # "a.b.c" imports a, a.b and a.b.c (each package's __init__ runs) -- except
        # the importing module's own ancestors: they are in sys.modules already
        # (a package is initialised before its submodules), so no edge.
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if candidate in known and candidate != module \
                    and not module.startswith(candidate + "."):
                found.add(candidate)

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                target(prefix)
                for alias in node.names:
                    target(f"{prefix}.{alias.name}")  # from pkg import submodule
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)
            # function and class bodies: imported when called, not at import time
            # (a class body does run at import, but we keep none of those)

    visit(tree.body)
    return found


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _top_level_imports(m, p, known) for m, p in modules.items()}


def test_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    cycle = _find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_over_500_lines(package: str) -> None:
    too_long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / package).rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
