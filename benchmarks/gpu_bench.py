"""GPU benchmark of the solver in one command (≤ 8 minutes on one H100/H200).

    python benchmarks/gpu_bench.py                         # CUDA: 1M x 3000, then larger until OOM
    python benchmarks/gpu_bench.py --device cpu --quick    # tiny sizes on CPU (CI keeps it working)

Measures, on one device, in one process:

* ``bandwidth``: read bandwidth of a large fp32 tensor sum (best of 5).
* ``dense``: :func:`otcluster.sinkhorn` (torch path on CUDA) at N x K = 1M x 3000, then 2M, 4M,
  ... x 3000 until memory runs out (the OOM is caught and recorded). Per size: the full solve at
  λ=20 and λ=100 (time, passes, relative L1 column error), the time of one iteration
  ``(T(11 passes) - T(1 pass)) / 10`` against the time of one read of the fp32 N x K matrix at the
  measured bandwidth, and the peak memory allocated on top of the input.
* ``pot_torch``: POT ``ot.sinkhorn`` on the same device and data (torch float32 tensors, the
  cost shifted per row so that float32 ``exp`` cannot zero a whole row, ``stopThr = 1e-3 /
  sqrt(K)``, so its relative L1 column error is <= 1e-3), its time, iterations and label
  agreement with ours, and the time ratio.
* ``features``: the memory-bounded :func:`otcluster.sinkhorn_features` from 512-d features at
  1M and 4M x 3000 (peak memory stays far below one N x K matrix).

Writes ``gpu_bench.json`` into ``$OUT`` if that variable is set, else to ``--out``.
Every step checks a deadline (``--budget-s``, default 420 s) and is skipped, with the reason,
when the run is out of time.
"""

from __future__ import annotations

import argparse
import json
import math
import os

# CPU fallback on shared machines: spinning OpenMP threads steal the cores (see bench_grid.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# POT imports every array library it finds; JAX then takes 75 % of the GPU's memory at import
# (on the first H200 run that left 11.6 of 139.8 GiB for the next solve). POT only needs torch here.
for _lib in ("JAX", "TENSORFLOW", "CUPY"):
    os.environ.setdefault(f"POT_BACKEND_DISABLE_{_lib}", "1")
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from otcluster import ConvergenceWarning, sinkhorn, sinkhorn_features  # noqa: E402

GIB = 1 << 30


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev: torch.device):
    _sync(dev)
    t = time.perf_counter()
    out = fn()
    _sync(dev)
    return time.perf_counter() - t, out


def json_out(out: Path | None, name: str, res: dict, t0: float):
    """Where a GPU script writes (``--out``, else ``$OUT/<name>`` on a device run, else
    ``./<name>``) and a ``save()`` that writes ``res`` there with its wall time: called after
    every step, so a run stopped from outside keeps what it finished."""
    if out is None:
        out = Path(os.environ["OUT"]) / name if os.environ.get("OUT") else Path(name)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        res["wall_s"] = time.perf_counter() - t0
        out.write_text(json.dumps(res, indent=1))

    return out, save


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def _free(dev: torch.device) -> None:
    import gc

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


class Peak:
    """Peak memory on top of what is allocated when the block starts (CUDA: allocator stats;
    CPU: VmHWM reset through /proc/self/clear_refs, minus VmRSS)."""

    def __init__(self, dev: torch.device):
        self.dev = dev

    def __enter__(self):
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
            self.base = torch.cuda.memory_allocated(self.dev)
        else:
            self.base = _kib("VmRSS") * 1024
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:  # pragma: no cover
                pass
        return self

    def __exit__(self, *exc):
        if self.dev.type == "cuda":
            self.extra = torch.cuda.max_memory_allocated(self.dev) - self.base
        else:
            self.extra = max(0, _kib("VmHWM") * 1024 - self.base)
        return False


def _kib(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:  # pragma: no cover
        pass
    return 0


def memory(dev: torch.device) -> dict:
    """What the process holds on the device between steps (all freed tensors released)."""
    if dev.type != "cuda":
        return {}
    return {"allocated_bytes": torch.cuda.memory_allocated(dev),
            "reserved_bytes": torch.cuda.memory_reserved(dev)}


def _oom(e: BaseException) -> str:
    return " ".join(str(e).split())[:600]


def bandwidth(dev: torch.device, n_bytes: int) -> dict:
    a = torch.ones(n_bytes // 4, dtype=torch.float32, device=dev)
    a.sum()
    best = min(_timed(lambda: a.sum(), dev)[0] for _ in range(5))
    return {"bytes": a.numel() * 4, "read_GBps": a.numel() * 4 / best / 1e9}


def make_log_p(n: int, k: int, dev: torch.device, seed: int = 0) -> torch.Tensor:
    """N(0, 1) logits -> log_softmax, fp32, built in row blocks (no N x K temporaries)."""
    g = torch.Generator(device=dev).manual_seed(seed)
    x = torch.empty(n, k, device=dev)
    step = max(1, (1 << 26) // k)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        x[lo:hi] = torch.randn(hi - lo, k, device=dev, generator=g).log_softmax(1)
    return x


def dense_size(n: int, k: int, dev: torch.device, bw: float, lams=(20.0, 100.0),
               backend: str = "auto", x: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
    x = make_log_p(n, k, dev) if x is None else x
    sinkhorn(x[: min(n, 4096)], lam=20.0, backend=backend)  # warm-up (allocator, kernels)
    row: dict = {"n": n, "k": k, "input_bytes": n * k * 4, "backend": backend}
    labels = None
    for lam in lams:
        with Peak(dev) as pk:
            t, res = _timed(lambda lam=lam: sinkhorn(x, lam=lam, backend=backend), dev)
        r = {"time_s": t, "iterations": res.n_iter, "col_error": float(res.error),
             "converged": bool(res.converged), "extra_peak_bytes": pk.extra,
             "extra_over_input": pk.extra / (n * k * 4)}
        if lam == lams[0]:
            labels = res.labels
        del res
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t1, _ = _timed(lambda lam=lam: sinkhorn(x, lam=lam, tol=1e-14, max_iter=1,
                                                    backend=backend), dev)
            t11, _ = _timed(lambda lam=lam: sinkhorn(x, lam=lam, tol=1e-14, max_iter=11,
                                                     backend=backend), dev)
        per_iter = max(t11 - t1, 0.0) / 10
        read = n * k * 4 / (bw * 1e9)
        r.update(per_iteration_s=per_iter, one_read_s=read, per_iteration_over_one_read=per_iter / read,
                 setup_and_labels_s=t1)
        row[f"lam{lam:g}"] = r
        _free(dev)
    return row, (x, labels)


def pot_torch(x: torch.Tensor, ours_labels: torch.Tensor, ours_time: float, dev: torch.device) -> dict:
    import ot

    n, k = x.shape
    thr = 1e-3 / math.sqrt(k)
    a = torch.full((n,), 1.0 / n, device=dev)
    b = torch.full((k,), 1.0 / k, device=dev)
    # cost shifted per row so that each row's best cluster costs 0: the same plan (a per-row
    # constant only changes the row scaling), and exp(-M/reg) cannot underflow a whole row in
    # float32, which it does for raw -log_p at K=3000 (POT then stops at iteration 0)
    M = x.amax(1, keepdim=True) - x
    with warnings.catch_warnings(record=True) as w, Peak(dev) as pk:
        warnings.simplefilter("always")
        t, (plan, log) = _timed(lambda: ot.sinkhorn(a, b, M, 1.0 / 20.0, stopThr=thr, log=True), dev)
    col = plan.sum(0, dtype=torch.float64)
    err = float((col - b.double()).abs().sum() / b.double().sum())
    agree = float((plan.argmax(1) == ours_labels).double().mean())
    return {"n": n, "k": k, "lam": 20.0, "time_s": t, "iterations": int(log.get("niter", -1)) + 1,
            "col_error": err, "agreement_with_ours": agree, "extra_peak_bytes": pk.extra,
            "stop_thr_l2": thr, "speedup_ours_vs_pot": t / ours_time,
            "finite": bool(math.isfinite(err)), "cost": "max_k log_p[i, k] - log_p[i, k], float32",
            "warnings": sorted({str(m.message).split("\n")[0][:100] for m in w})}


def features_size(n: int, k: int, d: int, dev: torch.device, block_rows: int) -> dict:
    g = torch.Generator(device=dev).manual_seed(1)
    F = torch.randn(n, d, device=dev, generator=g)
    W = torch.randn(k, d, device=dev, generator=g) / math.sqrt(d)
    sinkhorn_features(F[:4096], W, lam=20.0, block_rows=block_rows)
    with Peak(dev) as pk:
        t, res = _timed(lambda: sinkhorn_features(F, W, lam=20.0, block_rows=block_rows), dev)
    out = {"n": n, "k": k, "d": d, "block_rows": block_rows, "time_s": t, "iterations": res.n_iter,
           "per_pass_s": t / max(1, res.n_iter), "col_error": float(res.error),
           "extra_peak_bytes": pk.extra, "nk_fp32_bytes": n * k * 4,
           "extra_over_nk": pk.extra / (n * k * 4)}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU CI)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default $OUT/gpu_bench.json, else ./gpu_bench.json)")
    p.add_argument("--budget-s", type=float, default=420.0, help="deadline for starting new steps")
    p.add_argument("--k", type=int, default=None, help="clusters (default 3000; 100 with --quick)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error("CUDA is not available: use --device cpu --quick")
    k = a.k or (100 if a.quick else 3000)
    if a.quick:
        dense_ns, feat_ns, d, bw_bytes, block = [20_000, 40_000], [20_000, 80_000], 32, 64 << 20, 4096
    else:
        dense_ns = [1_000_000 * 2**i for i in range(6)]  # 1M, 2M, 4M, ... until OOM
        feat_ns, d, bw_bytes, block = [1_000_000, 4_000_000], 512, 4 * GIB, 65536
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        dev_name, dev_mem = props.name, props.total_memory
    else:
        dev_name, dev_mem = platform.processor() or platform.machine(), 0
    args = sys.argv[1:] if argv is None else argv
    res: dict = {"command": "python benchmarks/gpu_bench.py " + " ".join(args),
                 "device": str(dev), "device_name": dev_name, "device_memory_bytes": dev_mem,
                 "torch": torch.__version__, "quick": a.quick, "k": k, "skipped": []}
    print(f"{dev_name} ({dev}), torch {torch.__version__}", flush=True)
    out, save = json_out(a.out, "gpu_bench.json", res, t0)
    res["bandwidth"] = bandwidth(dev, bw_bytes)
    _free(dev)
    bw = res["bandwidth"]["read_GBps"]
    print(f"read bandwidth {bw:.1f} GB/s", flush=True)

    def out_of_time(what: str) -> bool:
        if time.perf_counter() - t0 > a.budget_s:
            res["skipped"].append(f"{what}: deadline of {a.budget_s:.0f} s reached")
            print("skip", what, "(deadline)", flush=True)
            return True
        return False

    res["dense"] = []
    for i, n in enumerate(dense_ns):
        if out_of_time(f"dense {n} x {k}"):
            break
        try:
            row, (x, labels) = dense_size(n, k, dev, bw)
            if i == 0 and dev.type == "cuda":  # the same data with torch ops (two reads a pass)
                row["torch_ops"] = dense_size(n, k, dev, bw, backend="torch", x=x)[0]
        except (torch.cuda.OutOfMemoryError, RuntimeError, MemoryError) as e:
            if not (_is_oom(e) or isinstance(e, MemoryError)):
                raise
            res["dense"].append({"n": n, "k": k, "oom": _oom(e), "memory_before": memory(dev)})
            print(f"dense {n} x {k}: out of memory, stopping here", flush=True)
            _free(dev)
            break
        del x, labels
        _free(dev)
        row["memory_after"] = memory(dev)
        res["dense"].append(row)
        save()
        r20 = row["lam20"]
        print(f"dense {n} x {k} ({row['backend']}): {r20['time_s']:.3f} s, {r20['iterations']} passes, "
              f"{r20['per_iteration_s'] * 1e3:.2f} ms/iteration = {r20['per_iteration_over_one_read']:.2f} "
              f"reads; lam=100 {row['lam100']['time_s']:.3f} s", flush=True)
        if "torch_ops" in row:
            t20 = row["torch_ops"]["lam20"]
            print(f"  torch ops: {t20['per_iteration_s'] * 1e3:.2f} ms/iteration = "
                  f"{t20['per_iteration_over_one_read']:.2f} reads", flush=True)
    pot_ns = [dense_ns[0], dense_ns[0] // 2]  # POT on the first size, or half of it if it OOMs
    for n in pot_ns:
        if out_of_time(f"pot_torch {n} x {k}"):
            break
        try:
            x = make_log_p(n, k, dev)
            t_ours, ours = _timed(lambda x=x: sinkhorn(x, lam=20.0), dev)
            labels = ours.labels
            del ours
            _free(dev)
            res["pot_torch"] = pot_torch(x, labels, t_ours, dev)
            del x, labels
            _free(dev)
            pt = res["pot_torch"]
            print(f"POT torch {n} x {k}: {pt['time_s']:.3f} s, {pt['iterations']} it, "
                  f"agreement {pt['agreement_with_ours']:.4%}, ours is "
                  f"x{pt['speedup_ours_vs_pot']:.1f} faster", flush=True)
            save()
            break
        except (torch.cuda.OutOfMemoryError, RuntimeError, MemoryError) as e:
            if not (_is_oom(e) or isinstance(e, MemoryError)):
                raise
            x = labels = None  # noqa: F841 - drop the references before freeing
            _free(dev)
            res.setdefault("pot_torch_oom", []).append({"n": n, "k": k, "oom": _oom(e),
                                                        "memory_after_free": memory(dev)})
            print(f"POT torch {n} x {k}: out of memory", flush=True)
            save()
    res["features"] = []
    for n in feat_ns:
        if out_of_time(f"features {n} x {k}"):
            break
        try:
            row = features_size(n, k, d, dev, block)
            _free(dev)
        except (torch.cuda.OutOfMemoryError, RuntimeError, MemoryError) as e:
            if not (_is_oom(e) or isinstance(e, MemoryError)):
                raise
            res["features"].append({"n": n, "k": k, "oom": _oom(e)})
            _free(dev)
            break
        res["features"].append(row)
        save()
        print(f"features {n} x {k} (d={d}): {row['time_s']:.3f} s, {row['iterations']} passes, "
              f"extra memory {row['extra_peak_bytes'] / 2**20:.0f} MiB "
              f"({row['extra_over_nk']:.3f} of one N x K fp32 matrix)", flush=True)
    save()
    print(f"wrote {out} ({res['wall_s']:.0f} s)", flush=True)
    return res


if __name__ == "__main__":
    main()
