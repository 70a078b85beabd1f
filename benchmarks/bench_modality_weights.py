"""Weights of the modalities in eq. 6 (``TrainerConfig.modality_weights``) on real data: equal
(the paper) vs information weighting (floor 0.2, the default, and floor 0) vs a fixed weighting,
in scenarios where the views differ in how much they know of the class.

    python benchmarks/bench_modality_weights.py            # held-out seeds 1-5 (~5 min of CPU, 1 thread)
    python benchmarks/bench_modality_weights.py --quick    # one seed, tiny training, for CI

Data: scikit-learn's digits (1797 images, 8 x 8) seen as views, each with its own small MLP
encoder trained from scratch by :class:`otcluster.SelfLabelTrainer`, the configuration of
``tests/otcluster/test_multiview_digits.py`` (10 heads of K = 10, 12 epochs, batch 32, lr 0.05,
10 clusterings, uniform prior, exact alignment); every read scales each view by a random factor
in [0.9, 1.1] and adds N(0, 0.05) pixel noise, independently per view. The views:

* ``left`` / ``right``: the left and right 8 x 4 halves (both informative);
* ``noise``: a fixed random image per sample, drawn from a Gaussian with each right-half
  pixel's mean and standard deviation (no information on the class; fixed per sample, so a
  network can memorise it, as it can a broken sensor's static);
* ``degraded``: the right half, replaced by such noise in a random 70 % of the samples;
* ``unpaired``: the right half of another sample (a random permutation): real digit strokes,
  with a cluster structure of their own that is independent of the sample's class.

Scenarios: ``clean`` (left, right), ``noise view`` (left, noise), ``degraded view`` (left,
degraded), ``unpaired view`` (left, unpaired), ``three views`` (left, right, noise). The noise,
the 70 % and the permutation are drawn from the seed, the same for every method of a seed.

Methods: ``equal`` (``modality_weights="equal"``), ``information, floor 0.2`` (the default
floor, not tuned here), ``information, floor 0`` and ``fixed``: a dict giving the scenario's
last view (the corrupted one; ``right`` in ``clean``) the weight w and the others (1 - w)
shared equally, w chosen per scenario from ``FIXED_GRID`` by the mean NMI on the tuning seeds
(default 0), which are never reported. Reference rows: each view of the scenario alone.

Scores: NMI and ARI of the final clustering (after the last step) against the digit classes,
mean over the 10 heads, then mean ± sd over the held-out seeds; the final eq. 6 weights (mean
over seeds) and, for the information weighting, their course over the clusterings. Writes
``modality_weights.json``, ``.md`` and ``.png`` into ``--out`` (default ``docs/benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from otcluster import HeadConfig, SelfLabelTrainer, TrainerConfig  # noqa: E402
from otcluster.metrics import ari_score, nmi_score  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pages import add_overwrite_arg, refuse_taken  # noqa: E402

HERE = Path(__file__).resolve().parent
K = 10
SCENARIOS: dict[str, list[str]] = {
    "clean": ["left", "right"],
    "noise view": ["left", "noise"],
    "degraded view": ["left", "degraded"],
    "unpaired view": ["left", "unpaired"],
    "three views": ["left", "right", "noise"],
}
DESCRIPTION = {
    "clean": "left / right halves, both informative",
    "noise view": "the right view is a fixed Gaussian noise image per sample (no information)",
    "degraded view": "the right half replaced by such noise in 70 % of the samples",
    "unpaired view": "the right half of another sample (structured, independent of the class)",
    "three views": "left, right and the noise view",
}
METHODS: dict[str, dict] = {
    "equal": {"modality_weights": "equal"},
    "information, floor 0.2": {"modality_weights": "information", "modality_weights_floor": 0.2},
    "information, floor 0": {"modality_weights": "information", "modality_weights_floor": 0.0},
    "fixed": {},  # the weight of the scenario's last view, chosen on the tuning seeds
}
FIXED_GRID = (0.5, 0.25, 0.1)  # weight of the last view (two views; 1/3 in place of 0.5 for three)
DEGRADED_FRACTION = 0.7


def load_views(seed: int, subsample: int = 1) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Every view of the digits (N x 32 each) for ``seed`` and the classes."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = x[::subsample], y[::subsample]
    img = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 8, 8)
    n = len(img)
    left, right = img[:, :, :4].reshape(n, -1), img[:, :, 4:].reshape(n, -1)
    g = torch.Generator().manual_seed(10_000 + seed)
    noise = right.mean(0) + right.std(0) * torch.randn(n, right.shape[1], generator=g)
    noise2 = right.mean(0) + right.std(0) * torch.randn(n, right.shape[1], generator=g)
    hit = torch.randperm(n, generator=g)[: int(round(DEGRADED_FRACTION * n))]
    degraded = right.clone()
    degraded[hit] = noise2[hit]
    unpaired = right[torch.randperm(n, generator=g)]
    return {"left": left, "right": right, "noise": noise, "degraded": degraded,
            "unpaired": unpaired}, y


class Views(torch.utils.data.Dataset):
    """The chosen views; training reads scale each view and add pixel noise (batched reads)."""

    def __init__(self, views: dict[str, torch.Tensor]):
        self.x = views
        self.n = len(next(iter(views.values())))

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        views = {}
        for v, x in self.x.items():
            scale = 0.9 + 0.2 * torch.rand(len(idx), 1)
            views[v] = x[idx] * scale + 0.05 * torch.randn(len(idx), x.shape[1])
        return [{"index": int(i), **{v: t[j] for v, t in views.items()}} for j, i in enumerate(idx)]

    def __getitem__(self, i):
        return self.__getitems__([i])[0]


def encoder(d_in: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 64),
                         nn.ReLU())


def train(views: dict[str, torch.Tensor], y: np.ndarray, *, seed: int, epochs: int,
          n_clusterings: int, weighting: dict) -> dict:
    """One training; NMI / ARI (mean over heads) of the final clustering and the weights."""
    torch.manual_seed(seed)
    cfg = TrainerConfig(
        heads=HeadConfig(n_heads=10, n_clusters=K, hidden_dim=None, dropout=0.0), epochs=epochs,
        batch_size=32, lr=0.05, warmup_epochs=1, n_clusterings=n_clusterings, prior="uniform",
        seed=seed, show_progress=False, **weighting)
    trainer = SelfLabelTrainer({v: encoder(x.shape[1]) for v, x in views.items()}, Views(views),
                               cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = trainer.fit()
    labels = trainer.labels_.numpy()
    mods = list(trainer.model.modalities)
    course = [[r["modality_weights"][m] for m in mods] for r in history
              if r["event"] == "clustering" and "modality_weights" in r]
    return {"nmi": float(np.mean([nmi_score(y, lab) for lab in labels])),
            "ari": float(np.mean([ari_score(y, lab) for lab in labels])),
            "weights": dict(zip(mods, trainer.model.modality_weights.tolist())),
            "course": course}


def fixed_weights(views: list[str], w: float) -> dict[str, float]:
    rest = (1.0 - w) / (len(views) - 1)
    return {v: (w if i == len(views) - 1 else rest) for i, v in enumerate(views)}


def fixed_grid(views: list[str]) -> list[float]:
    return [1.0 / len(views) if w == 0.5 else w for w in FIXED_GRID]


def summarize(vals: list[float]) -> dict:
    a = np.asarray(vals, dtype=float)
    return {"mean": float(a.mean()), "sd": float(a.std()), "runs": [float(v) for v in a]}


def _ms(r: dict) -> str:
    return f"{r['mean']:.3f} ± {r['sd']:.3f}"


def _runs(r: dict) -> str:
    return " ".join(f"{v:.2f}" for v in r["runs"])


def write_markdown(res: dict, out: Path) -> None:
    seeds = ", ".join(map(str, res["seeds"]))
    L = ["# Weights of the modalities in eq. 6 on digits", "",
         f"Measured by `{res['command']}` (`OMP_NUM_THREADS=1`, one torch thread) on "
         f"{res['machine']} (load average {res['load_avg_start']:.1f} at the start, shared with "
         f"other jobs); wall time {res['wall_s'] / 60:.1f} min. Held-out seeds {seeds}; tuning "
         f"seed(s) {', '.join(map(str, res['tuning_seeds']))} used only to choose the fixed "
         f"weight, never reported. N = {res['n_samples']} digits, {res['epochs']} epochs, "
         f"{res['n_clusterings']} clusterings, 10 heads of K = 10 (the configuration of "
         "`tests/otcluster/test_multiview_digits.py`).", "",
         "NMI and ARI of the final clustering against the digit classes (mean over the 10 heads), "
         "mean ± sd over the held-out seeds. `information, floor f`: "
         "`TrainerConfig(modality_weights=\"information\", modality_weights_floor=f)`; `fixed`: "
         "the scenario's last view gets the weight w (the others share 1 - w), w chosen per "
         "scenario from {0.5 (1/3 for three views), 0.25, 0.1} on the tuning seed. `weights`: the "
         "final eq. 6 weights in the order of the views (mean over seeds). `Δ vs equal`: the NMI "
         "difference to `equal` on the same seed (same data, same initialisation), mean ± sd. "
         "See the docstring of `benchmarks/bench_modality_weights.py` for the views and the "
         "protocol.", ""]
    if res.get("findings"):
        L += ["## Findings", "", res["findings"], ""]
    for name, sc in res["scenarios"].items():
        views = sc["views"]
        L += [f"## {name}: {' + '.join(views)}", "", f"{DESCRIPTION[name]}.", "",
              f"| method | NMI | ARI | weights ({' / '.join(views)}) | Δ NMI vs equal | NMI per seed |",
              "|---|---|---|---|---|---|"]
        for m, r in sc["methods"].items():
            label = m if m != "fixed" else f"fixed, w = {res['fixed_choice'][name]:.3g}"
            w = " / ".join(f"{r['weights'][v]:.2f}" for v in views)
            d = "" if m == "equal" else _ms(r["delta_nmi_vs_equal"])
            L.append(f"| {label} | {_ms(r['nmi'])} | {_ms(r['ari'])} | {w} | {d} | {_runs(r['nmi'])} |")
        for v, r in sc["single"].items():
            L.append(f"| *{v}* | {_ms(r['nmi'])} | {_ms(r['ari'])} | | | {_runs(r['nmi'])} |")
        L.append("")
    L += ["## Summary (generated from the numbers above)", ""]
    for name, sc in res["scenarios"].items():
        eq = sc["methods"]["equal"]["nmi"]["mean"]
        best_view = max(sc["single"], key=lambda v: sc["single"][v]["nmi"]["mean"])
        parts = [f"{m} {r['delta_nmi_vs_equal']['mean']:+.3f} ± {r['delta_nmi_vs_equal']['sd']:.3f}"
                 for m, r in sc["methods"].items() if m != "equal"]
        last = sc["views"][-1]
        taken = [f"{m} in {sum(w[last] > 0.5 for w in r['weights_runs'])} of {len(r['weights_runs'])}"
                 for m, r in sc["methods"].items() if m.startswith("information")]
        L.append(f"* **{name}**: equal {eq:.3f} (best view alone: {best_view}, "
                 f"{sc['single'][best_view]['nmi']['mean']:.3f}); NMI vs equal: {'; '.join(parts)}. "
                 f"Final weight of `{last}` above 0.5: {', '.join(taken)} seeds.")
    L += ["", "![NMI per scenario and method](modality_weights.png)", ""]
    (out / "modality_weights.md").write_text("\n".join(L))


def plot(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["scenarios"])
    methods = list(METHODS)
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(names))]
        rs = [res["scenarios"][s]["methods"][m]["nmi"] for s in names]
        ax.bar(xs, [r["mean"] for r in rs], width, yerr=[r["sd"] for r in rs], capsize=2,
               label=m, color=f"C{i}")
        for x, r in zip(xs, rs):  # every seed: the spread can be two modes
            ax.plot([x] * len(r["runs"]), r["runs"], "k.", ms=3)
    for j, s in enumerate(names):  # the best single view of the scenario
        best = max(r["nmi"]["mean"] for r in res["scenarios"][s]["single"].values())
        ax.hlines(best, j - 0.45, j + 0.45, colors="k", linestyles="--", lw=0.9,
                  label="best view alone" if j == 0 else None)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel(f"NMI (bars: mean ± sd; dots: seeds {', '.join(map(str, res['seeds']))})")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=3, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "modality_weights.png", dpi=110)
    plt.close(fig)


def write_report(res: dict, out: Path) -> None:
    (out / "modality_weights.json").write_text(json.dumps(res, indent=1))
    write_markdown(res, out)
    try:
        plot(res, out)
    except Exception as e:  # pragma: no cover - matplotlib missing or broken
        print(f"plotting failed: {e}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed, 1 epoch, a quarter of the digits")
    p.add_argument("--seeds", type=str, default="1,2,3,4,5", help="held-out seeds (reported)")
    p.add_argument("--tuning-seeds", type=str, default="0", help="choose the fixed weight (not reported)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--scenarios", type=str, default=",".join(SCENARIOS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    add_overwrite_arg(p)
    p.add_argument("--findings", type=Path, help="Markdown file of findings to put in the report")
    p.add_argument("--report-only", type=Path, metavar="JSON",
                   help="rewrite the report (Markdown, PNG) from this JSON, training nothing")
    a = p.parse_args(argv)
    if a.report_only is not None:
        res = json.loads(a.report_only.read_text())
        if a.findings is not None:
            res["findings"] = a.findings.read_text().strip()
        out = a.out or a.report_only.parent
        out.mkdir(parents=True, exist_ok=True)
        write_report(res, out)
        return res
    out = a.out or (Path(__import__("tempfile").mkdtemp()) if a.quick
                    else HERE.parent / "docs" / "benchmarks")
    refuse_taken(p, out, [f"modality_weights.{ext}" for ext in ("json", "md", "png")],
                 a.overwrite)
    torch.set_num_threads(a.threads)
    try:
        import numba

        numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover
        pass
    seeds = [int(s) for s in a.seeds.split(",")][: 1 if a.quick else None]
    tuning = [int(s) for s in a.tuning_seeds.split(",")]
    if set(seeds) & set(tuning):
        p.error(f"held-out seeds {seeds} overlap the tuning seeds {tuning}")
    scenarios = {s: SCENARIOS[s] for s in a.scenarios.split(",")}
    epochs = 1 if a.quick else a.epochs
    n_clusterings = 3 if a.quick else 10
    subsample = 4 if a.quick else 1
    kw = dict(epochs=epochs, n_clusterings=n_clusterings)
    t0 = time.perf_counter()
    res: dict = {
        "command": ("python benchmarks/bench_modality_weights.py "
                    + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_avg_start": os.getloadavg()[0], "threads": a.threads, "quick": a.quick,
        "seeds": seeds, "tuning_seeds": tuning, "epochs": epochs, "n_clusterings": n_clusterings,
        "degraded_fraction": DEGRADED_FRACTION, "fixed_grid": {}, "tuning": {}, "fixed_choice": {},
        "scenarios": {}}

    data = {s: load_views(s, subsample) for s in sorted(set(seeds) | set(tuning))}
    res["n_samples"] = len(data[seeds[0]][1])

    # 1. the fixed weight of each scenario, on the tuning seeds only
    for name, views in scenarios.items():
        grid = fixed_grid(views)
        res["fixed_grid"][name] = grid
        scores = {}
        for w in grid:
            runs = [train({v: data[s][0][v] for v in views}, data[s][1], seed=s,
                          weighting={"modality_weights": fixed_weights(views, w)}, **kw)["nmi"]
                    for s in tuning]
            scores[f"{w:.4g}"] = summarize(runs)
        best = max(grid, key=lambda w: scores[f"{w:.4g}"]["mean"])  # ties: the first (equal)
        res["tuning"][name] = scores
        res["fixed_choice"][name] = best
        print(f"[tuning] {name}: " + ", ".join(f"w={k} {v['mean']:.3f}" for k, v in scores.items())
              + f" -> {best:.3g}", flush=True)

    # 2. the held-out seeds
    single_cache: dict = {}
    for name, views in scenarios.items():
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for s in seeds:
            x, y = data[s]
            for m, weighting in METHODS.items():
                if m == "fixed":
                    weighting = {"modality_weights": fixed_weights(views, res["fixed_choice"][name])}
                runs[m].append(train({v: x[v] for v in views}, y, seed=s, weighting=weighting, **kw))
            for v in views:
                if (v, s) not in single_cache:
                    single_cache[v, s] = train({v: x[v]}, y, seed=s, weighting={}, **kw)
        sc: dict = {"views": views, "description": DESCRIPTION[name], "methods": {}, "single": {}}
        equal_nmi = np.array([r["nmi"] for r in runs["equal"]])
        for m, rs in runs.items():
            nmi = np.array([r["nmi"] for r in rs])
            row = {"nmi": summarize(nmi), "ari": summarize([r["ari"] for r in rs]),
                   "weights": {v: float(np.mean([r["weights"][v] for r in rs])) for v in views},
                   "weights_runs": [r["weights"] for r in rs],
                   "delta_nmi_vs_equal": summarize(nmi - equal_nmi)}
            if rs[0]["course"]:
                row["weights_course"] = [r["course"] for r in rs]
            sc["methods"][m] = row
        for v in views:
            rs = [single_cache[v, s] for s in seeds]
            sc["single"][f"{v} alone"] = {"nmi": summarize([r["nmi"] for r in rs]),
                                          "ari": summarize([r["ari"] for r in rs])}
        res["scenarios"][name] = sc
        print(f"{name}: " + ", ".join(f"{m} {_ms(r['nmi'])}" for m, r in sc["methods"].items())
              + " | " + ", ".join(f"{v} {_ms(r['nmi'])}" for v, r in sc["single"].items()),
              flush=True)

    res["wall_s"] = time.perf_counter() - t0
    res["process_s"] = time.process_time()
    if a.findings is not None:
        res["findings"] = a.findings.read_text().strip()
    out.mkdir(parents=True, exist_ok=True)
    write_report(res, out)
    print(f"wrote {out / 'modality_weights.md'} ({res['wall_s'] / 60:.1f} min)")
    return res


if __name__ == "__main__":
    main()
