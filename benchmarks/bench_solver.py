"""Solver speed against POT, measured side by side in one run (issue: core solver targets).

    python benchmarks/bench_solver.py            # the issue's sizes (takes ~1-2 minutes)
    python benchmarks/bench_solver.py --quick    # tiny sizes, for CI

Prints, for each size: wall time, passes over the data, label agreement and relative L1
column-marginal error of POT ``ot.sinkhorn`` (float64, defaults) and of ours, and the ratio.
Then: the stable path (lam=100) against the fast path (lam=20); warm start + acceleration
against cold plain Sinkhorn on drifting logits; peak memory of a dense solve (in a child
process). Writes ``docs/benchmarks/solver.json`` and ``solver.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from otcluster import sinkhorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pages import add_overwrite_arg, refuse_taken  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def log_softmax_normal(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g).log_softmax(1)


def col_error(colsum: np.ndarray, r: np.ndarray) -> float:
    return float(np.abs(colsum - r).sum() / r.sum())


def bench_pot(x: torch.Tensor, lam: float) -> dict:
    import ot

    n, k = x.shape
    a = np.full(n, 1.0 / n)
    b = np.full(k, 1.0 / k)
    t = time.perf_counter()
    M = -x.double().numpy()
    plan, log = ot.sinkhorn(a, b, M, reg=1.0 / lam, log=True)
    dt = time.perf_counter() - t
    out = {"time_s": dt, "iterations": int(log.get("niter", -1)),
           "col_error": col_error(plan.sum(0), b), "labels": plan.argmax(1)}
    del plan
    return out


def bench_ours(x: torch.Tensor, lam: float, **kw) -> dict:
    t = time.perf_counter()
    res = sinkhorn(x, lam=lam, **kw)
    dt = time.perf_counter() - t
    return {"time_s": dt, "iterations": res.n_iter, "col_error": float(res.error),
            "labels": res.labels.numpy(), "converged": bool(res.converged)}


def speed_vs_pot(n: int, k: int, lam: float) -> dict:
    x = log_softmax_normal(n, k)
    sinkhorn(x[: max(k, 1000)], lam=lam)  # JIT warm-up outside the timing
    pot = bench_pot(x, lam)
    ours = bench_ours(x, lam)
    agree = float((pot.pop("labels") == ours.pop("labels")).mean())
    row = {"n": n, "k": k, "lam": lam, "pot": pot, "ours": ours, "label_agreement": agree,
           "speedup_vs_pot": pot["time_s"] / ours["time_s"]}
    print(f"{n:>8} x {k:<5} lam={lam:<5g} POT {pot['time_s']:7.3f}s ({pot['iterations']} it, "
          f"err {pot['col_error']:.1e}) | ours {ours['time_s']:6.3f}s ({ours['iterations']} it, "
          f"err {ours['col_error']:.1e}) | agree {agree:.4%} | speed-up x{row['speedup_vs_pot']:.1f}",
          flush=True)
    return row


def stable_vs_fast(n: int, k: int, repeats: int = 3) -> dict:
    x = log_softmax_normal(n, k, seed=1)
    sinkhorn(x[:1000])
    t20, t100, it20, it100 = [], [], 0, 0
    for _ in range(repeats):  # interleaved, best of `repeats`: this machine is noisy
        r = bench_ours(x, 20.0)
        t20.append(r["time_s"])
        it20 = r["iterations"]
        r = bench_ours(x, 100.0)
        t100.append(r["time_s"])
        it100 = r["iterations"]
    row = {"n": n, "k": k, "lam20_time_s": min(t20), "lam20_iterations": it20,
           "lam100_time_s": min(t100), "lam100_iterations": it100,
           "ratio_lam100_over_lam20": min(t100) / min(t20)}
    print(f"stable path: lam=100 {row['lam100_time_s']:.3f}s ({it100} it) vs lam=20 "
          f"{row['lam20_time_s']:.3f}s ({it20} it): ratio {row['ratio_lam100_over_lam20']:.2f}",
          flush=True)
    return row


def warm_start(n: int, k: int, steps: int = 10) -> dict:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(n, k, generator=g)
    cold = warm = cold_plain_warm = 0
    prev = prev_plain = None
    for _ in range(steps):
        logits = logits + 0.01 * torch.randn(n, k, generator=g)
        lp = logits.log_softmax(1)
        cold += sinkhorn(lp, anderson=0).n_iter
        r = sinkhorn(lp, warm_start=prev)
        warm += r.n_iter
        prev = r
        rp = sinkhorn(lp, anderson=0, warm_start=prev_plain)
        cold_plain_warm += rp.n_iter
        prev_plain = rp
    row = {"n": n, "k": k, "steps": steps, "cold_plain_iterations": cold,
           "warm_plain_iterations": cold_plain_warm, "warm_accelerated_iterations": warm,
           "fraction_warm_plain": cold_plain_warm / cold, "fraction_warm_accelerated": warm / cold}
    print(f"warm start ({steps} drifting solves, {n} x {k}): cold plain {cold} it, warm plain "
          f"{cold_plain_warm} ({row['fraction_warm_plain']:.0%}), warm + Anderson {warm} "
          f"({row['fraction_warm_accelerated']:.0%})", flush=True)
    return row


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def memory_child(n: int, k: int) -> None:
    sinkhorn(log_softmax_normal(2000, k))  # JIT and allocator warm-up
    x = log_softmax_normal(n, k)
    base = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    sinkhorn(x)
    peak = _status_bytes("VmHWM")
    print(json.dumps({"baseline_rss": base, "peak_rss": peak, "nk_bytes": n * k * 4}))


def memory(n: int, k: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(n), str(k)],
                         capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    extra = m["peak_rss"] - m["baseline_rss"]
    row = {"n": n, "k": k, "input_bytes": m["nk_bytes"], "extra_peak_bytes": extra,
           "extra_over_one_buffer": extra / m["nk_bytes"]}
    print(f"peak memory of the solve, measured as VmHWM after resetting it ({n} x {k} fp32): "
          f"input {m['nk_bytes'] / 2**20:.0f} MiB, extra at peak "
          f"{extra / 2**20:.0f} MiB = {row['extra_over_one_buffer']:.2f} N x K buffers", flush=True)
    return row


def write_report(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "solver.json").write_text(json.dumps(results, indent=2))
    lines = ["# Solver benchmark (side by side with POT)", "",
             f"Machine: {results['machine']}. Command: `{results['command']}`.", "",
             "| N x K | λ | POT time | POT it | ours time | ours it | agreement | ours col. error "
             "| speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results["speed"]:
        lines.append(f"| {r['n']} x {r['k']} | {r['lam']:g} | {r['pot']['time_s']:.3f} s | "
                     f"{r['pot']['iterations']} | {r['ours']['time_s']:.3f} s | {r['ours']['iterations']} | "
                     f"{r['label_agreement']:.4%} | {r['ours']['col_error']:.1e} | "
                     f"x{r['speedup_vs_pot']:.1f} |")
    s = results["stable"]
    w = results["warm"]
    m = results["memory"]
    lines += ["", f"Stable path: λ=100 {s['lam100_time_s']:.3f} s ({s['lam100_iterations']} it) vs "
              f"λ=20 {s['lam20_time_s']:.3f} s ({s['lam20_iterations']} it) at {s['n']} x {s['k']}: "
              f"**{s['ratio_lam100_over_lam20']:.2f}x**.", "",
              f"Warm start, {w['steps']} solves on drifting logits at {w['n']} x {w['k']}: cold plain "
              f"{w['cold_plain_iterations']} passes; warm plain {w['warm_plain_iterations']} "
              f"({w['fraction_warm_plain']:.0%}); warm + Anderson {w['warm_accelerated_iterations']} "
              f"(**{w['fraction_warm_accelerated']:.0%}**).", "",
              f"Peak memory of a dense solve at {m['n']} x {m['k']}: extra {m['extra_over_one_buffer']:.2f} "
              "N x K fp32 buffers above the input."]
    (out_dir / "solver.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (CI)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    add_overwrite_arg(p)
    p.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.memory_child:
        memory_child(*a.memory_child)
        return {}
    if not a.quick:  # --quick writes nothing
        refuse_taken(p, a.out, ["solver.json", "solver.md"], a.overwrite)
    sizes = [(2000, 30), (20000, 50)] if a.quick else [(20000, 300), (200000, 309)]
    big = sizes[-1]
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"load average at start {os.getloadavg()[0]:.1f}",
        "command": "python benchmarks/bench_solver.py" + (" --quick" if a.quick else ""),
        "speed": [speed_vs_pot(n, k, 20.0) for n, k in sizes],
        "stable": stable_vs_fast(*big),
        "warm": warm_start(*sizes[0]),
        "memory": memory(*big),
    }
    if not a.quick:
        write_report(results, a.out)
        print(f"wrote {a.out / 'solver.json'} and {a.out / 'solver.md'}")
    return results


if __name__ == "__main__":
    main()
