"""``python -m otcluster_video.demo`` (what ``make demo`` runs): the whole recipe on 2 CPU cores.

Generates a synthetic audio-visual dataset (every class has a signature in the frames *and* in
the sound, with per-stream nuisances, and one stream degraded in some clips), prepares it (a
few broken files are skipped and counted), trains the ``cpu`` preset, writes the labels, prints
the evaluation table (both streams vs each alone vs k-means on random-init and on trained
features) and writes the HTML explorer. Everything goes to ``demo_out/``; a second run reuses
the data, the decoded-clip cache and the finished training. ``--seed N`` draws other data and
another training: one run is one draw, and ``docs/video.md`` reports seeds 0-4.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEMO_DATA", "DEMO_OVERRIDES", "headline", "main", "run_demo", "verdict"]

#: Synthetic data of the demo (arguments of :func:`otcluster_video.make_synthetic_dataset`).
#: 480 videos rather than 240 for 20 epochs rather than 40 (the same number of training steps):
#: in trials the self-labelling escaped a two-class mix-up that 240 videos kept on one seed in
#: three. 10 % of the videos have a degraded picture and another 10 % a degraded sound: with
#: 25 %, a group of degraded videos (larger than a class) became a cluster of its own.
DEMO_DATA: dict[str, Any] = {
    "n_videos": 480,
    "n_classes": 6,
    "seconds": 2.0,
    "size": 64,
    "degrade_fraction": 0.1,
    "broken": 4,
    "seed": 0,
}

#: Overrides of the ``cpu`` preset for the demo (the cache goes inside the output folder;
#: ``heads.n_clusters`` is set to the number of classes). The prior is uniform because the
#: synthetic classes are balanced; the paper's Gaussian prior (the presets' default) is meant
#: for real, unevenly sized classes. Measured over two seeds (docs/benchmarks/quality_av.md,
#: earlier code; docs/video.md has the spread over seeds 0-9):
#: both streams' NMI 99.4 and 88.1 with the uniform prior, 85.0 and 64.1 with the Gaussian one,
#: which on the second seed fell below the video heads alone. 30 epochs and 30 clusterings
#: rather than 20 and 25 since the preset's portable kernels: their rounding is another draw,
#: and at 20 epochs seed 4 stopped at 78.1 NMI (head 0 still rising, the other head at 98.5);
#: at 30, seeds 0-4 give 100.0 (docs/video.md). The ``cpu`` preset trains 30 epochs with 30
#: clusterings too since then; the demo keeps them here so that its run does not depend on it.
#: Equal weights of the two streams in training, not the preset's stability weights: on the
#: demo's data both give 100.0 NMI, and the stability weights' two extra inference passes per
#: clustering took the demo past 15 minutes on a slower 2-core machine (925 s against 655 s;
#: docs/video.md, "What the demo shows").
DEMO_OVERRIDES: dict[str, Any] = {
    "training.epochs": 30,
    "clustering.n_clusterings": 30,
    "training.prior": "uniform",
    "clustering.modality_weights": "equal",
}


def _step(name: str) -> float:
    print(f"\n== {name} ==", flush=True)
    return time.perf_counter()


def _train(manifest: Path, run_dir: Path, over: dict[str, Any], out: Path, progress: bool) -> None:
    """Train (or resume, or reuse) the demo's run; a run of another configuration names --fresh."""
    from . import recipe
    from ._run import ConfigChangedError

    try:
        recipe.train(manifest, run_dir, preset="cpu", overrides=over, device="cpu",
                     progress=progress)
    except ConfigChangedError as err:
        raise ValueError(f"{err}. For the demo (e.g. a folder of an earlier version's demo): "
                         f"run it with --fresh, which deletes {out}, or with another --out") from err


def run_demo(
    out: str | Path = "demo_out",
    *,
    data: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
    fresh: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo; returns the evaluation result and the timings.

    Parameters
    ----------
    out : str or Path
        Output folder (``data/``, ``run/``, ``cache/`` inside).
    data : dict, optional
        Replaces entries of :data:`DEMO_DATA`.
    overrides : dict, optional
        Extra preset overrides on top of :data:`DEMO_OVERRIDES`.
    seed : int, optional
        Seed of the synthetic data *and* of the training (``training.seed``); ``None`` keeps
        :data:`DEMO_DATA`'s seed (0) and the preset's.
    fresh : bool
        Delete ``out`` first.
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        ``evaluation`` (see :func:`otcluster_video.recipe.evaluate`), ``seconds`` per step,
        ``paths``.
    """
    from . import recipe
    from ._run import RunPaths, write_text
    from .synth import make_synthetic_dataset

    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    data_cfg = {**DEMO_DATA, **(data or {})}
    over = {"data.cache_dir": str((out / "cache").resolve()), **DEMO_OVERRIDES, **(overrides or {})}
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        data_cfg["seed"] = seed
        over["training.seed"] = seed
    over.setdefault("heads.n_clusters", data_cfg["n_classes"])
    data_dir, run_dir = out / "data", out / "run"
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    t = _step("1/6 synthetic dataset")
    stamp = data_dir / "demo-data.json"
    reuse_data = stamp.is_file() and json.loads(stamp.read_text()) == data_cfg
    if not reuse_data and RunPaths(run_dir).is_run():
        raise ValueError(
            f"{run_dir} holds a run trained on other demo data: use --fresh (or another --out)"
        )
    if reuse_data:
        print(f"reusing {data_dir}")
    else:
        if data_dir.exists():
            shutil.rmtree(data_dir)
        make_synthetic_dataset(data_dir, threads=2, **data_cfg)  # the same files on 1 or 2
        write_text(stamp, json.dumps(data_cfg))
        print(
            f"wrote {data_cfg['n_videos']} videos of {data_cfg['n_classes']} classes and "
            f"{data_cfg['broken']} broken files to {data_dir}"
        )
    seconds["synth"] = time.perf_counter() - t

    t = _step("2/6 prepare")
    manifest = RunPaths(run_dir).manifest
    if RunPaths(run_dir).is_run() and manifest.is_file():  # the run's data: never re-prepared
        print(f"reusing {manifest} (the data of the run in {run_dir})")
    else:
        report = recipe.prepare(data_dir, run_dir, preset="cpu", overrides=over, progress=progress)
        print(f"prepare: {report.summary()}")
        manifest = report.manifest
    seconds["prepare"] = time.perf_counter() - t

    t = _step("3/6 train (cpu preset)")
    _train(manifest, run_dir, over, out, progress)
    seconds["train"] = time.perf_counter() - t

    t = _step("4/6 label")
    labels_csv = recipe.label(run_dir, device="cpu", progress=progress)
    seconds["label"] = time.perf_counter() - t

    t = _step("5/6 evaluate")
    result = recipe.evaluate(run_dir, device="cpu", progress=progress)
    print(result["table"])
    print(verdict(result, seed=data_cfg["seed"]))
    seconds["evaluate"] = time.perf_counter() - t

    t = _step("6/6 explorer")
    page = recipe.explore(run_dir, labels_csv=labels_csv, progress=progress)
    seconds["explore"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t_all

    paths = {
        "data": str(data_dir),
        "run": str(run_dir),
        "labels": str(labels_csv),
        "evaluation": str(run_dir / "evaluation.txt"),
        "explorer": str(page),
    }
    print("\n== done ==")
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    for name, path in paths.items():
        print(f"  {name:<10} {path}")
    write_text(run_dir / "demo-timings.json", json.dumps(seconds, indent=2))
    return {"evaluation": result, "seconds": seconds, "paths": paths}


def headline(result: dict[str, Any]) -> dict[str, float]:
    """The NMIs (percent, head 0) the verdict compares, from an evaluation result.

    ``both``, ``video``, ``audio`` (each stream's heads), ``self_labels`` (the training's OT
    labels, both streams), ``kmeans_random`` and ``kmeans_trained`` (the best stream of
    k-means on the random-init and on the trained features).
    """
    rows = result["rows"]

    def nmi(method: str, streams: str) -> float:
        return max(
            100 * r["nmi"]
            for r in rows
            if r["method"] == method and r["streams"] == streams and r["head"] in (None, 0)
        )

    def best(method: str) -> float:
        return max(nmi(method, s) for s in ("video", "audio", "video+audio"))

    return {
        "both": nmi("SeLaVi heads", "video+audio"),
        "video": nmi("SeLaVi heads", "video"),
        "audio": nmi("SeLaVi heads", "audio"),
        "self_labels": nmi("SeLaVi self-labels (OT)", "video+audio"),
        "kmeans_random": best("k-means, random init"),
        "kmeans_trained": best("k-means, SeLaVi features"),
    }


#: What the verdict compares both streams' heads with: (key of :func:`headline`, words, whether a
#: tie counts as holding). Issue 10's targets: both streams > each stream's heads, and the
#: self-labels >= k-means (where k-means reaches 100.0, the labels can only equal it).
_RIVALS = (
    ("video", "the video heads", False),
    ("audio", "the audio heads", False),
    ("kmeans_random", "k-means on random-init features", True),
    ("kmeans_trained", "k-means on the trained features", True),
)


def _listed(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def verdict(result: dict[str, Any], seed: int | None = None) -> str:
    """What held on this run: both streams' heads (head 0) against each rival, one by one.

    The NMIs are compared as printed (percent, one decimal). Both streams must be above each
    stream's heads, and at least as high as both k-means baselines. The last sentence says
    ``both streams together beat`` when that holds, and names any k-means baseline they only
    equal; otherwise it says ``both streams together do NOT beat`` and names what they did not
    beat. One run is one draw: ``docs/video.md`` gives the spread over seeds 0-9.
    """
    if not result.get("ground_truth"):
        return "no ground truth: nothing to compare"
    h = {key: round(value, 1) for key, value in headline(result).items()}
    lost = [
        words
        for key, words, tie_holds in _RIVALS
        if h["both"] < h[key] or (h["both"] == h[key] and not tie_holds)
    ]
    run = "this run" if seed is None else f"this run (seed {seed})"
    text = (
        f"NMI (head 0): both streams {h['both']:.1f} (self-labels {h['self_labels']:.1f}) vs "
        f"video alone {h['video']:.1f}, audio alone {h['audio']:.1f}; best k-means on random-init "
        f"features {h['kmeans_random']:.1f}, on the trained features {h['kmeans_trained']:.1f}. "
    )
    if lost:
        return text + f"On {run}, both streams together do NOT beat {_listed(lost)}."
    tied = [w for key, w, _ in _RIVALS if h["both"] == h[key]]
    if not tied:
        return text + (
            f"On {run}, both streams together beat each stream alone and k-means on the "
            "random-init and on the trained features."
        )
    beaten = ["each stream alone"] + [
        words for key, words, tie_holds in _RIVALS if tie_holds and h["both"] > h[key]
    ]
    return text + (
        f"On {run}, both streams together beat {' and '.join(beaten)}, and equal "
        f"{' and '.join(tied)} ({h['both']:.1f} each)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of the demo."""
    parser = argparse.ArgumentParser(
        prog="python -m otcluster_video.demo",
        description="Synthetic data -> prepare -> train (cpu preset) -> label -> evaluate -> "
        "explorer, on the CPU.",
    )
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--fresh", action="store_true", help="delete the output folder first")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N",
        help="seed of the synthetic data and of the training (default 0); another seed needs "
        "another --out or --fresh",
    )
    args = parser.parse_args(argv)
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    try:
        run_demo(args.out, seed=args.seed, fresh=args.fresh, progress=not args.quiet)
    except ValueError as err:  # a bad folder or seed: one line, no traceback
        parser.exit(2, f"error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
