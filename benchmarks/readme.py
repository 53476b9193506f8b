"""Put the latest peer comparison and scaling results into README.md.

    python -m benchmarks.readme

README.md holds ``<!-- bench:NAME -->`` ... ``<!-- /bench:NAME -->`` blocks; each is replaced by
benchmarks/results/NAME.md (the table the benchmark wrote), so the README's figures have one
source and one command (``make bench``) regenerates them.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.common import RESULTS

README = Path(__file__).resolve().parents[1] / "README.md"
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


def main() -> None:
    text, filled = fill(README.read_text())
    README.write_text(text)
    print("README.md: filled " + (", ".join(filled) if filled else "nothing (no results yet)"))


if __name__ == "__main__":
    main()
