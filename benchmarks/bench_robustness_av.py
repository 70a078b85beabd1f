"""Robustness of the SeLaVi labels over synthetic audio-visual worlds, with a supervised bound.

    python benchmarks/bench_robustness_av.py                       # every world, held-out seeds 1-3
    python benchmarks/bench_robustness_av.py --worlds shape,twelve --seeds 1,2,3 --epochs 10
    python benchmarks/bench_robustness_av.py --quick --out /tmp/rob  # tiny: checks that it runs

Worlds: :data:`otcluster_video.worlds.WORLDS` (texture, small shape, motion, timbre, pitch band,
one stream degraded, Zipf sizes, another source format, 12 classes). For every world and seed
the world is generated again (the seed sets the videos and ``training.seed``), then run **as a
user runs it**, through the command line: ``prepare`` -> ``train --preset cpu --set
heads.n_clusters=K`` (plus ``--epochs`` when given, ``training.seed`` and a per-run decoded-clip
cache) -> ``label`` -> ``evaluate --truth``. Methods (NMI / ARI / accuracy against the classes;
ground truth used for scoring and for the supervised bound only):

* ``both streams (labels.csv)``: the ``label`` command's cluster column (what a user gets);
  ``both streams (head 0)``, ``video heads``, ``audio heads``, ``OT self-labels`` and k-means
  (faiss, k = classes) on the random-init and on the trained features: from ``evaluate``.
* ``SeLa on video only`` / ``SeLa on audio only``: the recipe has no one-modality switch, so
  these train the same encoder, heads and schedule through ``otcluster.SelfLabelTrainer`` and
  the recipe's own helpers (``recipe.trainer_config``, ``recipe.build_encoders``); when those
  are not importable the cell records why.
* ``supervised, video|audio|both``: the upper bound. The same encoders (``build_encoder`` of
  the preset, same seed), trained on the ground truth with the same epochs, batch size and
  augmented clips (``AVDataset(train=True)``), one linear classifier per stream plus one on the
  concatenated features, summed cross-entropies, Adam (lr 1e-3). Scored by the NMI of the
  argmax on the same videos (centre clips, no augmentation), like the self-labels. A low bound
  says the encoder cannot represent the classes at this budget; a high bound with low
  self-labels says the self-labelling does not find them.

Seeds: ``--tuning-seeds`` are reserved for choosing settings (nothing is chosen here; they are
run only with ``--run-tuning``); ``--seeds`` are the held-out seeds, the only ones reported.
Finished (world, seed, method) cells are cached in ``WORKDIR/<scale>/<world>/cells.json`` and
reused, so an interrupted run resumes (and worlds can run in parallel processes). Writes
``<name>.{json,md,png}`` (default ``robustness_av``) into ``--out``; an existing page is
replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_grid.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from otcluster import cluster_report  # noqa: E402
from otcluster_video import AVDataset, build_encoder, load_manifest, load_preset  # noqa: E402
from otcluster_video.cli import _parse_set  # noqa: E402
from otcluster_video.recipe import kernel_scope  # noqa: E402
from otcluster_video.worlds import WORLDS, make_world  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pages import add_overwrite_arg, refuse_taken  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "otcluster_video.cli"]

#: evaluate rows used: method label -> (evaluate's method, streams, head)
EVAL_ROWS = {
    "both streams (head 0)": ("SeLaVi heads", "video+audio", 0),
    "video heads": ("SeLaVi heads", "video", 0),
    "audio heads": ("SeLaVi heads", "audio", 0),
    "OT self-labels": ("SeLaVi self-labels (OT)", "video+audio", 0),
    "k-means, random init (video)": ("k-means, random init", "video", None),
    "k-means, random init (audio)": ("k-means, random init", "audio", None),
    "k-means, random init (both)": ("k-means, random init", "video+audio", None),
    "k-means, trained (video)": ("k-means, SeLaVi features", "video", None),
    "k-means, trained (audio)": ("k-means, SeLaVi features", "audio", None),
    "k-means, trained (both)": ("k-means, SeLaVi features", "video+audio", None),
}
SUPERVISED = ("supervised, video", "supervised, audio", "supervised, both")
SINGLE = ("SeLa on video only", "SeLa on audio only")
METHODS = ("both streams (labels.csv)", *EVAL_ROWS, *SINGLE, *SUPERVISED)


def _scores(y: np.ndarray, labels: np.ndarray) -> dict:
    r = cluster_report(y, labels)
    return {"nmi": float(r.nmi), "ari": float(r.ari), "acc": float(r.acc)}


def _cli(*args: str) -> None:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"otcluster-video {' '.join(args)} failed:\n{done.stderr[-3000:]}")


class Cells:
    """Finished (world, seed, method) results, one JSON file per world (``WORK/<world>/cells.json``,
    rewritten atomically after every cell), so that processes running other worlds do not clash."""

    def __init__(self, work: Path, filename: str = "cells.json") -> None:
        self.work, self.filename = work, filename
        self.data: dict[str, dict] = {}

    def _world(self, world: str) -> dict:
        if world not in self.data:
            path = self.work / world / self.filename
            self.data[world] = json.loads(path.read_text()) if path.is_file() else {}
        return self.data[world]

    def get(self, world: str, seed: int, method: str) -> dict | None:
        return self._world(world).get(f"{seed}|{method}")

    def put(self, world: str, seed: int, method: str, value: dict) -> None:
        data = self._world(world)
        data[f"{seed}|{method}"] = value
        path = self.work / world / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)


def _truth(manifest: Path, truth_csv: Path) -> np.ndarray:
    """Class index of each manifest row (ground truth CSV paths are relative to its folder)."""
    with truth_csv.open() as f:
        names = {str((truth_csv.parent / r["path"]).resolve()): r["label"] for r in csv.DictReader(f)}
    labels = [names[str(Path(v.path).resolve())] for v in load_manifest(manifest)]
    classes = sorted(set(labels))
    return np.array([classes.index(c) for c in labels])


def _recipe_cells(run: Path, truth_csv: Path, y: np.ndarray) -> dict:
    """The ``label`` command's labels and the ``evaluate`` rows, by method."""
    out = {}
    with (run / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    keep = np.array([r.get("status", "ok") == "ok" for r in rows])
    labs = np.array([int(r["label"]) if ok else -1 for r, ok in zip(rows, keep)])
    out["both streams (labels.csv)"] = _scores(y[keep], labs[keep])
    ev = json.loads((run / "evaluation.json").read_text())
    for name, (method, streams, head) in EVAL_ROWS.items():
        for r in ev["rows"]:
            if r["method"] == method and r["streams"] == streams and r["head"] == head:
                out[name] = {k: float(r[k]) for k in ("nmi", "ari", "acc")}
                break
        else:
            out[name] = {"skipped": f"evaluate wrote no row {method!r} / {streams!r}"}
    return out


def _overrides(k: int, seed: int, cache: Path, extra: list[str]) -> list[str]:
    return [f"heads.n_clusters={k}", f"training.seed={seed}", f"data.cache_dir=\"{cache}\"", *extra]


def _set_values(extra: list[str]) -> dict:
    """``--set KEY=VALUE`` items as overrides, read as ``otcluster-video train --set`` reads them
    (VALUE in TOML; a bare word is a string)."""
    return _parse_set(extra)


def _preset(k: int, seed: int, cache: Path, epochs: int | None, extra: list[str] = ()):
    over = {"heads.n_clusters": k, "training.seed": seed, "data.cache_dir": str(cache),
            **_set_values(list(extra))}
    if epochs is not None:
        over["training.epochs"] = epochs
    return load_preset("cpu", over)


def supervised(manifest: Path, y: np.ndarray, config, seed: int, optimizer: str = "adam") -> dict:
    """The supervised bound: the preset's encoders trained on the ground truth (see module doc).

    ``optimizer="sgd"`` uses the recipe's SGD settings (``training.lr``, momentum, weight decay;
    no warm-up) instead of Adam (lr 1e-3): an ablation of the bound, not the bound.
    """
    videos, k = load_manifest(manifest), int(y.max()) + 1
    torch.manual_seed(seed)
    enc = torch.nn.ModuleDict({m: build_encoder(getattr(config.encoder, m)) for m in ("video", "audio")})
    dims = {m: getattr(config.encoder, m).feature_dim for m in ("video", "audio")}
    heads = torch.nn.ModuleDict({"video": torch.nn.Linear(dims["video"], k),
                                 "audio": torch.nn.Linear(dims["audio"], k),
                                 "both": torch.nn.Linear(dims["video"] + dims["audio"], k)})
    params = [*enc.parameters(), *heads.parameters()]
    tc = config.training
    if optimizer == "sgd" and not isinstance(tc.lr, (int, float)):
        raise ValueError(f"the SGD ablation of the bound needs one training.lr, got {tc.lr}")
    opt = (torch.optim.Adam(params, lr=1e-3, weight_decay=tc.weight_decay) if optimizer == "adam"
           else torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay))
    target = torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(AVDataset(videos, config, train=True),
                                         batch_size=config.training.batch_size, shuffle=True,
                                         generator=gen, drop_last=len(videos) > config.training.batch_size)

    def logits(batch: dict) -> dict:
        z = {m: enc[m](batch[m]) for m in ("video", "audio")}
        return {"video": heads["video"](z["video"]), "audio": heads["audio"](z["audio"]),
                "both": heads["both"](torch.cat([z["video"], z["audio"]], dim=1))}

    enc.train()
    for _ in range(config.training.epochs):
        for batch in loader:
            t = target[batch["index"]]
            loss = sum(torch.nn.functional.cross_entropy(v, t) for v in logits(batch).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    enc.eval()
    preds: dict[str, list] = {m: [] for m in heads}
    eval_loader = torch.utils.data.DataLoader(AVDataset(videos, config, train=False), batch_size=64)
    with torch.no_grad():
        for batch in eval_loader:
            for m, v in logits(batch).items():
                preds[m].append(v.argmax(1))
    return {f"supervised, {m}": _scores(y, torch.cat(p).numpy()) for m, p in preds.items()}


def for_stream(tcfg, modality: str):
    """The trainer configuration of one stream: a per-stream ``optimizer`` / ``lr`` (a
    ``[video, audio]`` pair in the recipe) becomes this stream's; ``modality_veto`` (one stream
    vetoing the other's clusters) is off."""
    return dataclasses.replace(tcfg, modality_veto=None,
                               **{k: v[modality] for k in ("optimizer", "lr")
                                  if isinstance(v := getattr(tcfg, k), dict)})


def single_stream(manifest: Path, y: np.ndarray, config, modality: str, ckpt: Path) -> dict:
    """SeLa on one stream with the recipe's encoder, heads and schedule (see module doc)."""
    try:
        from otcluster import SelfLabelTrainer
        from otcluster_video import recipe

        trainer_config, build_encoders = recipe.trainer_config, recipe.build_encoders
    except (ImportError, AttributeError) as err:
        return {"skipped": f"the recipe trains both streams only; helpers not importable: {err}"}
    videos = load_manifest(manifest)
    tcfg = for_stream(trainer_config(config, checkpoint_dir=ckpt, progress=False), modality)
    encoder = build_encoders(config)[modality]
    trainer = SelfLabelTrainer({modality: encoder}, AVDataset(videos, config, train=True), tcfg,
                               device="cpu")
    trainer.fit(resume=True)
    labels, _ = trainer.predict(AVDataset(videos, config, train=False), modalities=[modality])
    return _scores(y, labels[0].numpy())


def run_cell(world: str, seed: int, work: Path, cells: Cells, *, vpc: int, epochs: int | None,
             methods: set[str], extra: list[str] = ()) -> dict:
    """All methods of one (world, seed); cached cells are reused."""
    spec = WORLDS[world]
    base = work / world / f"seed{seed}"
    data, run, cache = base / "data", base / "run", base / "cache"
    wanted = [m for m in METHODS if m in methods or any(m.startswith(p) for p in methods)]
    todo = [m for m in wanted if cells.get(world, seed, m) is None]
    if todo:
        truth = data / "ground_truth.csv"
        stamp = data / "world.json"
        made = json.loads(stamp.read_text()) if truth.is_file() and stamp.is_file() else {}
        if (made.get("name"), made.get("seed"), made.get("videos_per_class")) != (world, seed, vpc):
            make_world(world, data, videos_per_class=vpc, seed=seed)
        manifest = run / "manifest.csv"
        if not manifest.is_file():
            _cli("prepare", str(data), "--out", str(run), "--quiet")
        y = _truth(manifest, truth)
        k = spec.n_classes
        t0 = time.perf_counter()
        if any(m in EVAL_ROWS or m == METHODS[0] for m in todo):
            sets = [a for o in _overrides(k, seed, cache, list(extra)) for a in ("--set", o)]
            ep = [] if epochs is None else ["--epochs", str(epochs)]
            _cli("train", "--data", str(manifest), "--out", str(run), "--preset", "cpu", *sets, *ep,
                 "--device", "cpu", "--quiet")
            _cli("label", "--run", str(run), "--device", "cpu", "--quiet")
            _cli("evaluate", "--run", str(run), "--truth", str(truth), "--device", "cpu", "--quiet")
            for m, v in _recipe_cells(run, truth, y).items():
                cells.put(world, seed, m, {**v, "seconds": time.perf_counter() - t0})
        config = _preset(k, seed, cache, epochs, extra)
        with kernel_scope(config):  # the kernels of the recipe's own runs
            if any(m in SUPERVISED for m in todo):
                t0 = time.perf_counter()
                for m, v in supervised(manifest, y, config, seed).items():
                    cells.put(world, seed, m, {**v, "seconds": time.perf_counter() - t0})
            for m in SINGLE:
                if m in todo:
                    t0 = time.perf_counter()
                    mod = m.split()[2]
                    v = single_stream(manifest, y, config, mod, base / f"sela-{mod}")
                    cells.put(world, seed, m, {**v, "seconds": time.perf_counter() - t0})
    return {m: cells.get(world, seed, m) for m in wanted}


def summarize(per_seed: list[dict]) -> dict:
    out: dict = {}
    for m in per_seed[0]:
        vals = [r[m] for r in per_seed if r[m] is not None and "nmi" in r[m]]
        if not vals:
            out[m] = {"skipped": next((r[m]["skipped"] for r in per_seed if r[m]), "not run")}
            continue
        out[m] = {"seconds": float(np.mean([v.get("seconds", 0.0) for v in vals]))}
        for key in ("nmi", "ari", "acc"):
            a = np.array([v[key] for v in vals])
            out[m].update({key: float(a.mean()), f"{key}_std": float(a.std()),
                           f"{key}_all": [float(x) for x in a]})
    return out


def targets(s: dict) -> dict:
    """The issue's targets on one world's held-out means (None where a number is missing)."""
    def nmi(m: str) -> float | None:
        return s.get(m, {}).get("nmi")

    both, vid, aud = nmi("both streams (labels.csv)"), nmi("video heads"), nmi("audio heads")
    sup_b, sup_v, sup_a = nmi("supervised, both"), nmi("supervised, video"), nmi("supervised, audio")
    # the best stream of k-means on the trained features, as the demo's verdict compares
    kms = [x for x in (nmi(f"k-means, trained ({m})") for m in ("video", "audio", "both"))
           if x is not None]
    km = max(kms) if kms else None
    ok = lambda *xs: None not in xs  # noqa: E731
    return {
        "both >= 0.70 where supervised >= 0.90":
            (None if not ok(both, sup_b) else (both >= 0.70 if sup_b >= 0.90 else "n/a (bound < 0.90)")),
        "both > each stream's heads": None if not ok(both, vid, aud) else bool(both > vid and both > aud),
        "self-labels >= k-means on trained features (best stream)":
            None if not ok(both, km) else bool(both >= km),
        "video heads >= 50 % of supervised video": None if not ok(vid, sup_v) else bool(vid >= 0.5 * sup_v),
        "audio heads >= 50 % of supervised audio": None if not ok(aud, sup_a) else bool(aud >= 0.5 * sup_a),
    }


def diagnose(s: dict) -> str:
    """Encoder or self-labelling? From the supervised bound and the both-stream labels."""
    g = lambda m: s.get(m, {}).get("nmi")  # noqa: E731
    both, sup_b = g("both streams (labels.csv)"), g("supervised, both")
    if None in (both, sup_b):
        return "incomplete"
    parts = []
    for m in ("video", "audio"):
        sup, heads = g(f"supervised, {m}"), g(f"{m} heads")
        if sup is not None and sup < 0.5:
            parts.append(f"{m} encoder does not represent the classes at this budget "
                         f"(supervised {100 * sup:.0f})")
        elif sup is not None and heads is not None and heads < 0.5 * sup:
            parts.append(f"{m} self-labels miss what its encoder can represent "
                         f"({100 * heads:.0f} vs supervised {100 * sup:.0f})")
    if both >= 0.70:
        head = "ok"
    elif sup_b < 0.90:
        head = f"encoder-limited (supervised both {100 * sup_b:.0f} < 90)"
    else:
        head = f"self-labelling fails (supervised both {100 * sup_b:.0f}, labels {100 * both:.0f})"
    return "; ".join([head, *parts])


def write_report(res: dict, out: Path, name: str = "robustness_av") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    sp = res["split"]
    L = ["# Robustness of the labels over synthetic audio-visual worlds", "",
         f"Measured by `{res['command']}` on {res['machine']} (load average "
         f"{res['load_avg_start']:.1f} at the start; wall time {res['wall_s'] / 60:.1f} min in this "
         f"invocation, cached cells reused). Held-out seeds {sp['held_out']} (reported, never used "
         f"to choose anything); tuning seeds {sp['tuning']} (reserved). {res['scale']}", "",
         "Protocol: docstring of `benchmarks/bench_robustness_av.py`. NMI in % of the labels against "
         "the classes, mean ± sd over the held-out seeds (every seed's value in the JSON).", "",
         "## Summary (NMI %)", "",
         "| world | both streams | video heads | audio heads | SeLa on audio only | k-means trained "
         "(best stream) | supervised v / a / both | diagnosis |", "|---|---|---|---|---|---|---|---|"]

    def f(s: dict, m: str) -> str:
        r = s.get(m, {})
        return f"{100 * r['nmi']:.1f} ± {100 * r['nmi_std']:.1f}" if "nmi" in r else "–"

    def g(s: dict, m: str) -> str:
        r = s.get(m, {})
        return f"{100 * r['nmi']:.0f}" if "nmi" in r else "–"

    for w, r in res["worlds"].items():
        s = r["methods"]
        kms = [m for m in (f"k-means, trained ({x})" for x in ("video", "audio", "both"))
               if "nmi" in s.get(m, {})]
        km = max(kms, key=lambda m: s[m]["nmi"]) if kms else "k-means, trained (both)"
        L.append(f"| {w} | {f(s, 'both streams (labels.csv)')} | {f(s, 'video heads')} | "
                 f"{f(s, 'audio heads')} | {f(s, 'SeLa on audio only')} | {f(s, km)} "
                 f"{km[len('k-means, trained '):] if km in kms else ''} | "
                 f"{g(s, 'supervised, video')} / {g(s, 'supervised, audio')} / "
                 f"{g(s, 'supervised, both')} | {r['diagnosis']} |")
    L += ["", "## Targets of issue 10 (held-out means)", "",
          "| world | " + " | ".join(next(iter(res["worlds"].values()))["targets"]) + " |",
          "|---" * (1 + len(next(iter(res["worlds"].values()))["targets"])) + "|"]
    mark = {True: "yes", False: "**no**", None: "–"}
    for w, r in res["worlds"].items():
        L.append(f"| {w} | " + " | ".join(mark.get(v, str(v)) if not isinstance(v, str) else v
                                          for v in r["targets"].values()) + " |")
    L.append("")
    for w, r in res["worlds"].items():
        L += [f"## {w}: {r['spec']['note']}", "", f"Class sizes (seed {sp['held_out'][0]}): "
              f"{r.get('class_sizes', '?')}.", "", "| labels | NMI | ARI | accuracy | s / run |",
              "|---|---|---|---|---|"]
        for m, v in r["methods"].items():
            if "nmi" not in v:
                L.append(f"| {m} | {v.get('skipped', 'not run')} | | | |")
                continue
            L.append(f"| {m} | {f(r['methods'], m)} | {100 * v['ari']:.1f} ± {100 * v['ari_std']:.1f} | "
                     f"{100 * v['acc']:.1f} ± {100 * v['acc_std']:.1f} | {v['seconds']:.0f} |")
        L.append("")
    L += [f"![NMI per world]({name}.png)", ""]
    if res.get("findings"):
        L[6:6] = ["## Findings", "", res["findings"], ""]
    (out / f"{name}.md").write_text("\n".join(L))
    plot(res, out / f"{name}.png")


def plot(res: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["both streams (labels.csv)", "video heads", "audio heads", "SeLa on audio only",
             "k-means, random init (both)", "k-means, trained (both)", "supervised, video",
             "supervised, audio", "supervised, both"]
    worlds = list(res["worlds"])
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(worlds)), 5))
    width = 0.8 / len(shown)
    for j, m in enumerate(shown):
        xs, means, sds = [], [], []
        for i, w in enumerate(worlds):
            v = res["worlds"][w]["methods"].get(m, {})
            if "nmi" in v:
                xs.append(i + (j - len(shown) / 2 + 0.5) * width)
                means.append(100 * v["nmi"])
                sds.append(100 * v["nmi_std"])
        ax.bar(xs, means, width, yerr=sds, label=m, color=f"C{j}",
               hatch="//" if m.startswith("supervised") else None)
    ax.set_xticks(range(len(worlds)))
    ax.set_xticklabels(worlds)
    ax.set_ylim(0, 100)
    ax.set_ylabel("NMI, % (mean ± sd over held-out seeds)")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def work_tag(videos_per_class: int, epochs: int | None, sets: list[str]) -> str:
    """The workdir's subfolder of one scale and set of overrides (``vpc16-epreset``)."""
    return f"vpc{videos_per_class}-e{epochs or 'preset'}" + "".join(
        "-" + "".join(c if c.isalnum() or c in "._" else "_" for c in o) for o in sets)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", default=",".join(WORLDS), help="comma-separated world names")
    p.add_argument("--seeds", type=_ints, default=[1, 2, 3], help="held-out seeds, e.g. 1,2,3")
    p.add_argument("--tuning-seeds", type=_ints, default=[0, 4], help="seeds reserved for tuning")
    p.add_argument("--run-tuning", action="store_true", help="also run the tuning seeds (not reported)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the cpu preset's)")
    p.add_argument("--videos-per-class", type=int, default=16)
    p.add_argument("--methods", default="all",
                   help="comma-separated method prefixes (default all), e.g. 'both,video heads,supervised'")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra preset override for every run (repeatable; a lever to compare)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    p.add_argument("--name", default="robustness_av", help="stem of the output files")
    add_overwrite_arg(p)
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench-robustness-av")
    p.add_argument("--findings", type=Path, help="Markdown file of findings to put in the report")
    p.add_argument("--quick", action="store_true",
                   help="1 tiny world (2 videos per class), 1 seed, 1 epoch: checks that it runs")
    a = p.parse_args(argv)
    # checked before hours of runs; a page is a record
    refuse_taken(p, a.out, [f"{a.name}.{ext}" for ext in ("json", "md", "png")], a.overwrite)
    worlds = [w.strip() for w in a.worlds.split(",") if w.strip()]
    unknown = sorted(set(worlds) - set(WORLDS))
    if unknown:
        p.error(f"unknown worlds {unknown}; choose from {sorted(WORLDS)}")
    if set(a.seeds) & set(a.tuning_seeds):
        p.error(f"held-out seeds {a.seeds} overlap the tuning seeds {a.tuning_seeds}")
    if a.quick:
        worlds = worlds if a.worlds != p.get_default("worlds") else ["shape"]
        a.seeds, a.epochs, a.videos_per_class = a.seeds[:1], 1, 2
    methods = set(METHODS) if a.methods == "all" else {m.strip() for m in a.methods.split(",")}
    if load_preset("cpu", _set_values(a.sets)).training.kernels == "portable":
        # this process's cells (the bound, SeLa on one stream) on the kernels of the recipe's
        # runs: MKL must read its branch before its first call
        os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    work = a.workdir / work_tag(a.videos_per_class, a.epochs, a.sets)
    work.mkdir(parents=True, exist_ok=True)
    cells = Cells(work)
    seeds = a.seeds + (a.tuning_seeds if a.run_tuning else [])
    per: dict[str, list[dict]] = {w: [] for w in worlds}
    bar = tqdm([(w, s) for w in worlds for s in seeds], desc="cells", unit="cell")
    for w, s in bar:
        bar.set_postfix_str(f"{w} seed {s}")
        r = run_cell(w, s, work, cells, vpc=a.videos_per_class, epochs=a.epochs, methods=methods,
                     extra=a.sets)
        if s in a.seeds:
            per[w].append(r)
        both = (r.get("both streams (labels.csv)") or {}).get("nmi")
        sup = (r.get("supervised, both") or {}).get("nmi")
        tqdm.write(f"{w:>9} seed {s}: both {both if both is None else round(100 * both, 1)}, "
                   f"supervised both {sup if sup is None else round(100 * sup, 1)}")
    preset = load_preset("cpu")
    res: dict = {
        "command": " ".join(["python benchmarks/bench_robustness_av.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_avg_start": load0,
        "split": {"tuning": a.tuning_seeds, "held_out": a.seeds},
        "videos_per_class": a.videos_per_class,
        "epochs": a.epochs or preset.training.epochs,
        "scale": (f"{a.videos_per_class} videos per class (mean), "
                  f"{a.epochs or preset.training.epochs} epochs"
                  + (" (`--epochs`; the preset has " f"{preset.training.epochs})" if a.epochs else "")
                  + "; `train --preset cpu --set heads.n_clusters=K` plus `training.seed` = the seed "
                    "and a per-run `data.cache_dir`"
                  + "".join(f", `--set {o}`" for o in a.sets) + "."),
        "overrides": a.sets,
        "wall_s": time.perf_counter() - t0,
        "worlds": {},
    }
    for w in worlds:
        s = summarize(per[w])
        info = json.loads((work / w / f"seed{a.seeds[0]}" / "data" / "world.json").read_text())
        res["worlds"][w] = {"spec": {k: v for k, v in info.items() if k not in ("seed", "class_sizes")},
                            "class_sizes": list(info["class_sizes"].values()),
                            "methods": s, "targets": targets(s), "diagnosis": diagnose(s)}
    if a.findings is not None:
        res["findings"] = a.findings.read_text().strip()
    write_report(res, a.out, a.name)
    for w, r in res["worlds"].items():
        print(f"{w:>9}: {r['diagnosis']}; targets " + ", ".join(
            f"{k}: {v}" for k, v in r["targets"].items()))
    print(f"wrote {a.out / (a.name + '.md')}")
    return res


if __name__ == "__main__":
    main()
