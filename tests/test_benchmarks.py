"""The benchmark scripts keep working: each runs in --quick mode into a temporary folder and
writes JSON with the expected keys and sane values.

They run as subprocesses, as a user runs them (``python benchmarks/...``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT")}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def _finite_nonneg(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x >= 0


@pytest.mark.slow
def test_bench_grid_quick(tmp_path):
    _run([str(BENCH / "bench_grid.py"), "--quick", "--out", str(tmp_path)], cwd=tmp_path)
    res = json.loads((tmp_path / "grid.json").read_text())
    for name in ("grid.md", "grid_time.png", "grid_warm.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert {"machine", "cells", "budget_s", "command"} <= res.keys()
    assert len(res["cells"]) == 4  # 2 sizes x 2 lambdas
    for cell in res["cells"]:
        assert "failed" not in cell, cell.get("failed")
        assert {"n", "k", "lam", "bandwidth", "reference", "solvers"} <= cell.keys()
        assert cell["bandwidth"]["best_GBps"] > 0
        assert cell["reference"]["col_error"] <= 1e-7
        ours = cell["solvers"]["ours"]
        assert {"time_s", "iterations", "col_error", "agreement", "extra_peak_bytes",
                "achieved_GBps", "speedup_vs_pot"} <= ours.keys()
        assert ours["col_error"] <= 1e-3 and ours["agreement"] >= 0.99
        assert _finite_nonneg(ours["achieved_GBps"]) and _finite_nonneg(ours["speedup_vs_pot"])
        for name in ("pot", "textbook", "textbook_native", "swav3"):
            o = cell["solvers"][name]
            assert "skipped" in o or {"time_s", "iterations", "col_error"} <= o.keys(), name
            if "agreement" in o:
                assert 0.0 <= o["agreement"] <= 1.0, (name, o["agreement"])
            if "time_s" in o:
                assert _finite_nonneg(o["time_s"]) and _finite_nonneg(o["extra_peak_bytes"])
        # POT converges at these sizes and agrees with the reference; SwAV's 3 iterations do not
        pot = cell["solvers"]["pot"]
        if cell["lam"] == 20.0:
            assert pot["finite"] and pot["col_error"] <= 1e-3 and pot["agreement"] >= 0.99
        assert cell["solvers"]["swav3"]["col_error"] > 1e-2
        ws = cell["warm_start"]
        assert ws["cold_iterations"] >= 1 and ws["warm_iterations"] >= 1
        if cell["lam"] == 20.0:  # at lam=100 a warm start can cost a few passes (see grid.md)
            assert ws["warm_iterations"] <= ws["cold_iterations"]


@pytest.mark.slow
def test_gpu_bench_cpu_quick(tmp_path):
    out = tmp_path / "gpu.json"
    _run([str(BENCH / "gpu_bench.py"), "--device", "cpu", "--quick", "--out", str(out)], cwd=tmp_path)
    res = json.loads(out.read_text())
    assert {"device", "bandwidth", "dense", "pot_torch", "features", "wall_s"} <= res.keys()
    assert res["device"] == "cpu" and res["bandwidth"]["read_GBps"] > 0
    assert len(res["dense"]) >= 1
    for row in res["dense"]:
        for lam in ("lam20", "lam100"):
            r = row[lam]
            assert r["col_error"] <= 1e-3 and r["iterations"] >= 1
            assert _finite_nonneg(r["per_iteration_s"]) and _finite_nonneg(r["per_iteration_over_one_read"])
    pot = res["pot_torch"]
    assert 0.99 <= pot["agreement_with_ours"] <= 1.0 and pot["col_error"] <= 1e-3
    for row in res["features"]:
        assert row["col_error"] <= 1e-3 and row["iterations"] >= 1


@pytest.mark.slow
def test_bench_quality_quick(tmp_path):
    _run([str(BENCH / "bench_quality.py"), "--quick", "--out", str(tmp_path)], cwd=tmp_path)
    res = json.loads((tmp_path / "quality.json").read_text())
    assert (tmp_path / "quality.md").stat().st_size > 0
    assert {"views", "align"} <= res.keys()
    assert {"both views (SelfLabelTrainer)", "top view only", "bottom view only",
            "k-means on random-init features", "k-means on trained features"} <= res["views"].keys()
    for group in ("views", "align"):
        for label, r in res[group].items():
            for key in ("nmi", "ari", "acc"):
                assert math.isfinite(r[key]), (group, label, key)
            assert 0.0 <= r["nmi"] <= 1.0 and 0.0 <= r["acc"] <= 1.0, (group, label)
    assert res["views"]["k-means on raw pixels"]["nmi"] > 0.5  # digits are clusterable


@pytest.mark.slow
def test_bench_quality_av_quick(tmp_path):
    """Synthetic videos -> SeLaVi, single-stream SeLa, k-means and an ablation (tiny, 2 epochs)."""
    _run([str(BENCH / "bench_quality_av.py"), "--quick", "--seeds", "1", "--out", str(tmp_path / "out"),
          "--workdir", str(tmp_path / "work")], cwd=tmp_path)
    res = json.loads((tmp_path / "out" / "quality_av.json").read_text())
    assert (tmp_path / "out" / "quality_av.png").stat().st_size > 0
    assert "SeLaVi, both streams" in (tmp_path / "out" / "quality_av.md").read_text()
    assert res["modalities_uniform"].keys() == res["modalities_gaussian"].keys()
    assert {"SeLaVi, both streams", "SeLaVi model, video heads alone", "SeLa trained on video only",
            "SeLa trained on audio only", "k-means, random-init features (audio)",
            "k-means, trained SeLaVi features (video+audio)"} <= res["modalities_uniform"].keys()
    assert {"no alignment", "uniform prior"} <= res["ablations"].keys()
    for group in ("modalities_uniform", "modalities_gaussian", "ablations"):
        for label, r in res[group].items():
            assert len(r["nmi_all"]) == 1, (group, label)
            assert 0.0 <= r["nmi"] <= 1.0 and 0.0 <= r["acc"] <= 1.0, (group, label)
    # the audio signatures are tones: even random-init features cluster them better than chance
    assert res["modalities_uniform"]["k-means, random-init features (audio)"]["nmi"] > 0.2
