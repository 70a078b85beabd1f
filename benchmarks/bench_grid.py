"""Solver grid: ours against POT, the textbook SeLa loop and SwAV-style 3 iterations (issue #6).

    python benchmarks/bench_grid.py                       # the full grid (long; see --deadline-min)
    python benchmarks/bench_grid.py --quick --out /tmp/g  # tiny sizes, seconds (CI)
    python benchmarks/bench_grid.py --sizes 20000x100,200000x309 --lams 20

Grid: N in {20k, 200k, 1M} x K in {100, 309, 1000, 3000} x λ in {20, 100}. Every cell runs in
its own child process on the same problem for every solver: 128-d N(0, 1) features ``F``, a
linear head ``W`` (K x 128, rows of norm ~1, so logits are ~N(0, 1)), ``log_p = log_softmax(F W^T)``.

Solvers (all stop on a relative L1 column-marginal error of 1e-3 unless said otherwise):

* ``ours``: :func:`otcluster.sinkhorn` defaults (fp32 kernel, fused numba pass, Anderson);
  λ=100 takes the stable (log-absorbing) path automatically.
* ``ours_features``: :func:`otcluster.sinkhorn_features` from F and W (never holds N x K).
* ``pot`` / ``pot_log``: POT ``ot.sinkhorn`` / ``ot.sinkhorn_log``, numpy float64, with
  ``stopThr = 1e-3 / sqrt(K)`` on POT's L2 error (which implies a relative L1 error <= 1e-3).
  Timings exclude building ``M = -log_p``; memory includes it.
* ``pot_torch``: ``ot.sinkhorn`` on torch float32 CPU tensors (POT's torch backend).
* ``textbook`` / ``textbook_native``: the SeLa public-code loop (float64, fixed ``P**λ``, two
  mat-vecs per iteration, checked every 10 iterations) stopped by the fair rule, and by the
  code's own rule (``sum_i |u_i/u_new_i - 1| < 0.1``), both from one run (see ``baselines.py``).
* ``swav3``: SwAV-style fixed 3 iterations in float32 (rows shifted by their max; it is fast
  because it stops early: see its column error). ``swav3_raw`` (small cells only): the same
  without the shift, as users fed raw log-probabilities.

Per solver and cell: wall time, iterations, final relative L1 column error, label agreement with a
high-accuracy reference (ours in float64 with tol 1e-8, at most 300 passes: at λ=100 with few
samples per cluster float64 stalls near 1e-6, and the error reached is recorded; where the float64
kernel does not fit in memory, ours in float32 with tol 1e-7, recorded as ``reference.kind``),
extra peak memory (VmHWM reset through ``/proc/self/clear_refs`` right before the solver, minus
VmRSS at that moment; glibc heap trimmed first), and the time ratio against POT measured in the
same process. For ours: achieved bytes/s ``(n_iter + 3) * N * K * 4 / time`` (the build reads the
input and writes the kernel, each pass reads it once, the label pass once more) against the
machine's read bandwidth measured in the same child (numpy sum, one thread; numba parallel sum,
all threads).

Slow baselines get a time budget per cell (``--budget-s``): POT and the textbook loop get an
iteration cap computed from their measured cost per element and iteration in earlier cells
(``capped`` when the cap stopped it before a relative L1 error of 1e-3, ``hit_cap`` when the cap
stopped it at all); a solver whose 10 iterations would not fit is skipped with the reason.
Cells that do not fit the memory budget (``--mem-gib``, and 85% of MemAvailable at the time) or
the run's deadline (``--deadline-min``) are skipped with a printed reason.

Writes ``grid.json``, ``grid.md``, ``grid_time.png`` and ``grid_warm.png`` into ``--out``
(``docs/benchmarks`` for the full grid).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os

# On an oversubscribed machine (2 cores shared by several jobs) OpenMP threads that spin while
# waiting for work steal the cores from the thread doing it: measured here, ours at 20k x 100 took
# 0.6-0.8 s with the default (active) policy and 0.08 s with PASSIVE, and every torch CPU op with
# 2 threads paid ~20 ms. Must be set before torch / numba load libgomp; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numba
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pages import add_overwrite_arg, refuse_taken  # noqa: E402
from baselines import relative_col_error, swav_sinkhorn, textbook_sinkhorn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
D_FEAT = 128
GIB = 1 << 30
PLAIN_MAX_NK = 10_000_000
REF_MAX_ITER = 300  # passes of the reference solve; its final error is recorded
TOL = 1e-3  # relative L1 column-marginal error every solver is asked for

FULL_N = (20_000, 200_000, 1_000_000)
FULL_K = (100, 309, 1000, 3000)
QUICK_SIZES = ((2000, 10), (5000, 50))
LAMS = (20.0, 100.0)

# order of the solvers inside a cell; "reference" runs first
SOLVERS = ("ours", "ours_features", "pot", "pot_torch", "pot_log", "textbook", "swav3", "swav3_raw")
ITERATIVE = ("pot", "pot_torch", "pot_log", "textbook")  # capped by iterations
# extra bytes per N*K element at peak (input and features excluded), conservative
MEM_PER_ELEM = {"reference64": 8.5, "reference32": 4.5, "ours": 4.5, "ours_features": 0.0,
                "pot": 41.0, "pot_torch": 21.0, "pot_log": 49.0, "textbook": 8.5,
                "swav3": 4.5, "swav3_raw": 4.5, "warm": 4.5}
# first guesses (seconds per element, per iteration for ITERATIVE) on a loaded 2-core machine;
# replaced by measurements from earlier cells as the grid runs
COST_GUESS = {"ours": 3e-7, "reference": 1e-6, "ours_features": 3e-6, "pot": 1.5e-8,
              "pot_torch": 3e-8, "pot_log": 3e-7, "textbook": 1.5e-8, "swav3": 2e-7,
              "swav3_raw": 2e-7, "warm": 6e-7}


# ----------------------------------------------------------------------------- measurements
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _trim(collect: bool = False) -> None:
    if collect:  # a full collection costs ~0.7 s here with sklearn/POT loaded: only between cells
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # pragma: no cover - not glibc
        pass


class PeakMemory:
    """Extra peak RSS of a block: VmHWM (reset via clear_refs) minus VmRSS before the block."""

    def __enter__(self):
        _trim()
        self.base = _status_kib("VmRSS") * 1024
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM reset via /proc/self/clear_refs"
        except OSError:  # pragma: no cover - old kernels / no procfs
            self.method = "VmHWM without reset (upper bound)"
        return self

    def __exit__(self, *exc):
        self.extra = max(0, _status_kib("VmHWM") * 1024 - self.base)
        return False


@numba.njit(parallel=True, fastmath=True, cache=True)
def _par_sum(a):  # pragma: no cover - compiled
    s = 0.0
    for i in numba.prange(a.size):
        s += a[i]
    return s


def read_bandwidth(n_bytes: int = 512 << 20, repeats: int = 3) -> dict:
    """Read bandwidth of this machine now: best of ``repeats`` sums over a large fp32 array."""
    a = np.ones(n_bytes // 4, dtype=np.float32)
    a.sum()
    t_np = min(_timed(lambda: a.sum()) for _ in range(repeats))
    _par_sum(a[:1024])
    t_nb = min(_timed(lambda: _par_sum(a)) for _ in range(repeats))
    return {"bytes": int(a.nbytes), "numpy_sum_GBps": a.nbytes / t_np / 1e9,
            "numba_parallel_sum_GBps": a.nbytes / t_nb / 1e9,
            "best_GBps": max(a.nbytes / t_np, a.nbytes / t_nb) / 1e9}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    import ot

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_GiB": round(mem / GIB, 1),
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "numba": numba.__version__, "pot": ot.__version__,
            "torch_threads": torch.get_num_threads(), "numba_threads": numba.get_num_threads()}


# ----------------------------------------------------------------------------- the problem
def make_problem(n: int, k: int, seed: int = 0):
    """Features F (n, 128), head W (k, 128) and log_p = log_softmax(F W^T), fp32, built in blocks."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + n * 7 + k)
    F = torch.randn(n, D_FEAT, generator=g)
    W = torch.randn(k, D_FEAT, generator=g) / math.sqrt(D_FEAT)
    x = torch.empty(n, k)
    step = max(1, (1 << 22) // k)
    for lo in range(0, n, step):
        x[lo:lo + step] = torch.log_softmax(F[lo:lo + step] @ W.T, dim=1)
    return F, W, x


def drifted_problem(F: torch.Tensor, W: torch.Tensor, drift: float, seed: int = 1) -> torch.Tensor:
    """The head after some training: W + drift * noise, same features."""
    g = torch.Generator().manual_seed(seed)
    W2 = W + drift * torch.randn(W.shape, generator=g) / math.sqrt(D_FEAT)
    n, k = F.shape[0], W.shape[0]
    x = torch.empty(n, k)
    step = max(1, (1 << 22) // k)
    for lo in range(0, n, step):
        x[lo:lo + step] = torch.log_softmax(F[lo:lo + step] @ W2.T, dim=1)
    return x


# ----------------------------------------------------------------------------- solver runs
def _run_ours(x, lam, **kw) -> tuple[dict, np.ndarray, object]:
    from otcluster import sinkhorn

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = time.perf_counter()
        res = sinkhorn(x, lam=lam, **kw)
        dt = time.perf_counter() - t
    return ({"time_s": dt, "iterations": res.n_iter, "col_error": float(res.error),
             "converged": bool(res.converged), "warnings": _warn_texts(w)},
            res.labels.numpy().copy(), res)


def _warn_texts(ws) -> list[str]:
    out = []
    for w in ws:
        s = str(w.message).split("\n")[0][:120]
        if s not in out:
            out.append(s)
    return out


def _run_features(F, W, lam) -> tuple[dict, np.ndarray]:
    from otcluster import sinkhorn_features

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = time.perf_counter()
        res = sinkhorn_features(F, W, lam=lam)
        dt = time.perf_counter() - t
    return ({"time_s": dt, "iterations": res.n_iter, "col_error": float(res.error),
             "converged": bool(res.converged), "warnings": _warn_texts(w)},
            res.labels.numpy().copy())


def _run_pot(x, lam, which: str, cap: int) -> tuple[dict, np.ndarray | None]:
    import ot

    n, k = x.shape
    thr = 1e-3 / math.sqrt(k)
    if which == "pot_torch":
        M = -x  # float32 torch tensor (POT's torch backend)
        a = torch.full((n,), 1.0 / n)
        b = torch.full((k,), 1.0 / k)
    else:
        M = -x.double().numpy()
        a = np.full(n, 1.0 / n)
        b = np.full(k, 1.0 / k)
    fn = ot.bregman.sinkhorn_log if which == "pot_log" else ot.sinkhorn
    with warnings.catch_warnings(record=True) as w, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        t = time.perf_counter()
        plan, log = fn(a, b, M, 1.0 / lam, numItermax=int(cap), stopThr=thr, log=True)
        dt = time.perf_counter() - t
    del M
    niter = int(log.get("niter", -1)) + 1
    if isinstance(plan, torch.Tensor):
        col = plan.double().sum(0).numpy()
        labels = plan.argmax(1).numpy()
        finite = bool(torch.isfinite(plan).all())
    else:
        col = plan.sum(0)
        labels = plan.argmax(1)
        finite = bool(np.isfinite(plan).all())
    del plan
    texts = _warn_texts(w)
    hit_cap = niter >= cap and any("converge" in s for s in texts)
    numerr = any("numerical errors" in s for s in texts)
    err = relative_col_error(col, np.full(k, 1.0 / k))
    # a run stopped by its cap still counts as converged when its relative L1 error is <= 1e-3
    out = {"time_s": dt, "iterations": niter, "col_error": err, "hit_cap": hit_cap,
           "capped": hit_cap and not err <= TOL,
           "iteration_cap": int(cap), "finite": finite and not numerr and math.isfinite(err),
           "stop_thr_l2": thr, "warnings": texts}
    return out, labels


def _warm_up(F, W, x, lam) -> None:
    """JIT compilation, thread pools and lazy imports, outside every timing and memory figure."""
    from otcluster import sinkhorn, sinkhorn_features

    # kernels are compiled per dtype, not per shape: a small slice is enough
    xs = torch.log_softmax(x[:2000, :50], dim=1).contiguous()
    m = xs.shape[0]
    sinkhorn(xs, lam=lam)
    sinkhorn(xs, lam=lam, dtype=torch.float64, tol=1e-6)
    sinkhorn_features(F[:m], W[:50], lam=lam)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for which in ("pot", "pot_torch", "pot_log"):
            _run_pot(xs, lam, which, 20)
        textbook_sinkhorn(xs.numpy(), lam, max_iter=20)
        swav_sinkhorn(xs, lam)


def _skip(reason: str) -> dict:
    return {"skipped": reason}


def run_cell(spec: dict, save=None) -> dict:
    """One grid cell, in its own process. ``spec`` comes from the parent's planning.

    ``save(cell, step)`` is called before every step, so that a parent that has to kill a slow
    cell still gets what was measured (and which step was running)."""
    save = save or (lambda cell, step: None)
    n, k, lam = spec["n"], spec["k"], spec["lam"]
    plan = spec["plan"]
    t_cell = time.perf_counter()
    F, W, x = make_problem(n, k, spec["seed"])
    _warm_up(F, W, x, lam)
    _trim(collect=True)
    cell: dict = {"n": n, "k": k, "lam": lam, "nk": n * k, "load_avg_start": os.getloadavg()[0],
                  "bandwidth": read_bandwidth(spec.get("bandwidth_bytes", 512 << 20)),
                  "solvers": {}}
    _trim()

    # reference labels
    save(cell, "reference")
    ref_kind = plan["reference"]
    ref_labels = None
    if ref_kind == "skip":
        cell["reference"] = {"kind": "none", "skipped": plan["reference_reason"]}
    else:
        kw = ({"dtype": torch.float64, "tol": 1e-8} if ref_kind == "float64"
              else {"dtype": torch.float32, "tol": 1e-7})
        with PeakMemory() as pm:  # capped: at lam=100 with N/K small, float64 stalls near 1e-6
            r, ref_labels, _ = _run_ours(x, lam, max_iter=REF_MAX_ITER, **kw)
        r.update(kind=f"ours {ref_kind} tol {kw['tol']:g}", extra_peak_bytes=pm.extra)
        cell["reference"] = r
        cell["memory_method"] = pm.method
    _trim()

    res_ours = None
    for name in SOLVERS:
        p = plan["solvers"][name]
        if "skip" in p:
            cell["solvers"][name] = _skip(p["skip"])
            continue
        labels = None
        save(cell, name)
        with PeakMemory() as pm:
            if name == "ours":
                out, labels, res_ours = _run_ours(x, lam)
                passes = out["iterations"] + 3
                out["passes_counted"] = passes
                out["achieved_GBps"] = passes * n * k * 4 / out["time_s"] / 1e9
                out["achieved_over_bandwidth"] = out["achieved_GBps"] / cell["bandwidth"]["best_GBps"]
            elif name == "ours_features":
                out, labels = _run_features(F, W, lam)
            elif name in ("pot", "pot_torch", "pot_log"):
                out, labels = _run_pot(x, lam, name, p["cap"])
            elif name == "textbook":
                tb = textbook_sinkhorn(x.numpy(), lam, tol=1e-3, max_iter=p["cap"],
                                       time_budget_s=p["budget_s"])
                base = {"setup_s": tb["setup_s"], "finite": tb["finite"], "stopped": tb["stopped"],
                        "iteration_cap": p["cap"]}
                for rule, key in (("fair", "textbook"), ("native", "textbook_native")):
                    if rule in tb:
                        o = dict(base, **{kk: vv for kk, vv in tb[rule].items() if kk != "labels"})
                        o["capped"] = False
                        if ref_labels is not None:
                            o["agreement"] = float((tb[rule]["labels"] == ref_labels).mean())
                    else:
                        hit = tb["stopped"] in ("max_iter", "time_budget")
                        o = dict(base, time_s=tb["time_s"], iterations=tb["iterations"],
                                 passes=2 * tb["iterations"] + 1, col_error=tb["col_error"],
                                 hit_cap=hit, capped=hit and not tb["col_error"] <= TOL)
                        if ref_labels is not None and tb["labels"] is not None:
                            o["agreement"] = float((tb["labels"] == ref_labels).mean())
                    cell["solvers"][key] = o
                del tb
            elif name == "swav3":
                out = swav_sinkhorn(x, lam, shift_rows=True)
                labels = out.pop("labels")
            elif name == "swav3_raw":
                out = swav_sinkhorn(x, lam, shift_rows=False)
                labels = out.pop("labels")
        if name == "textbook":
            for key in ("textbook", "textbook_native"):
                cell["solvers"][key]["extra_peak_bytes"] = pm.extra
            _trim()
            continue
        out["extra_peak_bytes"] = pm.extra
        if labels is not None and ref_labels is not None:
            out["agreement"] = float((labels == ref_labels).mean())
        cell["solvers"][name] = out
        del labels
        _trim()

    # time ratios against POT (numpy, float64) measured in this process
    pot = cell["solvers"].get("pot", {})
    for o in cell["solvers"].values():
        if "time_s" in o and "time_s" in pot and pot.get("finite", True) and o.get("finite", True):
            o["speedup_vs_pot"] = pot["time_s"] / o["time_s"]
            o["speedup_vs_pot_is_lower_bound"] = bool(pot.get("capped"))

    # warm start: the head drifts, solve again cold and warm (ours)
    if plan["warm"] and res_ours is not None:
        save(cell, "warm start")
        del x
        _trim()
        x2 = drifted_problem(F, W, spec["drift"])
        cold, _, _ = _run_ours(x2, lam)
        warm, _, _ = _run_ours(x2, lam, warm_start=res_ours)
        cell["warm_start"] = {"drift": spec["drift"], "cold_iterations": cold["iterations"],
                              "warm_iterations": warm["iterations"], "cold_time_s": cold["time_s"],
                              "warm_time_s": warm["time_s"]}
        if n * k <= PLAIN_MAX_NK:  # plain Sinkhorn needs hundreds of passes at lam=100: small cells
            cold_plain, _, _ = _run_ours(x2, lam, anderson=0)
            warm_plain, _, _ = _run_ours(x2, lam, anderson=0, warm_start=res_ours)
            cell["warm_start"].update(cold_plain_iterations=cold_plain["iterations"],
                                      warm_plain_iterations=warm_plain["iterations"])
    elif not plan["warm"]:
        cell["warm_start"] = {"skipped": plan.get("warm_reason", "not planned")}
    cell["load_avg_end"] = os.getloadavg()[0]
    cell["cell_wall_s"] = time.perf_counter() - t_cell
    return cell


# ----------------------------------------------------------------------------- planning
class Planner:
    """Decides, before each cell, which solvers run, with which caps, from measured costs."""

    def __init__(self, budget_s: float, mem_gib: float, ours_budget_s: float,
                 solvers: tuple[str, ...] = SOLVERS):
        self.selected = solvers
        self.budget = budget_s
        self.ours_budget = ours_budget_s
        self.mem_cap = mem_gib * GIB
        self.cost: dict = {}  # (solver, lam) -> seconds per element (per iteration if ITERATIVE)

    def _c(self, name: str, lam: float) -> float:
        return self.cost.get((name, lam), self.cost.get((name, None), COST_GUESS[name]))

    def mem_limit(self) -> float:
        return min(self.mem_cap, 0.85 * _mem_available())

    def plan(self, n: int, k: int, lam: float) -> tuple[dict, float]:
        nk = n * k
        base = nk * 4 + n * D_FEAT * 4 + 64 * 2**20  # input + features + slack
        limit = self.mem_limit()
        plan: dict = {"solvers": {}}
        predicted = 20.0  # start-up, data, bandwidth probe

        def mem_ok(key: str) -> tuple[bool, str]:
            need = base + MEM_PER_ELEM[key] * nk
            if need > limit:
                return False, (f"memory: needs ~{need / GIB:.1f} GiB > limit {limit / GIB:.1f} GiB "
                               f"(--mem-gib / 85% of MemAvailable)")
            return True, ""

        ok64, why64 = mem_ok("reference64")
        ok32, why32 = mem_ok("reference32")
        t_ref = self._c("reference", lam) * nk
        if ok64 and t_ref <= self.ours_budget:
            plan["reference"] = "float64"
        elif ok32 and t_ref <= self.ours_budget:
            plan["reference"] = "float32"
        else:
            plan["reference"] = "skip"
            plan["reference_reason"] = why32 or f"time: ~{t_ref:.0f} s > {self.ours_budget:.0f} s"
        if plan["reference"] != "skip":
            predicted += t_ref

        for name in SOLVERS:
            if name not in self.selected:
                plan["solvers"][name] = {"skip": "not selected (--solvers)"}
                continue
            ok, why = mem_ok(name)
            if not ok:
                plan["solvers"][name] = {"skip": why}
                continue
            if name == "swav3_raw" and nk > 2_000_000:
                plan["solvers"][name] = {"skip": "side check, small cells only"}
                continue
            c = self._c(name, lam)
            if name in ITERATIVE:
                cap = int(self.budget / (c * nk))
                default_cap = 2000 if name == "textbook" else 1000
                if cap < 10:
                    plan["solvers"][name] = {"skip": f"time: 10 iterations ~{10 * c * nk:.0f} s > "
                                                     f"budget {self.budget:.0f} s"}
                    continue
                plan["solvers"][name] = {"cap": min(cap, default_cap), "budget_s": self.budget}
                predicted += min(self.budget, c * nk * min(cap, default_cap)) * 1.5
            else:
                t = c * nk
                lim = self.ours_budget if name == "ours" else self.budget
                if t > lim:
                    plan["solvers"][name] = {"skip": f"time: predicted ~{t:.0f} s > budget {lim:.0f} s"}
                    continue
                plan["solvers"][name] = {}
                predicted += t
        okw, whyw = mem_ok("warm")
        tw = self._c("warm", lam) * nk
        plan["warm"] = okw and tw <= self.ours_budget and "skip" not in plan["solvers"]["ours"]
        if not plan["warm"]:
            plan["warm_reason"] = whyw or "time budget or ours skipped"
        else:
            predicted += tw
        return plan, predicted

    def learn(self, cell: dict) -> None:
        nk, lam = cell["nk"], cell["lam"]
        ref = cell.get("reference", {})
        if "time_s" in ref:
            self.cost[("reference", lam)] = ref["time_s"] / nk
        for name, o in cell["solvers"].items():
            if name not in COST_GUESS or "time_s" not in o:
                continue
            if name in ITERATIVE:
                self.cost[(name, lam)] = o["time_s"] / (nk * max(1, o["iterations"]))
            else:
                self.cost[(name, lam)] = o["time_s"] / nk
        ws = cell.get("warm_start", {})
        if "cold_time_s" in ws:
            self.cost[("warm", lam)] = 4 * max(ws["cold_time_s"], ws["warm_time_s"]) / nk


def run_child(spec: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as td:
        sp = Path(td) / "spec.json"
        op = Path(td) / "out.json"
        sp.write_text(json.dumps(spec))
        try:
            proc = subprocess.run([sys.executable, __file__, "--cell", str(sp), str(op)],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            partial = json.loads(op.read_text()) if op.exists() else {}
            step = partial.pop("running", "start-up")
            partial["failed"] = f"timeout after {timeout:.0f} s, killed during: {step}"
            return partial
        if proc.returncode != 0 or not op.exists():
            tail = (proc.stderr or proc.stdout)[-800:]
            why = " (killed: out of memory?)" if proc.returncode == -9 else ""
            return {"failed": f"child exit {proc.returncode}{why}: {tail}"}
        return json.loads(op.read_text())


# ----------------------------------------------------------------------------- report
LABELS = {"ours": "ours (sinkhorn)", "ours_features": "ours (sinkhorn_features)",
          "pot": "POT sinkhorn (np f64)", "pot_torch": "POT sinkhorn (torch f32)",
          "pot_log": "POT sinkhorn_log (np f64)", "textbook": "textbook loop (f64, fair stop)",
          "textbook_native": "textbook loop (native stop)", "swav3": "SwAV-style 3 it (f32)",
          "swav3_raw": "SwAV-style 3 it, unshifted"}


def _fmt_t(o: dict) -> str:
    if "time_s" not in o:
        return "–"
    s = f"{o['time_s']:.3g} s"
    if o.get("capped"):
        s += " (capped)"
    return s


def _fmt_ratio(o: dict, name: str = "") -> str:
    if name == "pot" and "time_s" in o:
        return "1 (itself)"
    if "speedup_vs_pot" not in o or o.get("capped"):  # a capped solver's ratio means nothing
        return "–"
    return ("≥" if o.get("speedup_vs_pot_is_lower_bound") else "") + f"{o['speedup_vs_pot']:.2g}x"


def _fmt_mem(o: dict) -> str:
    b = o.get("extra_peak_bytes")
    return "–" if b is None else f"{b / 2**20:.0f} MiB"


def _fmt_err(o: dict) -> str:
    e = o.get("col_error")
    if e is None:
        return "–"
    if not math.isfinite(e) or o.get("finite") is False:
        return "non-finite"
    return f"{e:.1e}"


def write_report(results: dict, out: Path, plots: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.json").write_text(json.dumps(results, indent=1, default=float))
    m = results["machine"]
    L = ["# Solver grid: ours vs POT, the textbook SeLa loop and SwAV-style iterations", "",
         f"Measured by `{results['command']}` on {m['cpu']}, {m['cores']} cores, "
         f"{m['memory_GiB']} GiB RAM, shared with other jobs (load average "
         f"{results['load_avg_start']:.1f} at the start, {results['load_avg_end']:.1f} at the end); "
         f"torch {m['torch']}, numpy {m['numpy']}, numba {m['numba']}, POT {m['pot']}. "
         f"Wall time: {results['wall_s'] / 60:.1f} min"
         + (" (all runs below)." if results.get("runs") else "."), ""]
    for r in results.get("runs", [])[1:]:
        L += [f"Cells were added by `{r['command']}` (load average {r['load_avg_start']:.1f} at "
              "its start); its cells' time budgets were calibrated on the cells before.", ""]
    L += [
         "Absolute times on a loaded machine are noisy; the **ratios** (speed-up against POT, "
         "achieved bandwidth against the machine's read bandwidth) are measured side by side in "
         "the same process and are the numbers to read. See the docstring of "
         "`benchmarks/bench_grid.py` for the exact protocol (problem, stopping rules, memory "
         "method, caps).", "",
         "## Summary: ours against POT", "",
         "| N x K | λ | ours | its | POT sinkhorn | POT its | speed-up | ours GB/s | machine GB/s "
         "| ours / bandwidth | agreement ours | ours extra memory |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        head = f"| {c['n']} x {c['k']} | {c['lam']:g} "
        if "solvers" not in c:
            L.append(head + f"| {c.get('failed') or c.get('skipped')} |" + " |" * 10)
            continue
        o = c["solvers"].get("ours", {})
        p = c["solvers"].get("pot", {})
        bw = c["bandwidth"]["best_GBps"]
        L.append(head + f"| {_fmt_t(o)} | {o.get('iterations', '–')} | "
                 f"{p.get('skipped') and 'skipped' or _fmt_t(p)} | {p.get('iterations', '–')} | "
                 f"{_fmt_ratio(o)} | {o.get('achieved_GBps', float('nan')):.2f} | {bw:.2f} | "
                 f"{o.get('achieved_over_bandwidth', float('nan')):.0%} | "
                 f"{o.get('agreement', float('nan')):.4%} | {_fmt_mem(o)} |")
    L += ["", "`speed-up` = POT time / ours time in the same process (≥ when POT hit its "
          "iteration cap). `ours GB/s` = (iterations + 3) · N · K · 4 bytes / wall time "
          "(kernel build, passes, label pass); `machine GB/s` = best of a numpy sum and a numba "
          "parallel sum over a 512 MiB fp32 array, measured in the same process just before.", ""]
    for lam in sorted({c["lam"] for c in results["cells"]}):
        L += [f"## All solvers, λ = {lam:g}", "",
              "| N x K | solver | time | speed-up vs POT | iterations | column error | agreement "
              "| extra peak memory | note |", "|---|---|---|---|---|---|---|---|---|"]
        for c in results["cells"]:
            if c["lam"] != lam or "solvers" not in c:
                continue
            if "failed" in c:
                L.append(f"| {c['n']} x {c['k']} | **cell incomplete** | | | | | | | {c['failed']} |")
            ref = c.get("reference", {})
            L.append(f"| {c['n']} x {c['k']} | reference: {ref.get('kind', '–')} | {_fmt_t(ref)} | – | "
                     f"{ref.get('iterations', '–')} | {_fmt_err(ref)} | 1 | {_fmt_mem(ref)} | "
                     f"{ref.get('skipped', '')} |")
            for name, o in c["solvers"].items():
                if "skipped" in o and o["skipped"].startswith("not selected"):
                    continue
                if "skipped" in o:
                    L.append(f"| {c['n']} x {c['k']} | {LABELS.get(name, name)} | skipped | | | | | | "
                             f"{o['skipped']} |")
                    continue
                note = []
                if o.get("capped"):
                    note.append(f"stopped by cap ({o.get('iteration_cap')} it / "
                                f"{results['budget_s']:.0f} s) before 1e-3")
                elif o.get("hit_cap"):
                    note.append("stopped by cap, error already ≤ 1e-3")
                if o.get("finite") is False:
                    note.append("non-finite (under/overflow)")
                if o.get("nan_rows"):
                    note.append(f"{o['nan_rows']} NaN rows")
                if name == "textbook_native" and "native_error" in o:
                    note.append(f"native err {o['native_error']:.2g}")
                agr = o.get("agreement")
                L.append(f"| {c['n']} x {c['k']} | {LABELS.get(name, name)} | {_fmt_t(o)} | "
                         f"{_fmt_ratio(o, name)} | {o.get('iterations', '–')} | {_fmt_err(o)} | "
                         f"{'–' if agr is None else f'{agr:.4%}'} | {_fmt_mem(o)} | {'; '.join(note)} |")
        L.append("")
    warm = [c for c in results["cells"] if "cold_iterations" in c.get("warm_start", {})]
    if warm:
        L += ["## Warm start", "",
              f"After solving a cell, the head drifts (`W + {warm[0]['warm_start']['drift']:g} · noise`, "
              "same features) and the new problem is solved cold and warm-started from the first "
              "solution's column potentials.", "",
              "| N x K | λ | cold its | warm its | cold plain its | warm plain its | cold time | warm time |",
              "|---|---|---|---|---|---|---|---|"]
        for c in warm:
            w = c["warm_start"]
            L.append(f"| {c['n']} x {c['k']} | {c['lam']:g} | {w['cold_iterations']} | "
                     f"{w['warm_iterations']} | {w.get('cold_plain_iterations', '–')} | "
                     f"{w.get('warm_plain_iterations', '–')} | {w['cold_time_s']:.3g} s | "
                     f"{w['warm_time_s']:.3g} s |")
        L.append("")
    if results.get("skipped_cells"):
        L += ["## Cells not run", ""] + [f"- {s}" for s in results["skipped_cells"]] + [""]
    L += ["Plots: [time vs N·K](grid_time.png), [iterations with/without warm start](grid_warm.png).", ""]
    (out / "grid.md").write_text("\n".join(L))
    if not plots:
        return
    try:
        plot(results, out)
    except Exception as e:  # pragma: no cover - plotting is a convenience
        print(f"plotting failed: {e}")


K_MARKERS = "osD^vP*X"


def _by_k(cells: list[dict]) -> dict[int, list[dict]]:
    """Cells grouped by K, each group sorted by N: one plotted line per K (a line joining cells of
    different K mixed two effects, N and K, and zig-zagged)."""
    out: dict[int, list[dict]] = {}
    for c in sorted(cells, key=lambda c: (c["k"], c["n"])):
        out.setdefault(c["k"], []).append(c)
    return out


def _k_legend(ax, ks: list[int]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.3", marker=K_MARKERS[i % len(K_MARKERS)], ls="-", lw=0.8,
                      label=f"K = {k}") for i, k in enumerate(ks)]
    ax.add_artist(ax.legend(handles=handles, fontsize=7, loc="upper left", title="one line per K",
                            title_fontsize=7))


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    cells = [c for c in results["cells"] if "solvers" in c]
    lams = sorted({c["lam"] for c in cells}) or [20.0]
    ks = sorted({c["k"] for c in cells})
    fig, axes = plt.subplots(1, len(lams), figsize=(6.5 * len(lams), 5), squeeze=False)
    names = ["ours", "ours_features", "pot", "pot_torch", "pot_log", "textbook", "textbook_native",
             "swav3"]
    for ax, lam in zip(axes[0], lams):
        groups = _by_k([c for c in cells if c["lam"] == lam])
        for j, name in enumerate(names):
            for k, group in groups.items():
                pts = [(c["nk"], c["solvers"][name]["time_s"], bool(c["solvers"][name].get("capped")))
                       for c in group if "time_s" in c["solvers"].get(name, {})]
                if not pts:
                    continue
                col, mk = f"C{j}", K_MARKERS[ks.index(k) % len(K_MARKERS)]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=col, lw=0.8, alpha=0.5)
                for x_, y_, cap in pts:
                    ax.plot(x_, y_, mk, color=col, mfc="none" if cap else col, ms=5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N · K  (along a line: N grows at fixed K)")
        ax.set_ylabel("wall time (s)")
        ax.set_title(f"λ = {lam:g} (hollow: stopped by its cap before 1e-3)")
        ax.grid(True, which="both", alpha=0.3)
    _k_legend(axes[0][0], ks)
    solver_handles = [Line2D([], [], color=f"C{j}", lw=2, label=LABELS[name])
                      for j, name in enumerate(names)
                      if any("time_s" in c["solvers"].get(name, {}) for c in cells)]
    axes[0][-1].legend(handles=solver_handles, fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "grid_time.png", dpi=110)
    plt.close(fig)

    # Passes span 4 to 250: a log axis keeps the accelerated counts (4-50) readable.
    kinds = (("cold_iterations", "-", "cold"), ("warm_iterations", "--", "warm"),
             ("cold_plain_iterations", ":", "cold, plain (no Anderson)"),
             ("warm_plain_iterations", "-.", "warm, plain"))
    fig, axes = plt.subplots(1, len(lams), figsize=(6.5 * len(lams), 5), squeeze=False,
                             sharey=True)
    for ax, lam in zip(axes[0], lams):
        groups = _by_k([c for c in cells if c["lam"] == lam
                        and "cold_iterations" in c.get("warm_start", {})])
        for j, (key, style, _) in enumerate(kinds):
            for k, group in groups.items():
                sel = [(c["nk"], c["warm_start"][key]) for c in group if key in c["warm_start"]]
                if sel:
                    ax.plot([q[0] for q in sel], [q[1] for q in sel], style, color=f"C{j}",
                            marker=K_MARKERS[ks.index(k) % len(K_MARKERS)], ms=5,
                            alpha=1.0 if "plain" not in key else 0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N · K  (along a line: N grows at fixed K)")
        ax.set_ylabel("passes over the data")
        ax.set_title(f"ours, λ = {lam:g}: iterations with and without warm start")
        ax.grid(True, which="both", alpha=0.3)
    _k_legend(axes[0][0], ks)
    axes[0][-1].legend(handles=[Line2D([], [], color=f"C{j}", ls=style, lw=1.5, label=lab)
                                for j, (_, style, lab) in enumerate(kinds)],
                       fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "grid_warm.png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def _git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "otcluster"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+uncommitted changes in otcluster/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def parse_sizes(s: str) -> list[tuple[int, int]]:
    out = []
    for part in s.split(","):
        n, k = part.lower().split("x")
        out.append((int(float(n)), int(float(k))))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (CI)")
    p.add_argument("--sizes", type=parse_sizes, help="cells as NxK,NxK (default: the full grid)")
    p.add_argument("--lams", default=None, help="comma-separated λ values (default 20,100)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default docs/benchmarks; a temp dir with --quick)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="time budget per slow baseline per cell (default 25; 4 with --quick)")
    p.add_argument("--ours-budget-s", type=float, default=600.0,
                   help="skip our solver / the reference when predicted above this")
    p.add_argument("--mem-gib", type=float, default=16.0, help="memory budget per cell")
    p.add_argument("--deadline-min", type=float, default=40.0,
                   help="skip remaining cells predicted to end after this many minutes")
    p.add_argument("--drift", type=float, default=0.05, help="head drift for the warm-start check")
    p.add_argument("--solvers", default=None,
                   help=f"comma-separated subset of {','.join(SOLVERS)} (default: all)")
    p.add_argument("--append", action="store_true",
                   help="add the cells to --out/grid.json instead of starting a new grid "
                        "(its cells also calibrate the time budgets)")
    add_overwrite_arg(p)
    p.add_argument("--record-skipped", metavar="REASON", default=None,
                   help="do not run the cells; record them as skipped for REASON (with --append)")
    p.add_argument("--cell", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.cell:
        spec = json.loads(Path(a.cell[0]).read_text())
        dest = Path(a.cell[1])

        def save(cell: dict, step: str) -> None:
            tmp = dest.with_suffix(".part")
            tmp.write_text(json.dumps(dict(cell, running=step), default=float))
            tmp.replace(dest)

        cell = run_cell(spec, save)
        dest.write_text(json.dumps(cell, default=float))
        return {}

    t0 = time.perf_counter()
    if a.sizes:
        sizes = a.sizes
    elif a.quick:
        sizes = list(QUICK_SIZES)
    else:
        sizes = [(n, k) for n in FULL_N for k in FULL_K]
    lams = [float(x) for x in a.lams.split(",")] if a.lams else list(LAMS)
    budget = a.budget_s if a.budget_s is not None else (4.0 if a.quick else 25.0)
    out = a.out or (Path(tempfile.mkdtemp(prefix="bench_grid_")) if a.quick else ROOT / "docs" / "benchmarks")
    if not a.append:  # --append adds cells to the grid.json there on purpose
        refuse_taken(p, out, ["grid.json", "grid.md", "grid_time.png", "grid_warm.png"],
                     a.overwrite)
    selected = tuple(x.strip() for x in a.solvers.split(",")) if a.solvers else SOLVERS
    unknown = [x for x in selected if x not in SOLVERS]
    if unknown:
        p.error(f"unknown solvers {unknown}; choose from {SOLVERS}")
    planner = Planner(budget, a.mem_gib, a.ours_budget_s, selected)
    cmd = "python benchmarks/bench_grid.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                 ).rstrip()
    results = {"command": cmd, "machine": machine_info(), "in_process": a.quick, "git": _git_rev(),
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_avg_start": os.getloadavg()[0],
               "budget_s": budget, "mem_gib": a.mem_gib, "deadline_min": a.deadline_min,
               "quick": a.quick, "problem": f"log_softmax(F W^T), F ~ N(0,1) (N x {D_FEAT}), "
               f"W ~ N(0, 1/{D_FEAT}) (K x {D_FEAT})", "cells": [], "skipped_cells": []}
    if a.append and (out / "grid.json").exists():
        prev = json.loads((out / "grid.json").read_text())
        for cell in prev["cells"]:
            if "solvers" in cell:
                planner.learn(cell)
        prev.setdefault("runs", [{k: prev.get(k) for k in ("command", "machine", "load_avg_start",
                                                           "load_avg_end", "wall_s", "budget_s")}])
        prev["runs"].append({k: results[k] for k in ("command", "machine", "load_avg_start",
                                                     "budget_s")})
        prev["skipped_cells"] = [s_ for s_ in prev.get("skipped_cells", [])
                                 if not any(s_.startswith(f"{n} x {k}, ") for n, k in sizes)]
        results, t_prev = prev, prev.get("wall_s", 0.0)
    else:
        t_prev = 0.0
    print(f"machine: {results['machine']}", flush=True)
    cells = sorted(((n, k, lam) for n, k in sizes for lam in lams), key=lambda c: (c[0] * c[1], c[2]))
    for n, k, lam in cells:
        plan, predicted = planner.plan(n, k, lam)
        elapsed = time.perf_counter() - t0
        if elapsed + predicted > a.deadline_min * 60:
            reason = (f"{n} x {k}, λ={lam:g}: predicted {predicted:.0f} s would end after the "
                      f"{a.deadline_min:g} min deadline (elapsed {elapsed / 60:.1f} min)")
            print("skip cell:", reason, flush=True)
            results["skipped_cells"].append(reason)
            continue
        ran = [s for s, v in plan["solvers"].items() if "skip" not in v]
        if not ran or a.record_skipped:
            why = a.record_skipped or "no solver fits: " + "; ".join(
                sorted({v["skip"] for v in plan["solvers"].values() if "skip" in v}))
            reason = f"{n} x {k}, λ={lam:g}: {why} (predicted {predicted:.0f} s)"
            print("skip cell:", reason, flush=True)
            results["skipped_cells"].append(reason)
            continue
        print(f"cell {n} x {k} λ={lam:g}: predicted {predicted:.0f} s, solvers {ran}, "
              f"reference {plan['reference']}", flush=True)
        spec = {"n": n, "k": k, "lam": lam, "seed": 0, "plan": plan, "drift": a.drift,
                "bandwidth_bytes": (64 << 20) if a.quick else (512 << 20)}
        if a.quick:  # tiny cells: same process (a child per cell costs ~30 s of imports here)
            cell = run_cell(spec)
        else:
            cell = run_child(spec, timeout=max(600.0, 4 * predicted))
        cell.update(n=n, k=k, lam=lam, nk=n * k, plan=plan)
        if "failed" in cell:
            print(f"  FAILED: {cell['failed']}", flush=True)
        if "solvers" in cell:
            planner.learn(cell)
            o = cell["solvers"]
            for name, v in o.items():
                if "time_s" in v:
                    print(f"  {name:16s} {v['time_s']:8.3f} s  it {v.get('iterations')!s:>5}  "
                          f"err {v.get('col_error', float('nan')):.1e}  agree "
                          f"{v.get('agreement', float('nan')):.4f}  "
                          f"x{v.get('speedup_vs_pot', float('nan')):.2f} "
                          f"vs POT  mem {v.get('extra_peak_bytes', 0) / 2**20:.0f} MiB"
                          + ("  CAPPED" if v.get("capped") else ""), flush=True)
                else:
                    print(f"  {name:16s} skipped: {v['skipped']}", flush=True)
        results["cells"] = [c for c in results["cells"] if (c["n"], c["k"], c["lam"]) != (n, k, lam)]
        results["cells"].append(cell)  # (with --append, a re-run cell replaces the old one)
        results["cells"].sort(key=lambda c: (c["nk"], c["lam"]))
        results["wall_s"] = t_prev + time.perf_counter() - t0
        results["load_avg_end"] = os.getloadavg()[0]
        write_report(results, out, plots=False)  # a partial grid survives an interruption
    results["wall_s"] = t_prev + time.perf_counter() - t0
    results["load_avg_end"] = os.getloadavg()[0]
    write_report(results, out)
    print(f"wrote {out / 'grid.json'}, grid.md, grid_time.png, grid_warm.png "
          f"({results['wall_s'] / 60:.1f} min)", flush=True)
    return results


if __name__ == "__main__":
    main()
