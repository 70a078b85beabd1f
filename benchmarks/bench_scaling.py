"""λ-scaling (``scaling_stages``): passes and wall time against a solve at λ alone, side by side.

    python benchmarks/bench_scaling.py --out docs/benchmarks     # about a minute on 2 cores
    python benchmarks/bench_scaling.py --quick --out /tmp/s

Problems (log-probabilities, λ = 20, Gaussian prior sorted onto the clusters, float32 kernel):

* ``confident N=96 K=6``: a confident network that favours some clusters for every sample (row
  logits ``15 * randn + 6 * randn`` per cluster), the size of the robustness suite's worlds,
  where the trainer's clusterings stopped short of ``tol`` (20 draws);
* ``confident N=2000 K=20``: the same, larger (5 draws);
* ``random N=200000 K=309``: ``log_softmax(randn)``, the solver benchmarks' paper-sized problem
  (1 draw; ``--quick``: 20000 x 50).

Per problem and stage count (0 = a solve at λ alone), run round-robin on each draw so a load
change hits all alike: passes over the data (mean and max over the draws), the share of solves
that reached ``tol``, the summed wall time, and the share of labels equal to those of stage 0.
``tol`` is the trainer's 1e-2. Writes ``scaling.json``, ``scaling.md`` and ``scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _pages import add_overwrite_arg, refuse_taken  # noqa: E402

from otcluster import sinkhorn  # noqa: E402

STAGES = (0, 1, 2, 3, 4)
TOL, LAM = 1e-2, 20.0


def problems(quick: bool) -> dict[str, list[torch.Tensor]]:
    def confident(n: int, k: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return (15 * torch.randn(n, k, generator=g) + 6 * torch.randn(1, k, generator=g)).log_softmax(-1)

    big = (20_000, 50) if quick else (200_000, 309)
    g = torch.Generator().manual_seed(0)
    return {
        "confident N=96 K=6": [confident(96, 6, s) for s in range(5 if quick else 20)],
        "confident N=2000 K=20": [confident(2000, 20, s) for s in range(2 if quick else 5)],
        f"random N={big[0]} K={big[1]}": [torch.randn(*big, generator=g).log_softmax(-1)],
    }


def measure(draws: list[torch.Tensor], max_iter: int) -> dict[str, dict]:
    rows = {s: {"passes": [], "converged": [], "seconds": 0.0, "same_labels": []} for s in STAGES}
    for x in draws:
        labels0 = None
        for s in STAGES:
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # counted in "converged"
                res = sinkhorn(x, lam=LAM, prior="gaussian", tol=TOL, max_iter=max_iter,
                               scaling_stages=s)
            rows[s]["seconds"] += time.perf_counter() - t
            rows[s]["passes"].append(res.n_iter)
            rows[s]["converged"].append(bool(res.converged))
            labels0 = res.labels if s == 0 else labels0
            rows[s]["same_labels"].append(float((res.labels == labels0).double().mean()))
    return {str(s): {"passes_mean": statistics.mean(r["passes"]), "passes_max": max(r["passes"]),
                     "converged": sum(r["converged"]) / len(r["converged"]),
                     "seconds": r["seconds"], "same_labels": min(r["same_labels"])}
            for s, r in rows.items()}


def report(res: dict, out: Path) -> None:
    lines = ["# λ-scaling of the solver (`scaling_stages`)\n",
             f"Measured by `python benchmarks/bench_scaling.py{' --quick' if res['quick'] else ''}` "
             f"on {res['machine']}, torch {res['torch']}, {res['threads']} threads; λ = {LAM:g}, "
             f"tol = {TOL:g}, max_iter = {res['max_iter']}, Gaussian prior, float32 kernel. "
             "Protocol: the docstring of the script.\n"]
    for name, rows in res["problems"].items():
        base = rows["0"]
        lines += [f"\n## {name} ({res['draws'][name]} draws)\n",
                  "| stages | passes (mean) | passes (max) | reached tol | wall time (s) | "
                  "time vs 0 stages | labels equal to 0 stages (least) |", "|---|---|---|---|---|---|---|"]
        for s, r in rows.items():
            lines.append(f"| {s} | {r['passes_mean']:.1f} | {r['passes_max']} | "
                         f"{100 * r['converged']:.0f} % | {r['seconds']:.3f} | "
                         f"{r['seconds'] / base['seconds']:.2f}x | {100 * r['same_labels']:.1f} % |")
    (out / "scaling.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(res["problems"]), figsize=(4 * len(res["problems"]), 3.2))
    for ax, (name, rows) in zip(axes, res["problems"].items()):
        ax.bar(list(rows), [r["passes_mean"] for r in rows.values()], color="tab:blue")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("scaling_stages")
        ax.set_ylabel("passes to tol (mean)")
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=110)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--max-iter", type=int, default=10_000)
    p.add_argument("--out", default=".")
    add_overwrite_arg(p)
    a = p.parse_args(argv)
    out = Path(a.out)
    refuse_taken(p, out, ["scaling.json", "scaling.md", "scaling.png"], a.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    sinkhorn(torch.randn(100, 5).log_softmax(-1))  # compile the kernels outside the timings
    probs = problems(a.quick)
    res = {"quick": a.quick, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "torch": torch.__version__, "threads": torch.get_num_threads(), "max_iter": a.max_iter,
           "draws": {k: len(v) for k, v in probs.items()}, "problems": {}}
    for name, draws in probs.items():
        res["problems"][name] = measure(draws, a.max_iter)
        print(name, " ".join(f"s{s}: {r['passes_mean']:.0f} passes {r['seconds']:.2f} s"
                             for s, r in res["problems"][name].items()), flush=True)
    (out / "scaling.json").write_text(json.dumps(res, indent=1))
    report(res, out)
    return res


if __name__ == "__main__":
    main()
