"""Label quality on real data that ships with scikit-learn: digits seen as two views (issue #6).

    python benchmarks/bench_quality.py                     # full run (a few minutes on 2 cores)
    python benchmarks/bench_quality.py --quick --out /tmp/q

Data: the 1797 scikit-learn 8 x 8 digits (10 classes). Each digit is two "modalities": view
``top`` = the upper 4 rows (32 pixels), view ``bottom`` = the lower 4 rows. Every read applies
an augmentation (pixel noise, random pixel drop-out, brightness scaling, independently per
view). Both views carry the class, neither fully: the setting in which multi-modal single
labelling should beat each view alone. Encoders are small MLPs (32 -> 128 -> 64); heads are
linear; everything is trained from scratch by :class:`otcluster.SelfLabelTrainer`.

Experiments (NMI / ARI / Hungarian accuracy of head 0 against the digit classes, as the paper
reports; mean and spread over ``--seeds``; ground truth is never used for training or head
selection):

* ``views``: both views (multi-modal single labelling) vs ``top`` alone vs ``bottom`` alone;
  k-means (k = 10) on the encoders' features at random initialisation and after training
  (both views' features concatenated), and on the raw pixels as a reference point.
* ``align``: alignment of the two views' heads at initialisation: none / greedy / exact.
* ``prior``: uniform / Gaussian / Zipf priors on Zipf-skewed digits (class r keeps 1/r of its
  samples), where the Zipf prior is the right one.
* ``heads``: 1 head vs 10 decorrelated heads (2 augmentation groups).

Writes ``quality.json``, ``quality.md`` and ``quality.png`` into ``--out``.
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_grid.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from otcluster import (  # noqa: E402
    HeadConfig,
    SelfLabelTrainer,
    TrainerConfig,
    cluster_report,
    kmeans_baseline,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pages import add_overwrite_arg, refuse_taken  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 10


# ----------------------------------------------------------------------------- data
def load_digits_views():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0  # (N, 8, 8) in [0, 1]
    return x[:, :4].reshape(-1, 32), x[:, 4:].reshape(-1, 32), torch.tensor(d.target)


def zipf_subset(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Indices keeping ~1/r of class r's samples (class order shuffled by ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(K, generator=g)
    keep = []
    for rank, c in enumerate(order.tolist(), start=1):
        idx = torch.nonzero(y == c).flatten()
        keep.append(idx[: max(2, len(idx) // rank)])
    return torch.cat(keep).sort().values


class TwoViewDigits(torch.utils.data.Dataset):
    """``{"index", "top", "bottom"}`` items with a fresh augmentation per read and per view."""

    def __init__(self, top, bottom, views=("top", "bottom"), noise=0.15, drop=0.15):
        self.data = {"top": top, "bottom": bottom}
        self.views = views
        self.noise, self.drop = noise, drop

    def __len__(self):
        return self.data["top"].shape[0]

    def _aug(self, x):
        x = x * (0.8 + 0.4 * torch.rand(()))
        x = x * (torch.rand(x.shape) > self.drop)
        return x + self.noise * torch.randn(x.shape)

    def __getitem__(self, i):
        return {"index": i, **{v: self._aug(self.data[v][i]) for v in self.views}}


class Clean(TwoViewDigits):
    """Same items without augmentation (feature extraction, evaluation)."""

    def _aug(self, x):
        return x


def encoder() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 128), nn.BatchNorm1d(128), nn.ReLU(),
                         nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU())


# ----------------------------------------------------------------------------- runs
def make_trainer(top, bottom, y, *, views, seed, epochs, n_heads=1, prior="uniform", align="exact",
                 head_groups=2, n_clusterings=None):
    torch.manual_seed(seed)
    encs = {v: encoder() for v in views}
    cfg = TrainerConfig(
        heads=HeadConfig(n_heads=n_heads, n_clusters=K, hidden_dim=None, dropout=0.0),
        epochs=epochs, batch_size=64, lr=0.05, momentum=0.9, weight_decay=1e-5, warmup_epochs=1,
        lam=20.0, prior=prior, align=align if len(views) > 1 else None,
        head_groups=min(head_groups, n_heads), n_clusterings=n_clusterings or max(4, epochs),
        schedule_power=1.5, amp=False, seed=seed, show_progress=False)
    data = TwoViewDigits(top, bottom, views=views)
    return SelfLabelTrainer(encs, data, cfg, ground_truth=y), data


def scores(y, labels) -> dict:
    r = cluster_report(y, labels)
    return {"nmi": r.nmi, "ari": r.ari, "acc": r.acc, "n_clusters": r.n_clusters}


_DEFAULTS = {"n_heads": 1, "prior": "uniform", "align": "exact", "head_groups": 2,
             "n_clusterings": None}
_CACHE: dict = {}


def run_training(top, bottom, y, **kw) -> tuple[dict, SelfLabelTrainer | None]:
    """Train and score head 0; identical settings on the same data are trained once and reused
    (e.g. the views experiment's two-view run is also the ablations' default row)."""
    full = {**_DEFAULTS, **kw}
    key = (top.shape[0], tuple(sorted((k, str(v)) for k, v in full.items())))
    if key in _CACHE:
        return dict(_CACHE[key], reused=True), None
    t = time.perf_counter()
    trainer, _ = make_trainer(top, bottom, y, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit()
    out = scores(y, trainer.labels_[0])
    out["seconds"] = time.perf_counter() - t
    _CACHE[key] = out
    return out, trainer


def kmeans_scores(feats: torch.Tensor, y, seed: int) -> dict:
    f = feats.numpy().astype(np.float32)
    f = (f - f.mean(0)) / (f.std(0) + 1e-6)
    res = kmeans_baseline(f, K, seed=seed, n_iter=50)
    return {**scores(y, res.labels), "backend": res.backend}


def features_of(trainer, top, bottom) -> torch.Tensor:
    views = trainer.modalities
    feats = trainer.extract(Clean(top, bottom, views=tuple(views)))
    return torch.cat([feats[v] for v in views], 1)


def summarize(runs: list[dict]) -> dict:
    out = {}
    for key in ("nmi", "ari", "acc"):
        vals = np.array([r[key] for r in runs], dtype=float)
        out[key] = float(vals.mean())
        out[key + "_std"] = float(vals.std())
    out["runs"] = runs
    return out


def experiment_views(top, bottom, y, seeds, epochs) -> dict:
    res: dict = {}
    both, top_only, bottom_only, km_init, km_trained = [], [], [], [], []
    for s in seeds:
        r, trainer = run_training(top, bottom, y, views=("top", "bottom"), seed=s, epochs=epochs)
        both.append(r)
        km_trained.append(kmeans_scores(features_of(trainer, top, bottom), y, s))
        fresh, _ = make_trainer(top, bottom, y, views=("top", "bottom"), seed=s, epochs=epochs)
        km_init.append(kmeans_scores(features_of(fresh, top, bottom), y, s))
        top_only.append(run_training(top, bottom, y, views=("top",), seed=s, epochs=epochs)[0])
        bottom_only.append(run_training(top, bottom, y, views=("bottom",), seed=s, epochs=epochs)[0])
        print(f"  seed {s}: both {both[-1]['nmi']:.3f}, top {top_only[-1]['nmi']:.3f}, bottom "
              f"{bottom_only[-1]['nmi']:.3f}, k-means init {km_init[-1]['nmi']:.3f}, trained "
              f"{km_trained[-1]['nmi']:.3f}", flush=True)
    pixels = torch.cat([top, bottom], 1)
    res["both views (SelfLabelTrainer)"] = summarize(both)
    res["top view only"] = summarize(top_only)
    res["bottom view only"] = summarize(bottom_only)
    res["k-means on random-init features"] = summarize(km_init)
    res["k-means on trained features"] = summarize(km_trained)
    res["k-means on raw pixels"] = summarize([kmeans_scores(pixels, y, s) for s in seeds])
    return res


def experiment(name, variants: dict, top, bottom, y, seeds, epochs) -> dict:
    res = {}
    for label, kw in variants.items():
        runs = []
        for s in seeds:
            runs.append(run_training(top, bottom, y, views=("top", "bottom"), seed=s,
                                     epochs=epochs, **kw)[0])
        res[label] = summarize(runs)
        print(f"  {name}: {label}: NMI {res[label]['nmi']:.3f} ± {res[label]['nmi_std']:.3f}",
              flush=True)
    return res


# ----------------------------------------------------------------------------- report
def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(results, indent=1))
    m = results["machine"]
    L = ["# Label quality: scikit-learn digits as two views", "",
         f"Measured by `{results['command']}` on {m} (load average {results['load_avg_start']:.1f} "
         f"at the start). {results['n_seeds']} seeds per row ({', '.join(map(str, results['seeds']))}), "
         f"{results['epochs']} epochs per training run; wall time {results['wall_s'] / 60:.1f} min.", "",
         "Each digit is split into a top view (rows 0-3) and a bottom view (rows 4-7), augmented "
         "independently on every read; MLP encoders and linear heads are trained from scratch by "
         "`SelfLabelTrainer` (λ = 20, K = 10). Scores of head 0 against the digit classes "
         "(mean ± standard deviation over seeds); the ground truth is used for scoring only. See "
         "the docstring of `benchmarks/bench_quality.py` for the protocol.", ""]
    titles = {"views": "Multi-view vs single views vs k-means (all 1797 digits)",
              "align": "Ablation: alignment of the heads at initialisation (paper Table 3)",
              "prior": f"Ablation: cluster prior, on Zipf-skewed digits (N = {results.get('n_zipf', '?')}, "
                       "class r keeps 1/r of its samples)",
              "heads": "Ablation: number of heads (10 heads: decorrelated, 2 augmentation groups)"}
    for key, title in titles.items():
        if key not in results:
            continue
        L += [f"## {title}", "", "| setting | NMI | ARI | accuracy |", "|---|---|---|---|"]
        for label, r in results[key].items():
            L.append(f"| {label} | {r['nmi']:.3f} ± {r['nmi_std']:.3f} | {r['ari']:.3f} ± "
                     f"{r['ari_std']:.3f} | {r['acc']:.3f} ± {r['acc_std']:.3f} |")
        L.append("")
    L += ["![NMI per setting](quality.png)", ""]
    (out / "quality.md").write_text("\n".join(L))
    try:
        plot(results, out)
    except Exception as e:  # pragma: no cover
        print(f"plotting failed: {e}")


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("views", "align", "prior", "heads") if k in results]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        labels = list(results[key])
        means = [results[key][lab]["nmi"] for lab in labels]
        stds = [results[key][lab]["nmi_std"] for lab in labels]
        ax.bar(range(len(labels)), means, yerr=stds, color=[f"C{i}" for i in range(len(labels))])
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([lab.replace(" (SelfLabelTrainer)", "") for lab in labels], rotation=35,
                           ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(key)
        ax.set_ylabel("NMI (head 0)")
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed, 2 epochs, views + one ablation")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default docs/benchmarks; a temp dir with --quick)")
    add_overwrite_arg(p)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=24)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if a.out is None:
        import tempfile

        a.out = Path(tempfile.mkdtemp(prefix="bench_quality_")) if a.quick else ROOT / "docs" / "benchmarks"
    refuse_taken(p, a.out, ["quality.json", "quality.md", "quality.png"], a.overwrite)
    seeds = [0] if a.quick else list(range(a.seeds))
    epochs = 2 if a.quick else a.epochs
    top, bottom, y = load_digits_views()
    args = " ".join(argv if argv is not None else sys.argv[1:])
    results: dict = {"command": f"python benchmarks/bench_quality.py {args}".strip(),
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
                     "load_avg_start": os.getloadavg()[0], "seeds": seeds, "n_seeds": len(seeds),
                     "epochs": epochs, "quick": a.quick}
    print("views", flush=True)
    results["views"] = experiment_views(top, bottom, y, seeds, epochs)
    print("align", flush=True)
    results["align"] = experiment("align", {"none": {"align": None}, "greedy": {"align": "greedy"},
                                            "exact": {"align": "exact"}}, top, bottom, y, seeds, epochs)
    if not a.quick:
        idx = zipf_subset(y)
        results["n_zipf"] = int(idx.numel())
        print(f"prior (Zipf-skewed digits, N={idx.numel()})", flush=True)
        results["prior"] = experiment("prior", {"uniform": {"prior": "uniform"},
                                                "gaussian": {"prior": "gaussian"},
                                                "zipf": {"prior": "zipf"}},
                                      top[idx], bottom[idx], y[idx], seeds, epochs)
        print("heads", flush=True)
        results["heads"] = experiment("heads", {"1 head": {"n_heads": 1},
                                                "10 decorrelated heads": {"n_heads": 10}},
                                      top, bottom, y, seeds, epochs)
    results["wall_s"] = time.perf_counter() - t0
    write_report(results, a.out)
    print(f"wrote {a.out / 'quality.json'}, quality.md, quality.png "
          f"({results['wall_s'] / 60:.1f} min)")
    return results


if __name__ == "__main__":
    main()
