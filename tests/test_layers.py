"""The import graph of `owl_core` and `ui` (built with `ast`, imports inside functions and under
``TYPE_CHECKING`` included): no circles, `owl_core` never imports `ui` or gradio, and no layer
imports a higher one.

Layers, lowest first: the foundation (``owl_core/*.py``) < ``engine/`` < ``project/`` <
``batch/`` < ``cli/`` and ``rest/`` (side by side: neither imports the other) < ``ui``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("owl_core", "ui")
#: Layer -> rank; a module may import its own layer and lower ranks only. Equal ranks of
#: different layers (cli, rest) may not import each other.
RANKS = {"foundation": 0, "engine": 1, "project": 2, "batch": 3, "cli": 4, "rest": 4, "ui": 5}
#: What `owl_core` never imports (the engine runs without the studio).
FORBIDDEN_IN_CORE = ("ui", "gradio", "app")

Graph = dict[str, set[str]]


# ------------------------------------------------------------------------------ the graph
def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lazy_exports(init: Path) -> dict[str, str]:
    """A package's ``_EXPORTS = {name: module}`` (names its ``__getattr__`` imports on first
    use), so ``from owl_core import OwlPredictor`` counts as importing the predictor module."""
    for node in ast.parse(init.read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "_EXPORTS"):
            return ast.literal_eval(node.value)
    return {}


def build_graph(root: Path, packages: Iterable[str] = PACKAGES) -> tuple[Graph, Graph]:
    """(internal, external): each module's imports of modules under `packages`, and of
    everything else (top-level names: ``gradio``, ``torch``, ...)."""
    files = {_module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    lazy: dict[str, dict[str, str]] = {}
    for pkg in packages:
        exports = _lazy_exports(root / pkg / "__init__.py")
        # owl_core's values are relative ("engine.scoring"), ui's absolute ("ui.layout")
        lazy[pkg] = {k: v if v.split(".")[0] in packages else f"{pkg}.{v}"
                     for k, v in exports.items()}

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            if ".".join(parts) in files:
                return ".".join(parts)
            parts.pop()
        return None

    internal: Graph = {}
    external: Graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    if full in files:
                        targets.add(full)
                    elif alias.name in lazy.get(source, {}):
                        targets.add(lazy[source][alias.name])
                    else:
                        targets.add(source)
        internal[module] = {r for t in targets if (r := resolve(t)) and r != module}
        external[module] = {t.split(".")[0] for t in targets if resolve(t) is None}
    return internal, external


# ------------------------------------------------------------------------------ the rules
def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every import circle, as the modules of one strongly connected component (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "ui":
        return "ui"
    if len(parts) == 1:  # the owl_core package: lazy names only, resolved to their modules
        return "foundation"
    if parts[1] == "__main__":  # ``python -m owl_core``: the CLI
        return "cli"
    if len(parts) == 2 and parts[1] not in RANKS:
        return "foundation"
    return parts[1]


def layer_violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Each import of a higher layer, or of a side-by-side layer (cli <-> rest)."""
    out = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module)
        for target in sorted(targets):
            theirs = layer_of(target)
            if RANKS[theirs] > RANKS[mine] or (RANKS[theirs] == RANKS[mine] and theirs != mine):
                out.append(f"{module} ({mine}) imports {target} ({theirs})")
    return out


def core_violations(internal: Graph, external: Graph) -> list[str]:
    return sorted(f"{module} imports {target}"
                  for module in internal if module.split(".")[0] == "owl_core"
                  for target in {*internal[module], *external[module]}
                  if target.split(".")[0] in FORBIDDEN_IN_CORE)


@pytest.fixture(scope="module")
def graphs() -> tuple[Graph, Graph]:
    return build_graph(ROOT)


# ------------------------------------------------------------------------------ the code base
def test_the_graph_sees_imports_inside_functions_and_lazy_names(graphs):
    internal, _ = graphs
    assert "owl_core.engine.scoring" in internal["owl_core.engine.predictor"]
    # `--ray` imports Ray's phase inside a function
    assert "owl_core.batch.ray_embed" in internal["owl_core.batch.job"]
    # `from ui import build_demo` (a lazy name of the ui package) is an import of ui.layout
    assert "ui.layout" in internal["ui.main"]


def test_there_is_no_import_circle(graphs):
    internal, _ = graphs
    assert find_cycles(internal) == []


def test_owl_core_never_imports_the_studio_or_gradio(graphs):
    assert core_violations(*graphs) == []


def test_no_layer_imports_a_higher_one(graphs):
    internal, _ = graphs
    assert layer_violations(internal) == []


def test_every_owl_core_module_has_a_known_layer(graphs):
    internal, _ = graphs
    assert {layer_of(m) for m in internal} <= set(RANKS)


# ------------------------------------------------------------------------------ the checker
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_circle_through_an_import_inside_a_function_is_found(tmp_path):
    root = _package(tmp_path, {
        "owl_core/__init__.py": "",
        "owl_core/engine/__init__.py": "",
        "owl_core/engine/a.py": "from owl_core.engine import b\n",
        "owl_core/engine/b.py": "def f():\n    from owl_core.engine.a import x\n",
        "ui/__init__.py": "",
    })
    internal, _ = build_graph(root)
    assert find_cycles(internal) == [["owl_core.engine.a", "owl_core.engine.b"]]


def test_an_engine_module_importing_the_project_layer_is_a_violation(tmp_path):
    root = _package(tmp_path, {
        "owl_core/__init__.py": "",
        "owl_core/engine/__init__.py": "",
        "owl_core/engine/parse.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from owl_core.project.model import Project\n"),
        "owl_core/project/__init__.py": "",
        "owl_core/project/model.py": "from owl_core.engine import parse\n",
        "owl_core/cli/__init__.py": "",
        "owl_core/cli/main.py": "from owl_core.rest import app\n",
        "owl_core/rest/__init__.py": "",
        "owl_core/rest/app.py": "from ..project.model import Project\n",
        "ui/__init__.py": "",
    })
    internal, _ = build_graph(root)
    assert layer_violations(internal) == [
        "owl_core.cli.main (cli) imports owl_core.rest.app (rest)",
        "owl_core.engine.parse (engine) imports owl_core.project.model (project)",
    ]


def test_owl_core_importing_gradio_or_ui_is_a_violation(tmp_path):
    root = _package(tmp_path, {
        "owl_core/__init__.py": "",
        "owl_core/geometry.py": "import gradio as gr\n",
        "owl_core/images.py": "def f():\n    from ui.layout import build_demo\n",
        "ui/__init__.py": "",
        "ui/layout.py": "from owl_core import geometry\n",
    })
    assert core_violations(*build_graph(root)) == [
        "owl_core.geometry imports gradio", "owl_core.images imports ui.layout"]


@pytest.mark.parametrize(("module", "layer"), [
    ("owl_core", "foundation"),            # the package: lazy names only
    ("owl_core.errors", "foundation"),
    ("owl_core.__main__", "cli"),          # python -m owl_core
    ("owl_core.engine", "engine"),         # a layer's own __init__
    ("owl_core.engine.scoring", "engine"),
    ("owl_core.rest.app", "rest"),
    ("ui.handlers.common", "ui"),
])
def test_layer_of(module, layer):
    assert layer_of(module) == layer
