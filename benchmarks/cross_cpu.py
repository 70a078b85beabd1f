"""The same runs on another CPU: what a machine's kernels do to a run's labels (issue 10, item 6).

Every run starts in a fresh process with its own thread count, and each writes the sha256 of
its trained weights and its labels:

* the tiny run of the tests (24 videos of 3 classes, 2 epochs) on the ``cpu`` preset's portable
  kernels and on torch's fast ones, once with the kernels this CPU picks and once with every
  library told to use its AVX2 kernels (oneDNN, ATen, MKL, numba, FFmpeg), and on 1 and 4
  threads;
* the demo (``python -m otcluster_video.demo``, 480 videos, 30 epochs) for the seeds asked;
* k-means (faiss and scikit-learn) on fixed features, on 1 and 4 threads.

Run it on two machines and compare::

    python benchmarks/cross_cpu.py --out here.json [--demo-seeds 0] [--jobs 6]
    python benchmarks/cross_cpu.py --compare here.json there.json

The JSON also holds the machine: CPU model and vendor, its SIMD flags, the versions of every
library that rounds, and MKL's reproducibility mode. It is written after every run, so a run
stopped by a time limit keeps what finished.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

#: One demo run (``run_demo``) in a fresh process with N torch threads; prints the
#: sha256 of the trained weights, the labels (paths relative to the output folder), MKL's mode
#: and, for a demo with ground truth, the headline NMIs and the verdict.
RUN = """
import hashlib, json, os, sys
import torch
if os.environ.get("TEST_FFMPEG_FLAGS"):  # FFmpeg's SIMD limited as on another CPU
    import ctypes
    lib, flags = os.environ["TEST_FFMPEG_FLAGS"].split(":")
    ctypes.CDLL(lib).av_force_cpu_flags(int(flags))
n, out, spec = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
torch.set_num_threads(n)  # as OMP_NUM_THREADS; numba's threads: NUMBA_NUM_THREADS (its pool is
# not started here: a user's process starts it at the first clustering, see otcluster._threads)
from otcluster_video.demo import headline, run_demo, verdict
try:
    import jinja2, matplotlib
except ImportError:  # a machine without the explorer's libraries: its page is not compared here
    from otcluster_video import recipe
    recipe.explore = lambda *a, **k: None
res = run_demo(out, data=spec.get("data"), overrides=spec.get("overrides"), seed=spec.get("seed"),
               progress=False)
ck = torch.load(os.path.join(out, "run", "checkpoints", "last.pt"), weights_only=True)
h = hashlib.sha256()
for k, v in sorted(ck["model"].items()):
    h.update(k.encode()); h.update(v.contiguous().numpy().tobytes())
labels = [os.path.relpath(line.split(",", 1)[0], out) + "," + line.split(",", 1)[1]
          for line in open(res["paths"]["labels"]).read().splitlines()[1:]]
from otcluster import mkl_cnr_mode
ev = res["evaluation"]
print("RESULT" + json.dumps({
    "weights": h.hexdigest(), "labels": labels, "mkl": mkl_cnr_mode(),
    "headline": headline(ev) if ev.get("ground_truth") else None,
    "verdict": verdict(ev, seed=spec.get("seed")), "seconds": res["seconds"]}))
"""

#: The tiny run of the tests: 24 videos of 3 classes (2 broken files), 2 epochs, 2 clusterings.
TINY = {"data": {"n_videos": 24, "n_classes": 3, "broken": 2},
        "overrides": {"training.epochs": 2, "clustering.n_clusterings": 2,
                      "training.batch_size": 8}}

#: This CPU as a CPU with AVX2 but no AVX-512: each library told to pick its AVX2 kernels
#: (FFmpeg, which writes and decodes the videos, through ``TEST_FFMPEG_FLAGS``).
CPU_EMULATION = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                 "MKL_ENABLE_INSTRUCTIONS": "AVX2", "NUMBA_CPU_NAME": "haswell",
                 "TEST_FFMPEG_FLAGS": ""}

#: libavutil's x86 flags (cpu.h) of a CPU with AVX2, FMA3 and BMI2 but no AVX-512.
FFMPEG_AVX2 = sum((0x1, 0x2, 0x8, 0x10, 0x40, 0x80, 0x100, 0x200, 0x1000, 0x4000, 0x8000,
                   0x10000, 0x20000, 0x40000))


def ffmpeg_avx2() -> dict[str, str]:
    """``TEST_FFMPEG_FLAGS`` for a run: PyAV's bundled libavutil and :data:`FFMPEG_AVX2`."""
    import glob

    import av

    libs = glob.glob(os.path.join(os.path.dirname(av.__file__), os.pardir, "av.libs", "libavutil*.so*"))
    return {"TEST_FFMPEG_FLAGS": f"{libs[0]}:{FFMPEG_AVX2}"} if libs else {}


def run_once(out: str | Path, threads: int, spec: dict[str, Any] | None = None,
             env: dict[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
    """:data:`RUN` in a fresh process with ``threads`` torch, numba and OpenMP threads.

    ``spec`` holds ``run_demo``'s ``data``, ``overrides`` and ``seed``; ``env`` is added to an
    environment cleared of :data:`CPU_EMULATION` and ``MKL_CBWR``. Raises ``RuntimeError`` with
    the end of stderr when the run fails.
    """
    env = {**{k: v for k, v in os.environ.items() if k not in CPU_EMULATION and k != "MKL_CBWR"},
           "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads), **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(threads), str(out), json.dumps(spec or {})],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"run in {out} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


#: k-means on fixed features (12 blobs in 64 dimensions, 3000 points) in a fresh process.
KMEANS = """
import hashlib, json, sys
import numpy as np
from otcluster import kmeans_baseline
rng = np.random.default_rng(0)
centres = rng.normal(size=(12, 64)) * 2
x = (centres[rng.integers(0, 12, 3000)] + rng.normal(size=(3000, 64))).astype(np.float32)
out = {}
for backend in ("faiss", "sklearn"):
    try:
        r = kmeans_baseline(x, 12, seed=0, backend=backend)
    except ImportError as e:
        out[backend] = {"error": str(e)}
        continue
    out[backend] = {"labels": r.labels.tolist(), "inertia": float(r.inertia),
                    "centroids": hashlib.sha256(r.centroids.numpy().tobytes()).hexdigest()}
print("RESULT" + json.dumps(out))
"""


def kmeans_once(threads: int) -> dict[str, Any]:
    """:data:`KMEANS` in a fresh process with ``threads`` OpenMP threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", KMEANS], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def machine() -> dict[str, Any]:
    """CPU model, vendor and SIMD flags; versions of the libraries that round (MKL's mode is
    recorded per run: the portable kernels set it)."""
    import importlib.metadata as md
    import platform

    info: dict[str, Any] = {"python": platform.python_version()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu"] = fields.get("model name")
        info["vendor"] = fields.get("vendor_id")
        flags = set(fields.get("flags", "").split())
        info["simd"] = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
        info["cores"] = os.cpu_count()
    except OSError:
        pass
    versions = {}
    for name in ("torch", "torchvision", "torchaudio", "numpy", "numba", "llvmlite", "scipy",
                 "scikit-learn", "faiss-cpu", "av"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    info["versions"] = versions
    import torch

    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def plan(demo_seeds: list[int], demo_epochs: int | None = None) -> dict[str, dict[str, Any]]:
    """The runs: name -> ``threads``, ``spec`` and ``env`` of :func:`run_once`."""
    preset = {"clustering.modality_weights": "stability"}  # the cpu preset's (the demo: equal)
    fast = {**preset, "training.kernels": "fast"}
    avx2 = {**CPU_EMULATION, **ffmpeg_avx2()}

    def tiny(over: dict[str, Any]) -> dict[str, Any]:
        return {**TINY, "overrides": {**TINY["overrides"], **over}}

    runs: dict[str, dict[str, Any]] = {
        "tiny portable, 1 thread": {"threads": 1, "spec": tiny(preset)},
        "tiny portable, 1 thread, AVX2": {"threads": 1, "spec": tiny(preset), "env": avx2},
        "tiny portable, 4 threads": {"threads": 4, "spec": tiny(preset)},
        "tiny fast, 1 thread": {"threads": 1, "spec": tiny(fast)},
        "tiny fast, 1 thread, AVX2": {"threads": 1, "spec": tiny(fast), "env": avx2},
    }
    for seed in demo_seeds:
        spec: dict[str, Any] = {"seed": seed}
        name = f"demo seed {seed}"
        if demo_epochs is not None:  # a shorter demo: as many clusterings as epochs
            spec["overrides"] = {"training.epochs": demo_epochs, "clustering.n_clusterings": demo_epochs}
            name += f", {demo_epochs} epochs"
        runs[name] = {"threads": 1, "spec": spec, "timeout": 3000}
    return runs


def measure(out: Path, demo_seeds: list[int], jobs: int, workdir: Path,
            time_limit: float = 3600, demo_epochs: int | None = None,
            tiny: bool = True) -> dict[str, Any]:
    """Every run of :func:`plan` and k-means, ``jobs`` at a time; ``out`` is rewritten after each.

    A run still going ``time_limit`` seconds after the start is killed and listed in ``errors``.
    """
    start = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(), "runs": {}, "kmeans": {}, "errors": {}}
    lock = threading.Lock()

    def save() -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out)

    def one(name: str, job: dict[str, Any]) -> None:
        t = time.perf_counter()
        folder = workdir / name.replace(" ", "_").replace(",", "")
        try:
            if job.get("kmeans"):
                res = kmeans_once(job["threads"])
            else:
                left = time_limit - (time.perf_counter() - start)
                res = run_once(folder, job["threads"], job["spec"], job.get("env"),
                               timeout=max(1.0, min(job.get("timeout", 900), left)))
        except (RuntimeError, subprocess.TimeoutExpired, StopIteration) as e:
            why = (f"timed out after {e.timeout:.0f} s" if isinstance(e, subprocess.TimeoutExpired)
                   else str(e)[-2000:])
            with lock:
                result["errors"][name] = why
                save()
            print(f"{name}: FAILED ({why[-300:]})", flush=True)
            return
        res["wall_s"] = round(time.perf_counter() - t, 1)
        with lock:
            result["kmeans" if job.get("kmeans") else "runs"][name] = res
            save()
        print(f"{name}: {res['wall_s']} s", flush=True)

    jobs_ = plan(demo_seeds, demo_epochs)
    if not tiny:
        jobs_ = {k: v for k, v in jobs_.items() if k.startswith("demo")}
    jobs_.update({f"k-means, {n} thread{'s' * (n > 1)}": {"threads": n, "kmeans": True} for n in (1, 4)})
    save()
    # the demos first: they take longest
    order = sorted(jobs_, key=lambda n: not n.startswith("demo"))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(one, name, jobs_[name]) for name in order]:
            future.result()
    return result


def _agree(a: list[Any], b: list[Any], column: int | None = None) -> str:
    """How many of ``a`` and ``b`` are equal, item by item (``column``: that field of a CSV line)."""
    if column is not None:
        a, b = ([x.split(",")[column] for x in v] for v in (a, b))
    same = sum(x == y for x, y in zip(a, b))
    return f"{same} of {max(len(a), len(b))}"


#: Pairs of runs on one machine whose weights the portable kernels promise to be the same, then
#: the fast kernels' pair (no promise).
PAIRS = (("tiny portable, 1 thread", "tiny portable, 1 thread, AVX2"),
         ("tiny portable, 1 thread", "tiny portable, 4 threads"),
         ("tiny fast, 1 thread", "tiny fast, 1 thread, AVX2"))


def within(result: dict[str, Any]) -> list[str]:
    """Markdown lines: the pairs of :data:`PAIRS` on this machine, the same weights and labels?"""
    runs = result["runs"]
    lines = ["| run | against | weights | label lines identical | labels the same |",
             "|---|---|---|---|---|"]
    for a, b in PAIRS:
        if a in runs and b in runs:
            ra, rb = runs[a], runs[b]
            same = "identical" if ra["weights"] == rb["weights"] else "differ"
            lines.append(f"| {a} | {b} | {same} | {_agree(ra['labels'], rb['labels'])} | "
                         f"{_agree(ra['labels'], rb['labels'], column=1)} |")
    return lines


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Markdown lines: the two machines, then each run in both, the same weights and labels?"""
    lines = ["| | A | B |", "|---|---|---|"]
    ma, mb = a["machine"], b["machine"]
    for key in ("cpu", "vendor", "torch_cpu_capability", "python"):
        lines.append(f"| {key} | {ma.get(key)} | {mb.get(key)} |")
    for name in sorted(set(ma.get("versions", {})) | set(mb.get("versions", {}))):
        va, vb = ma["versions"].get(name), mb["versions"].get(name)
        lines.append(f"| {name} | {va} | {vb}{'' if va == vb else ' (differs)'} |")
    lines += ["", "| run | weights | label lines identical | labels the same | NMI (both streams, A / B) |",
              "|---|---|---|---|---|"]
    for name in [n for n in a["runs"] if n in b["runs"]]:
        ra, rb = a["runs"][name], b["runs"][name]
        same = "identical" if ra["weights"] == rb["weights"] else "differ"
        nmi = ""
        if ra.get("headline") and rb.get("headline"):
            nmi = f"{ra['headline']['both']:.1f} / {rb['headline']['both']:.1f}"
        lines.append(f"| {name} | {same} | {_agree(ra['labels'], rb['labels'])} | "
                     f"{_agree(ra['labels'], rb['labels'], column=1)} | {nmi} |")
    lines += ["", "| k-means | labels the same | centroids |", "|---|---|---|"]
    for name in [n for n in a.get("kmeans", {}) if n in b.get("kmeans", {})]:
        for backend in ("faiss", "sklearn"):
            ka, kb = a["kmeans"][name].get(backend, {}), b["kmeans"][name].get(backend, {})
            if "labels" in ka and "labels" in kb:
                cent = "identical" if ka["centroids"] == kb["centroids"] else "differ"
                lines.append(f"| {name}, {backend} | {_agree(ka['labels'], kb['labels'])} | {cent} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="JSON to write")
    p.add_argument("--demo-seeds", default="", help="comma-separated demo seeds (default none)")
    p.add_argument("--demo-epochs", type=int, default=None,
                   help="train the demos this many epochs (default: the demo's 30)")
    p.add_argument("--no-tiny", action="store_true", help="only the demos and k-means")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--workdir", type=Path, default=None, help="run folders (default: next to --out)")
    p.add_argument("--time-limit", type=float, default=3600, help="seconds; later runs are killed")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    args = p.parse_args(argv)
    if args.compare:
        a, b = (json.loads(f.read_text()) for f in args.compare)
        print("\n".join(compare(a, b)))
        return 0
    if args.out is None:
        p.error("--out or --compare is needed")
    seeds = [int(s) for s in args.demo_seeds.split(",") if s.strip()]
    workdir = args.workdir or args.out.with_suffix(".runs")
    if args.out.exists():  # never overwrite a result
        p.error(f"{args.out} exists: choose another --out")
    if workdir.exists() and any(workdir.iterdir()):  # a run folder there would be reused
        p.error(f"{workdir} is not empty: choose another --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    result = measure(args.out, seeds, args.jobs, workdir, args.time_limit, args.demo_epochs,
                     not args.no_tiny)
    print(json.dumps(result["machine"], indent=1))
    print("\n".join(within(result)))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
