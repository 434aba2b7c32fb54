"""The package's architecture, kept by a test: which wing may import which, no import circles,
and a light ``import cuvae``.

The import graph is read statically (every ``import`` in every module, function-level ones
included), so a lazy import inside a function cannot hide a wrong dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"cuvae": ROOT / "cuvae", "cuvae_tui": ROOT / "tui"}

# wing -> the wings it may import (itself always allowed); the base modules are open to all
BASE = {"cuvae.errors", "cuvae.atomic"}
ALLOWED = {
    "cuvae.nn": set(),
    "cuvae.backends": {"cuvae.nn"},
    "cuvae.data": set(),
    "cuvae.measure": {"cuvae.nn", "cuvae.backends", "cuvae.data"},
    "cuvae.engine": {"cuvae.nn", "cuvae.backends", "cuvae.data", "cuvae.measure"},
    "cuvae.cli": {"cuvae.nn", "cuvae.backends", "cuvae.data", "cuvae.measure", "cuvae.engine"},
    "cuvae_tui": {"cuvae.nn", "cuvae.backends", "cuvae.data", "cuvae.measure", "cuvae.engine"},
}


def module_files() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = module_files()


def imports_of(name: str, path: Path) -> set[str]:
    """The cuvae modules ``name`` imports (``from pkg import sub`` counts as ``pkg.sub`` when that is a module)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        found |= {t for t in targets if t.split(".")[0] in PACKAGES}
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def wing(module: str) -> str | None:
    if module.startswith("cuvae_tui"):
        return "cuvae_tui"
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and ".".join(parts[:2]) in ALLOWED else None


def test_the_graph_is_read():  # guards the test itself: an empty graph would pass everything below
    assert len(MODULES) > 40
    assert "cuvae.nn.ops" in GRAPH["cuvae.nn.model"] or "cuvae.nn.params" in GRAPH["cuvae.nn.model"]
    assert "cuvae.engine.options" in GRAPH["cuvae.cli.train"]
    assert "cuvae.data.download" in GRAPH["cuvae.data.mnist"]


def test_each_wing_imports_only_what_it_may():
    wrong = []
    for mod, deps in GRAPH.items():
        w = wing(mod)
        if w is None:
            continue
        for dep in deps:
            dw = wing(dep)
            if dep in BASE or dw == w or (dw in ALLOWED[w]):
                continue
            if dw is None and w == "cuvae_tui" and dep == "cuvae":
                continue
            wrong.append(f"{mod} imports {dep}")
    assert not wrong, "imports against the layout (see each folder's __init__.py):\n" + "\n".join(sorted(wrong))


def test_nothing_imports_the_ui_or_the_thin_entry_points():
    thin = {"cuvae.train", "cuvae.evaluate", "cuvae.sweep", "cuvae.show", "cuvae.doctor"}
    bad = [f"{m} imports {d}" for m, deps in GRAPH.items() for d in deps
           if (d.startswith("cuvae_tui") and not m.startswith("cuvae_tui")) or (d in thin and m != d)]
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(GRAPH.get(node, ())):
            if dep not in GRAPH:
                continue
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_every_folder_says_what_lives_there():
    for pkg in ("nn", "backends", "data", "engine", "measure", "cli"):
        doc = ast.get_docstring(ast.parse((ROOT / "cuvae" / pkg / "__init__.py").read_text()))
        assert doc and "import" in doc, f"cuvae/{pkg}/__init__.py must say what lives there and what it may import"


@pytest.mark.parametrize("modules", [
    "cuvae",
    "cuvae, cuvae.cli.train, cuvae.engine.trainer, cuvae.cli.evaluate, cuvae.data",
])
def test_importing_cuvae_loads_neither_cupy_nor_textual(modules):
    code = (f"import sys, {modules}; "
            "bad = [m for m in ('cupy', 'textual', 'torch', 'numba') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_public_api_is_small_and_lazy():
    code = ("import sys, cuvae; names = sorted(n for n in cuvae.__all__); print(names);"
            "assert 'cuvae.engine.trainer' not in sys.modules, 'import cuvae must stay light';"
            "cuvae.fit; assert 'cuvae.api' in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "['Model', '__version__', 'fit', 'load']"
