"""MkDocs hooks of the scorematch site (mkdocs.yml: ``hooks: [docs/hooks.py]``).

What they do, so that no page can drift from its source:

- ``cli.md``: ``<!-- cli-reference -->`` becomes the reference of every subcommand, generated from
  ``scorematch.cli.build_parser()`` (the same argparse parser ``scorematch --help`` prints).
- ``gallery.md``: ``<!-- gallery -->`` becomes one section per ``examples/*.py`` (its docstring) with
  the figures it wrote to ``gallery/NAME/*.png``; the PNGs are copied into the site. A missing
  folder is not an error: the section says how to make the figures.
- ``speed.md`` is generated from the "Speed" section of README.md (the one place the measured
  numbers live), with its relative links made safe for the site; the benchmark plots it shows
  (``benchmarks/results/*.png``) are copied into the site under ``bench/``.
- A fenced block titled ``README.md`` or ``docs/conventions.md`` (``title="..."``) must quote that
  file verbatim (up to whitespace): every line is checked, and a mismatch is a warning, i.e. an
  error under ``mkdocs build --strict``.
- ``api.md`` must hold a ``::: scorematch.NAME`` block for every public module of the package.
- ``conventions.md``: its table cells contain ``|`` (norms ||x||, conditionals p(x | y)); they are
  escaped so the table renders with its three columns.
"""

from __future__ import annotations

import argparse
import ast
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


# ---------------------------------------------------------------------------------------- events


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    # `mkdocs serve` rebuilds when a generated page's source changes
    for path in (ROOT / "README.md", ROOT / "examples", ROOT / "gallery", ROOT / "src" / "scorematch" / "cli.py"):
        if path.exists() and str(path) not in config.watch:
            config.watch.append(str(path))
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, "speed.md", content=speed_page()))
    for src, uri in gallery_images() + benchmark_images():
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(src)))
    return files


def benchmark_images() -> list[tuple[Path, str]]:
    """The benchmark plots (benchmarks/results/*.png) the README's Speed section shows."""
    return [(p, f"bench/{p.name}") for p in sorted((ROOT / "benchmarks" / "results").glob("*.png"))]


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    uri = page.file.src_uri
    if uri == "cli.md":
        markdown = replace_marker(markdown, "<!-- cli-reference -->", cli_reference(), uri)
    elif uri == "gallery.md":
        markdown = replace_marker(markdown, "<!-- gallery -->", gallery_sections(), uri)
    elif uri == "api.md":
        check_api_complete(markdown)
    elif uri == "conventions.md":
        markdown = escape_table_pipes(markdown)
    check_quotes(markdown, uri)
    return markdown


# ------------------------------------------------------------------------------------- helpers


def replace_marker(markdown: str, marker: str, content: str, uri: str) -> str:
    if marker not in markdown:
        log.warning("%s: marker %s is missing, nothing was generated", uri, marker)
        return markdown
    return markdown.replace(marker, content)


def check_quotes(markdown: str, uri: str) -> None:
    """Every line of a fence titled README.md / docs/conventions.md occurs in that file."""
    sources: dict[str, str] = {}
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
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
            title = t["title"]
            if title not in sources:
                sources[title] = " ".join(QUOTED[title].read_text(encoding="utf-8").split())
            for line in lines[i + 1:j]:
                norm = " ".join(line.split())
                if norm and norm not in sources[title]:
                    log.warning("%s: a block titled %s quotes a line that is not in %s: %r",
                                uri, title, title, line.strip())
        i = j + 1


def escape_table_pipes(markdown: str) -> str:
    """Escape the | inside the cells of pipe tables whose cells hold norms ||x|| or p(a | b).

    A row's separators are the outer pipes and " | " between cells; when a row has more " | "
    than the header has columns, the extra ones belong to the widest (second) cell.
    """
    out: list[str] = []
    columns = 0
    lines = markdown.splitlines()
    for k, line in enumerate(lines):
        s = line.strip()
        is_row = s.startswith("| ") and s.endswith(" |")
        if is_row and k + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", lines[k + 1].strip()):
            columns = lines[k + 1].strip().count("|") - 1  # header row
            out.append(line)
            continue
        if not is_row or not columns or re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", s):
            if not is_row:
                columns = 0
            out.append(line)
            continue
        cells = s[2:-2].split(" | ")
        if len(cells) > columns:
            extra = len(cells) - columns
            cells = [cells[0], " | ".join(cells[1:2 + extra])] + cells[2 + extra:]
        out.append("| " + " | ".join(c.replace("\\|", "|").replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + ("\n" if markdown.endswith("\n") else "")


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


# ----------------------------------------------------------------------------------- speed page


def _safe_link(m: re.Match) -> str:
    target, text = m["target"], m["text"]
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return m.group(0)
    path, _, anchor = target.partition("#")
    if m["bang"] and path.startswith("benchmarks/results/") and (ROOT / path).exists():
        return f"![{text}](bench/{Path(path).name})"
    if path.startswith("docs/") and (ROOT / path).exists() and not m["bang"]:
        return f"[{text}]({path[len('docs/'):]}{'#' + anchor if anchor else ''})"
    return f"{text} (`{target}`)" if not m["bang"] else f"(figure: `{target}`)"


def readme_section(title: str) -> tuple[int, list[str]] | None:
    """The lines under README.md's heading whose text contains ``title``, up to the next heading
    of the same or a higher level (fenced code blocks are skipped when looking for headings)."""
    readme = ROOT / "README.md"
    if not readme.exists():
        return None
    lines = readme.read_text(encoding="utf-8").splitlines()
    in_fence, start, level = False, None, 0
    body: list[str] = []
    for line in lines:
        if FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else re.match(r"^(#{1,6})\s+(.*)$", line)
        if start is None:
            if heading and re.search(rf"\b{re.escape(title)}\b", heading[2], flags=re.I):
                start, level = heading[2], len(heading[1])
            continue
        if heading and len(heading[1]) <= level:
            break
        body.append(line)
    return (level, body) if start is not None else None


def speed_page() -> str:
    head = ("# Speed\n\nWhat each objective and sampler costs, as measured by `make bench` "
            "(`python -m benchmarks`). This page is the \"Speed\" section of the project's README.md, "
            "copied into the site when the docs are built, so the numbers have one source.\n\n")
    found = readme_section("Speed")
    if found is None:
        log.info("README.md has no 'Speed' section yet; speed.md says so")
        return head + ('!!! note "No measurements yet"\n    README.md has no "Speed" section yet. '
                       "Run `make bench`: it writes its tables under `benchmarks/results/`.\n")
    level, body = found
    text = "\n".join(body).strip("\n")
    # README's subheadings move up to sit under this page's title
    shift = level - 1
    if shift > 0:
        text = re.sub(r"^(#{2,6})(\s)", lambda m: "#" * max(2, len(m[1]) - shift) + m[2], text, flags=re.M)
    text = LINK.sub(_safe_link, text)
    return head + text + "\n"
