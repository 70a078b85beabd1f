"""benchmarks/screen_page.py: a screen page is its runs, paired with the baseline's, and the
committed screen pages' numbers are recomputed from their JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "screen_page.py"
ROWS = {"both streams": "both streams (labels.csv)", "video heads": "video heads",
        "audio heads": "audio heads"}
WORLDS = ("texture", "shape", "motion", "degraded", "zipf", "format", "twelve")


def _fake_runs(workdir: Path, rng: np.random.Generator, shift: float, like: dict | None = None
               ) -> dict:
    """14 runs as bench_robustness_av.py leaves them (NMI drawn at random, or ``like``'s moved
    by ``shift`` and a little noise); returns their NMI in % per row."""
    truth = {}
    for w in WORLDS:
        cells = {}
        for s in (0, 4):
            for row, method in ROWS.items():
                old = rng.uniform(0.1, 0.7) if like is None else like[(f"{w}|{s}", row)] / 100
                nmi = float(old + shift + (0 if like is None else rng.normal(0, 0.03)))
                cells[f"{s}|{method}"] = {"nmi": nmi, "seconds": 1.0}
                truth[(f"{w}|{s}", row)] = 100 * nmi
            run = workdir / w / f"seed{s}" / "run"
            run.mkdir(parents=True)
            events = [{"event": "clustering", "step": st, "nmi": float(rng.uniform()),
                       "changed": None if i == 0 else float(rng.uniform())}
                      for i, st in enumerate((0, 5, 20))]
            events += [{"event": "epoch", "step": 30}]
            (run / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        (workdir / w / "cells.json").write_text(json.dumps(cells))
    return truth


def _page(tmp_path: Path, base_truth: dict) -> Path:
    runs: dict = {}
    for (key, row), v in base_truth.items():
        runs.setdefault(key, {"steps": [0, 10], "total_steps": 30, "nmi": [5.0, 9.0],
                              "changed": [None, 0.5]})[row] = round(v, 2)
    page = tmp_path / "base.json"
    page.write_text(json.dumps({"configs": {"preset": {"how": "the preset", "commit": "abc",
                                                        "runs": runs}}}))
    return page


def _run(tmp_path: Path, *settings: tuple[str, Path, str]) -> subprocess.CompletedProcess:
    (tmp_path / "rule.md").write_text("Passes above +1 and above its s.e.\n")
    (tmp_path / "findings.md").write_text("Nothing.\n")
    args = [sys.executable, str(SCRIPT), "--baseline", f"{tmp_path / 'base.json'}:preset",
            "--rule", str(tmp_path / "rule.md"), "--findings", str(tmp_path / "findings.md"),
            "--title", "A screen", "--out", str(tmp_path / "out"), "--name", "screen"]
    for label, workdir, how in settings:
        args += ["--setting", label, str(workdir), how]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("shift", [-0.05, 0.05])
def test_the_page_pairs_each_run_with_the_baselines(tmp_path, shift):
    rng = np.random.default_rng(1)
    base = _fake_runs(tmp_path / "base_runs", rng, 0.0)
    _page(tmp_path, base)
    new = _fake_runs(tmp_path / "wX", rng, shift, like=base)
    proc = _run(tmp_path, ("X: a setting", tmp_path / "wX", "--set a.b=1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "screen.json").read_text())
    text = (tmp_path / "out" / "screen.md").read_text()
    assert (tmp_path / "out" / "screen.png").stat().st_size > 1000
    keys = sorted({k for k, _ in base})
    for row in ROWS:
        d = np.array([round(new[(k, row)], 2) - round(base[(k, row)], 2) for k in keys])
        got = res["paired"]["X: a setting"][row]
        assert got["n"] == 14
        assert got["mean"] == pytest.approx(d.mean(), abs=1e-3)
        assert got["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(14), abs=1e-3)
        assert (got["up"], got["down"]) == ((d > 0).sum(), (d < 0).sum())
    d = np.array([round(new[(k, "both streams")], 2) - round(base[(k, "both streams")], 2)
                  for k in keys])
    passed = bool(d.mean() > 1 and d.mean() > d.std(ddof=1) / np.sqrt(14))
    assert passed is (shift > 0)  # +5 NMI on every run passes, -5 does not
    assert res["passed"]["X: a setting"] is passed
    assert f"| {'**yes**' if passed else 'no'} |" in text
    run = res["configs"]["X: a setting"]["runs"]["shape|4"]
    assert run["steps"] == [0, 5, 20] and run["total_steps"] == 30 and run["changed"][0] is None


def test_a_setting_with_missing_runs_is_refused(tmp_path):
    rng = np.random.default_rng(2)
    _page(tmp_path, _fake_runs(tmp_path / "base_runs", rng, 0.0))
    _fake_runs(tmp_path / "wX", rng, 0.0)
    (tmp_path / "wX" / "zipf" / "cells.json").write_text("{}")
    proc = _run(tmp_path, ("X", tmp_path / "wX", "--set a.b=1"))
    assert proc.returncode != 0 and "runs missing" in proc.stderr and "zipf|0" in proc.stderr


def test_an_existing_page_is_never_overwritten(tmp_path):
    rng = np.random.default_rng(3)
    base = _fake_runs(tmp_path / "base_runs", rng, 0.0)
    _page(tmp_path, base)
    _fake_runs(tmp_path / "wX", rng, 0.05, like=base)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "screen.md").write_text("an earlier screen")
    proc = _run(tmp_path, ("X", tmp_path / "wX", "--set a.b=1"))
    assert proc.returncode != 0 and "screen.md" in proc.stderr
    assert (tmp_path / "out" / "screen.md").read_text() == "an earlier screen"
    assert not (tmp_path / "out" / "screen.json").exists()
