"""Label quality on synthetic audio-visual data: the SeLaVi recipe vs single streams vs k-means.

    python benchmarks/bench_quality_av.py                    # 2 seeds, about 50 min on 2 cores
    python benchmarks/bench_quality_av.py --seeds 1 --quick --out /tmp/qav

Data: the demo's synthetic videos (:data:`otcluster_video.demo.DEMO_DATA`: 480 H.264 + AAC
videos, 6 classes, each with a visual and an acoustic signature plus nuisances; 10 % of the
videos with a degraded picture and another 10 % with a degraded sound), generated again for
every seed (``seed`` of the data = seed of the training). Model: the ``cpu`` preset with the
demo's overrides (20 epochs, 25 clusterings, 2 heads, K = 6), trained from scratch.

Rows (NMI / ARI / Hungarian accuracy of head 0 against the classes, as the paper reports;
mean and spread over seeds; ground truth is used for scoring only):

* ``modalities`` (paper Tables 2 and 3a), once with the paper's Gaussian prior and once with the
  uniform prior (the demo's; the synthetic classes are balanced): SeLaVi labels from both
  streams; the same model's video heads and audio heads alone; SeLa trained on one stream only
  (the same encoder, heads, prior and schedule, without the other modality); k-means (faiss) on
  the random-init encoders' pooled features (video, audio, both) and on the trained SeLaVi
  features (both).
* ``ablations`` (paper Table 3 c-g) of the paper's configuration (exact alignment, Gaussian
  prior, one augmentation group): no alignment of the heads at initialisation, a uniform prior,
  decorrelated heads (2 augmentation groups for the 2 heads).

Writes ``quality_av.json``, ``quality_av.md`` and ``quality_av.png`` into ``--out``
(default ``docs/benchmarks``). Training runs and decoded clips go to ``--workdir`` (kept, so
an interrupted benchmark resumes: finished runs are reused).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_grid.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

from otcluster import SelfLabelTrainer, cluster_report  # noqa: E402
from otcluster_video import (  # noqa: E402
    AVDataset,
    load_manifest,
    load_preset,
    make_synthetic_dataset,
    recipe,  # noqa: E402
)
from otcluster_video.demo import DEMO_DATA, DEMO_OVERRIDES  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pages import add_overwrite_arg, refuse_taken  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: The two priors compared in full (run name, overrides): the paper's Gaussian prior (the presets'
#: default) and the uniform prior (the demo's: the synthetic classes are balanced).
PRIORS: dict[str, tuple[str, dict]] = {
    "gaussian": ("SeLaVi", {"training.prior": "gauss"}),
    "uniform": ("uniform prior", {"training.prior": "uniform"}),
}

#: Ablations of the paper's configuration (Gaussian prior): name -> extra preset overrides.
VARIANTS: dict[str, dict] = {
    "no alignment": {"training.align_init": False},
    "decorrelated heads (2 groups)": {"heads.groups": 2},
}


def _scores(y: np.ndarray, labels: np.ndarray) -> dict:
    r = cluster_report(y, labels)
    return {"nmi": float(r.nmi), "ari": float(r.ari), "acc": float(r.acc)}


def _row(rows: list[dict], method: str, streams: str) -> dict:
    for r in rows:
        if r["method"] == method and r["streams"] == streams and r["head"] in (None, 0):
            return {"nmi": r["nmi"], "ari": r["ari"], "acc": r["acc"]}
    raise KeyError(f"no row {method!r} / {streams!r} in the evaluation")


def make_data(work: Path, seed: int, data: dict) -> Path:
    """Synthetic videos for ``seed`` and their manifest (reused when already there)."""
    data_dir, run_dir = work / f"data-{seed}", work / f"prepare-{seed}"
    cfg = {**data, "seed": seed}
    stamp = data_dir / "bench-data.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == cfg):
        make_synthetic_dataset(data_dir, **cfg)
        stamp.write_text(json.dumps(cfg))
    report = recipe.prepare(data_dir, run_dir, preset="cpu", progress=False)
    return report.manifest


def overrides_for(work: Path, seed: int, data: dict, extra: dict, epochs: int | None) -> dict:
    over = {"data.cache_dir": str(work / f"cache-{seed}"), **DEMO_OVERRIDES,
            "heads.n_clusters": data["n_classes"], "training.seed": seed, **extra}
    if epochs is not None:
        over["training.epochs"] = epochs
    return over


def selavi_run(work: Path, manifest: Path, seed: int, name: str, over: dict, progress: bool) -> dict:
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())
    run = work / f"run-{seed}-{slug}"  # an existing run folder is resumed (or reused when finished)
    recipe.train(manifest, run, preset="cpu", overrides=over, device="cpu", progress=progress)
    return recipe.evaluate(run, device="cpu", progress=progress)


def single_stream_run(work: Path, manifest: Path, seed: int, modality: str, over: dict,
                      progress: bool, tag: str = "") -> dict:
    """SeLa on one stream: the recipe's encoder, heads and schedule without the other stream."""
    config = load_preset("cpu", over)
    videos = load_manifest(manifest)
    y_names = [v.label for v in videos]
    classes = {c: i for i, c in enumerate(sorted(set(y_names)))}
    y = np.array([classes[c] for c in y_names])
    ckpt = work / f"sela-{seed}-{modality}{tag}"
    tcfg = recipe.trainer_config(config, checkpoint_dir=ckpt, progress=progress)
    encoder = recipe.build_encoders(config)[modality]
    train_ds = AVDataset(videos, config, train=True)  # items carry their own index
    trainer = SelfLabelTrainer({modality: encoder}, train_ds, tcfg, device="cpu")
    trainer.fit(resume=True)
    eval_ds = AVDataset(videos, config, train=False, return_source=True)
    labels, _ = trainer.predict(eval_ds, modalities=[modality])
    # videos that failed to decode (a neighbour's clip stood in) are left out of the score
    failed = [i for i in range(len(eval_ds)) if int(eval_ds[i]["source"]) != i]
    keep = ~np.isin(np.arange(len(y)), failed)
    return _scores(y[keep], labels[0].numpy()[keep])


def summarize(runs: list[dict]) -> dict:
    out = {}
    for key in ("nmi", "ari", "acc"):
        v = np.array([r[key] for r in runs])
        out[key], out[f"{key}_std"] = float(v.mean()), float(v.std())
        out[f"{key}_all"] = [float(x) for x in v]
    return out


def run(seeds: list[int], work: Path, *, data: dict, epochs: int | None, variants: dict,
        progress: bool) -> dict:
    per: dict[str, dict[str, list[dict]]] = {f"modalities_{p}": {} for p in PRIORS}
    per["ablations"] = {}

    def add(table: str, label: str, scores: dict) -> None:
        per[table].setdefault(label, []).append(scores)
        print(f"  {label:<48} NMI {100 * scores['nmi']:5.1f}  acc {100 * scores['acc']:5.1f}", flush=True)

    for seed in seeds:
        print(f"== seed {seed} ==", flush=True)
        manifest = make_data(work, seed, data)
        for prior, (name, extra) in PRIORS.items():
            table = f"modalities_{prior}"
            print(f" {prior} prior", flush=True)
            over = overrides_for(work, seed, data, extra, epochs)
            rows = selavi_run(work, manifest, seed, name, over, progress)["rows"]
            add(table, "SeLaVi, both streams", _row(rows, "SeLaVi heads", "video+audio"))
            add(table, "SeLaVi model, video heads alone", _row(rows, "SeLaVi heads", "video"))
            add(table, "SeLaVi model, audio heads alone", _row(rows, "SeLaVi heads", "audio"))
            for m in ("video", "audio"):
                tag = "" if prior == "gaussian" else f"-{prior}"
                add(table, f"SeLa trained on {m} only",
                    single_stream_run(work, manifest, seed, m, over, progress, tag))
            for streams in ("video", "audio", "video+audio"):
                add(table, f"k-means, random-init features ({streams})",
                    _row(rows, "k-means, random init", streams))
            add(table, "k-means, trained SeLaVi features (video+audio)",
                _row(rows, "k-means, SeLaVi features", "video+audio"))
            label = {"gaussian": "SeLaVi (exact alignment, Gaussian prior, 1 group)",
                     "uniform": "uniform prior"}.get(prior, f"{prior} prior")
            add("ablations", label, _row(rows, "SeLaVi heads", "video+audio"))
        paper = PRIORS["gaussian"][1]
        for name, extra in variants.items():
            ev = selavi_run(work, manifest, seed, name,
                            overrides_for(work, seed, data, {**paper, **extra}, epochs), progress)
            add("ablations", name, _row(ev["rows"], "SeLaVi heads", "video+audio"))
    return {table: {label: summarize(r) for label, r in d.items()} for table, d in per.items()}


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality_av.json").write_text(json.dumps(results, indent=1))
    d = results["data"]
    L = ["# Label quality: synthetic audio-visual videos", "",
         f"Measured by `{results['command']}` on {results['machine']} (load average "
         f"{results['load_avg_start']:.1f} at the start). {len(results['seeds'])} seeds "
         f"({', '.join(map(str, results['seeds']))}; the seed sets both the generated videos and "
         f"the training), {results['epochs']} epochs per training run; wall time "
         f"{results['wall_s'] / 60:.1f} min.", "",
         f"Data: {d['n_videos']} synthetic videos of {d['n_classes']} classes (the demo's), "
         f"{100 * d['degrade_fraction']:.0f} % with a degraded picture and another "
         f"{100 * d['degrade_fraction']:.0f} % with a degraded sound. Model: the `cpu` preset with the "
         "demo's overrides, trained from scratch. Scores of head 0 against the classes (mean ± "
         "standard deviation over seeds; every seed's value in the JSON); the ground truth is used "
         "for scoring only. Protocol: docstring of `benchmarks/bench_quality_av.py`.", ""]
    titles = {"modalities_uniform": "Both streams vs one stream vs k-means, uniform prior (the demo's)",
              "modalities_gaussian": "Both streams vs one stream vs k-means, Gaussian prior (the paper's)",
              "ablations": "Ablations of the paper's configuration (paper Table 3 c-g)"}
    for key, title in titles.items():
        L += [f"## {title}", "", "| labels | NMI | ARI | accuracy |", "|---|---|---|---|"]
        for label, r in results[key].items():
            L.append(f"| {label} | {100 * r['nmi']:.1f} ± {100 * r['nmi_std']:.1f} | "
                     f"{100 * r['ari']:.1f} ± {100 * r['ari_std']:.1f} | "
                     f"{100 * r['acc']:.1f} ± {100 * r['acc_std']:.1f} |")
        L.append("")
    L += ["![NMI per setting](quality_av.png)", ""]
    (out / "quality_av.md").write_text("\n".join(L))
    plot(results, out)


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["modalities_uniform", "modalities_gaussian", "ablations"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.5), gridspec_kw={"width_ratios": [2, 2, 1]})
    for ax, key in zip(axes, keys):
        labels = list(results[key])
        means = [100 * results[key][lab]["nmi"] for lab in labels]
        stds = [100 * results[key][lab]["nmi_std"] for lab in labels]
        ax.bar(range(len(labels)), means, yerr=stds, color=[f"C{i}" for i in range(len(labels))])
        for i, lab in enumerate(labels):  # every seed as a dot
            vals = [100 * v for v in results[key][lab]["nmi_all"]]
            ax.plot([i] * len(vals), vals, "k.", ms=4)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_ylabel("NMI (head 0), %")
        ax.set_title(key.replace("_", ", ").replace("modalities", "streams"))
    fig.tight_layout()
    fig.savefig(out / "quality_av.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2, help="number of seeds (0, 1, ...)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    add_overwrite_arg(p)
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench-quality-av")
    p.add_argument("--quick", action="store_true",
                   help="2 epochs, 60 videos, one ablation: checks that the script runs")
    p.add_argument("--progress", action="store_true", help="progress bars of the training runs")
    a = p.parse_args(argv)
    refuse_taken(p, a.out, ["quality_av.json", "quality_av.md", "quality_av.png"], a.overwrite)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    seeds = list(range(a.seeds))
    data = {k: v for k, v in DEMO_DATA.items() if k != "seed"}
    variants, epochs = VARIANTS, None
    if a.quick:
        data.update(n_videos=60, broken=0)
        variants, epochs = {"no alignment": VARIANTS["no alignment"]}, 2
    a.workdir.mkdir(parents=True, exist_ok=True)
    results = run(seeds, a.workdir, data=data, epochs=epochs, variants=variants, progress=a.progress)
    results.update({
        "command": " ".join(["python benchmarks/bench_quality_av.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_avg_start": load0,
        "seeds": seeds,
        "epochs": epochs or load_preset("cpu", DEMO_OVERRIDES).training.epochs,
        "data": data,
        "wall_s": time.perf_counter() - t0,
    })
    write_report(results, a.out)
    print(f"wrote {a.out / 'quality_av.md'}")
    return results


if __name__ == "__main__":
    main()
