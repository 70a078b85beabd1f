"""``otcluster-video label``: one CSV row per video with its cluster under every head."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import torch

from .._run import csv_cell, other_manifest, write_text
from . import _inference

__all__ = ["label"]


def label(
    run: str | Path,
    data: str | Path | None = None,
    *,
    out_csv: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Label videos with a trained run: one CSV row per video.

    Videos need not have been seen in training: every video is labelled by the trained heads
    (argmax of the mean of the video and audio log-probabilities, weighted as
    ``clustering.label_weights`` says: as in training, or by each stream's confidence over the
    videos labelled together), not by the transport problem. Only the model is loaded (no
    optimiser, no training data).

    Parameters
    ----------
    run : str or Path
        Trained run folder.
    data : str, Path or None
        Folder, source CSV or manifest of the videos to label (default: the training videos).
    out_csv : str or Path, optional
        Output file (default ``RUN/labels.csv`` for the training videos, else
        ``RUN/labels_<data name>.csv``).
    device : str or torch.device
    batch_size : int, optional
        Inference batch size (default: the training batch size).
    progress : bool

    Returns
    -------
    Path
        The CSV, with columns ``path``, ``label`` and ``confidence`` (of the primary head: the
        unsupervised :func:`otcluster.metrics.select_head` choice), ``label_h<i>`` and
        ``confidence_h<i>`` for every head, ``given_label`` (the folder name or CSV label of
        the video, never used for training) and ``status`` (``ok`` or ``decode_failed``, with
        empty labels). Text cells that a spreadsheet would run as a formula (starting with
        ``= + - @``) are prefixed with ``'``.
    """
    loaded = _inference.load_run(run, device)
    paths, config = loaded.paths, loaded.config
    if data is None:
        videos = loaded.videos
        default_out = paths.labels
    else:
        videos, report = other_manifest(paths, data, config, progress)
        if report is not None and progress:
            print(f"prepare: {report.summary()}", flush=True)
        default_out = paths.root / f"labels_{Path(data).stem or 'data'}.csv"
    out_csv = Path(out_csv) if out_csv is not None else default_out
    dataset = _inference.eval_dataset(videos, config)
    feats = _inference.extract(loaded, dataset, batch_size=batch_size, progress=progress)
    log_probs = _inference.heads_log_probs(loaded, feats.z)
    labels, confidence = _inference.predict(log_probs, _inference.stream_weights(loaded, log_probs))
    primary = loaded.primary
    H = labels.shape[0]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["path", "label", "confidence"]
    for h in range(H):
        header += [f"label_h{h}", f"confidence_h{h}"]
    writer.writerow([*header, "given_label", "status"])
    for i, info in enumerate(videos):
        path, given = csv_cell(info.path), csv_cell(info.label)
        if i in feats.failed:
            writer.writerow([path, "", "", *([""] * (2 * H)), given, "decode_failed"])
            continue
        row = [path, int(labels[primary, i]), f"{float(confidence[primary, i]):.4f}"]
        for h in range(H):
            row += [int(labels[h, i]), f"{float(confidence[h, i]):.4f}"]
        writer.writerow([*row, given, "ok"])
    write_text(out_csv, buffer.getvalue())
    n_bad = len(feats.failed)
    counts = torch.bincount(labels[primary], minlength=config.heads.n_clusters)
    if progress:
        print(
            f"labelled {len(videos) - n_bad} videos ({n_bad} failed to decode) into "
            f"{int((counts > 0).sum())} clusters with head {primary}: {out_csv}",
            flush=True,
        )
    return out_csv


def cli(args: argparse.Namespace) -> None:
    from ..cli import device_of

    label(args.run, args.data, out_csv=args.out, device=device_of(args.device),
          batch_size=args.batch_size, progress=not args.quiet)
