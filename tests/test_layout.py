"""The package's layout: imports only point down the layers, no circles, the README's names exist."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "scorematch"

#: layer of each top-level module or subpackage (errors and checks at the bottom, the CLI on top)
LAYERS = {
    "errors": 1, "_version": 1, "_lazy": 1, "_catalogue": 1, "_checks": 1, "_random": 1, "_brownian": 1, "_compile": 1,
    "_rowode": 1,
    "_progress": 1,
    "files": 1,
    "distributions": 2, "models": 2, "noise": 2, "sde": 2, "autodiff": 2, "denoise": 2, "ema": 2,
    "objectives": 3, "samplers": 3, "likelihood": 3, "density": 3, "metrics": 3, "data": 3, "plotting": 3,
    "run": 4, "tabular": 4,
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


# ----------------------------------------------------------------------------- the catalogues

#: the modules that hold the catalogue entries (and the builders the objective entries name)
CATALOGUE_MODULES = {"samplers/catalogue.py", "objectives/catalogue.py", "objectives/builders.py"}
#: string constants equal to a method name that name something else, each with the reason
OTHER_MEANINGS = {
    ("sde.py", "euler"): "torchdiffeq's fixed-step solver of the ODE_METHODS list, not the sampler",
    ("samplers/dpmpp_sde.py", "heun"): "a solver_type of DPM-Solver++(2M) SDE (its second-order correction, as "
                                       "k-diffusion names it), not the sampler",
}


def _method_names() -> set[str]:
    from scorematch.objectives import catalogue as objectives
    from scorematch.samplers import catalogue as samplers

    return {*samplers.names(), *objectives.names()}


def _setting_names() -> set[str]:
    import dataclasses

    from scorematch.run.folder.config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _compared(tree: ast.AST) -> set[int]:
    """Constants that are operands of a comparison (``x == "sde"``, ``x in ("sde", ...)``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                for sub in ast.walk(operand):
                    if isinstance(sub, ast.Constant):
                        out.add(id(sub))
    return out


def _exported(tree: ast.AST) -> set[int]:
    """The constants of ``__all__`` lists (Python names of exported functions)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            out |= {id(sub) for sub in ast.walk(node.value) if isinstance(sub, ast.Constant)}
    return out


def test_no_method_name_outside_its_catalogue_entry():
    """A sampler or objective is named only by its catalogue entry: a string constant equal to a
    method name anywhere else in src/ fails. Allowed: docstrings (they explain, they decide
    nothing), ``__all__`` lists (the Python names of exported functions), a method name that is
    also the name of a setting (``sde``: the TrainConfig field and run.json key naming the SDE)
    where it is not compared with anything, and the few strings of OTHER_MEANINGS."""
    methods, settings = _method_names(), _setting_names()
    found = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG).as_posix()
        if rel in CATALOGUE_MODULES:
            continue
        tree = ast.parse(f.read_text())
        skip, compared = _docstrings(tree) | _exported(tree), _compared(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and node.value in methods) or id(node) in skip:
                continue
            if (rel, node.value) in OTHER_MEANINGS or (node.value in settings and id(node) not in compared):
                continue
            found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, "method names outside the catalogues (read them from the catalogue entry):\n" + "\n".join(found)


def test_the_name_rule_sees_a_name():
    tree = ast.parse('def f(objective):\n    """About sde."""\n    return objective == "sde" or {"sde": 1}\n')
    compared = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) in _compared(tree)]
    assert compared == ["sde"] and len(_docstrings(tree)) == 1


def _readme_block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- catalogue:{name}[^>]*-->\n\n(.*?)\n\n", text, flags=re.S)
    assert m, f"README.md has no <!-- catalogue:{name} --> heading followed by its table"
    return m.group(1)


def test_readme_tables_are_the_catalogues():
    from scorematch.objectives import catalogue as objectives
    from scorematch.samplers import catalogue as samplers

    for name, module in (("objectives", objectives), ("samplers", samplers)):
        assert _readme_block(name) == module.table(), (
            f"README.md's {name} table differs from the catalogue; replace it with "
            f"scorematch.{name}.catalogue.table():\n{module.table()}")
        rows = [r for r in _readme_block(name).splitlines()[2:]]
        assert [re.match(r"\| `(\w+)` \|", r).group(1) for r in rows] == module.names()


def test_every_sampler_entry_agrees_with_its_function():
    """Every option of an entry is a keyword of its function with the same default (where the
    function has one and the entry does not say "from the run"), and the family's calling
    convention fn(score_fn, x, schedule, *, generator, callback, progress, return_trajectory)."""
    import inspect

    from scorematch.samplers import catalogue

    for e in catalogue.entries():
        params = inspect.signature(e.resolved()).parameters
        first = [p.kind for p in list(params.values())[:3]]
        assert first == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 3, e.name  # (score_fn, x, schedule)
        for common in ("generator", "callback", "progress", "return_trajectory"):
            assert params[common].kind is inspect.Parameter.KEYWORD_ONLY, (e.name, common)
        for o in e.options:
            if o.name == e.schedule_option:
                continue  # the run layer turns it into the schedule (noise levels; the step size)
            assert o.name in params and params[o.name].kind is inspect.Parameter.KEYWORD_ONLY, (e.name, o.name)
            default = params[o.name].default
            if default is not inspect.Parameter.empty and o.default is not None:
                assert default == o.default, (e.name, o.name, default, o.default)


def test_every_kind_has_one_default_sampler_that_fits_it():
    from scorematch.samplers import catalogue

    for kind in catalogue.KINDS:
        name, settings = catalogue.default_for(kind)
        e = catalogue.entry(name)
        assert kind in e.kinds and set(settings) <= set(e.option_names()), kind


def test_a_toy_sampler_and_a_toy_objective_reach_the_command_line(tmp_path, capsys):
    """Adding a method is one function plus one entry: registered here, in the test, both are
    reached from ``scorematch train --objective`` and ``scorematch sample --sampler`` (with its
    own flag) without touching another file."""
    import numpy as np
    import torch
    from cli_helpers import run_cli

    from scorematch.objectives import catalogue as objectives
    from scorematch.samplers import catalogue as samplers

    calls = {"loss": 0, "sampler": 0}

    def toy_loss(model, x, sigma):
        """Half the DSM loss at the run's sigma (a scalar, differentiable in the model)."""
        calls["loss"] += 1
        z = torch.randn_like(x)
        return 0.25 * ((model.score(x + sigma * z) + z / sigma) ** 2).sum(1).mean()

    def toy_sampler(score_fn, x, step_size, *, n_steps=3, shrink=0.5, generator=None, callback=None,
                    progress=False, return_trajectory=False):
        """Gradient ascent x + eta s(x), then x shrunk towards 0 by ``shrink``."""
        calls["sampler"] += 1
        for i in range(n_steps):
            x = x + step_size * score_fn.score(x)
            if callback is not None:
                callback({"i": i, "nfe": i + 1, "x": x})
        x = shrink * x
        return (x, x[None]) if return_trajectory else x

    objectives.register(objectives.Objective(
        name="toy_objective", function=toy_loss, summary="1/4 E||s(x + sigma z) + z / sigma||^2", reads=("sigma",),
        schedule=lambda settings, x: {"sigma": settings.get("sigma") or 0.5}, schedule_keys=("sigma",)))
    samplers.register(samplers.Sampler(
        name="toy_sampler", function=toy_sampler, family=samplers.UNCONDITIONAL, summary="x + eta s(x), shrunk",
        options=(samplers.steps_option(3, "steps"), samplers.Option("step_size", None, float, "eta"),
                 samplers.Option("shrink", 0.5, float, "the factor the result is multiplied by")),
        kinds=(samplers.KIND_SCORE,), conditioning="none", nfe=lambda n, o: n, nfe_text="N", default_steps=3))
    try:
        run = tmp_path / "run"
        np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32))
        rc, _, err = run_cli(["train", "--data", tmp_path / "x.npy", "--objective", "toy_objective", "--sigma", 0.3,
                              "--steps", 5, "--batch-size", 32, "--out", run, "--no-progress"], capsys)
        assert rc == 0, err
        assert calls["loss"] == 5
        assert json.loads((run / "run.json").read_text())["schedule"] == {"sigma": 0.3}
        out = tmp_path / "s.npz"
        rc, _, err = run_cli(["sample", run, "--sampler", "toy_sampler", "--shrink", 0.0, "--n", 7, "--out", out,
                              "--no-progress"], capsys)
        assert rc == 0, err
        x = np.load(out)["samples"]
        assert calls["sampler"] == 1 and x.shape == (7, 2)
        # shrink 0: every sample is the origin of the model's space, mapped back to data space (the data mean)
        assert np.allclose(x, x[0], atol=1e-6) and np.abs(x[0]).max() < 0.3
        rc, _, err = run_cli(["sample", run, "--sampler", "toy_sampler", "--eta", 0.1, "--out", tmp_path / "t.npz"],
                                  capsys)
        assert rc == 2 and "does not apply to sampler 'toy_sampler'" in err and "shrink" in err
    finally:
        objectives.unregister("toy_objective")
        samplers.unregister("toy_sampler")
