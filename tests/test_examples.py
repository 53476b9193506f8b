"""Every script of the gallery (examples/*.py) runs end to end in its ``--tiny`` form.

Each script is run as a subprocess, ``python examples/NAME.py --tiny --out TMP`` (one torch
thread, from an empty working folder), and must exit 0, write at least one PNG (every PNG it
writes must decode and not be blank), and write a JSON summary whose numbers are all finite.
``--tiny`` must keep a run under TINY_CPU_SECONDS of CPU time (CPU, not wall-clock, time: the
test machines are shared and loaded).

The NCSN scripts (ncsn_digits.py, ncsn_toys.py) are written separately; until they exist and
take ``--tiny`` and ``--out`` they are skipped with the reason, not failed.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: scripts owned elsewhere: skipped (with the reason) while they lack the gallery's interface
OPTIONAL = ("ncsn_digits.py", "ncsn_toys.py")
TINY_CPU_SECONDS = 15.0
WALL_TIMEOUT = 300


def _scripts() -> list[str]:
    return sorted({p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")} | set(OPTIONAL))


def _missing_flags(path: Path) -> list[str]:
    text = path.read_text()
    return [flag for flag in ("--tiny", "--out") if f'"{flag}"' not in text and f"'{flag}'" not in text]


def _numbers(obj, where: str = "$"):
    """(path, value) of every number in a JSON document (booleans are not numbers)."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, int | float):
        yield where, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{where}[{i}]")


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def test_the_gallery_has_its_scripts():
    names = set(_scripts())
    for name in ("esm_kde", "ism_relu_vs_silu", "ssm_variance", "dsm_denoising", "langevin_1d", "imbalanced",
                 "density_from_score", "sde_toy"):
        assert f"{name}.py" in names
        assert name in (EXAMPLES / "README.md").read_text(), f"examples/README.md does not list {name}"


@pytest.mark.parametrize("script", _scripts())
def test_example_runs_tiny(script: str, tmp_path: Path):
    path = EXAMPLES / script
    if script in OPTIONAL:
        if not path.exists():
            pytest.skip(f"examples/{script} is not written yet")
        missing = _missing_flags(path)
        if missing:
            pytest.skip(f"examples/{script} does not take {' and '.join(missing)} yet (the gallery interface)")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    cpu0 = _cpu_seconds()
    proc = subprocess.run([sys.executable, str(path), "--tiny", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=WALL_TIMEOUT)
    cpu = _cpu_seconds() - cpu0
    log = f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{script} --tiny exited with {proc.returncode}\n{log}"

    pngs = sorted(out.rglob("*.png"))
    assert pngs, f"{script} wrote no PNG under --out\n{log}"
    for png in pngs:
        with Image.open(png) as img:
            img.load()
            pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
        assert pixels.size > 0 and pixels.std() > 1.0, f"{png.relative_to(out)} is blank"

    summaries = sorted(out.glob("*.json"))
    assert summaries, f"{script} wrote no JSON summary into --out\n{log}"
    for summary in summaries:
        numbers = list(_numbers(json.loads(summary.read_text())))
        assert numbers, f"{summary.name} holds no numbers"
        bad = [(where, v) for where, v in numbers if not math.isfinite(v)]
        assert not bad, f"{summary.name} has non-finite numbers: {bad[:5]}"

    assert cpu < TINY_CPU_SECONDS, f"{script} --tiny used {cpu:.1f} s of CPU (budget {TINY_CPU_SECONDS} s)"
