"""Per-batch latency of soft codes: SwAV's 3-iteration loop vs ``otcluster.sinkhorn_codes`` (issue 14).

    python benchmarks/bench_codes.py                     # full run (about a minute on 2 cores)
    python benchmarks/bench_codes.py --quick --out /tmp/c
    python benchmarks/bench_codes.py --device cuda --out /tmp/c_gpu

Data: a stream of SwAV-like batches. K = 3000 unit prototypes in 128 dimensions; each sample is a
unit embedding near one prototype (drawn with a fixed Dirichlet(0.3) popularity, so some
prototypes are far more popular than others, as in training), scores are cosine similarities
(SwAV's input), ε = 0.05. Between batches the prototypes drift a little (as an SGD step moves
them) and the samples are new. Batch sizes 256, 1024 and 4096 (SwAV's single-GPU batch, and
larger).

Methods, run round-robin on every batch of the stream (so a load spike on the shared machine
hits all of them alike), timed per batch:

* ``swav3``: SwAV's ``distributed_sinkhorn`` (3 iterations), as in its repository, one process;
* ``ours_fixed3``: ``sinkhorn_codes(S, n_iter=3)``: the same numbers (the max |difference| to
  ``swav3`` is reported);
* ``ours_tol``: ``sinkhorn_codes(S, tol=1e-3)``: converged, cold start;
* ``ours_warm``: the same, warm-started from the previous batch's ``log_v``;
* ``ours_tol_out``: ``ours_tol`` writing into a reused ``out=`` buffer (no fresh N x K allocation).

Reported per method: median and minimum latency over the timed batches, the ratio of medians
to ``swav3``, iterations, and the relative L1 error of the cluster marginal reached (measured
from the returned codes' column sums). Writes ``codes.json``, ``codes.md`` and ``codes.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_grid.py

import torch  # noqa: E402

from otcluster import sinkhorn_codes  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pages import add_overwrite_arg, refuse_taken  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EPS = 0.05
TOL = 1e-3
METHODS = ("swav3", "ours_fixed3", "ours_tol", "ours_warm", "ours_tol_out")


@torch.no_grad()
def swav_distributed_sinkhorn(out: torch.Tensor, epsilon: float = EPS, iterations: int = 3) -> torch.Tensor:
    """SwAV's ``distributed_sinkhorn`` (main_swav.py) with world size 1 (no all-reduce)."""
    Q = torch.exp(out / epsilon).t()
    B = Q.shape[1]
    K = Q.shape[0]
    sum_Q = torch.sum(Q)
    Q /= sum_Q
    for _ in range(iterations):
        sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
        Q /= sum_of_rows
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def stream(n: int, k: int, n_batches: int, device: torch.device, seed: int = 0, d: int = 128,
           drift: float = 0.02):
    """Batches of cosine scores (n, k) from slowly drifting prototypes (see the docstring)."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    popularity = torch.distributions.Dirichlet(torch.full((k,), 0.3)).sample()
    for _ in range(n_batches):
        idx = torch.multinomial(popularity, n, replacement=True, generator=g)
        z = protos[idx] * 2.1 + 3.0 / math.sqrt(d) * torch.randn(n, d, generator=g)
        z = torch.nn.functional.normalize(z, dim=1)
        yield (z @ protos.T).to(device)
        step = drift / math.sqrt(d) * torch.randn(k, d, generator=g)
        protos = torch.nn.functional.normalize(protos + step, dim=1)


def marginal_error(codes: torch.Tensor) -> float:
    mass = codes.double().sum(0) / codes.shape[0]
    return float((mass - 1.0 / codes.shape[1]).abs().sum())


def bench_size(n: int, k: int, n_batches: int, warmup: int, device: torch.device) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    errors: dict[str, list[float]] = {m: [] for m in METHODS}
    iters: dict[str, list[int]] = {m: [] for m in METHODS}
    max_diff = 0.0
    warm = None
    buf = torch.empty((n, k), device=device)
    for b, s in enumerate(stream(n, k, n_batches + warmup, device)):
        out = {}
        for m in METHODS:
            sync()
            t0 = time.perf_counter()
            if m == "swav3":
                codes, it = swav_distributed_sinkhorn(s), 3
            else:
                if m == "ours_fixed3":
                    res = sinkhorn_codes(s, eps=EPS, n_iter=3)
                elif m == "ours_tol":
                    res = sinkhorn_codes(s, eps=EPS, tol=TOL)
                elif m == "ours_warm":
                    res = sinkhorn_codes(s, eps=EPS, tol=TOL, warm_start=warm)
                    warm = res.log_v
                else:
                    res = sinkhorn_codes(s, eps=EPS, tol=TOL, out=buf)
                codes, it = res.codes, res.n_iter
            sync()
            dt = time.perf_counter() - t0
            if b >= warmup:
                times[m].append(dt)
                errors[m].append(marginal_error(codes))
                iters[m].append(it)
            if m in ("swav3", "ours_fixed3"):
                out[m] = codes.clone() if m == "swav3" else codes
            del codes
        max_diff = max(max_diff, float((out["swav3"] - out["ours_fixed3"]).abs().max()))
    swav_med = statistics.median(times["swav3"])
    row: dict = {"n": n, "k": k, "batches": n_batches, "fixed3_vs_swav3_max_abs_diff": max_diff,
                 "methods": {}}
    for m in METHODS:
        med = statistics.median(times[m])
        row["methods"][m] = {
            "median_ms": 1e3 * med, "min_ms": 1e3 * min(times[m]), "ratio_to_swav3": med / swav_med,
            "error_median": statistics.median(errors[m]), "error_max": max(errors[m]),
            "iterations_median": statistics.median(iters[m]), "iterations_max": max(iters[m]),
        }
    return row


LABELS = {"swav3": "SwAV `distributed_sinkhorn`, 3 iterations",
          "ours_fixed3": "`sinkhorn_codes(n_iter=3)` (same numbers)",
          "ours_tol": "`sinkhorn_codes(tol=1e-3)`, cold",
          "ours_warm": "`sinkhorn_codes(tol=1e-3)`, warm start from the previous batch",
          "ours_tol_out": "`sinkhorn_codes(tol=1e-3, out=buf)`, cold, reused buffer"}


def write_report(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "codes.json").write_text(json.dumps(res, indent=1))
    L = ["# Soft codes per batch: SwAV's 3 iterations vs `sinkhorn_codes`", "",
         f"Measured by `{res['command']}` on {res['machine']}, device {res['device']} (load average "
         f"{res['load_avg_start']:.1f} at the start; other jobs shared the machine). ε = {EPS}, "
         f"K = 3000 prototypes, cosine scores of a slowly drifting stream (see the docstring of "
         f"`benchmarks/bench_codes.py`); all methods run round-robin on each batch; latency = median "
         f"(min) over the timed batches, ratio = median / SwAV's median. Error = relative L1 error of "
         f"the cluster marginal of the returned codes (median over batches; max in brackets).", ""]
    for row in res["sizes"]:
        L += [f"## N = {row['n']} x K = {row['k']}, {row['threads']} torch threads "
              f"({row['batches']} timed batches)", "",
              "| method | latency ms | ratio | iterations | marginal error |", "|---|---|---|---|---|"]
        for m, r in row["methods"].items():
            L.append(f"| {LABELS[m]} | {r['median_ms']:.2f} ({r['min_ms']:.2f}) | "
                     f"{r['ratio_to_swav3']:.2f} | {r['iterations_median']:g} (max {r['iterations_max']}) | "
                     f"{r['error_median']:.2e} ({r['error_max']:.2e}) |")
        tol_r = min(row["methods"][m]["ratio_to_swav3"] for m in ("ours_tol", "ours_tol_out"))
        verdict = "met" if tol_r <= 1.0 else "not met"
        L += ["", f"Max |difference| between `n_iter=3` codes and SwAV's: "
                  f"{row['fixed3_vs_swav3_max_abs_diff']:.2e}. Goal (converged codes in no more time "
                  f"than SwAV's 3 iterations): **{verdict}** (best converged ratio {tol_r:.3f}).", ""]
    L += ["![latency and marginal error per method](codes.png)", ""]
    (out / "codes.md").write_text("\n".join(L))
    try:
        plot(res, out)
    except Exception as e:  # pragma: no cover - matplotlib missing or broken
        print(f"plotting failed: {e}")


def plot(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(METHODS)
    sizes = res["sizes"]
    for i, m in enumerate(METHODS):
        xs = [j + (i - (len(METHODS) - 1) / 2) * width for j in range(len(sizes))]
        axes[0].bar(xs, [r["methods"][m]["median_ms"] for r in sizes], width, label=m, color=f"C{i}")
        axes[1].bar(xs, [max(r["methods"][m]["error_median"], 1e-9) for r in sizes], width, color=f"C{i}")
    for ax in axes:
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels([f"{r['n']} x {r['k']}\n{r['threads']} thr" for r in sizes], fontsize=8)
    axes[0].set_ylabel(f"latency per batch, ms (median, {res['device']})")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[1].set_yscale("log")
    axes[1].axhline(TOL, color="k", lw=0.8, ls="--")
    axes[1].set_ylabel("relative L1 error of the cluster marginal")
    fig.tight_layout()
    fig.savefig(out / "codes.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="256 and 1024 x 3000, 4 batches each")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default docs/benchmarks; a temp dir with --quick)")
    add_overwrite_arg(p)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--batches", type=int, default=20, help="timed batches per size")
    p.add_argument("--threads", default=str(torch.get_num_threads()),
                   help="torch thread counts to run with, comma-separated (default: torch's default)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if a.out is None:
        import tempfile

        a.out = Path(tempfile.mkdtemp(prefix="bench_codes_")) if a.quick else ROOT / "docs" / "benchmarks"
    refuse_taken(p, a.out, ["codes.json", "codes.md", "codes.png"], a.overwrite)
    sizes = [(256, 3000), (1024, 3000)] if a.quick else [(256, 3000), (1024, 3000), (4096, 3000)]
    batches, warmup = (4, 1) if a.quick else (a.batches, 3)
    args = " ".join(argv if argv is not None else sys.argv[1:])
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    threads = [int(t) for t in a.threads.split(",")]
    res: dict = {"command": f"python benchmarks/bench_codes.py {args}".strip(),
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
                 "device": dev_name, "load_avg_start": os.getloadavg()[0], "eps": EPS, "tol": TOL,
                 "quick": a.quick, "sizes": []}
    t0 = time.perf_counter()
    for nt, (n, k) in [(nt, nk) for nt in threads for nk in sizes]:
        torch.set_num_threads(nt)
        print(f"{n} x {k}, {nt} threads", flush=True)
        row = bench_size(n, k, batches, warmup, device)
        row["threads"] = nt
        res["sizes"].append(row)
        for m, r in row["methods"].items():
            print(f"  {m:13s} {r['median_ms']:8.2f} ms  x{r['ratio_to_swav3']:.2f}  "
                  f"iters {r['iterations_median']:g}  error {r['error_median']:.2e}", flush=True)
    res["wall_s"] = time.perf_counter() - t0
    write_report(res, a.out)
    print(f"wrote {a.out / 'codes.json'}, codes.md, codes.png ({res['wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
