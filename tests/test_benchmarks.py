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

from benchmarks import compare, nfe_quality, nfe_report, peers, readme, scaling
from scorematch.errors import ConfigError


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
    assert sorted(filled) == ["adaptive_rows", "compare", "image_metrics", "images", "images_speed", "k_diffusion_sde",
                              "likelihood",
                              "likelihood_mixtures", "nfe_quality_summary", "objectives", "posthoc_ema", "row_seeds",
                              "samplers", "scaling", "sde_multistep", "soak", "tables"]
    assert refilled == text, "docs/benchmarks.md differs from benchmarks/results/: run python -m benchmarks.readme"

    page, plain = tmp_path / "page.md", tmp_path / "plain.md"
    page.write_text("a\n<!-- bench:soak -->\nold\n<!-- /bench:soak -->\n")
    plain.write_text("no blocks\n")
    (tmp_path / "soak.md").write_text("| measure | value |\n")
    done = readme.main((page, plain, tmp_path / "absent.md"), tmp_path)
    assert done == {"page.md": ["soak"], "plain.md": []}
    assert page.read_text() == "a\n<!-- bench:soak -->\n\n| measure | value |\n\n<!-- /bench:soak -->\n"
    assert plain.read_text() == "no blocks\n"


def _row(data: str, model: str, sampler: str, nfe: int, mmd2: float, setting: int | None = None, **kw) -> dict:
    setting = nfe if setting is None else setting
    return {"data": data, "model": model, "sampler": sampler, "nfe": nfe, "budget": nfe, "mmd2": mmd2,
            "setting": setting, "label": f"{setting} steps", "good": mmd2 < 2e-3, **kw}


def test_nfe_decision_takes_the_worst_toy_and_the_targets_their_ratios() -> None:
    """The default of a kind is the sampler whose larger reach over the two toys is smallest; its steps
    the larger step count; the targets compare the best new sampler with annealed Langevin (x 20) and
    with the fastest older sampler at each budget."""
    rows = []
    for data, dpm_reach, annealed in (("gmm2d", 10, ((401, 3e-3), (1001, 1.5e-3))), ("imbalanced", 50, ((301, 1e-3),))):
        for b in (10, 20, 50):
            rows.append(_row(data, "ve", "dpm_solver", b, 1e-3 if b >= dpm_reach else 9e-3))
            rows.append(_row(data, "ve", "heun", b - 1, 1e-3 if b >= 20 else 9e-3, setting=b // 2))
            rows.append(_row(data, "ve", "euler_maruyama", b, 1.5e-3 if b >= 50 else 9.5e-3, setting=b - 1))
        rows += [_row(data, "ve", "annealed", nfe, v, setting=(nfe - 1) // 10) for nfe, v in annealed]
    d = nfe_report.decide(rows, "ve")
    assert d["sampler"] == "heun" and d["toy_reach"] == {"gmm2d": 19, "imbalanced": 19}
    assert d["steps"] == 10 and d["nfe"] == 19 and d["from"] == "gmm2d"  # heun: 2N - 1 evaluations
    assert d["runner_up"]["sampler"] == "dpm_solver" and d["runner_up"]["toy_reach"]["imbalanced"] == 50
    # digits: heun's min(precision, recall) is within 0.05 of its best from 50 evaluations (25 steps) on, so
    # the default steps rise to 25; the noise-like continuous_langevin (recall 1, precision 0) is no rival
    for nfe, p, r in ((19, 0.3, 0.95), (49, 0.62, 0.9), (99, 0.66, 0.9)):
        rows.append({"data": "digits", "model": "ve", "sampler": "heun", "nfe": nfe, "budget": nfe + 1,
                     "setting": (nfe + 1) // 2, "label": f"{(nfe + 1) // 2} steps", "precision": p, "recall": r})
    rows += [{"data": "digits", "model": "ve", "sampler": k, "nfe": 50, "budget": 50, "setting": 50, "label": "",
              "precision": p, "recall": r} for k, p, r in (("continuous_langevin", 0.0, 1.0), ("euler", 0.7, 0.8))]
    d = nfe_report.decide(rows, "ve")
    assert (d["steps"], d["nfe"], d["from"]) == (25, 49, "digits")
    assert d["digits"]["rival"] == "euler" and d["digits"]["own_best"] == pytest.approx(0.66)
    payload = {"rows": rows, "baselines": {"gmm2d": {"sd": 1e-4}, "imbalanced": {"sd": 1e-4}}}
    t = {(x["data"]): x for x in nfe_report.targets(payload)}
    assert t["gmm2d"]["best_new"] == "dpm_solver" and t["gmm2d"]["best_new_reach"] == 10
    assert t["gmm2d"]["annealed_reach"] == 1001 and t["gmm2d"]["ratio_met"]  # 20 x 10 <= 1001
    assert t["imbalanced"]["best_new"] == "heun" and not t["imbalanced"]["ratio_met"]  # 20 x 19 > 301
    assert t["gmm2d"]["fastest_old"] == "euler_maruyama" and t["gmm2d"]["budget_met"]
    assert t["imbalanced"]["fastest_old"] == "euler_maruyama" and t["imbalanced"]["worse_at"] == []
    rows.append(_row("gmm2d", "ve", "euler_maruyama", 100, 1e-4, setting=99))
    rows.append(_row("gmm2d", "ve", "dpm_solver", 100, 9e-4))
    worse = {(x["data"]): x for x in nfe_report.targets(payload)}["gmm2d"]
    assert worse["worse_at"] == [100] and not worse["budget_met"]


@pytest.mark.parametrize("budget", [10, 20, 35, 50, 100, 1000])
def test_nfe_settings_spend_at_most_the_budget(budget: int) -> None:
    for kind in (*nfe_quality.OLD[:-1], *nfe_quality.NEW):
        steps = nfe_quality.setting_for(kind, budget, 10)
        if steps is None:
            assert kind.startswith("annealed") and budget < 11
            continue
        cost = nfe_quality.expected_nfe(kind, steps, 10)
        per_step = 10 if kind.startswith("annealed") else 2 if kind in ("heun", "pc", "restart") else 1
        assert budget - per_step < cost <= budget


def test_nfe_quality_smoke_counts_every_evaluation(tmp_path) -> None:
    """A tiny run: every fixed-step row used exactly the evaluations its step count costs (the
    counted score calls), the report names a default for each kind measured and the docs block exists."""
    payload = nfe_quality.main(["--quick", "--toys", "gmm2d", "--kinds", "ncsn", "ve", "edm", "--digits-kinds", "edm",
                                "--out", str(tmp_path)])
    rows = payload["rows"]
    levels = {(s["data"], s["model"]): s["ncsn_levels"] for s in payload["subjects"]}
    fixed = [r for r in rows if r["sampler"] not in nfe_quality.TOLERANCED]
    assert {r["sampler"] for r in rows} >= {*nfe_quality.OLD, *nfe_quality.NEW, *nfe_quality.LEVEL_VARIANTS}
    for r in fixed:
        assert r["nfe"] == nfe_quality.expected_nfe(r["sampler"], int(r["setting"]), levels[r["data"], r["model"]])
        assert r["nfe"] <= r["budget"]
    assert {d["kind"] for d in payload["decisions"]} == {"ncsn", "ve", "edm"}
    digits = [r for r in rows if r["data"] == "digits"]
    assert digits and all(0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 for r in digits)
    summary = (tmp_path / "nfe_quality_summary.md").read_text()
    assert "| VE SDE |" in summary and "| EDM (preconditioned) |" in summary
    assert "### gmm2d, edm" in (tmp_path / "nfe_quality.md").read_text()


@pytest.mark.parametrize("name", ["adaptive_rows", "compare", "compile", "likelihood", "nfe_quality", "objectives",
                                  "row_seeds",
                                  "samplers", "scaling", "sde_multistep", "soak", "images", "images_train",
                                  "images_speed", "gpu_images"])
def test_every_benchmark_parses_its_command_line(name, capsys) -> None:
    """``python -m benchmarks.NAME --help`` answers (a clash of two options would raise instead)."""
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("budget", [10, 20, 35, 50, 100, 200, 500])
def test_restart_plan_spends_about_a_third_on_restarts(budget: int) -> None:
    n, k, m = nfe_quality.restart_plan(budget)
    cost = nfe_quality.expected_nfe("restart", budget, 10)
    assert cost == 2 * n - 1 + 2 * k * m and budget - 2 < cost <= budget
    assert 0.15 < 2 * k * m / cost < 0.45 and n >= 2


def test_nfe_merge_keeps_the_other_samplers_and_records_the_differences() -> None:
    """A rerun of some samplers replaces their rows and keeps the others; runs on both are compared."""
    meta = {"n": 10, "seed": 0, "train_steps": 5, "digits_steps": 5, "budgets": [10], "digits_budgets": None,
            "threads": 1, "date": "d0", "torch": "t", "seconds": 1.0, "cpu_seconds": 1.0}
    ve = {"data": "gmm2d", "model": "ve"}
    old = {"meta": meta, "refused": [{**ve, "sampler": "pc"}, {**ve, "sampler": "heun"}],
           "subjects": [{**ve, "note": "old"}, {"data": "digits", "model": "ve"}],
           "rows": [_row("gmm2d", "ve", "heun", 19, 1e-3), _row("gmm2d", "ve", "pc", 19, 5e-3)]}
    new = {"meta": {**meta, "date": "d1", "adaptive_rtols": [0.1], "digits_adaptive_rtols": None}, "refused": [],
           "subjects": [{**ve, "note": "new"}],
           "rows": [_row("gmm2d", "ve", "heun", 19, 1.5e-3), _row("gmm2d", "ve", "restart", 19, 2e-4)]}
    out = nfe_quality.merge(old, new)
    assert sorted((r["sampler"], r["mmd2"]) for r in out["rows"]) == [("heun", 1.5e-3), ("pc", 5e-3), ("restart", 2e-4)]
    assert out["meta"]["merged"]["rerun"] == ["heun", "restart"] and out["meta"]["merged"]["compared_runs"] == 1
    assert out["meta"]["merged"]["largest_difference"]["mmd2"] == pytest.approx(5e-4)
    assert out["refused"] == [{**ve, "sampler": "pc"}] and out["meta"]["date"] == "d1"
    assert out["subjects"] == [{"data": "digits", "model": "ve"}, {**ve, "note": "new"}]
    with pytest.raises(ConfigError, match="differ in n"):
        nfe_quality.merge(old, {**new, "meta": {**new["meta"], "n": 20}})
