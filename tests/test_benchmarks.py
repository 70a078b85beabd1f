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

import numpy as np
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


def test_bench_startup_quick(tmp_path):
    """The cold-start benchmark runs and prints its table and verdicts (timings are not asserted:
    they depend on the machine and its load)."""
    out = tmp_path / "startup.json"
    proc = _run([str(BENCH / "bench_startup.py"), "--quick", "--json", str(out)], cwd=tmp_path)
    for row in ("import torch", "import otcluster", "import otcluster_video", "--help"):
        assert row in proc.stdout, proc.stdout
    assert proc.stdout.count("PASS") + proc.stdout.count("FAIL") == 2
    res = json.loads(out.read_text())
    assert len(res["commands"]) == 5 and len(res["checks"]) == 2
    for name, row in res["commands"].items():
        assert "failed" not in row, (name, row)
        assert _finite_nonneg(row["best_s"]) and row["best_s"] <= row["median_s"], name


@pytest.mark.slow
def test_bench_restarts_quick(tmp_path):
    """Two training seeds of one tiny world, ranked by `select`; a second run reuses them."""
    args = [str(BENCH / "bench_restarts.py"), "--quick", "--out", str(tmp_path / "out"),
            "--workdir", str(tmp_path / "work")]
    _run(args, cwd=tmp_path)
    res = json.loads((tmp_path / "out" / "restarts.json").read_text())
    assert (tmp_path / "out" / "restarts.png").stat().st_size > 0
    assert "| selected - mean |" in (tmp_path / "out" / "restarts.md").read_text()
    assert res["held_out"] == [1] and res["restarts"] == 2 and list(res["worlds"]) == ["shape"]
    (cell,) = res["worlds"]["shape"]
    seeds = [r["training_seed"] for r in cell["restarts"]]
    assert seeds == [1, 1 + res["step"]]
    agreements = [r["agreement"] for r in cell["restarts"]]
    assert all(0.0 <= r["nmi"] <= 1.0 for r in cell["restarts"])
    assert all(0.0 <= x <= 1.0 for x in agreements)
    assert cell["selected"] == int(np.argmax(agreements))
    nmis = [r["nmi"] for r in cell["restarts"]]
    assert res["gains"]["selected - mean"] == pytest.approx(
        [100 * (nmis[cell["selected"]] - np.mean(nmis))])
    assert res["gains"]["best - mean"][0] >= res["gains"]["selected - mean"][0] - 1e-9
    work = tmp_path / "work"
    assert (next(work.rglob("seed1")) / f"run_t{seeds[1]}" / "labels.csv").is_file()
    cache = next(work.rglob("restarts.json"))
    before = cache.stat().st_mtime_ns
    # the page is replaced (--overwrite) but every restart is cached: nothing trained or rewritten
    _run([*args, "--overwrite"], cwd=tmp_path)
    assert cache.stat().st_mtime_ns == before


def test_single_stream_sela_takes_its_streams_optimizer(load_benchmark):
    from otcluster_video import load_preset
    from otcluster_video._build import trainer_config

    bench = load_benchmark("bench_robustness_av")
    pair = trainer_config(load_preset("cpu", {"training.optimizer": ["adamw", "sgd"],
                                              "training.lr": [1e-3, 0.05]}))
    audio, video = bench.for_stream(pair, "audio"), bench.for_stream(pair, "video")
    assert (audio.optimizer, audio.lr, video.optimizer, video.lr) == ("sgd", 0.05, "adamw", 1e-3)
    plain = trainer_config(load_preset("cpu"))
    assert bench.for_stream(plain, "audio") == plain
    vetoed = trainer_config(load_preset("cpu", {"clustering.modality_veto": 2.0}))
    assert vetoed.modality_veto == 2.0 and bench.for_stream(vetoed, "video").modality_veto is None


@pytest.mark.slow
def test_bench_robustness_av_quick(tmp_path):
    """One tiny world through the command line, single-stream SeLa and the supervised bound (1
    epoch); a second run reuses the cached cells."""
    args = [str(BENCH / "bench_robustness_av.py"), "--quick", "--out", str(tmp_path / "out"),
            "--workdir", str(tmp_path / "work")]
    _run(args, cwd=tmp_path)
    res = json.loads((tmp_path / "out" / "robustness_av.json").read_text())
    assert (tmp_path / "out" / "robustness_av.png").stat().st_size > 0
    assert "## Targets of issue 10" in (tmp_path / "out" / "robustness_av.md").read_text()
    assert res["split"] == {"tuning": [0, 4], "held_out": [1]} and list(res["worlds"]) == ["shape"]
    world = res["worlds"]["shape"]
    assert {"both streams (labels.csv)", "video heads", "audio heads", "k-means, random init (both)",
            "k-means, trained (both)", "SeLa on video only", "supervised, video", "supervised, audio",
            "supervised, both"} <= world["methods"].keys()
    for label, r in world["methods"].items():
        if "skipped" in r:
            assert label.startswith("SeLa on"), (label, r)
            continue
        assert len(r["nmi_all"]) == 1, label
        assert 0.0 <= r["nmi"] <= 1.0 and 0.0 <= r["acc"] <= 1.0, label
    assert len(world["targets"]) == 5 and world["diagnosis"]
    assert sum(world["class_sizes"]) == 12  # 2 videos per class, 6 classes
    cells = next((tmp_path / "work").rglob("cells.json"))
    before = cells.stat().st_mtime_ns
    _run([*args, "--overwrite"], cwd=tmp_path)  # every cell cached: nothing trained or rewritten
    assert cells.stat().st_mtime_ns == before


# (benchmark, arguments besides --out, a file of its page): each must stop before measuring
REFUSING = [
    ("bench_robustness_av", ["--quick", "--workdir", "{tmp}/work"], "robustness_av.md"),
    ("bench_restarts", ["--quick", "--workdir", "{tmp}/work"], "restarts.png"),
    ("bench_codes", ["--quick"], "codes.json"),
    ("bench_grid", ["--quick"], "grid_warm.png"),
    ("bench_modality_weights", ["--quick"], "modality_weights.md"),
    ("bench_quality", ["--quick"], "quality.json"),
    ("bench_quality_av", ["--quick", "--workdir", "{tmp}/work"], "quality_av.md"),
    ("bench_scaling", ["--quick"], "scaling.json"),
    ("bench_solver", [], "solver.md"),
    ("bench_zipf_priors", ["--quick"], "zipf_priors.json"),
]


@pytest.mark.parametrize("name, args, page", REFUSING, ids=[r[0] for r in REFUSING])
def test_benchmarks_refuse_to_overwrite_a_page(tmp_path, load_benchmark, name, args, page):
    """An existing page is a record: refused (exit 2, naming the file) before anything is
    measured or written, unless --overwrite."""
    bench = load_benchmark(name)
    out = tmp_path / "out"
    out.mkdir()
    (out / page).write_text("a committed page")
    argv = [a.format(tmp=tmp_path) for a in args] + ["--out", str(out)]
    with pytest.raises(SystemExit) as err:
        bench.main(argv)
    assert err.value.code == 2
    assert (out / page).read_text() == "a committed page"
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["out", page])  # no work folder


def test_refuse_taken_names_the_files_and_yields_to_overwrite(tmp_path, load_benchmark, capsys):
    pages = load_benchmark("_pages")
    parser = pages.argparse.ArgumentParser(prog="bench")
    pages.refuse_taken(parser, tmp_path, ["a.json", "a.md"], overwrite=False)  # nothing there
    (tmp_path / "a.md").write_text("x")
    pages.refuse_taken(parser, tmp_path, ["a.json", "a.md"], overwrite=True)  # asked for
    with pytest.raises(SystemExit):
        pages.refuse_taken(parser, tmp_path, ["a.json", "a.md"], overwrite=False)
    msg = capsys.readouterr().err
    assert "a.md" in msg and "a.json" not in msg and "--overwrite" in msg


def test_bench_codes_quick(tmp_path):
    """SwAV's 3 iterations vs sinkhorn_codes: same numbers for n_iter=3, converged codes with tol
    (latencies are recorded, not asserted: they depend on the machine and its load)."""
    _run([str(BENCH / "bench_codes.py"), "--quick", "--out", str(tmp_path)], cwd=tmp_path, timeout=300)
    res = json.loads((tmp_path / "codes.json").read_text())
    assert (tmp_path / "codes.png").stat().st_size > 0
    assert "SwAV `distributed_sinkhorn`" in (tmp_path / "codes.md").read_text()
    assert [(r["n"], r["k"]) for r in res["sizes"]] == [(256, 3000), (1024, 3000)]
    for row in res["sizes"]:
        m = row["methods"]
        assert set(m) == {"swav3", "ours_fixed3", "ours_tol", "ours_warm", "ours_tol_out"}
        assert row["fixed3_vs_swav3_max_abs_diff"] < 1e-5
        assert m["ours_fixed3"]["error_median"] == pytest.approx(m["swav3"]["error_median"], rel=1e-3)
        for name in ("ours_tol", "ours_warm", "ours_tol_out"):
            assert m[name]["error_max"] <= 1.01e-3, (row["n"], name)
        for r in m.values():
            assert _finite_nonneg(r["median_ms"]) and r["min_ms"] <= r["median_ms"]
            assert r["ratio_to_swav3"] > 0
        assert m["swav3"]["ratio_to_swav3"] == 1.0
    # at 1024 x 3000 SwAV's 3 iterations leave the cluster marginal off by more than 1e-3
    assert res["sizes"][1]["methods"]["swav3"]["error_median"] > 1e-3


def test_bench_relaxed_quick(tmp_path):
    """Relaxed vs balanced per pass, label rounding vs argmax (timings recorded, not asserted)."""
    out = tmp_path / "relaxed.json"
    _run([str(BENCH / "bench_relaxed.py"), "--quick", "--repeats", "1", "--json", str(out)],
         cwd=tmp_path, timeout=300)
    res = json.loads(out.read_text())
    assert set(res["settings"]) == {"balanced", "tau=0.1", "tau=1", "tau=10"}
    for s in res["settings"].values():
        assert s["error"] <= 1e-3 and s["passes"] >= 1 and _finite_nonneg(s["solve_s"])
    assert res["rounding"]["ordinary"]["labels_changed"] == 0.0
    assert res["rounding"]["flat (all rows tied)"]["max_size_minus_expected"] < 1.0


def test_bench_zipf_priors_quick(tmp_path):
    _run([str(BENCH / "bench_zipf_priors.py"), "--quick", "--out", str(tmp_path)], cwd=tmp_path,
         timeout=600)
    res = json.loads((tmp_path / "zipf_priors.json").read_text())
    base = {"uniform", "zipf (matched)", "uniform, tau=1", "zipf, tau=10"}
    warm = {"zipf, warm-up 0.5", "zipf, warm-up 0.5, tau=10"}  # training only: not one solve
    assert set(res["synthetic"]) == base and set(res["digits"]) == base | warm
    for exp in ("digits", "synthetic"):
        for r in res[exp].values():
            assert 0.0 <= r["mean"] <= 1.0 and len(r["runs"]) == 1
    md = (tmp_path / "zipf_priors.md").read_text()
    assert "| zipf, tau=10 |" in md and "| zipf, warm-up 0.5 | " in md


def test_bench_modality_weights_quick(tmp_path):
    """Equal vs information vs fixed eq. 6 weights on digits views: every scenario, method and
    single-view reference is in the JSON and the Markdown, the weights are distributions, and the
    tuning seed is kept apart from the reported one."""
    _run([str(BENCH / "bench_modality_weights.py"), "--quick", "--out", str(tmp_path)], cwd=tmp_path,
         timeout=600)
    res = json.loads((tmp_path / "modality_weights.json").read_text())
    assert (tmp_path / "modality_weights.png").stat().st_size > 0
    md = (tmp_path / "modality_weights.md").read_text()
    assert res["seeds"] == [1] and res["tuning_seeds"] == [0]
    scenarios = {"clean": ["left", "right"], "noise view": ["left", "noise"],
                 "degraded view": ["left", "degraded"], "unpaired view": ["left", "unpaired"],
                 "three views": ["left", "right", "noise"]}
    methods = ["equal", "information, floor 0.2", "information, floor 0", "fixed"]
    assert list(res["scenarios"]) == list(scenarios)
    for name, views in scenarios.items():
        sc = res["scenarios"][name]
        assert sc["views"] == views and list(sc["methods"]) == methods, name
        assert set(sc["single"]) == {f"{v} alone" for v in views}, name
        assert res["fixed_choice"][name] in res["fixed_grid"][name]
        assert f"## {name}: {' + '.join(views)}" in md
        for m, r in sc["methods"].items():
            assert 0.0 <= r["nmi"]["mean"] <= 1.0 and len(r["nmi"]["runs"]) == 1, (name, m)
            assert -1.0 <= r["ari"]["mean"] <= 1.0, (name, m)
            assert set(r["weights"]) == set(views)
            assert sum(r["weights"].values()) == pytest.approx(1.0, abs=1e-5), (name, m)
            assert md.count(f"| {m} |") + md.count(f"| {m}, w = ") >= 1, (name, m)
        assert sc["methods"]["equal"]["weights"] == pytest.approx({v: 1 / len(views) for v in views})
        assert len(sc["methods"]["information, floor 0.2"]["weights_course"][0]) == res["n_clusterings"]
        for v in views:
            assert f"| *{v} alone* |" in md


@pytest.mark.slow
def test_bench_scaling_quick(tmp_path):
    """λ-scaling vs a solve at λ alone: every solve reaches tol, the same problem (labels nearly
    all equal), fewer passes on the confident problems (counts, not timings)."""
    _run([str(BENCH / "bench_scaling.py"), "--quick", "--out", str(tmp_path)], cwd=tmp_path,
         timeout=300)
    res = json.loads((tmp_path / "scaling.json").read_text())
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert "passes (mean)" in (tmp_path / "scaling.md").read_text()
    for rows in res["problems"].values():
        assert set(rows) == {"0", "1", "2", "3", "4"}
        for r in rows.values():
            assert r["converged"] == 1.0 and r["same_labels"] >= 0.95
            assert _finite_nonneg(r["seconds"])
    small = res["problems"]["confident N=96 K=6"]
    assert small["2"]["passes_mean"] * 3 < small["0"]["passes_mean"]



@pytest.mark.slow
def test_gpu_train_cpu_quick(tmp_path):
    """The paper preset's training-step benchmark (benchmarks/gpu_train.py) on tiny CPU settings."""
    out = tmp_path / "gpu_train.json"
    _run([str(BENCH / "gpu_train.py"), "--device", "cpu", "--quick", "--out", str(out)], cwd=tmp_path)
    saved = json.loads(out.read_text())
    assert saved["loader"]["clips_per_s"] > 0 and saved["loader"]["clips"] > 0
    fit = saved["fit_b8"]
    assert fit["steps"] == 4 and fit["clips"] == 32 and not fit["amp"]
    assert fit["train_clips_per_s"] > 0 and fit["clustering_s"] > 0 and fit["clustering_n_iter"] >= 1
    assert saved["video_shape"][1] == 4 and saved["quick"]


def test_gpu_pass_refuses_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a device is present")
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_pass.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "needs a CUDA device" in proc.stderr


def test_gpu_page_is_the_raw_runs(tmp_path):
    """docs/benchmarks/gpu.md is what benchmarks/gpu_report.py writes from docs/benchmarks/gpu/."""
    _run([str(BENCH / "gpu_report.py"), "--out", str(tmp_path)], cwd=tmp_path)
    assert (tmp_path / "gpu.md").read_text() == (ROOT / "docs" / "benchmarks" / "gpu.md").read_text()
    d = json.loads((tmp_path / "gpu.json").read_text())
    assert [r["n"] for r in d["dense_final"] if "lam20" in r] == [1_000_000, 2_000_000, 4_000_000]
    assert d["tests"] and all("failed" not in t["result"] for t in d["tests"])
    assert (tmp_path / "gpu.png").stat().st_size > 10_000


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], check=True, timeout=60)


def test_cross_cpu_compare_tells_identical_runs_from_other_ones(load_benchmark):
    cc = load_benchmark("cross_cpu")
    labels = [f"data/c0/{i:05d}.mp4,{i % 3},0.5,{i % 3},0.5,c0,ok" for i in range(24)]
    machine = {"cpu": "X", "vendor": "V", "versions": {"torch": "1"}}
    a = {"machine": machine, "runs": {"tiny fast, 1 thread": {"weights": "aa", "labels": labels},
                                      "tiny fast, 1 thread, AVX2": {"weights": "aa", "labels": labels}},
         "kmeans": {}}
    other = [x.replace(",0.5,", ",0.6,", 1) for x in labels]  # confidences only
    other[3] = other[3].replace(",0,", ",2,", 1)  # and one label
    b = {"machine": {**machine, "versions": {"torch": "2"}},
         "runs": {"tiny fast, 1 thread": {"weights": "bb", "labels": other}}, "kmeans": {}}
    lines = cc.compare(a, b)
    assert "| torch | 1 | 2 (differs) |" in lines
    assert "| tiny fast, 1 thread | differ | 0 of 24 | 23 of 24 |  |" in lines
    assert all("AVX2" not in x for x in lines)  # only runs in both
    assert "| tiny fast, 1 thread | identical | 24 of 24 | 24 of 24 |  |" in cc.compare(a, a)
    assert cc.within(a)[-1] == ("| tiny fast, 1 thread | tiny fast, 1 thread, AVX2 | identical | "
                                "24 of 24 | 24 of 24 |")
    # every pair the page compares is a run of the plan
    names = set(cc.plan([0], demo_epochs=3))
    assert {n for pair in cc.PAIRS for n in pair} <= names and "demo seed 0, 3 epochs" in names


def test_cross_cpu_page_is_the_committed_runs(load_benchmark):
    """docs/benchmarks/cross_cpu.md shows what --compare prints for the committed runs."""
    cc = load_benchmark("cross_cpu")
    runs = ROOT / "docs" / "benchmarks" / "cross_cpu"
    page = (ROOT / "docs" / "benchmarks" / "cross_cpu.md").read_text()
    amd, intel = (json.loads((runs / f"{m}_torch2.11.json").read_text()) for m in ("amd", "intel"))
    assert intel["machine"]["vendor"] == "GenuineIntel" and amd["machine"]["vendor"] == "AuthenticAMD"
    for lines in (cc.compare(amd, intel), cc.within(intel), cc.within(amd)):
        assert "\n".join(lines[2:]) in page


def test_cross_cpu_never_overwrites_a_result_or_reuses_run_folders(tmp_path, load_benchmark):
    cc = load_benchmark("cross_cpu")
    out = tmp_path / "here.json"
    out.write_text("{}")
    with pytest.raises(SystemExit):
        cc.main(["--out", str(out)])
    assert out.read_text() == "{}"
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "old").mkdir()
    with pytest.raises(SystemExit):
        cc.main(["--out", str(tmp_path / "new.json"), "--workdir", str(tmp_path / "runs")])
    assert not (tmp_path / "new.json").exists()


def _page(nmis: dict[str, list[float]], seeds=(1, 2, 3), met=(True, False)) -> dict:
    """A robustness page with the given per-seed NMIs of 'both streams (labels.csv)' per world."""
    return {"split": {"held_out": list(seeds)},
            "worlds": {w: {"methods": {"both streams (labels.csv)": {"nmi": float(np.mean(v)), "nmi_all": v}},
                           "targets": {"a": met[0], "b": met[1], "c": None}} for w, v in nmis.items()}}


def test_robustness_pairs_pairs_only_the_world_seeds_both_pages_ran(load_benchmark):
    pairs = load_benchmark("robustness_pairs")
    new = _page({"x": [0.5, 0.7, 0.9], "y": [0.2, 0.4, 0.1]})
    old = _page({"x": [0.4, 0.7], "y": [0.3, 0.1, 0.1], "z": [1.0, 1.0, 1.0]}, met=(True, True))
    p = pairs.paired(new, old, "both streams (labels.csv)")
    d = np.array([10.0, 0.0, -10.0, 30.0, 0.0])  # x seeds 1-2, y seeds 1-3; z only in old
    assert p["n"] == 5 and (p["up"], p["down"]) == (2, 1)
    assert p["mean"] == pytest.approx(d.mean())
    assert p["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(5))
    res = pairs.compare(new, old)
    assert list(res["worlds"]) == ["x", "y"] and res["targets"] == [2, 4]
    assert pairs.paired(new, _page({"q": [0.1]}), "both streams (labels.csv)") == {"n": 0}


def test_robustness_pairs_reproduces_the_moment_pages_gain(load_benchmark):
    """The moment page's '+4.1 ± 2.2 NMI over 21 world-seeds, better in 12, worse in 8' and its
    21 of 35 targets (against 18), recomputed from the two committed JSON files."""
    pairs = load_benchmark("robustness_pairs")
    pages = ROOT / "docs" / "benchmarks"
    res = pairs.compare(json.loads((pages / "robustness_av_moment.json").read_text()),
                        json.loads((pages / "robustness_av.json").read_text()))
    both = res["paired"]["both streams (labels.csv)"]
    assert (both["n"], both["up"], both["down"]) == (21, 12, 8)
    assert f"{both['mean']:+.1f} ± {both['se']:.1f}" == "+4.1 ± 2.2"
    assert res["targets"] == [21, 18]
    assert "| shape | 64.3 / 50.5 |" in pairs.markdown(res)


def test_the_preset_pages_numbers_are_what_robustness_pairs_prints(load_benchmark):
    """The preset's held-out page after the thread fix: its table against the moment page (the
    same runs before the fix) and its gains against equal weights, recomputed from the JSON."""
    pairs = load_benchmark("robustness_pairs")
    pages = ROOT / "docs" / "benchmarks"

    def load(name: str) -> dict:
        return json.loads((pages / f"{name}.json").read_text())

    preset, equal = load("robustness_av_preset"), load("robustness_av_equal")
    text = (pages / "robustness_av_preset.md").read_text()
    redraw = pairs.compare(preset, load("robustness_av_moment"))
    for row in pairs.markdown(redraw).splitlines()[2:2 + len(redraw["worlds"])]:  # one per world
        assert row in text, row
    both = redraw["paired"]["both streams (labels.csv)"]
    assert f"**{both['mean']:+.1f} ± {both['se']:.1f} NMI**" in text
    assert redraw["targets"] == [18, 21] and "**Result: 18 of issue 10's 35 targets, not 21.**" in text
    gain = pairs.compare(preset, equal)["paired"]["both streams (labels.csv)"]
    equal_text = " ".join((pages / "robustness_av_equal.md").read_text().split())
    assert (f"**{gain['mean']:+.1f} ± {gain['se']:.1f}** over the 21 world-seeds (mean ± standard "
            f"error; up {gain['up']}, down {gain['down']})") in equal_text
    before = pairs.paired(load("robustness_av_moment"), load("robustness_av"), "both streams (labels.csv)")
    pooled = np.array(gain["diffs"] + before["diffs"])  # the rule's 42 pairs, both draws
    assert len(pooled) == 42
    assert (f"**{pooled.mean():+.1f} ± {pooled.std(ddof=1) / np.sqrt(42):.1f}** (up "
            f"{(pooled > 0).sum()}, down {(pooled < 0).sum()})") in " ".join(text.split())


def test_robustness_sets_are_read_as_the_cli_reads_them(load_benchmark):
    """``--set`` of the suite takes what ``otcluster-video train --set`` takes: a bare word is a
    string (it raised a TOML error deep inside before), a TOML value keeps its type."""
    from otcluster_video.cli import CliError

    bench = load_benchmark("bench_robustness_av")
    got = bench._set_values(["clustering.init_labels=kmeans", 'training.prior="zipf"',
                             "clustering.schedule_power=1.0", "training.lr=[0.001, 0.05]"])
    assert got == {"clustering.init_labels": "kmeans", "training.prior": "zipf",
                   "clustering.schedule_power": 1.0, "training.lr": [0.001, 0.05]}
    with pytest.raises(CliError, match="KEY=VALUE"):
        bench._set_values(["no-equals-sign"])


def test_the_weight_screens_numbers_are_its_runs():
    """The screen of steadier stability weights: every paired change in its table is recomputed
    (numpy, not the page's helper) from the per-run NMIs in its JSON, and the verdict follows its
    rule (above +1 and above the standard error)."""
    pages = ROOT / "docs" / "benchmarks"
    res = json.loads((pages / "robustness_av_screen_weights.json").read_text())
    text = (pages / "robustness_av_screen_weights.md").read_text()
    runs = {c: v["runs"] for c, v in res["configs"].items()}
    assert len(runs["preset"]) == 14 and all(r.keys() == runs["preset"].keys() for r in runs.values())
    for setting in ("warm-up 0.3", "momentum 0.7"):
        cells = []
        for row in ("both streams", "video heads", "audio heads"):
            d = np.array([runs[setting][k][row] - runs["preset"][k][row] for k in runs["preset"]])
            se = d.std(ddof=1) / np.sqrt(len(d))
            cells.append(f"{d.mean():+.1f} ± {se:.1f} (up {(d > 0).sum()}, down {(d < 0).sum()})")
            if row == "both streams":
                passed = d.mean() > 1 and d.mean() > se
        assert f"| {setting} − preset | " + " | ".join(cells) + " |" in text
        assert not passed, setting
    assert "## Result: neither passed" in text
    for setting, r in runs.items():  # how far the pictures' weight moved, how much the labels churned
        w = [np.array(v["video_weight"]) for v in r.values()]
        spread = np.mean([x.max() - x.min() for x in w])
        step = np.mean([np.abs(np.diff(x)).mean() for x in w])
        churn = 100 * np.mean([v["changed_last10"] for v in r.values()])
        assert f"| {setting} | {spread:.2f} | {step:.3f} | {churn:.1f} |" in text
    wide = sum(max(v["video_weight"]) - min(v["video_weight"]) >= 0.6 for v in runs["preset"].values())
    video_md = " ".join((ROOT / "docs" / "video.md").read_text().split())
    assert f"0.17-0.83 that the floor allows in {wide} of 14 tuning runs" in video_md


def test_the_schedule_screens_numbers_are_its_runs():
    """The screen of the clustering schedule and the k-means start: every paired change, the
    verdicts (above +1 and above the standard error), the first labels' table and the numbers its
    findings quote are recomputed with numpy from the per-run records in its JSON."""
    pages = ROOT / "docs" / "benchmarks"
    res = json.loads((pages / "robustness_av_screen_schedule.json").read_text())
    text = (pages / "robustness_av_screen_schedule.md").read_text()
    flat = " ".join(text.split())
    runs = {c: v["runs"] for c, v in res["configs"].items()}
    base = runs["preset"]
    assert len(base) == 14 and all(r.keys() == base.keys() for r in runs.values())
    rows = ("both streams", "video heads", "audio heads")

    def paired(a, b):
        cells, verdict = [], None
        for row in rows:
            d = np.array([runs[a][k][row] - runs[b][k][row] for k in base])
            se = d.std(ddof=1) / np.sqrt(len(d))
            cells.append(f"{d.mean():+.1f} ± {se:.1f} (up {(d > 0).sum()}, down {(d < 0).sum()})")
            verdict = verdict if verdict is not None else bool(d.mean() > 1 and d.mean() > se)
        return " | ".join(cells), verdict

    settings = [c for c in runs if c != "preset"]
    assert len(settings) >= 3
    for c in settings:
        cells, passed = paired(c, "preset")
        assert f"| {c} − preset | {cells} | {'**yes**' if passed else 'no'} |" in text
        assert res["passed"][c] is passed
    e, f = "E: schedule power 1.0", "F: power 1.0 + k-means start"
    assert f"| F − E (the k-means start) | {paired(f, e)[0]} | (no rule) |" in text
    if not any(res["passed"].values()):
        assert "**Nothing passed, so no held-out run was made" in text
    for c, r in runs.items():  # the first labels and the first fifth of training
        first = np.mean([v["nmi"][0] for v in r.values()])
        changed = 100 * np.mean([v["changed"][1] for v in r.values()])
        early = [[(n, ch) for s, n, ch in zip(v["steps"], v["nmi"], v["changed"])
                  if s <= 0.2 * v["total_steps"]] for v in r.values()]
        nmi = np.mean([np.mean([n for n, _ in x]) for x in early])
        churn = 100 * np.mean([np.mean([ch for _, ch in x if ch is not None]) for x in early])
        count = np.mean([len(x) for x in early])
        assert f"| {c} | {first:.1f} | {changed:.0f} | {nmi:.1f} | {churn:.1f} | {count:.1f} |" in text
    kmeans_first = np.mean([v["nmi"][0] for v in runs[f].values()])
    heads_first = np.mean([v["nmi"][0] for v in base.values()])
    assert f"scored {kmeans_first:.1f} NMI on average over the 14 runs, the random heads' first labels " \
           f"{heads_first:.1f}" in flat
    assert f"{100 * np.mean([v['changed'][1] for v in runs[f].values()]):.0f} % of the k-means labels" in flat
    assert base["shape|0"]["steps"][:6] == [0, 2, 6, 11, 18, 25] and "steps 0, 2, 6, 11, 18, 25" in flat


def test_robustness_pairs_prints_the_table_and_never_overwrites_its_json(load_benchmark, tmp_path, capsys):
    pairs = load_benchmark("robustness_pairs")
    pages = ROOT / "docs" / "benchmarks"
    args = [str(pages / "robustness_av_moment.json"), str(pages / "robustness_av.json")]
    res = pairs.main([*args, "--json", str(tmp_path / "pairs.json")])
    assert "| shape | 64.3 / 50.5 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "pairs.json").read_text())["targets"] == res["targets"] == [21, 18]
    (tmp_path / "mine.json").write_text("a user's file")
    with pytest.raises(SystemExit):
        pairs.main([*args, "--json", str(tmp_path / "mine.json")])
    assert (tmp_path / "mine.json").read_text() == "a user's file"


@pytest.mark.parametrize(("name", "expected"), [
    ("robustness_av_screen_lr", ["H: learning rate 0.02", "I: learning rate 0.01"]),
    ("robustness_av_screen_overcluster", ["O: overclustering x3, merged"]),
    ("robustness_av_screen_momentum", ["M: label momentum 0.5"]),
    ("robustness_av_screen_vflip", ["K: vertical flip 0.5"]),
    ("robustness_av_screen_noise", ["N2: noisy sound and degraded pictures 0.25"]),
])
def test_the_screen_pages_numbers_are_their_runs(name, expected):
    """A screen page written by screen_page.py (learning rate; overclustering; label momentum;
    vertical flip; noise and degraded pictures):
    its baseline is the schedule screen's preset runs, and every paired change, verdict and
    world's mean on the page is recomputed with numpy from the per-run records in its JSON."""
    pages = ROOT / "docs" / "benchmarks"
    res = json.loads((pages / f"{name}.json").read_text())
    text = (pages / f"{name}.md").read_text()
    schedule = json.loads((pages / "robustness_av_screen_schedule.json").read_text())
    runs = {c: v["runs"] for c, v in res["configs"].items()}
    base = runs["preset"]
    assert base == schedule["configs"]["preset"]["runs"]
    assert len(base) == 14 and all(r.keys() == base.keys() for r in runs.values())
    rows = ("both streams", "video heads", "audio heads")
    settings = [c for c in runs if c != "preset"]
    assert settings == expected
    for c in settings:
        cells, passed = [], None
        for row in rows:
            d = np.array([runs[c][k][row] - base[k][row] for k in base])
            se = d.std(ddof=1) / np.sqrt(len(d))
            cells.append(f"{d.mean():+.1f} ± {se:.1f} (up {(d > 0).sum()}, down {(d < 0).sum()})")
            passed = passed if passed is not None else bool(d.mean() > 1 and d.mean() > se)
        assert f"| {c} − preset | {' | '.join(cells)} | {'**yes**' if passed else 'no'} |" in text
        assert res["passed"][c] is passed
    for world in sorted({k.split("|")[0] for k in base}):
        means = [" / ".join(f"{np.mean([r[f'{world}|{s}'][row] for s in (0, 4)]):.1f}" for row in rows)
                 for r in runs.values()]
        assert f"| {world} | {' | '.join(means)} |" in text


def test_the_overclustering_pages_held_out_numbers_are_its_runs(load_benchmark):
    """robustness_av_overcluster.md (``heads.overcluster = 3`` on the held-out seeds of the
    seven worlds): its per-world table, paired changes and targets against the preset's held-out page
    are recomputed from the two JSON files; its supervised bound is the preset page's, as it says."""
    pairs = load_benchmark("robustness_pairs")
    pages = ROOT / "docs" / "benchmarks"
    new = json.loads((pages / "robustness_av_overcluster.json").read_text())
    old = json.loads((pages / "robustness_av_preset.json").read_text())
    text = (pages / "robustness_av_overcluster.md").read_text()
    assert new["overrides"] == ["heads.overcluster=3"] and new["split"]["held_out"] == [1, 2, 3]
    assert sorted(new["worlds"]) == sorted(old["worlds"]) and len(new["worlds"]) == 7
    res = pairs.compare(new, old)
    for row in pairs.markdown(res).splitlines()[2:2 + len(res["worlds"])]:
        assert row in text, row
    assert res["targets"] == [22, 18] and "22 of issue 10's 35 targets against the preset's 18" in \
        " ".join(text.split())
    flat = " ".join(text.split())
    for row, label in [("both streams (labels.csv)", "both streams"), ("video heads", "video heads"),
                       ("audio heads", "audio heads"), ("OT self-labels", "OT self-labels")]:
        p = res["paired"][row]
        assert p["n"] == 21 and f"{label} {p['mean']:+.1f} ± {p['se']:.1f}" in flat
    both = res["paired"]["both streams (labels.csv)"]
    assert f"+{both['mean']:.1f} ± {both['se']:.1f} NMI" in flat and (both["up"], both["down"]) == (13, 6)
    for world in new["worlds"]:
        for m in ("supervised, video", "supervised, audio", "supervised, both"):
            bound = (page["worlds"][world]["methods"][m]["nmi_all"] for page in (new, old))
            assert next(bound) == next(bound)


def _demo_result(nmis: dict[str, float]) -> dict:
    """A minimal evaluation result whose rows give :func:`demo.headline` these NMIs (%)."""
    rows = []
    for method, streams, key in [("SeLaVi heads", "video+audio", "both"), ("SeLaVi heads", "video", "video"),
                                 ("SeLaVi heads", "audio", "audio"),
                                 ("SeLaVi self-labels (OT)", "video+audio", "self_labels")]:
        rows.append({"method": method, "streams": streams, "head": 0, "nmi": nmis[key] / 100})
    for method, key in [("k-means, random init", "kmeans_random"),
                        ("k-means, SeLaVi features", "kmeans_trained")]:
        rows += [{"method": method, "streams": s, "head": None, "nmi": nmis[key] / 100 - i * 0.01}
                 for i, s in enumerate(("video", "audio", "video+audio"))]
    return {"ground_truth": True, "n_clusters": 6, "rows": rows}


def test_demo_page_collects_a_demo_folder_and_refuses_to_overwrite(load_benchmark, tmp_path):
    page = load_benchmark("demo_page")
    run = tmp_path / "demo" / "run"
    run.mkdir(parents=True)
    nmis = {"both": 99.4, "video": 90.0, "audio": 85.0, "self_labels": 98.0, "kmeans_random": 60.0,
            "kmeans_trained": 80.0}
    (run / "evaluation.json").write_text(json.dumps(_demo_result(nmis)))
    (run / "demo-timings.json").write_text(json.dumps({"train": 500.0, "total": 560.4}))
    cell = page.collect("preset", 3, tmp_path / "demo")  # no merge.json: no merge diagnosis
    assert cell["nmi"] == pytest.approx(nmis) and "merge" not in cell
    assert cell["verdict"].endswith("On this run (seed 3), both streams together beat each stream "
                                    "alone and k-means on the random-init and on the trained features.")
    (tmp_path / "rule.md").write_text("the rule\n\nits second paragraph")
    (tmp_path / "findings.md").write_text("what was found")
    args = ["--run", "preset", "3", str(tmp_path / "demo"), "--rule", str(tmp_path / "rule.md"),
            "--findings", str(tmp_path / "findings.md"), "--title", "T", "--name", "p",
            "--out", str(tmp_path / "out")]
    page.main(args)
    text = (tmp_path / "out" / "p.md").read_text()
    assert "| preset | 3 | 99.4 | 90.0 | 85.0 | 98.0 | 80.0 | beat | 560 s |" in text
    assert "> the rule\n>\n> its second paragraph" in text and "## The merge" not in text
    with pytest.raises(SystemExit, match="exists"):
        page.main(args)
    assert (tmp_path / "out" / "p.md").read_text() == text


def test_the_overclustered_demo_page_is_its_runs(load_benchmark):
    """overcluster_demo.md (the demo with ``heads.overcluster``, and the preset as shipped, on
    the same seeds): the page is what demo_page.py writes from its JSON, and every verdict
    quotes its run's both-stream NMI."""
    page = load_benchmark("demo_page")
    pages = ROOT / "docs" / "benchmarks"
    data = json.loads((pages / "overcluster_demo.json").read_text())
    assert (pages / "overcluster_demo.md").read_text() == page.markdown(data)
    text = (pages / "overcluster_demo.md").read_text()
    for run in data["runs"]:
        assert f"both streams {run['nmi']['both']:.1f} " in run["verdict"]
        held = "together beat" in run["verdict"]
        assert held != ("do NOT beat" in run["verdict"])
        assert f"| {run['nmi']['kmeans_trained']:.1f} | {'beat' if held else 'NOT beat'} |" in text
        assert ("merge" in run) == run["setting"].startswith("overcluster")


def test_coassociation_groups_fine_clusters_that_other_labellings_keep_together(load_benchmark):
    diagnose = load_benchmark("diagnose_merge")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    fine = y * 3 + rng.integers(0, 3, 600)  # each class split in three
    others = [y * 2 + rng.integers(0, 2, 600), y * 3 + rng.integers(0, 3, 600)]  # other splits
    groups = diagnose.coassociation_groups(fine, others, 9, 3)
    assert len(set(groups.tolist())) == 3
    assert all(len(set(groups[3 * c:3 * c + 3].tolist())) == 1 for c in range(3))
    # one informative labelling beside one that says nothing: the affinities are averaged, so
    # the noise only dilutes the structure and the classes are still found
    mixed = [others[0], rng.integers(0, 9, 600)]
    groups = diagnose.coassociation_groups(fine, mixed, 9, 3)
    assert all(len(set(groups[3 * c:3 * c + 3].tolist())) == 1 for c in range(3))
    assert len(set(groups.tolist())) == 3
    # an empty fine cluster (4) is left out of the grouping; the others are still grouped
    holed = np.where(fine == 4, 3, fine)
    groups = diagnose.coassociation_groups(holed, others, 9, 3)
    assert groups[3] == groups[5] and len({groups[0], groups[3], groups[6]}) == 3
    # only K fine clusters used (0, 3, 6): nothing to merge, each its own group
    groups = diagnose.coassociation_groups(y * 3, others, 9, 3)
    assert sorted(groups[[0, 3, 6]].tolist()) == [0, 1, 2]
    assert diagnose.coassociation_groups(fine, others, 9, 9).tolist() == list(range(9))


def test_diagnose_factors_bins_and_scores(tmp_path, load_benchmark):
    diag = load_benchmark("diagnose_factors")
    rng = np.random.default_rng(0)
    values = rng.normal(size=61)
    values[[3, 17]] = np.nan
    bins = diag.equal_count_bins(values, 6)
    assert np.isnan(bins[[3, 17]]).all()
    counts = np.bincount(bins[~np.isnan(bins)].astype(int))
    assert len(counts) == 6 and counts.max() - counts.min() <= 1
    ok = ~np.isnan(values)
    assert np.all(np.diff(bins[ok][np.argsort(values[ok])]) >= 0)  # bins follow the values
    y = rng.integers(0, 4, 400).astype(float)
    noise = rng.integers(0, 4, 400).astype(float)
    partial = y.copy()
    partial[:200] = np.nan  # a factor known for half the samples: scored on those only
    table = diag.ami_table({"a": y.astype(int), "b": noise.astype(int)},
                           {"class": y, "half": partial})
    assert table["a"]["class"] == 100.0 and table["a"]["half"] == 100.0
    assert abs(table["b"]["class"]) < 3.0
    text = diag.markdown({"shape|1": table})
    assert "| shape seed 1 | a | 100.0 | 100.0 |" in text
    png = tmp_path / "factors.png"
    diag.plot({"shape|1": table, "texture|1": {"a": {"class": 50.0}}}, png)  # a factor missing
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_merge_scripts_read_an_overclustered_run(tmp_path):
    """diagnose_merge.py, screen_merge.py and diagnose_factors.py on a tiny run trained with
    heads.overcluster=2."""
    work = tmp_path / "work"
    _run([str(BENCH / "bench_robustness_av.py"), "--quick", "--methods", "both streams",
          "--set", "heads.overcluster=2", "--out", str(tmp_path / "out"), "--workdir", str(work)],
         cwd=tmp_path)
    _run([str(BENCH / "diagnose_merge.py"), str(work), str(tmp_path / "diag.json")], cwd=tmp_path)
    rows = json.loads((tmp_path / "diag.json").read_text())
    assert list(rows) == ["shape|1"]
    assert {"fine (M clusters)", "fine homogeneity", "oracle merge", "features (library)",
            "video features", "audio features", "co-association"} == set(rows["shape|1"])
    assert all(0.0 <= v <= 100.0 for v in rows["shape|1"].values())
    _run([str(BENCH / "screen_merge.py"), str(work), str(tmp_path / "screen")], cwd=tmp_path)
    cells = json.loads((tmp_path / "screen" / "shape" / "cells.json").read_text())
    assert {"1|both streams (labels.csv)", "1|video heads", "1|audio heads"} <= set(cells)
    assert all(0.0 <= c["nmi"] <= 1.0 for c in cells.values())
    # diagnose_factors.py reads the same run (merged to K) and the world's recorded nuisances
    _run([str(BENCH / "diagnose_factors.py"), str(work), str(tmp_path / "factors.json")], cwd=tmp_path)
    table = json.loads((tmp_path / "factors.json").read_text())["shape|1"]
    assert (tmp_path / "factors.png").stat().st_size > 0
    assert set(table) == {"both streams", "video", "audio"}
    assert all(set(row) == {"class", "f0", "volume", "distractor", "size", "x", "y", "speed", "hue",
                            "contrast"} for row in table.values())
    assert all(-100.0 <= v <= 100.0 for row in table.values() for v in row.values())


def test_committed_factor_diagnosis_says_what_the_readme_says():
    """docs/benchmarks/README.md quotes docs/benchmarks/diagnose_factors.json: the pictures'
    clusters follow the object's vertical place, not its size or colour."""
    res = json.loads((ROOT / "docs" / "benchmarks" / "diagnose_factors.json").read_text())
    readme = " ".join((ROOT / "docs" / "benchmarks" / "README.md").read_text().split())
    for world in ("degraded", "format"):
        ys = [res[f"{world}|{s}"]["video"]["y"] for s in (0, 4)]
        assert f"{ys[0]:.1f} and {ys[1]:.1f} in `{world}`" in readme, (world, ys)
        assert min(ys) >= 10.0 and max(abs(res[f"{world}|{s}"]["video"]["x"]) for s in (0, 4)) < 3
    for run in res.values():
        assert max(run["video"][f] for f in ("size", "hue", "contrast")) <= 9.05
    assert {k.split("|")[0] for k in res} == {"shape", "format", "degraded", "motion"}


def test_the_vertical_flip_screen_quotes_its_factor_diagnosis():
    """robustness_av_screen_vflip.md quotes diagnose_factors_vflip.json (the flip's runs) against
    diagnose_factors.json (the preset's): the video heads stopped following the vertical place."""
    pages = ROOT / "docs" / "benchmarks"
    before = json.loads((pages / "diagnose_factors.json").read_text())
    after = json.loads((pages / "diagnose_factors_vflip.json").read_text())
    text = " ".join((pages / "robustness_av_screen_vflip.md").read_text().split())
    for world in ("degraded", "format", "shape"):
        old, new = ([res[f"{world}|{s}"]["video"]["y"] for s in (0, 4)] for res in (before, after))
        quote = f"`{world}` {old[0]:.1f} / {old[1]:.1f} → {new[0]:.1f} / {new[1]:.1f}"
        assert quote in text, quote
        assert sum(new) < sum(old) / 2
    assert set(before) < set(after)  # the flip's diagnosis covers all seven worlds


@pytest.mark.parametrize("taken", ["factors.json", "factors.png"])
def test_diagnose_factors_refuses_to_replace_its_files(tmp_path, monkeypatch, load_benchmark, taken):
    """OUT.json or its heatmap OUT.png already there: exit 2 naming it, before any run is read."""
    diag = load_benchmark("diagnose_factors")
    (tmp_path / taken).write_text("a record")
    monkeypatch.setattr(sys, "argv", ["diagnose_factors.py", str(tmp_path / "no-runs"),
                                      str(tmp_path / "factors.json")])
    with pytest.raises(SystemExit) as err:
        diag.main()
    assert err.value.code == 2
    assert (tmp_path / taken).read_text() == "a record"
