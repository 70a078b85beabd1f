"""``otcluster-video retrieval``: video retrieval with the trained visual encoder (paper table 4)."""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._probe import VideoInfo
from .._run import other_manifest, write_text
from ..evaluate import retrieval_recall
from . import _inference

__all__ = ["retrieval"]


def _split_sources(split_csv: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write ``train.csv`` and ``test.csv`` (path, label) from a CSV with a ``split`` column."""
    with split_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "path" not in columns or "split" not in columns:
            raise ValueError(f"{split_csv}: need columns 'path' and 'split', got {columns}")
        rows = list(reader)
    base = split_csv.resolve().parent
    out = {}
    for split in ("train", "test"):
        chosen = [r for r in rows if r["split"].strip().lower() == split]
        if not chosen:
            raise ValueError(f"{split_csv}: no row has split == {split!r}")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows((str((base / r["path"]).resolve()), r.get("label") or "") for r in chosen)
        out[split] = write_text(out_dir / f"split_{split}_source.csv", buffer.getvalue())
    return out["train"], out["test"]


def _clip_features(
    loaded: _inference.LoadedRun, videos: Sequence[VideoInfo], n_clips: int, batch_size: int | None
) -> torch.Tensor:
    """Video features averaged over ``n_clips`` evenly spaced clips of every video."""
    total = None
    positions = [0.5] if n_clips == 1 else np.linspace(0.0, 1.0, n_clips).tolist()
    for p in positions:
        ds = _inference.eval_dataset(videos, loaded.config, position=p)
        z = _inference.extract(loaded, ds, modalities=["video"], batch_size=batch_size).z["video"]
        total = z if total is None else total + z
    assert total is not None
    return total / len(positions)


def retrieval(
    run: str | Path,
    *,
    train_split: str | Path | None = None,
    test_split: str | Path | None = None,
    split_csv: str | Path | None = None,
    n_clips: int = 10,
    ks: Sequence[int] = (1, 5, 20),
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Video retrieval with the trained visual encoder (paper table 4).

    Each video's feature is the mean of the pooled visual features of ``n_clips`` evenly spaced
    clips; each test video retrieves its nearest training videos by cosine similarity (faiss,
    exact), and counts as found at ``k`` when one of the ``k`` has its class.

    Parameters
    ----------
    run : str or Path
    train_split, test_split : str or Path, optional
        Folders, source CSVs (``path``, ``label``) or manifests of the two splits.
    split_csv : str or Path, optional
        Instead of the two splits: one CSV with columns ``path``, ``label`` and ``split``
        (``train`` or ``test``).
    n_clips : int
        Clips averaged per video (paper: 10).
    ks : sequence of int
        Recall levels (paper: 1, 5, 20).
    device, batch_size, progress
        As for :func:`otcluster_video.commands.evaluate.evaluate`.

    Returns
    -------
    dict
        ``recall`` ({k: value}), counts; also written to ``RUN/retrieval.json``.
    """
    if n_clips < 1:
        raise ValueError(f"n_clips must be >= 1, got {n_clips}")
    if split_csv is not None:
        if train_split is not None or test_split is not None:
            raise ValueError("give either split_csv or train_split and test_split, not both")
    elif train_split is None or test_split is None:
        raise ValueError("retrieval needs --train-split and --test-split, or --split-csv")
    loaded = _inference.load_run(run, device)
    paths, config = loaded.paths, loaded.config
    if split_csv is not None:
        train_split, test_split = _split_sources(Path(split_csv), paths.manifests)
    assert train_split is not None and test_split is not None
    train_videos, _ = other_manifest(paths, train_split, config, progress, "retrieval_train")
    test_videos, _ = other_manifest(paths, test_split, config, progress, "retrieval_test")
    names = sorted({v.label for v in [*train_videos, *test_videos] if v.label})
    if not names:
        raise ValueError("retrieval needs class labels (folder names or a 'label' column)")
    ids = {n: i for i, n in enumerate(names)}
    y_train = np.array([ids.get(v.label, -1) for v in train_videos])
    y_test = np.array([ids.get(v.label, -2) for v in test_videos])  # -2 never matches
    z_train = _clip_features(loaded, train_videos, n_clips, batch_size)
    z_test = _clip_features(loaded, test_videos, n_clips, batch_size)
    keep = y_test >= 0
    recall = retrieval_recall(z_train, y_train, z_test[torch.from_numpy(keep)], y_test[keep], ks)
    result = {
        "run": str(paths.root),
        "n_train": len(train_videos),
        "n_test": int(keep.sum()),
        "n_clips": n_clips,
        "recall": {str(k): v for k, v in recall.items()},
    }
    write_text(paths.output("retrieval.json"), json.dumps(result, indent=2))
    if progress:
        print("retrieval: " + ", ".join(f"R@{k} = {100 * v:.1f}%" for k, v in recall.items()),
              flush=True)
    return result


def cli(args: argparse.Namespace) -> None:
    from ..cli import device_of

    result = retrieval(args.run, train_split=args.train_split, test_split=args.test_split,
                       split_csv=args.split_csv, n_clips=args.clips, ks=args.ks,
                       device=device_of(args.device), batch_size=args.batch_size,
                       progress=not args.quiet)
    print(json.dumps(result["recall"]))
