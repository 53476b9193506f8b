"""The package's layout: imports only point down the layers, no circles, the README's names exist."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "scorematch"

#: layer of each top-level module or subpackage (errors and checks at the bottom, the CLI on top)
LAYERS = {
    "errors": 1, "_version": 1, "_checks": 1, "_random": 1, "_brownian": 1, "_compile": 1, "_progress": 1, "files": 1,
    "distributions": 2, "models": 2, "noise": 2, "sde": 2, "autodiff": 2, "denoise": 2,
    "objectives": 3, "samplers": 3, "likelihood": 3, "density": 3, "metrics": 3, "data": 3, "plotting": 3,
    "run": 4,
    "cli": 5, "__main__": 5,
}


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        mods[".".join(parts)] = f
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every scorematch module each module imports (module level and inside functions), resolved to
    the longest known module name; imports of the root package ``scorematch`` itself are left out
    (it only re-exports the error types and imports ``train``/``load`` on first use)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [base + "." + a.name for a in node.names] or [base]
            for t in targets:
                while t and t not in mods:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t != m and t != "scorematch":
                    graph[m].add(t)
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 0


def test_every_module_has_a_layer():
    missing = sorted({m.split(".")[1] for m in _modules() if "." in m} - set(LAYERS))
    assert not missing, f"modules without a layer in LAYERS: {missing}"


def test_imports_only_point_down_the_layers():
    graph = _imports(_modules())
    upward = [(a, b) for a, deps in graph.items() for b in deps if a != "scorematch" and _layer(b) > _layer(a)]
    assert not upward, f"imports that point up a layer: {upward}"


def test_no_import_circle():
    graph = _imports(_modules())
    on_circle = []
    for start in graph:
        stack, seen = list(graph[start]), set()
        while stack:
            node = stack.pop()
            if node == start:
                on_circle.append(start)
                break
            if node not in seen:
                seen.add(node)
                stack.extend(graph.get(node, ()))
    assert not on_circle, f"modules on an import circle: {sorted(on_circle)}"


def test_run_layer_modules_import_only_those_listed_before_them():
    """scorematch/run/__init__.py lists its modules bottom to top (``part.module``); each imports
    only earlier ones, and every module of run/ is listed."""
    doc = importlib.import_module("scorematch.run").__doc__
    order = re.findall(r"^    (\w+\.\w+)\s", doc, flags=re.M)
    on_disk = {".".join(p.relative_to(PKG / "run").with_suffix("").parts) for p in (PKG / "run").rglob("*.py")
               if p.stem != "__init__"}
    assert set(order) == on_disk
    graph = _imports(_modules())
    for i, name in enumerate(order):
        deps = {".".join(d.split(".")[2:4]) for d in graph[f"scorematch.run.{name}"]
                if d.startswith("scorematch.run.") and d.count(".") >= 3}
        later = deps - set(order[:i])
        assert not later, f"scorematch.run.{name} imports {sorted(later)}, listed after it"


def test_run_parts_are_folders():
    """run/ shows its parts: no module directly in run/, each part a folder with a docstring."""
    loose = [p.name for p in (PKG / "run").glob("*.py") if p.stem != "__init__"]
    assert not loose, f"modules directly in run/: {loose}"
    for part in (p for p in (PKG / "run").iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert importlib.import_module(f"scorematch.run.{part.name}").__doc__, part.name


def test_nothing_imports_the_package_root():
    """The version comes from the leaf module scorematch._version: no module imports names from the
    package root (which imports the run layer lazily)."""
    mods, bad = _modules(), []
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "scorematch" and not node.level:
                bad += [f"{m}: {a.name}" for a in node.names if f"scorematch.{a.name}" not in mods]
    assert not bad, f"modules importing from the package root: {sorted(set(bad))}"


def test_circle_detector_sees_a_circle(tmp_path, monkeypatch):
    """The walker finds a planted two-module circle, so a green test above means something."""
    pkg = tmp_path / "src" / "scorematch"
    (pkg / "run").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "run" / "__init__.py").write_text("")
    (pkg / "run" / "a.py").write_text("from scorematch.run import b\n")
    (pkg / "run" / "b.py").write_text("def f():\n    from scorematch.run.a import x\n")
    monkeypatch.setitem(globals(), "PKG", pkg)
    graph = _imports(_modules())
    assert graph["scorematch.run.a"] == {"scorematch.run.b"} and graph["scorematch.run.b"] == {"scorematch.run.a"}


def _module_size(f: Path) -> int:
    return len(f.read_text().splitlines())


def test_no_module_over_about_500_lines():
    big = {m: _module_size(f) for m, f in _modules().items() if _module_size(f) > 550}
    assert not big, f"modules over ~500 lines: {big}"


def _readme_module_table() -> list[tuple[str, list[str]]]:
    """(module, [names]) of each row of the README's module table: `| `scorematch.x` | `a`, `b` ... |`."""
    rows = []
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^\| `(scorematch[\w.]*)` \| (.*?) \|", line)
        if m:
            rows.append((m.group(1), re.findall(r"`([A-Za-z_][\w]*)`", m.group(2))))
    return rows


def test_readme_module_table_is_there():
    rows = _readme_module_table()
    assert len(rows) >= 10 and sum(len(names) for _, names in rows) >= 40


@pytest.mark.parametrize("module,names", _readme_module_table(), ids=lambda v: v if isinstance(v, str) else "")
def test_readme_module_table_names_are_importable(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"README lists {missing} under {module}, which has no such names"
