"""``otcluster-video evaluate`` (the paper's tables 2 and 5) and ``degrade`` (fig. 2): the
trained heads' labels scored against ground truth next to k-means baselines.

Scoring, tables and the frame degradation are :mod:`otcluster_video.evaluate`; k-means is
:func:`otcluster.kmeans_baseline`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from otcluster import kmeans_baseline
from otcluster._threads import map_batches

from .._build import build_encoders, kernel_scope
from .._config import VideoRecipeConfig
from .._run import ground_truth, other_manifest, write_text
from ..evaluate import degrade_frames, format_table, modality_labels, score_labelings
from . import _inference

__all__ = ["degrade", "evaluate"]

Labeling = tuple[str, bool, bool, "int | None", np.ndarray]


def _random_init_features(
    config: VideoRecipeConfig,
    dataset: Dataset,
    *,
    device: str | torch.device,
    batch_size: int,
    progress: bool,
    calibration_samples: int = 512,
) -> dict[str, torch.Tensor]:
    """Pooled features of the randomly initialised encoders (the trained model's own init).

    Batch-norm statistics are first recomputed on up to ``calibration_samples`` clips (a
    forward pass in training mode, no gradient): with the initial running statistics (mean 0,
    variance 1) the activations of an untrained network are not normalised, which would make
    the random baseline needlessly weak.
    """
    encoders = {m: e.to(device) for m, e in build_encoders(config).items()}
    n = len(dataset)
    loader_kw = dict(batch_size=batch_size, num_workers=config.data.num_workers)
    calib = torch.utils.data.Subset(dataset, range(min(n, calibration_samples)))
    for enc in encoders.values():
        for mod in enc.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.reset_running_stats()
                mod.momentum = None  # cumulative average over the calibration pass
        enc.train()
    feats: dict[str, list[torch.Tensor]] = {m: [] for m in encoders}
    with torch.no_grad():
        for batch in tqdm(DataLoader(calib, **loader_kw), desc="random init: batch-norm stats",
                          disable=not progress, leave=False):
            for m, enc in encoders.items():
                if batch[m].shape[0] > 1:
                    enc(batch[m].to(device))
        for enc in encoders.values():
            enc.eval()
        batches = tqdm(DataLoader(dataset, **loader_kw), desc="random init: features",
                       disable=not progress, leave=False)
        for z in map_batches(lambda b: {m: enc(b[m].to(device)).float().cpu()
                                        for m, enc in encoders.items()},
                             batches, _inference.pass_threads(config, device)):
            for m in encoders:
                feats[m].append(z[m])
    return {m: torch.cat(v) for m, v in feats.items()}


def _l2(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=1)


def _kmeans_labelings(
    name: str, features: Mapping[str, torch.Tensor], k: int, seed: int, keep: np.ndarray
) -> list[Labeling]:
    """k-means (faiss when available) on L2-normalised pooled features: video, audio, both."""
    both = torch.cat([_l2(features["video"]), _l2(features["audio"])], 1)
    out = []
    for (v, a), x in (
        ((True, False), _l2(features["video"])),
        ((False, True), _l2(features["audio"])),
        ((True, True), both),
    ):
        out.append((name, v, a, None, kmeans_baseline(x, k, seed=seed).labels.numpy()[keep]))
    return out


def _head_note(head: int, primary: int) -> str:
    notes = (["paper"] if head == 0 else []) + (["selected"] if head == primary else [])
    return ", ".join(notes)


def _head_labelings(labs: Mapping[str, torch.Tensor], head: int, keep: np.ndarray,
                    streams: Sequence[str] = ("video", "audio", "both")) -> list[Labeling]:
    flags = {"video": (True, False), "audio": (False, True), "both": (True, True)}
    return [("SeLaVi heads", *flags[s], head, labs[s][head].numpy()[keep]) for s in streams]


def _scored(y: np.ndarray, failed: set[int]) -> np.ndarray:
    """Videos with a known class whose own clip decoded."""
    return (y >= 0) & ~np.isin(np.arange(len(y)), sorted(failed))


def _write_result(root: Path, stem: str, result: Mapping[str, Any], table: str | None) -> None:
    write_text(root / f"{stem}.json", json.dumps(result, indent=2))
    if table is not None:
        write_text(root / f"{stem}.txt", table + "\n")


def evaluate(
    run: str | Path,
    *,
    data: str | Path | None = None,
    truth: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a trained run against ground truth, in the layout of the paper's tables 2 and 5.

    For the video stream alone, the audio stream alone and both (mean log-probabilities,
    eq. 6) the trained heads' labels are scored next to k-means (k = number of classes, faiss)
    on the same encoders' L2-normalised pooled features, and on the features of the same
    architecture at its random initialisation (same seed). On the training videos the
    self-labels of the last clustering (optimal transport, both streams) are scored too.
    Head 0 (the paper's choice) and the head chosen without ground truth
    (:func:`otcluster.metrics.select_head`) are reported; heads are never picked by ground truth.

    Parameters
    ----------
    run : str or Path
        Trained run folder.
    data : str, Path or None
        Videos to evaluate (default: the training videos, as in the paper).
    truth : str or Path, optional
        CSV with ``path`` and ``label`` columns; default: the labels of the manifest (folder
        names or the source CSV's ``label`` column).
    device : str or torch.device
    batch_size : int, optional
    progress : bool

    Returns
    -------
    dict
        ``rows`` (list of dicts, see :class:`EvalRow`), ``table`` (text), ``heads``
        (``paper``: 0, ``selected``), counts; also written to ``RUN/evaluation.json`` and
        ``RUN/evaluation.txt``. Without ground truth, only cluster statistics.
    """
    t0 = time.perf_counter()
    loaded = _inference.load_run(run, device)
    paths, config = loaded.paths, loaded.config
    on_training_data = data is None
    videos = loaded.videos if on_training_data else other_manifest(paths, data, config, progress)[0]
    dataset = _inference.eval_dataset(videos, config)
    bs = loaded.batch_size(batch_size)
    feats = _inference.extract(loaded, dataset, batch_size=bs, progress=progress)
    log_probs = _inference.heads_log_probs(loaded, feats.z)
    labs = modality_labels(log_probs, _inference.stream_weights(loaded, log_probs))
    self_labels = loaded.self_labels()
    if on_training_data and self_labels is not None:
        labs["self"] = self_labels.cpu()
    primary = loaded.primary
    y = ground_truth(videos, truth)
    result: dict[str, Any] = {
        "run": str(paths.root),
        "n_videos": len(videos),
        "decode_failed": sorted(feats.failed),
        "heads": {"paper": 0, "selected": primary, "n_heads": int(labs["both"].shape[0])},
        "n_clusters": config.heads.n_clusters,
    }
    if y is None:
        sizes = torch.bincount(labs["both"][primary], minlength=config.heads.n_clusters)
        result.update(ground_truth=False, cluster_sizes=sizes.tolist())
        result["table"] = (
            f"no ground truth (need labels of at least two classes): {len(videos)} videos in "
            f"{int((sizes > 0).sum())} non-empty clusters with head {primary}"
        )
        _write_result(paths.root, "evaluation", result, result["table"])
        return result
    keep = _scored(y, feats.failed)
    yk = y[keep]
    k = int(len(np.unique(yk)))
    seed = config.training.seed
    with kernel_scope(config):
        random_feats = _random_init_features(config, dataset, device=loaded.device, batch_size=bs,
                                             progress=progress)
    labelings = _kmeans_labelings("k-means, random init", random_feats, k, seed, keep)
    labelings += _kmeans_labelings("k-means, SeLaVi features", feats.z, k, seed, keep)
    for h in [0] if primary == 0 else [0, primary]:
        labelings += _head_labelings(labs, h, keep)
        if "self" in labs:
            labelings.append(("SeLaVi self-labels (OT)", True, True, h, labs["self"][h].numpy()[keep]))
    rows = score_labelings(yk, labelings)
    rows = [r if r.head is None else replace(r, note=_head_note(r.head, primary)) for r in rows]
    title = (
        f"{paths.root}: {int(keep.sum())} videos, {k} classes, K = {config.heads.n_clusters} "
        f"clusters; head 0 (paper) and head {primary} (selected without labels)"
    )
    table = format_table(rows, title=title)
    result.update(
        ground_truth=True,
        n_scored=int(keep.sum()),
        n_classes=k,
        rows=[r.to_dict() for r in rows],
        table=table,
        seconds=time.perf_counter() - t0,
    )
    _write_result(paths.root, "evaluation", result, table)
    return result


# --------------------------------------------------------------------------------------------
# degraded video (paper fig. 2)
# --------------------------------------------------------------------------------------------


def degrade(
    run: str | Path,
    *,
    factors: Sequence[int] = (1, 4, 8, 16),
    truth: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores when the video frames are degraded (paper fig. 2): nearest-neighbour down- then
    up-sampling by each factor, audio untouched.

    For every factor, the labels of the video heads alone and of both streams (mean
    log-probabilities) are scored for head 0 and the unsupervised head choice, next to k-means
    on the SeLaVi video features of the degraded clips. Writes ``RUN/degrade.json`` and a plot
    of NMI against the factor, ``RUN/degrade.png``.

    Parameters
    ----------
    run : str or Path
    factors : sequence of int
        Down-sampling factors (1 = clean).
    truth : str or Path, optional
        Ground-truth CSV (default: the manifest labels).
    device, batch_size, progress
        As for :func:`evaluate`.

    Returns
    -------
    dict
        ``factors``, ``rows`` (one list of row dicts per factor), ``png``.
    """
    loaded = _inference.load_run(run, device)
    paths, config = loaded.paths, loaded.config
    y = ground_truth(loaded.videos, truth)
    if y is None:
        raise ValueError(
            f"{paths.root}: the degraded-video experiment needs ground truth (folder names or "
            f"--truth CSV with at least two classes)"
        )
    primary = loaded.primary
    heads = [0] if primary == 0 else [0, primary]
    dataset = _inference.eval_dataset(loaded.videos, config)
    per_factor: dict[int, list[dict[str, Any]]] = {}
    for f in factors:
        transform = {"video": partial(degrade_frames, factor=int(f))}
        feats = _inference.extract(loaded, dataset, batch_size=batch_size, transform=transform)
        log_probs = _inference.heads_log_probs(loaded, feats.z)
        labs = modality_labels(log_probs, _inference.stream_weights(loaded, log_probs))
        keep = _scored(y, feats.failed)
        k = int(len(np.unique(y[keep])))
        km = kmeans_baseline(_l2(feats.z["video"]), k, seed=config.training.seed).labels.numpy()
        labelings: list[Labeling] = [("k-means, SeLaVi features", True, False, None, km[keep])]
        for h in heads:
            labelings += _head_labelings(labs, h, keep, ("video", "both"))
        rows = score_labelings(y[keep], labelings, note=f"factor {f}")
        per_factor[int(f)] = [r.to_dict() for r in rows]
        if progress:
            print(format_table(rows, title=f"video degraded by factor {f}"), flush=True)
    png = paths.output("degrade.png")
    _plot_degrade(per_factor, png)
    result = {
        "run": str(paths.root),
        "factors": [int(f) for f in factors],
        "heads": {"paper": 0, "selected": primary},
        "rows": {str(f): rows for f, rows in per_factor.items()},
        "png": str(png),
    }
    _write_result(paths.root, "degrade", result, None)
    return result


def _plot_degrade(per_factor: Mapping[int, list[dict[str, Any]]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    factors = sorted(per_factor)
    series: dict[str, list[float]] = {}
    for f in factors:
        for r in per_factor[f]:
            head = "" if r["head"] is None else f", head {r['head']}"
            series.setdefault(f"{r['method']} ({r['streams']}{head})", []).append(100 * r["nmi"])
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    for name, values in series.items():
        style = "--" if name.startswith("k-means") else "-"
        ax.plot(range(len(factors)), values, style, marker="o", label=name)
    ax.set_xticks(range(len(factors)), [str(f) for f in factors])
    ax.set_xlabel("video down-sampling factor")
    ax.set_ylabel("NMI (%)")
    ax.set_title("Degraded video stream (audio intact)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def cli(args: argparse.Namespace) -> None:
    from ..cli import device_of

    result = evaluate(args.run, data=args.data, truth=args.truth, device=device_of(args.device),
                      batch_size=args.batch_size, progress=not args.quiet)
    print(result["table"])
    print(f"written: {Path(args.run) / 'evaluation.json'}")


def cli_degrade(args: argparse.Namespace) -> None:
    from ..cli import device_of

    result = degrade(args.run, factors=args.factors, truth=args.truth,
                     device=device_of(args.device), batch_size=args.batch_size,
                     progress=not args.quiet)
    print(f"written: {result['png']} and {Path(args.run) / 'degrade.json'}")
