"""MkDocs hooks of the scorematch site (mkdocs.yml: ``hooks: [docs/hooks.py]``).

What they do, so that no page can drift from its source:

- ``cli.md``: ``<!-- cli-reference -->`` becomes the reference of every subcommand, generated from
  ``scorematch.cli.build_parser()`` (the same argparse parser ``scorematch --help`` prints).
- ``gallery.md``: ``<!-- gallery -->`` becomes one section per ``examples/*.py`` (its docstring) with
  the figures it wrote to ``gallery/NAME/*.png``; the PNGs are copied into the site. A missing
  folder is not an error: the section says how to make the figures.
- ``benchmarks.md`` holds the measured tables (``python -m benchmarks.readme`` refills them from
  ``benchmarks/results/``); the plots it links from ``benchmarks/results/*.png`` are copied into
  the site under ``bench/``. Any other link from a page to a file of the repository outside
  ``docs/`` becomes the file's path in code type.
- Equations: ``pymdownx.arithmatex`` (generic mode) marks ``$...$`` and ``$$...$$``; each is
  converted here to MathML with latex2mathml when the page is built, so browsers render it
  natively: no JavaScript, nothing fetched when a page is viewed. An equation that does not
  convert, or uses a command latex2mathml does not know, is a warning (an error under
  ``mkdocs build --strict``).
- Quotes: a fenced block titled ``README.md`` or ``docs/conventions.md`` (``title="..."``), or the
  lines between ``<!-- quote: docs/conventions.md -->`` and ``<!-- /quote -->``, must quote that
  file verbatim (up to whitespace): every line is checked, and a mismatch is a warning.
- ``api.md`` must hold a ``::: scorematch.NAME`` block for every public module of the package.
"""

from __future__ import annotations

import argparse
import ast
import html
import os
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import get_plugin_logger
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = get_plugin_logger("scorematch-docs")

ROOT = Path(__file__).resolve().parents[1]
QUOTED = {"README.md": ROOT / "README.md", "docs/conventions.md": ROOT / "docs" / "conventions.md"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
TITLE = re.compile(r'title="(?P<title>[^"]*)"')
LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
QUOTE_START = re.compile(r"^\s*<!--\s*quote:\s*(?P<title>\S+)\s*-->\s*$")
QUOTE_END = re.compile(r"^\s*<!--\s*/quote\s*-->\s*$")
MATH = re.compile(r'<(?P<tag>span|div) class="arithmatex">(?P<tex>.*?)</(?P=tag)>', re.S)
DELIMITERS = ((r"\(", r"\)"), (r"\[", r"\]"), ("$$", "$$"), ("$", "$"))
BENCH_RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------------------------------- events


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    # `mkdocs serve` rebuilds when a generated page's source changes
    for path in (ROOT / "README.md", ROOT / "examples", ROOT / "gallery", BENCH_RESULTS,
                 ROOT / "src" / "scorematch" / "cli.py"):
        if path.exists() and str(path) not in config.watch:
            config.watch.append(str(path))
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for src, uri in gallery_images() + benchmark_images():
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(src)))
    return files


def benchmark_images() -> list[tuple[Path, str]]:
    """The benchmark plots (benchmarks/results/*.png) that benchmarks.md shows, as site files bench/NAME."""
    return [(p, f"bench/{p.name}") for p in sorted(BENCH_RESULTS.glob("*.png"))]


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    uri = page.file.src_uri
    if uri == "cli.md":
        markdown = replace_marker(markdown, "<!-- cli-reference -->", cli_reference(), uri)
    elif uri == "gallery.md":
        markdown = replace_marker(markdown, "<!-- gallery -->", gallery_sections(), uri)
    elif uri == "api.md":
        check_api_complete(markdown)
    check_quotes(markdown, uri)
    return links_out_of_docs(markdown, uri)


def on_page_content(html_text: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return render_math(html_text, page.file.src_uri)


# ------------------------------------------------------------------------------------- helpers


def replace_marker(markdown: str, marker: str, content: str, uri: str) -> str:
    if marker not in markdown:
        log.warning("%s: marker %s is missing, nothing was generated", uri, marker)
        return markdown
    return markdown.replace(marker, content)


def check_quotes(markdown: str, uri: str) -> None:
    """Every line of a fence titled README.md / docs/conventions.md, and of a ``<!-- quote: FILE -->``
    block, occurs in that file (up to whitespace)."""
    sources: dict[str, str] = {}

    def check(title: str, quoted: list[str]) -> None:
        if title not in QUOTED:
            log.warning("%s: quotes %s, which is not one of %s", uri, title, sorted(QUOTED))
            return
        if title not in sources:
            sources[title] = " ".join(QUOTED[title].read_text(encoding="utf-8").split())
        for line in quoted:
            norm = " ".join(line.split())
            if norm and norm not in ("$$", "$") and norm not in sources[title]:
                log.warning("%s: a block quoting %s holds a line that is not in %s: %r",
                            uri, title, title, line.strip())

    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        start = QUOTE_START.match(lines[i])
        if start:
            j = i + 1
            while j < len(lines) and not QUOTE_END.match(lines[j]):
                j += 1
            if j == len(lines):
                log.warning("%s: <!-- quote: %s --> has no <!-- /quote -->", uri, start["title"])
            check(start["title"], lines[i + 1:j])
            i = j + 1
            continue
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], m["indent"]
        t = TITLE.search(m["info"])
        j = i + 1
        while j < len(lines) and not (lines[j].startswith(indent + fence) and not lines[j].strip(" `~")):
            j += 1
        if t and t["title"] in QUOTED:
            check(t["title"], lines[i + 1:j])
        i = j + 1


# ------------------------------------------------------------------------------------- equations


def render_math(html_text: str, uri: str) -> str:
    """Replace every equation arithmatex marked (``<span|div class="arithmatex">``) by its MathML."""
    if "arithmatex" not in html_text:
        return html_text
    try:
        from latex2mathml.converter import convert
    except ImportError:
        log.warning("%s: latex2mathml is not installed (pip install -e '.[docs]'); equations stay as TeX", uri)
        return html_text

    def sub(m: re.Match) -> str:
        tex = html.unescape(m["tex"]).strip()
        for left, right in DELIMITERS:
            if tex.startswith(left) and tex.endswith(right) and len(tex) >= len(left) + len(right):
                tex = tex[len(left):len(tex) - len(right)].strip()
                break
        try:
            mathml = convert(tex, display="block" if m["tag"] == "div" else "inline")
        except Exception as err:  # noqa: BLE001 - latex2mathml raises many types; each is reported
            log.warning("%s: equation %r does not convert to MathML (%s: %s)", uri, tex, type(err).__name__, err)
            return m.group(0)
        unknown = sorted(set(re.findall(r">(\\[A-Za-z]+)<", mathml)))
        if unknown:
            log.warning("%s: equation %r uses %s, which latex2mathml does not know", uri, tex, ", ".join(unknown))
        return f'<{m["tag"]} class="arithmatex">{mathml}</{m["tag"]}>'

    return MATH.sub(sub, html_text)


# -------------------------------------------------------------------------------- outside links


def links_out_of_docs(markdown: str, uri: str) -> str:
    """Links from a page to files of the repository outside docs/ (right on GitHub, unknown to the site):
    a benchmark plot becomes its copy under bench/, anything else the file's path in code type."""
    here = (ROOT / "docs" / uri).parent

    def sub(m: re.Match) -> str:
        target = m["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return m.group(0)
        path = (here / target.partition("#")[0]).resolve()
        if path.is_relative_to(ROOT / "docs") or not path.is_relative_to(ROOT):
            return m.group(0)
        if m["bang"] and path.parent == BENCH_RESULTS and path.exists():
            depth = len(Path(uri).parts) - 1
            return f"![{m['text']}]({'../' * depth}bench/{path.name})"
        shown = path.relative_to(ROOT).as_posix()
        return f"{m['text']} (`{shown}`)" if not m["bang"] else f"(figure: `{shown}`)"

    return LINK.sub(sub, markdown)


# ------------------------------------------------------------------------------------- API page


def public_modules() -> list[str]:
    """scorematch's top-level public modules and packages (no leading underscore, no __main__)."""
    pkg = ROOT / "src" / "scorematch"
    names = []
    for p in sorted(pkg.iterdir()):
        name = p.stem if p.suffix == ".py" else p.name
        if name.startswith("_"):
            continue
        if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists()):
            names.append(f"scorematch.{name}")
    return names


def check_api_complete(markdown: str) -> None:
    documented = set(re.findall(r"^:::\s+(scorematch[\w.]*)", markdown, flags=re.M))
    for name in public_modules():
        if name not in documented:
            log.warning("api.md: public module %s has no '::: %s' block", name, name)


# ------------------------------------------------------------------------------------- CLI page


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:
        return (action.metavar or action.dest).upper()
    flag = ", ".join(action.option_strings)
    if action.nargs == 0:
        return flag
    return f"{flag} {action.metavar or action.dest.upper()}"


def _cell(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text.replace("|", "\\|")


def _options_tables(parser: argparse.ArgumentParser) -> str:
    parts = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
                   and a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = group.title or "options"
        rows = [f"| `{_flag(a)}` | {_cell(a.help % vars(a) if a.help and '%(' in a.help else a.help)} |"
                for a in actions]
        parts.append(f"**{title[0].upper() + title[1:]}**\n\n| option | meaning |\n| --- | --- |\n"
                     + "\n".join(rows) + "\n")
    return "\n".join(parts)


def _formatted(parser: argparse.ArgumentParser, what: str) -> str:
    """parser.format_help() / format_usage() wrapped at 80 columns, whatever the terminal."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "82"  # argparse wraps at COLUMNS - 2: 80 columns fit the page
    try:
        return parser.format_help() if what == "help" else parser.format_usage()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _help_text(parser: argparse.ArgumentParser) -> str:
    return _formatted(parser, "help")


def _usage_text(parser: argparse.ArgumentParser) -> str:
    return _formatted(parser, "usage")


def _indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + line if line.strip() else "" for line in text.splitlines())


def cli_reference() -> str:
    try:
        from scorematch.cli import build_parser
    except Exception as err:  # noqa: BLE001 - any import failure is reported, the build goes on
        log.warning("cli.md: cannot import scorematch.cli (%s: %s); is scorematch installed?",
                    type(err).__name__, err)
        return "*The CLI reference could not be generated.*"
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {a.dest: a.help for a in sub._choices_actions}
    out = [
        "## `scorematch`\n",
        "```text\n" + _help_text(parser).rstrip() + "\n```\n",
    ]
    for name, p in sub.choices.items():
        out.append(f"## `scorematch {name}`\n")
        if summaries.get(name):
            out.append(f"*{summaries[name][0].upper() + summaries[name][1:]}.*\n")
        if p.description:
            out.append(p.description + "\n")
        out.append("```text\n" + _usage_text(p).rstrip() + "\n```\n")
        out.append(_options_tables(p))
        out.append(f'??? note "Output of `scorematch {name} --help`"\n\n'
                   + _indent("```text\n" + _help_text(p).rstrip() + "\n```") + "\n")
    return "\n".join(out)


# --------------------------------------------------------------------------------- gallery page


def example_names() -> list[str]:
    folder = ROOT / "examples"
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def figures_of(name: str) -> list[tuple[Path, str]]:
    """(file, URI in the site) of the figures of one example: gallery/NAME/*, else docs/figures/NAME*."""
    folder = ROOT / "gallery" / name
    found = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if found:
        return [(p, f"gallery/{name}/{p.name}") for p in found]
    docs_figures = ROOT / "docs" / "figures"
    if docs_figures.is_dir():
        return [(p, f"figures/{p.name}") for p in sorted(docs_figures.glob(f"{name}*"))
                if p.suffix.lower() in IMAGE_SUFFIXES]
    return []


def gallery_images() -> list[tuple[Path, str]]:
    return [(p, uri) for name in example_names() for p, uri in figures_of(name) if uri.startswith("gallery/")]


def gallery_sections() -> str:
    names = example_names()
    if not names:
        return "*No examples yet.*\n"
    out = []
    for name in names:
        path = ROOT / "examples" / f"{name}.py"
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except SyntaxError as err:
            log.warning("gallery.md: examples/%s.py does not parse: %s", name, err)
            doc = ""
        summary, _, rest = doc.partition("\n")
        out.append(f"## {name}\n")
        out.append(f"**{summary.strip() or name}**\n")
        if rest.strip():
            out.append(plain_text(rest.strip()) + "\n")
        if f"examples/{name}.py" not in doc:
            out.append(f"```bash\npython examples/{name}.py\n```\n")
        figures = figures_of(name)
        if figures:
            for _, uri in figures:
                stem = Path(uri).stem.replace("_", " ")
                out.append(f'<figure markdown="span">\n  ![{name}: {stem}]({uri})\n'
                           f"  <figcaption>{Path(uri).name}</figcaption>\n</figure>\n")
        else:
            out.append(f'!!! note "No figure yet"\n    Run `python examples/{name}.py`: it writes its figures '
                       f"to `gallery/{name}/`, which the next docs build picks up.\n")
    return "\n".join(out)


def plain_text(doc: str) -> str:
    """A plain-text docstring as Markdown: ``*`` outside code spans and code blocks is literal
    (s*(x), ||s - s*||^2 must not turn into emphasis); everything else is left to Markdown."""
    out = []
    for line in doc.splitlines():
        if line.startswith(("    ", "\t")):
            out.append(line)
            continue
        parts = re.split(r"(`+[^`]*`+)", line)
        out.append("".join(p if p.startswith("`") else p.replace("*", "\\*") for p in parts))
    return "\n".join(out)
