"""``otcluster-video select``: rank runs trained on the same videos by how much their streams agree.

SeLaVi's labels are what the video and the audio share. Runs that differ only in their random
seed can differ by 10-30 NMI at CPU scale; among them, the run whose video heads and audio heads
cluster the videos most alike (:func:`otcluster.view_agreement`, no ground truth) tends to have
the better labels, as ``n_init`` picks the best of several k-means starts. Measured in
``docs/benchmarks/restarts.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from otcluster import view_agreement

from . import _inference

__all__ = ["RunAgreement", "select_runs"]


@dataclass(frozen=True)
class RunAgreement:
    """How much the streams of one trained run agree on its training videos.

    Attributes
    ----------
    run : Path
        The run folder, as given.
    agreement : float
        :func:`otcluster.view_agreement` of the clusters of the primary head's video half and
        its audio half (argmax of each stream's log-probabilities) over the videos that decoded:
        their NMI, 1 for the same partition, 0 when a stream puts every video in one cluster.
    head : int
        The primary head (the one ``label`` writes to the ``label`` column).
    seed : int
        The run's ``training.seed``.
    n_videos : int
        Videos scored (those that failed to decode are left out).
    """

    run: Path
    agreement: float
    head: int
    seed: int
    n_videos: int


def _video_set(loaded: _inference.LoadedRun) -> set[str]:
    return {str(Path(v.path).resolve()) for v in loaded.videos}


def _agreement(loaded: _inference.LoadedRun, batch_size: int | None, progress: bool
               ) -> tuple[float, int, int]:
    streams = list(loaded.model.heads.keys())
    if len(streams) < 2:
        raise ValueError(f"{loaded.paths.root} has heads for {streams} only: the agreement of "
                         f"the streams needs two")
    dataset = _inference.eval_dataset(loaded.videos, loaded.config)
    feats = _inference.extract(loaded, dataset, modalities=streams, batch_size=batch_size,
                               progress=progress)
    log_probs = _inference.heads_log_probs(loaded, feats.z)
    head = loaded.primary
    keep = [i for i in range(len(loaded.videos)) if i not in feats.failed]
    if not keep:
        raise ValueError(f"{loaded.paths.root}: none of its videos could be decoded")
    labels = torch.stack([log_probs[m][head].argmax(-1)[keep] for m in streams])
    return view_agreement(labels), head, len(keep)


def select_runs(
    runs: Sequence[str | Path],
    *,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
) -> list[RunAgreement]:
    """Rank trained runs of the same videos by the agreement of their streams, best first.

    Train several runs that differ only in ``training.seed`` (``train --set
    training.seed=N --out runs/seedN``), then keep the first one this returns: its labels are
    ``RUN/labels.csv`` (``label --run RUN``). Nothing is written; no ground truth is used.

    Parameters
    ----------
    runs : sequence of str or Path
        Run folders written by ``train``, all on the same videos (their ``manifest.csv`` must
        list the same files; agreements on different videos are not comparable).
    device : str or torch.device
    batch_size : int, optional
        Inference batch size (default: each run's training batch size).
    progress : bool
        A progress bar while extracting features.

    Returns
    -------
    list of RunAgreement
        One per run, sorted by decreasing ``agreement`` (ties keep the given order).

    Raises
    ------
    ValueError
        If no run is given, a folder is given twice, the runs were trained on different videos,
        or a run has fewer than two streams.
    FileNotFoundError
        If a folder holds no trained run.
    """
    if not runs:
        raise ValueError("select needs at least one run folder")
    roots = [Path(r) for r in runs]
    seen: dict[Path, Path] = {}
    for root in roots:
        key = root.resolve()
        if key in seen:
            raise ValueError(f"{root} is given twice (as {seen[key]} too)")
        seen[key] = root
    out, reference = [], None
    for root in roots:
        loaded = _inference.load_run(root, device)
        videos = _video_set(loaded)
        if reference is None:
            reference = (root, videos)
        elif videos != reference[1]:
            raise ValueError(
                f"{root} was trained on other videos than {reference[0]} ("
                f"{len(videos ^ reference[1])} differ): agreements on different videos are not "
                f"comparable; select among runs of the same manifest"
            )
        agreement, head, n = _agreement(loaded, batch_size, progress)
        out.append(RunAgreement(root, agreement, head, loaded.config.training.seed, n))
    return sorted(out, key=lambda r: -r.agreement)


def format_table(ranked: Sequence[RunAgreement]) -> str:
    """The ranking as the command prints it."""
    lines = ["agreement  head  seed  videos  run"]
    for i, r in enumerate(ranked):
        mark = "  <- selected" if i == 0 else ""
        lines.append(f"{100 * r.agreement:9.1f}  {r.head:4d}  {r.seed:4d}  {r.n_videos:6d}  "
                     f"{r.run}{mark}")
    lines.append("agreement: NMI (%) between the video and the audio heads' clusters of the same "
                 "videos; no ground truth used")
    return "\n".join(lines)


def cli(args: argparse.Namespace) -> None:
    from ..cli import device_of

    ranked = select_runs(args.runs, device=device_of(args.device), batch_size=args.batch_size,
                         progress=not args.quiet)
    print(format_table(ranked), flush=True)
