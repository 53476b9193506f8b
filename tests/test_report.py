"""``scorematch report``: one self-contained HTML file per run, checked by parsing it and by
rendering it in headless Chromium.

Two tiny real runs: a 2-D DSM run on gmm2d (its report made through the CLI, which evaluates the
run because it has no eval.json yet) and an NCSN run on the 8x8 digits with periodic sample
grids (evaluated first, so the report must reuse eval.json). The HTML is parsed with
html.parser: no network reference and no script anywhere, every <img> a base64 PNG data URI that
Pillow decodes to a non-blank image, the config and eval.json values in its tables. Chromium
(Debian's ``chromium``, installed by a fixture when absent and we are root, else the browser
tests skip) then renders the report to a screenshot that must not be blank, and loads the same
<img> tags on a test page whose script reports how many decoded and at what width.
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import scorematch
from scorematch.cli import main
from scorematch.run.reporting.evaluate import evaluate
from scorematch.run.reporting.features import ROWS
from scorematch.run.reporting.html import write_report

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DSM = dict(data="gmm2d", objective="dsm", steps=50, batch_size=64, hidden=32, depth=2, n_data=1000,
           lr=3e-3, device="cpu", seed=3, progress=False)
NCSN = dict(data="digits", objective="ncsn", steps=30, batch_size=16, base_channels=8, n_levels=4,
            steps_per_sigma=2, sample_every=10, checkpoint_every=30, log_every=5, device="cpu", seed=1,
            progress=False)
DSM_FIGURES = {"loss", "score field", "density", "samples", "trajectory"}
NCSN_FIGURES = {"loss", "samples", "annealing", "samples at step 10", "samples at step 20",
                "samples at step 30"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


# ----------------------------------------------------------------------------- parsing


class Page(HTMLParser):
    """Tags with their attributes, the visible text, and the tables (lists of rows of cell texts)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self._skip = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("style", "script", "title"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())

    def table(self, head: str) -> dict[str, list[str]]:
        """First cell -> the other cells of the one table whose header row starts with ``head``
        (the header row included); {} when there is none."""
        found = [t for t in self.tables if t and t[0] and t[0][0] == head]
        assert len(found) <= 1, f"{len(found)} tables start with {head!r}"
        return {row[0]: row[1:] for row in found[0]} if found else {}

    def images(self) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == "img"]


def decode_png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    try:
        data = base64.b64decode(src[len(prefix):], validate=True)
    except binascii.Error as err:
        pytest.fail(f"img src is not valid base64: {err}")
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "PNG"
    return img


def assert_not_blank(img: Image.Image, what: str, min_std: float = 5.0, min_colours: int = 3) -> None:
    px = np.asarray(img.convert("RGB"))
    assert px.std() > min_std, f"{what} looks blank (pixel std {px.std():.2f})"
    packed = px.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    n = len(np.unique(packed))
    assert n >= min_colours, f"{what} has {n} distinct colours"


def check_self_contained(html_text: str, page: Page) -> None:
    """Nothing in the file points outside it, and it has no script."""
    assert not re.search(r"https?:", html_text, re.I), "the report names an http(s) URL"
    assert "//" not in "".join(re.findall(r"<style>(.*?)</style>", html_text, re.S)), "CSS with a // reference"
    assert not re.search(r"url\(|@import", html_text, re.I)
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base", "frame"}, tags
    for tag, attrs in page.tags:
        for key, value in attrs.items():
            assert not key.startswith("on"), f"<{tag} {key}=...>: an event handler"
            if key in ("src", "href", "action", "poster", "data", "srcset", "formaction"):
                assert not value.lstrip().startswith("//"), f"<{tag} {key}={value[:40]!r}>"
                assert value.startswith("data:image/png;base64,") or value.startswith("#"), \
                    f"<{tag} {key}={value[:60]!r}> is not an embedded PNG"


def check_images(page: Page, expected: set[str]) -> list[Image.Image]:
    imgs = page.images()
    assert {a.get("alt") for a in imgs} == expected
    decoded = []
    for a in imgs:
        img = decode_png(a["src"])
        assert min(img.size) >= 8
        assert_not_blank(img, a["alt"])
        decoded.append(img)
    return decoded


def check_config(page: Page, run: Path) -> None:
    """Every config.json key has a row holding its value."""
    rows = page.table("key")
    cfg = json.loads((run / "config.json").read_text())
    for key, value in cfg.items():
        assert key in rows, f"config key {key} missing"
        cell = rows[key][0]
        if value is None:
            assert cell == "\u2014", (key, cell)
        elif isinstance(value, bool):
            assert cell == str(value).lower(), (key, cell)
        elif isinstance(value, int | float):
            assert float(cell) == pytest.approx(value, rel=1e-5), (key, cell)
        elif isinstance(value, dict):
            assert json.loads(cell) == value, (key, cell)
        else:
            assert cell == str(value), (key, cell)


def check_eval(page: Page, results: dict) -> None:
    """Every number of the evaluation is in the evaluation table."""
    rows = page.table("metric")
    assert rows["metric"][:2] == ["value", "meaning"]
    for key, value in results.items():
        if key == "run":
            continue
        if key == "image_metrics":  # one row per metric: value +/- se (real vs real: baseline +/- se)
            for name, row, _ in (r for r in ROWS if r[0] in value):
                assert rows[row][0].startswith(f"{value[name]['value']:.4g} +/- "), (row, rows[row])
                assert f"real vs real: {value[name]['baseline']:.4g}" in rows[row][0], (row, rows[row])
            continue
        cell = rows[key][0]
        if isinstance(value, float):
            assert float(cell) == pytest.approx(value, rel=1e-5, abs=1e-12), (key, cell)
        elif isinstance(value, list):
            assert [float(v) for v in cell.strip("[]").split(",")] == pytest.approx(value, abs=1e-3)
        elif isinstance(value, bool):
            assert cell == str(value).lower(), (key, cell)
        elif isinstance(value, dict):
            assert json.loads(cell) == value, (key, cell)
        else:
            assert cell == str(value), (key, cell)


# ----------------------------------------------------------------------------- runs and reports


@pytest.fixture(scope="module")
def dsm_report(tmp_path_factory) -> tuple[Path, Path]:
    """(run, report): the report written by `scorematch report RUN --out FILE` on a run without
    eval.json, so the command evaluates it."""
    run = tmp_path_factory.mktemp("report") / "gmm2d-dsm"
    scorematch.train(out=run, **DSM)
    assert not (run / "eval.json").exists()
    out = run.parent / "dsm report.html"
    assert main(["report", str(run), "--n", "200", "--seed", "2", "--out", str(out)]) == 0
    return run, out


@pytest.fixture(scope="module")
def ncsn_report(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(run, report, eval results): evaluated first, so the report must reuse that eval.json."""
    run = tmp_path_factory.mktemp("report") / "digits-ncsn"
    scorematch.train(out=run, **NCSN)
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_00000010.png", "step_00000020.png", "step_00000030.png"]
    res = evaluate(run, n=100, seed=4)
    stamp = (run / "eval.json").stat().st_mtime_ns
    out = write_report(run, n=36, seed=0)
    assert out == run / "report.html"
    assert (run / "eval.json").stat().st_mtime_ns == stamp, "a fresh eval.json was recomputed"
    return run, out, res


def test_dsm_report_is_self_contained_with_config_eval_and_figures(dsm_report):
    run, out = dsm_report
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    check_self_contained(text, page)
    check_images(page, DSM_FIGURES)
    check_config(page, run)
    results = json.loads((run / "eval.json").read_text())  # written by the evaluation the report ran
    assert results["n_samples"] == 200 and results["seed"] == 2 and "fisher_divergence" in results
    check_eval(page, results)
    words = page.all_text
    assert "Computed now by scorematch.run.reporting.evaluate" in words
    for heading in ("Configuration", "Training loss", "Evaluation", "Score field and density", "Samples",
                    "Sampler trajectory"):
        assert heading in words
    info = page.table("field")
    assert info["model"][0] == "ScoreMLP" and info["data.kind"][0] == "vector"
    assert float(info["schedule.sigma"][0]) == pytest.approx(
        json.loads((run / "run.json").read_text())["schedule"]["sigma"], rel=1e-5)
    losses = page.table("series")
    assert "all levels" in losses and "level 1" not in losses  # one loss series without noise levels
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text


def test_ncsn_report_has_levels_annealing_and_grids(ncsn_report):
    run, out, results = ncsn_report
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    check_self_contained(text, page)
    imgs = dict(zip([a["alt"] for a in page.images()], check_images(page, NCSN_FIGURES), strict=True))
    with Image.open(run / "samples" / "step_00000030.png") as grid:
        assert grid.size == (11 * 62, 11 * 62)  # 6 x 6 digits of 8 x 8 pixels, each pixel 11 x 11 in the PNG
        assert imgs["samples at step 30"].size == grid.size  # the file itself, embedded unchanged
        assert np.array_equal(np.asarray(imgs["samples at step 30"]), np.asarray(grid))
    check_config(page, run)
    check_eval(page, results)
    assert "From eval.json" in page.all_text and "Sampler trajectory: annealed" in page.all_text
    # the loss table: one row per noise level with its sigma, final = mean of the last row(s)
    sigmas = json.loads((run / "run.json").read_text())["schedule"]["sigmas"]
    rows = page.table("series")
    assert rows["series"] == ["sigma", "final loss", "first logged loss"]
    last = (run / "loss.csv").read_text().splitlines()
    header, final = last[0].split(","), [float(v) for v in last[-1].split(",")]
    for i, s in enumerate(sigmas, start=1):
        sigma_cell, final_cell, _ = rows[f"level {i}"]
        assert float(sigma_cell) == pytest.approx(s, rel=1e-5)
        assert float(final_cell) == pytest.approx(final[header.index(f"loss_level_{i}")], rel=1e-5)


def check_order(page: Page) -> list[str]:
    """The section ids in page order: a table of contents linking to each, results first, the
    configuration last; returns the ids."""
    ids = [a["id"] for t, a in page.tags if t == "h2" and "id" in a]
    links = [a["href"] for t, a in page.tags if t == "a" and a.get("href", "").startswith("#")]
    assert links == ["#" + i for i in ids]  # the contents, before the first section, in the same order
    nav = next(k for k, (t, _) in enumerate(page.tags) if t == "nav")
    first_section = next(k for k, (t, _) in enumerate(page.tags) if t == "section")
    assert nav < first_section
    assert ids[0] == "evaluation" and ids[1] == "samples" and ids[-2:] == ["loss", "config"]
    return ids


def test_results_come_first_and_the_configuration_last(dsm_report, ncsn_report):
    dsm = check_order(Page(dsm_report[1].read_text(encoding="utf-8")))
    assert dsm == ["evaluation", "samples", "field", "trajectory", "loss", "config"]
    ncsn = check_order(Page(ncsn_report[1].read_text(encoding="utf-8")))
    assert ncsn == ["evaluation", "samples", "trajectory", "loss", "config"]


def test_the_trajectory_is_named_after_the_sampler_the_run_uses(tmp_path):
    """An EDM run on images is sampled with DPM-Solver: its report says so, and never says annealed
    Langevin."""
    run = tmp_path / "edm"
    scorematch.train(out=run, data="digits", objective="edm", model="time_mlp", hidden=16, depth=1, steps=5,
                     batch_size=16, device="cpu", seed=0, progress=False)
    page = Page(write_report(run, n=8, evaluate=False).read_text(encoding="utf-8"))
    assert "trajectory" in check_order(page)
    heading = next(h for h in page.text if h.startswith("Sampler trajectory"))
    assert heading == "Sampler trajectory: dpm_solver (n_steps 20)"
    assert "annealed" not in page.all_text.lower()
    captions = [a["alt"] for t, a in page.tags if t == "img"]
    assert "annealing" in captions and "Samples drawn with dpm_solver (n_steps 20)" in page.all_text


def test_no_eval_stale_eval_and_escaping(ncsn_report, tmp_path):
    """--no-eval: no eval.json -> no table; a stale one is shown with a warning; without --no-eval
    the stale one is recomputed. The run folder's name, full of HTML, comes out escaped."""
    src, _, _ = ncsn_report
    name = "r<b>&\"x'</title>"
    run = tmp_path / name
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("report.html", "eval.json"))

    rc = main(["report", str(run), "--no-eval", "--n", "16"])
    assert rc == 0 and not (run / "eval.json").exists()
    text = (run / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert "No evaluation" in page.all_text and page.table("metric") == {}
    assert name not in text and html.escape(name) in text
    assert name in page.all_text  # escaped in the file, the same characters on the page
    assert [t for t, _ in page.tags].count("title") == 1 and ("b", {}) not in page.tags

    stale = {"n_samples": 7, "seed": 0, "mmd": 0.123456789, "sampler": "annealed"}
    (run / "eval.json").write_text(json.dumps(stale))
    old = (run / "weights.safetensors").stat().st_mtime - 100
    os.utime(run / "eval.json", (old, old))
    write_report(run, n=16, evaluate=False)
    page = Page((run / "report.html").read_text(encoding="utf-8"))
    assert "Warning: eval.json is older than the weights" in page.all_text
    check_eval(page, stale)

    write_report(run, n=16, evaluate=True)
    fresh = json.loads((run / "eval.json").read_text())
    assert fresh["n_samples"] == 16 and "Computed now" in Page((run / "report.html").read_text()).all_text


def test_cli_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
    with pytest.raises(SystemExit) as exc:
        main(["report", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.startswith("usage: scorematch report")
    for flag in ("--out", "--n", "--seed", "--no-eval"):
        assert flag in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "report" in capsys.readouterr().out


# ----------------------------------------------------------------------------- Chromium


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; installed with apt-get when absent and we are root, else a skip."""
    found = shutil.which("chromium")
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt(*args: str) -> bool:
        return subprocess.run(["apt-get", *args], env=env, capture_output=True, timeout=900).returncode == 0

    try:  # with stale package lists the first install fails: update them and try again
        apt("install", "-y", "chromium") or (apt("update") and apt("install", "-y", "chromium"))
    except subprocess.TimeoutExpired:
        pytest.skip("installing chromium with apt-get timed out")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("`apt-get install -y chromium` failed (no network or no package); browser checks skipped")
    return found


def run_chromium(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish in 60 s: {' '.join(cmd[:-1])}")
    assert res.returncode == 0, f"chromium exited with {res.returncode}: {res.stderr[-2000:]}"
    return res


LOAD_CHECK = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>pending</title></head><body>
{imgs}
<script>
window.addEventListener("load", function () {{
  var all = Array.prototype.slice.call(document.images);
  var ok = all.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }});
  document.title = "loaded " + ok.length + "/" + all.length + " widths " +
    all.map(function (i) {{ return i.naturalWidth; }}).join(",");
}});
</script></body></html>
"""


@pytest.mark.parametrize("which", ["dsm", "ncsn"])
def test_report_renders_in_chromium(which, chromium, dsm_report, ncsn_report, tmp_path):
    out = dsm_report[1] if which == "dsm" else ncsn_report[1]
    shot = tmp_path / "shot.png"
    run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", out.resolve().as_uri())
    with Image.open(shot) as img:
        img.load()
        assert img.size == (1280, 4000)
        assert_not_blank(img, "the screenshot", min_std=15.0, min_colours=200)
    if os.environ.get("SCOREMATCH_REPORT_SHOTS"):  # keep the screenshots to look at them
        keep = Path(os.environ["SCOREMATCH_REPORT_SHOTS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / f"{which}.png")

    # the DOM Chromium built from the report (no script needed): the sections are there
    dom = run_chromium(chromium, tmp_path, "--dump-dom", out.resolve().as_uri()).stdout
    for heading in ("Configuration", "Training loss", "Evaluation", "Samples"):
        assert f">{heading}</h2>" in dom

    # every <img> of the report decodes in the browser, at the width Pillow reads
    page = Page(out.read_text(encoding="utf-8"))
    srcs = [a["src"] for a in page.images()]
    widths = [decode_png(s).size[0] for s in srcs]
    check = tmp_path / "load-check.html"
    check.write_text(LOAD_CHECK.format(imgs="\n".join(f'<img src="{s}">' for s in srcs)), encoding="utf-8")
    dom = run_chromium(chromium, tmp_path, "--virtual-time-budget=5000", "--dump-dom", check.as_uri()).stdout
    title = re.search(r"<title>(.*?)</title>", dom)
    assert title, dom[:500]
    assert title.group(1) == f"loaded {len(srcs)}/{len(srcs)} widths {','.join(map(str, widths))}"
