"""The package's shape: the core never imports the GUI, imports stay light, every import is a declared dependency."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_emsr"
GUI = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "pyqtgraph", "magicgui", "superqt", "vispy"}


def _optional(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside a ``try:`` that handles ImportError: optional, with a fallback."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = {getattr(h.type, "id", None) for h in node.handlers}
            tuples = [h.type.elts for h in node.handlers if isinstance(h.type, ast.Tuple)]
            caught |= {getattr(e, "id", None) for elts in tuples for e in elts}
            if caught & {"ImportError", "ModuleNotFoundError"}:
                out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports(path: Path, *, optional: bool = True) -> set[str]:
    """Top-level names of the absolute imports in a file (at any depth of the code); ``optional=False`` leaves out
    those guarded by ``except ImportError``."""
    names = set()
    tree = ast.parse(path.read_text(), str(path))
    skip = set() if optional else _optional(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _modules(inside_plugin: bool | None = None) -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    if inside_plugin is None:
        return files
    return [f for f in files if ("plugin" in f.relative_to(PACKAGE).parts[:1]) == inside_plugin]


def test_nothing_outside_plugin_imports_napari_qt_pyqtgraph_or_magicgui():
    offenders = {str(f.relative_to(PACKAGE)): sorted(_imports(f) & GUI) for f in _modules(inside_plugin=False)}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"GUI imports outside napari_emsr/plugin: {offenders}"
    assert any(_imports(f) & GUI for f in _modules(inside_plugin=True))  # the scan does see the plugin's


def test_core_imports_neither_torch_nor_qt_nor_napari():
    """Importing the package, the core modules and the plugin's reader/writer/sample data stays cheap."""
    code = (
        "import sys\n"
        "import napari_emsr, napari_emsr.io, napari_emsr.geometry, napari_emsr.methods, napari_emsr.train, "
        "napari_emsr.model, napari_emsr.reconstruct, napari_emsr.cli, napari_emsr.degrade, napari_emsr.sample\n"
        "import napari_emsr.plugin._reader, napari_emsr.plugin._writer, napari_emsr.plugin._sample_data\n"
        "heavy = sorted(m for m in ('torch', 'qtpy', 'PyQt6', 'PyQt5', 'napari', 'pyqtgraph') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"imported at start-up: {out.stdout.strip()}"


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    for req in project["dependencies"]:
        names.add(re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_every_imported_package_is_a_core_dependency():
    """A napari plugin-manager install gets no extras: whatever the package (panel included) imports must be a
    core dependency (or optional: imported under ``except ImportError`` with a fallback); napari itself is the host
    that loads the plugin."""
    dists = packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    declared = _declared()
    missing = {}
    for f in _modules():
        for name in _imports(f, optional=False) - stdlib - {"napari_emsr", "napari", "__future__"}:
            owners = {d.lower().replace("_", "-") for d in dists.get(name, [name])}
            if not owners & declared:
                missing.setdefault(name, []).append(str(f.relative_to(PACKAGE)))
    assert not missing, f"imported but not in [project] dependencies: {missing}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """The package's modules and the package modules each imports: absolute and relative imports, at any depth of
    the code (inside functions too); ``from a import b`` counts as importing ``a.b`` when that is a module."""
    files = {_module_name(f): f for f in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import cycles: strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


#: Known import cycles (none today): a new cycle fails the test.
KNOWN_CYCLES: list[set[str]] = []


def test_the_import_graph_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_plugin_modules():
    graph = _import_graph()
    assert "napari_emsr.plugin.controllers.training" in graph["napari_emsr.plugin.panel"]  # the scan sees them
    cycles = _cycles(graph)
    plugin = [sorted(c) for c in cycles if any(m.startswith("napari_emsr.plugin") for m in c)]
    assert not plugin, f"import cycles among the plugin's modules: {plugin}"
    new = [sorted(c) for c in cycles if not any(c <= known for known in KNOWN_CYCLES)]
    assert not new, f"new import cycles in the package: {new}"
    assert "napari_emsr.methods" in graph["napari_emsr.train"]  # the registry is below the trainer


#: Source files over 600 lines today, each with its length now: they may shrink, never grow; any other file stays
#: within 600 lines.
LONG_FILES: dict[str, int] = {}


def test_no_source_file_over_600_lines():
    too_long = {}
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > LONG_FILES.get(name, 600):
            too_long[name] = lines
    assert not too_long, f"over their limit (600 lines, or today's length for {sorted(LONG_FILES)}): {too_long}"
    plugin = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines())
              for p in (PACKAGE / "plugin").rglob("*.py")}
    assert max(plugin.values()) <= 600, plugin


def _method_homes() -> dict[str, str]:
    """Registered method name -> the folder under methods/ that defines it (its ``Method(name=...)`` call)."""
    homes = {}
    for path in (PACKAGE / "methods").rglob("*.py"):
        rel = path.relative_to(PACKAGE / "methods").parts
        if len(rel) < 2:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Method":
                for kw in node.keywords:
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                        homes[kw.value.value] = rel[0]
    return homes


def _string_constants(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _name_comparisons(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every ``==``, ``!=``, ``in`` or ``not in`` comparison against a string constant (or a
    tuple, list or set of them) equal to one of ``names``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            continue
        for side in (node.left, *node.comparators):
            found += [(node.lineno, v) for v in _string_constants(side) if v in names]
    return found


def test_the_name_scan_sees_comparisons():
    tree = ast.parse("a == 'paired'\nb in ('cubic', 'x')\n'isotropic' != c\nd = {'paired': 1}\ne < 'paired'\n")
    assert _name_comparisons(tree, {"paired", "cubic", "isotropic"}) == [(1, "paired"), (2, "cubic"), (3, "isotropic")]


def test_no_method_name_is_compared_outside_its_own_folder():
    """How a model is applied belongs to its method (the registry's Application): no front end, no core module,
    no other method asks "which method is this?" by comparing its name."""
    from napari_emsr.methods import method_names

    homes = _method_homes()
    names = set(method_names())
    assert names <= set(homes), f"methods whose folder the scan does not find: {sorted(names - set(homes))}"
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).parts
        folder = rel[1] if rel[0] == "methods" and len(rel) > 2 else None
        hits = [(line, name) for line, name in _name_comparisons(ast.parse(path.read_text(), str(path)), names)
                if homes.get(name) != folder]
        if hits:
            offenders["/".join(rel)] = hits
    assert not offenders, f"method names compared outside their folder (ask the registry instead): {offenders}"
