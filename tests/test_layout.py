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
