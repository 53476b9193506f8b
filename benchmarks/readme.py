"""Put the latest benchmark results into the documentation's benchmarks page.

    python -m benchmarks.readme

docs/benchmarks.md (and README.md, should it hold any) has ``<!-- bench:NAME -->`` ...
``<!-- /bench:NAME -->`` blocks; each is replaced by benchmarks/results/NAME.md (the table the
benchmark wrote), so the published figures have one source and one command (``make bench``)
regenerates them.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.common import RESULTS

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"
#: the files whose bench blocks are filled, in this order
PAGES = (PAGE, ROOT / "README.md")
BLOCK = re.compile(r"(<!-- bench:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S)


def fill(text: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """``text`` with every bench block replaced by its results file; also the names filled."""
    filled: list[str] = []

    def sub(m: re.Match) -> str:
        src = results / f"{m['name']}.md"
        if not src.exists():
            return m.group(0)
        filled.append(m["name"])
        return m.group(1) + "\n" + src.read_text().strip() + "\n\n" + m.group(4)

    return BLOCK.sub(sub, text), filled


def main(pages: tuple[Path, ...] = PAGES, results: Path = RESULTS) -> dict[str, list[str]]:
    """Fill the bench blocks of each existing page; returns the names filled per page."""
    done: dict[str, list[str]] = {}
    for page in pages:
        if not page.exists():
            continue
        text, filled = fill(page.read_text(), results)
        if filled:
            page.write_text(text)
        done[page.name] = filled
        print(f"{page.relative_to(ROOT) if page.is_relative_to(ROOT) else page}: filled "
              + (", ".join(filled) if filled else "nothing"))
    return done


if __name__ == "__main__":
    main()
