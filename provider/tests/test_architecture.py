"""The package's shape (docs/architecture.md): no import cycles, small modules.

Every import counts, those inside functions too (they defer Ray and the Kubernetes client for
start-up time and must not hide a cycle). ``from pkg import mod`` is an import of ``pkg.mod``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ray_slurm

PACKAGE = Path(ray_slurm.__file__).parent
MAX_LINES = 420  # "no module over ~400 lines"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in modules:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
            deps |= subs
            if len(subs) < len(node.names):
                deps.add(node.module)
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names} & modules.keys()
    return deps


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    path: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                found.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert "ray_slurm.backends.slurm.backend" in graph["ray_slurm.backends.factory"]  # read
    assert _cycles(graph) == []


def test_every_module_is_small():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_no_backend_name_is_compared_outside_its_backend_and_the_config():
    """What differs between node types is a property of the type (``spec.burst``,
    ``spec.batch``) or of the backend, never a name compared elsewhere; the config names the
    backends once, in a table of their properties (``config.nodetypes.BACKENDS``)."""
    import re

    compare = re.compile(r"backend\s*[!=]=\s*[\"']|[\"'](slurm|kubernetes|login)[\"']\s*[!=]=")
    owners = ("ray_slurm.backends.slurm", "ray_slurm.backends.kube", "ray_slurm.backends.login")
    found = {
        name: [line.strip() for line in path.read_text().splitlines() if compare.search(line)]
        for name, path in _modules().items()
        if not name.startswith(owners)
    }
    assert {name: lines for name, lines in found.items() if lines} == {}


# Packages whose __init__ is their entry point: the package itself (the provider, loaded lazily),
# the config's one model (load), and `ray-slurm check`, which only the command line imports.
OWN_INITS = ("ray_slurm", "ray_slurm.config", "ray_slurm.cli.check")


def test_a_package_init_imports_nothing_of_the_package():
    """Importing any module runs its packages' ``__init__``: those stay empty (a docstring), so
    that the job script's helpers import only what they use, and no package import can close a
    cycle (the config reads SLURM's time format from ``backends.slurm.client``)."""
    inits = {name: path for name, path in _modules().items() if path.name == "__init__.py"}
    modules = _modules()
    heavy = {name: sorted(_imports(path, modules)) for name, path in inits.items()
             if name not in OWN_INITS and _imports(path, modules)}  # fmt: skip
    assert heavy == {}


def test_the_top_level_shows_the_layers():
    """A newcomer reads the architecture from ``ls``: packages by concern, no loose modules."""
    top = sorted(p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", ".")))
    assert top == ["autoscaler", "backends", "cli", "cluster", "config", "hooks", "host"]
