"""The benchmark harness (benchmarks/): a smoke run without the peers, and its arithmetic.

Timings are not asserted (they belong to the benchmarks, not to unit tests); what is asserted is
what would be wrong if the harness were wrong: the fitted exponents, the peak-memory reading, the
choice of the fastest correct peer, the README blocks, and that an absent peer is an empty cell.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import sys

import pytest
import torch

from benchmarks import compare, peers, readme, scaling


def test_slope_recovers_power_laws() -> None:
    xs = [2, 8, 32, 128, 3072]
    for k in (0.0, 1.0, 1.5, 2.0):
        assert scaling.slope(xs, [3.0 * x**k for x in xs]) == pytest.approx(k, abs=1e-12)
    assert scaling.upper_half([2, 8, 32, 128, 512, 784, 3072]) == [128, 512, 784, 3072]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_peak_memory_sees_a_64_mib_tensor() -> None:
    mem = scaling.PeakMemory(torch.device("cpu"))
    assert mem.available
    mem.start()
    t = torch.ones(16 * 2**20)  # 64 MiB, every page touched
    del t
    big = mem.peak()
    mem.start()
    small = mem.peak()
    assert 60 * 2**20 <= big <= 80 * 2**20
    assert small < 8 * 2**20


def test_summary_takes_the_fastest_correct_peer() -> None:
    result = {
        "floor_ms": {"score": 2.0, "energy": 4.0, "nc": 3.0},
        "ms": {"ism": {"scorematch": 10.0, "a": 4.0, "b": 20.0}, "ncsn": {"scorematch": 6.0, "b": 12.0}},
        "valid": {"ism": {"scorematch": True, "a": False, "b": True}, "ncsn": {"scorematch": True, "b": True}},
    }
    rows = {r["operation"]: r for r in compare.summarise(result)}
    assert rows["ism"]["fastest_peer"] == "b"  # "a" is faster but computes a wrong result
    assert rows["ism"]["vs_fastest_peer"] == pytest.approx(0.5)
    assert rows["ism"]["x_floor"] == pytest.approx(5.0)
    assert rows["ncsn"]["x_floor"] == pytest.approx(2.0)
    assert compare.network_of("ssm_vr_energy") == "energy" and compare.network_of("pc_step") == "nc"


def test_smoke_run_without_peers_leaves_their_cells_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version

    def only_scorematch(dist: str) -> str:
        if dist != "scorematch":
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(peers.importlib.metadata, "version", only_scorematch)
    payload = compare.run(torch.device("cpu"), ["smoke"], peers.CONTENDERS, smoke=True)
    shape = payload["shapes"]["smoke"]
    assert set(shape["ms"]) == set(peers.OPERATIONS)
    assert all(set(by) == {"scorematch"} for by in shape["ms"].values())
    assert all(row["vs_fastest_peer"] is None and row["x_floor"] > 0 for row in shape["rows"])
    missing = [n for n, c in shape["contenders"].items() if c["version"] is None]
    assert sorted(missing) == ["diffusers", "k-diffusion", "score_models", "torchebm"]
    table = payload["markdown"]
    assert "torchebm (not installed)" in table
    ism_line = next(line for line in table.splitlines() if line.startswith("| exact ISM step |"))
    cells = [c.strip() for c in ism_line.strip("|").split("|")]
    assert cells[3:7] == ["", "", "", ""]  # the four peers' cells are empty, no made-up figures
    assert cells[2].endswith("ms") and cells[-1] == ""


@pytest.mark.parametrize("name", [n for n in peers.CONTENDERS if n != "ours"])
def test_peer_modules_import_without_their_library(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for lib in ("torchebm", "score_models", "diffusers", "k_diffusion", "ncsn"):
        monkeypatch.setitem(sys.modules, lib, None)  # any import of it raises ImportError
    monkeypatch.delitem(sys.modules, f"benchmarks.peers.{name}", raising=False)
    mod = importlib.import_module(f"benchmarks.peers.{name}")
    assert mod.NAME and mod.DISTRIBUTION and callable(mod.operations)


def test_scaling_smoke_and_readme_blocks(tmp_path) -> None:
    res = scaling.run(torch.device("cpu"), [2, 4, 8], [32, 64], hidden=8, batch=8, smoke=True)
    assert set(res["by_dim"]) == set(scaling.STEPS)
    assert all(math.isfinite(v["ms_vs_D"]) for k, v in res["exponents"].items() if k != "ESM-KDE")
    md = scaling.markdown(res)
    assert "| ISM (exact) |" in md and "ESM-KDE against the reference-set size N" in md
    scaling.plot(res, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 10_000

    (tmp_path / "scaling.md").write_text("TABLE\n")
    other = "<!-- bench:none -->\nkeep\n<!-- /bench:none -->\n"
    text = "intro\n<!-- bench:scaling -->\nold\n<!-- /bench:scaling -->\n" + other
    new, filled = readme.fill(text, tmp_path)
    assert filled == ["scaling"]
    assert new == "intro\n<!-- bench:scaling -->\n\nTABLE\n\n<!-- /bench:scaling -->\n" + other


def test_the_benchmarks_page_is_filled_from_the_results(tmp_path) -> None:
    """docs/benchmarks.md holds a block per benchmark table, each exactly the committed result
    (``python -m benchmarks.readme`` would change nothing); main() rewrites only pages with blocks."""
    text = readme.PAGE.read_text()
    refilled, filled = readme.fill(text)
    assert sorted(filled) == ["compare", "objectives", "samplers", "scaling", "soak"]
    assert refilled == text, "docs/benchmarks.md differs from benchmarks/results/: run python -m benchmarks.readme"

    page, plain = tmp_path / "page.md", tmp_path / "plain.md"
    page.write_text("a\n<!-- bench:soak -->\nold\n<!-- /bench:soak -->\n")
    plain.write_text("no blocks\n")
    (tmp_path / "soak.md").write_text("| measure | value |\n")
    done = readme.main((page, plain, tmp_path / "absent.md"), tmp_path)
    assert done == {"page.md": ["soak"], "plain.md": []}
    assert page.read_text() == "a\n<!-- bench:soak -->\n\n| measure | value |\n\n<!-- /bench:soak -->\n"
    assert plain.read_text() == "no blocks\n"
